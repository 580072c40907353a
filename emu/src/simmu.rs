//! Wiring of the simulated MMU ([`crate::tlb::MmuModel`] over [`crate::arch::aarch64::mmu`]) into the
//! cores: Unicorn's virtual-TLB mode and its fill hook, page-table pages
//! write-protected in Unicorn, and a code hook on `free_pages`. What differs by
//! instruction set is asked of an [`IsaMmu`] (`arch/<isa>/simmu.rs`): the table
//! format and the registers that select the tables, EL0 / U-mode accesses, and
//! the hooks that see TLB maintenance (arm64: TLBIs from the SYS hook, code hooks
//! on DSBs and the ISBs right after maintenance; RISC-V: code hooks on
//! `sfence.vma` and `satp` writes).
//!
//! Unicorn facts this relies on (read in its 2.1.4 source, checked by tests):
//! - the fill hook runs after `cpu_restore_state`, so the PC is the accessing
//!   instruction's; returning `None` makes `emu_start` fail with `UC_ERR_EXCEPTION`
//!   with the PC restored to that instruction (the host then enters the abort);
//! - the fill hook is asked for 1 KiB target pages: the answer keeps the offset;
//! - any `MEM_WRITE`/`MEM_READ` hook, however bounded, sends every load and store of
//!   every page through the slow path (measured: half the speed). So stores to page
//!   tables are seen by write-protecting the tables in the fill answers instead: a
//!   store to one asks for a fill, which opens a compare window on the page
//!   ([`crate::tlb::MmuModel::open_write_window`]) and ends the slice at the next block;
//!   the window is compared at the CPU's next MMU event (TLBI, barrier, fill) and at
//!   the end of the slice, when the CPU's soft TLB is flushed to take the write
//!   permission back;
//! - only one SYS/MRS/MSR hook per instruction is possible (a second one breaks the
//!   generated code), so TLBIs and register writes come from `cpu`'s own hooks;
//! - DSB and ISB reach no hook: code hooks on their addresses (found by scanning the
//!   executable segments) see them. An ISB in a spin-wait loop would cost a hook call
//!   per iteration, so only ISBs within 4 instructions of a TLBI or DSB are hooked;
//! - in virtual-TLB mode every soft-TLB entry comes from the fill hook, and Unicorn
//!   flushes only whole TLBs: each core keeps what it answered since the host last
//!   flushed it, so that the model's flush requests (stale entries, new page
//!   tables) flush only a core that may hold the pages concerned.
//!
//! # Recording
//! While the machine records ([`crate::record`]), each core queues what its MMU sees
//! with the recorder, into the same stream as the probes' events (nothing to pay
//! otherwise: one `Option` test per TLBI, barrier, fill and compare), in the order the
//! model saw it:
//! - what the model did ([`crate::tlb`]'s "What it records"): fills, page-table pages,
//!   descriptor changes and stale uses, each at the time of the instruction that
//!   caused it (a descriptor change: the first store of its write window; later
//!   stores the same window takes, until the block ends, are not seen one by one);
//! - every EL1 TLBI (`Tlbi`, with Xt as the operand), after the changes its compare
//!   found;
//! - every hooked barrier (`Dsb` with its option, `Isb`): with the checks on
//!   ([`crate::MmuMode::Checked`]) that is every DSB and the ISBs near maintenance;
//!   DMBs and other ISBs are not seen.
//!
//! The TLB check ([`traces::tlb::TlbCheck`]) needs nothing else.
//!
//! The recorder's own reads of guest memory in a probe (backtraces, lock names,
//! threads) go through [`CoreMmu::host_page`], not through Unicorn's TLB, so every
//! fill during a slice is the guest's, at the instruction that made it: recording
//! changes nothing the model sees.

use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::rc::Rc;

use traces::riscv64::PageTableFormat;
use traces::EventKind;
use unicorn_engine::{MemType, Prot, TlbEntry, TlbType, Unicorn};

use crate::arch::aarch64::exception::Synchronous;
use crate::arch::aarch64::mmu::{Access, Fault, TranslationRegs, PAGE_SIZE};
use crate::code_sites::CodeSites;
use crate::cpu::{read_insn, Core, SliceCounter};
use crate::error::{uc_err, EmuError};
use crate::kernel::KernelImage;
use crate::memory::{GuestMemory, GuestRam};
use crate::record::abi::IsaAbi;
use crate::record::Recorder;
use crate::tlb::{At, FillAnswer, Invalidation, MmuModel, RamView, SoftTlbEntry};
use crate::Isa;

/// What the simulated MMU's wiring asks of an instruction set: one per ISA, in
/// `arch/<isa>/simmu.rs`; [`crate::arch::Arch::mmu`] picks it.
pub(crate) trait IsaMmu: Sync {
    /// The page-table format the model walks.
    fn format(&self) -> PageTableFormat;
    /// The core's registers that select and shape the translation tables now.
    fn translation_regs(&self, uc: &Unicorn<'_, ()>) -> TranslationRegs;
    /// Whether every write to those registers reaches a hook (which then calls
    /// [`CoreMmu::regs_changed`]): the value read can be kept until then.
    fn regs_writes_seen(&self) -> bool;
    /// Whether the access being filled has EL0's (U-mode's) permissions: the core
    /// runs at EL0, or (`unprivileged`) the kernel instruction making it is one
    /// of [`Self::unprivileged_sites`].
    fn access_is_el0(&self, uc: &Unicorn<'_, ()>, unprivileged: bool, access: Access) -> bool;
    /// The address the load or store `word` (the faulting instruction) accesses.
    fn data_access_address(&self, uc: &Unicorn<'_, ()>, word: u32) -> Option<u64>;
    /// The kernel's instructions that access memory with EL0's permissions from
    /// EL1 (arm64's `ldtr`/`sttr`).
    fn unprivileged_sites(&self, _words: &[(u64, u32)]) -> Vec<u64> {
        Vec::new()
    }
    /// Hooks the translation needs with the checks on or off, on every core.
    fn install_translation_hooks(
        &self,
        _cores: &mut [Core],
        _words: &[(u64, u32)],
    ) -> Result<(), EmuError> {
        Ok(())
    }
    /// Hooks that show the model the kernel's TLB maintenance and barriers (with
    /// the checks on), on every core with an MMU; `words` are the kernel's code.
    fn install_maintenance_hooks(
        &self,
        mmu: &SimMmu,
        cores: &mut [Core],
        kernel: &KernelImage,
        words: &[(u64, u32)],
    ) -> Result<(), EmuError>;
}

/// A core's translation registers and privilege, for the host's reads
/// ([`CoreMmu::host_view`]).
pub(crate) struct HostView {
    regs: TranslationRegs,
    el0: bool,
}

/// State shared by every core's MMU hooks.
pub(crate) struct Shared {
    pub(crate) model: RefCell<MmuModel>,
    /// Instructions of all CPUs before the current slice (virtual time base).
    slice_base: Cell<u64>,
    /// Whether a guest slice is running (fills outside one are the host's own reads).
    in_slice: Cell<bool>,
    ram: RamView,
    /// The kernel's `ldtr`/`sttr` instructions (Linux's uaccess): at EL1 they
    /// access memory with EL0's permissions.
    unprivileged_sites: RefCell<traces::fx::FxHashSet<u64>>,
    /// Physical pages of the kernel's executable segments, page-aligned.
    code_pages: RefCell<Vec<std::ops::Range<u64>>>,
}

impl Shared {
    /// Whether the page holding `pa` holds kernel code.
    fn holds_code(&self, pa: u64) -> bool {
        let page = pa & !(PAGE_SIZE - 1);
        self.code_pages.borrow().iter().any(|r| r.contains(&page))
    }
}

/// One core's side.
pub(crate) struct CoreMmu {
    cpu: usize,
    /// Which registers select the tables, and what an access's privilege is.
    isa: &'static dyn IsaMmu,
    /// Which registers hold arguments and the return address.
    abi: &'static dyn IsaAbi,
    shared: Rc<Shared>,
    counter: Rc<SliceCounter>,
    regs: Cell<TranslationRegs>,
    regs_dirty: Cell<bool>,
    /// The translation fault the fill hook refused an access with.
    fault: Cell<Option<(u64, Access, Fault)>>,
    /// Set when the machine starts recording (see the module doc).
    recorder: OnceCell<Rc<Recorder>>,
    /// What this core's Unicorn TLB may hold: everything the fill hook answered
    /// since the host last flushed it (Unicorn's own flushes and evictions only
    /// make this larger than the TLB, never smaller).
    soft_tlb: RefCell<SoftTlbMirror>,
}

/// The pages a Unicorn TLB was filled with since it was last flushed.
#[derive(Default)]
struct SoftTlbMirror {
    /// 4 KiB virtual pages translated.
    pages: traces::fx::FxHashSet<u64>,
    /// 4 KiB physical pages written through.
    writable: traces::fx::FxHashSet<u64>,
}

impl CoreMmu {
    /// The CPU this is.
    pub(crate) fn cpu(&self) -> usize {
        self.cpu
    }

    /// Guest RAM, as the model reads it.
    pub(crate) fn ram(&self) -> &RamView {
        &self.shared.ram
    }

    /// Where and when the instruction at `pc` of the running slice is.
    pub(crate) fn at(&self, pc: u64) -> At {
        At {
            cpu: self.cpu,
            pc,
            time: self.shared.slice_base.get() + self.counter.retired_before(pc),
        }
    }

    /// From now on this core's TLBIs, barriers and what the model does go to
    /// `recorder`.
    pub(crate) fn start_recording(&self, recorder: Rc<Recorder>) {
        self.shared.model.borrow_mut().record_events();
        let _ = self.recorder.set(recorder);
    }

    /// Queues what the model did since the last call with the recorder. Called with
    /// no borrow of the model held; `uc` as for [`Recorder::queue`].
    pub(crate) fn hand_over(&self, uc: Option<&Unicorn<'_, ()>>) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        let events = self.shared.model.borrow_mut().take_events();
        for e in events {
            debug_assert_eq!(e.at.cpu, self.cpu, "only the running CPU changes the model");
            recorder.queue(uc, e.at.cpu, e.at.time, e.at.pc, 0, e.kind);
        }
    }

    /// Records `kind`, an instruction the model just saw (a TLBI, a barrier), at
    /// `at`, after what the model did before it.
    pub(crate) fn record(&self, uc: &Unicorn<'_, ()>, at: At, kind: EventKind) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        self.hand_over(Some(uc));
        recorder.queue(Some(uc), self.cpu, at.time, at.pc, self.abi.link(uc), kind);
    }

    /// What [`CoreMmu::host_page`] translates with: this core's translation
    /// registers and privilege now (read once for a probe's reads).
    pub(crate) fn host_view(&self, uc: &Unicorn<'_, ()>) -> HostView {
        HostView {
            regs: self.regs(uc),
            el0: self.isa.access_is_el0(uc, false, Access::Read),
        }
    }

    /// The physical page the host reads for `va`'s page, as this core translates
    /// it now: through what the model says its TLB holds, else the tables (the
    /// answer a fill would get). Unlike a read through the engine it fills no TLB,
    /// Unicorn's or the model's: the guest's own first access to the page still
    /// fills it, at its own instruction. None where the core could not read it.
    pub(crate) fn host_page(&self, view: &HostView, va: u64) -> Option<u64> {
        let answer = self.shared.model.borrow_mut().fill(
            &self.shared.ram,
            &view.regs,
            va,
            Access::Read,
            view.el0,
            // Not recorded (not the guest's): no time needed.
            At {
                cpu: self.cpu,
                pc: 0,
                time: 0,
            },
            false,
        );
        match answer {
            FillAnswer::Map { pa, read: true, .. } => Some(pa & !(PAGE_SIZE - 1)),
            _ => None,
        }
    }

    /// Guest RAM at physical `pa`; false outside it (device memory is not read).
    pub(crate) fn read_ram(&self, pa: u64, buf: &mut [u8]) -> bool {
        self.shared.ram.read(pa, buf).is_ok()
    }

    /// Whether this core's Unicorn TLB may hold `entry`.
    fn may_hold(&self, entry: SoftTlbEntry) -> bool {
        let mirror = self.soft_tlb.borrow();
        match entry {
            SoftTlbEntry::Page(va) => mirror.pages.contains(&(va & !(PAGE_SIZE - 1))),
            SoftTlbEntry::WritableFrame(pa) => mirror.writable.contains(&(pa & !(PAGE_SIZE - 1))),
        }
    }

    /// Flushes this core's Unicorn TLB.
    fn flush_soft_tlb(&self, uc: &mut Unicorn<'_, ()>) {
        uc.ctl_flush_tlb().expect("TLB flush");
        let mut mirror = self.soft_tlb.borrow_mut();
        mirror.pages.clear();
        mirror.writable.clear();
    }

    pub(crate) fn regs_changed(&self) {
        self.regs_dirty.set(true);
    }

    /// The core's registers were replaced (a snapshot restored): forget what was
    /// read from them.
    pub(crate) fn forget(&self) {
        self.regs_dirty.set(true);
        self.fault.set(None);
    }

    fn regs(&self, uc: &Unicorn<'_, ()>) -> TranslationRegs {
        if !self.isa.regs_writes_seen() {
            return self.isa.translation_regs(uc);
        }
        if self.regs_dirty.replace(false) {
            self.regs.set(self.isa.translation_regs(uc));
        }
        self.regs.get()
    }

    /// The model, told this core's translation registers first: what it is about
    /// to do may compare this core's stores to page tables, and whether a page is
    /// still a table depends on every core's registers.
    pub(crate) fn model_for(&self, uc: &Unicorn<'_, ()>) -> RefMut<'_, MmuModel> {
        let regs = self.regs(uc);
        let mut model = self.shared.model.borrow_mut();
        model.set_translation_regs(self.cpu, regs);
        model
    }

    fn fill(&self, uc: &mut Unicorn<'_, ()>, va: u64, kind: MemType) -> Option<TlbEntry> {
        let access = match kind {
            MemType::WRITE => Access::Write,
            MemType::FETCH => Access::Fetch,
            _ => Access::Read,
        };
        let regs = self.regs(uc);
        let guest = self.shared.in_slice.get();
        let pc = if guest { uc.pc_read().unwrap_or(0) } else { 0 };
        let at = self.at(pc);
        let el0 = self.access_is_el0(uc, pc, access);
        let mut model = self.shared.model.borrow_mut();
        let answer = model.fill(&self.shared.ram, &regs, va, access, el0, at, guest);
        if guest && self.recorder.get().is_some() {
            // Queued without reading guest memory: this may run inside a probe.
            drop(model);
            self.hand_over(None);
            model = self.shared.model.borrow_mut();
        }
        if guest && model.has_new_pt_pages() {
            // Other cores lose write access to the new tables before they run again;
            // this one when its slice ends, soon.
            model.take_new_pt_pages();
            self.counter.shorten_to(1);
        }
        match answer {
            FillAnswer::Map {
                pa,
                read,
                mut write,
                exec,
            } => {
                // Page tables are write-protected in Unicorn: a store opens a window
                // on the page, compared at this core's next MMU event and at the end
                // of the slice, which it ends soon (then its soft TLB is flushed).
                if write && model.is_page_table(pa) {
                    if guest && access == Access::Write {
                        model.open_write_window(&self.shared.ram, pa, at);
                        self.counter.shorten_to(1);
                    } else {
                        write = false;
                    }
                }
                // Unicorn sends every store to a page whose soft-TLB entry is
                // executable through its self-modifying-code check, however often:
                // a data fill on a page of no kernel code leaves execute out (a
                // fetch there fills again, with it).
                let mut perms = Prot::NONE;
                if read {
                    perms |= Prot::READ;
                }
                if write {
                    perms |= Prot::WRITE;
                }
                if exec && (access == Access::Fetch || self.shared.holds_code(pa)) {
                    perms |= Prot::EXEC;
                }
                let mut mirror = self.soft_tlb.borrow_mut();
                mirror.pages.insert(va & !(PAGE_SIZE - 1));
                if write {
                    mirror.writable.insert(pa & !(PAGE_SIZE - 1));
                }
                // Unicorn's target pages are 1 KiB: keep the offset inside the 4 KiB page.
                Some(TlbEntry {
                    paddr: pa | (va & 0xfff),
                    perms,
                })
            }
            FillAnswer::Fault(fault) => {
                if guest {
                    self.fault.set(Some((va, access, fault)));
                }
                None
            }
        }
    }

    /// Whether the access being filled (by the instruction at `pc`, 0 for the
    /// host's own reads) has EL0's (U-mode's) permissions ([`IsaMmu::access_is_el0`]).
    /// Unicorn fills a TLB per privilege, so the answer is kept for the right one.
    fn access_is_el0(&self, uc: &Unicorn<'_, ()>, pc: u64, access: Access) -> bool {
        let unprivileged = self.shared.unprivileged_sites.borrow().contains(&pc);
        self.isa.access_is_el0(uc, unprivileged, access)
    }

    /// Tells the model of every `free_pages(addr, order)` (entry at `entry`).
    fn hook_free_pages(self: &Rc<Self>, sites: &mut CodeSites, entry: u64) {
        let m = self.clone();
        sites.add(entry, move |uc, pc| {
            let (addr, order) = (m.abi.arg(uc, 0), m.abi.arg(uc, 1).min(20));
            let at = m.at(pc);
            m.model_for(uc)
                .pages_freed(&m.shared.ram, addr, 4096 << order, at);
            m.hand_over(Some(uc));
        });
    }

    /// The abort to enter for a slice that `emu_start` ended with an MMU fault.
    pub(crate) fn take_fault(&self, uc: &mut Unicorn<'static, ()>, pc: u64) -> Option<Synchronous> {
        let (va, access, fault) = self.fault.take()?;
        Some(match access {
            Access::Fetch => Synchronous::InstructionAbort {
                far: if pc & !0xfff == va { pc } else { va },
                status: fault.status,
            },
            Access::Read | Access::Write => {
                // Unicorn gives the page; the instruction gives the byte.
                let word = read_insn(uc, pc);
                let decoded = word.and_then(|w| self.isa.data_access_address(uc, w));
                let far = decoded.filter(|a| a & !0xfff == va).unwrap_or(va);
                Synchronous::DataAbort {
                    far,
                    is_write: access == Access::Write,
                    status: fault.status,
                }
            }
        })
    }
}

/// Switches `uc` to the virtual TLB answered by the model.
pub(crate) fn install_core(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    shared: &Rc<Shared>,
    counter: &Rc<SliceCounter>,
    isa: Isa,
) -> Result<Rc<CoreMmu>, EmuError> {
    let core = Rc::new(CoreMmu {
        cpu,
        isa: isa.arch().mmu(),
        abi: isa.arch().abi(),
        shared: shared.clone(),
        counter: counter.clone(),
        regs: Cell::new(TranslationRegs::default()),
        regs_dirty: Cell::new(true),
        fault: Cell::new(None),
        recorder: OnceCell::new(),
        soft_tlb: RefCell::default(),
    });
    uc.ctl_set_tlb_type(TlbType::VIRTUAL)
        .map_err(uc_err("selecting the virtual TLB"))?;
    let c = core.clone();
    uc.add_tlb_hook(1, 0, move |uc, va, kind| c.fill(uc, va, kind))
        .map_err(uc_err("adding the TLB fill hook"))?;
    Ok(core)
}

/// The machine's handle on the simulated MMU.
pub(crate) struct SimMmu {
    pub(crate) shared: Rc<Shared>,
}

impl SimMmu {
    /// A copy of the TLB model, for a snapshot.
    pub(crate) fn model(&self) -> MmuModel {
        self.shared.model.borrow().clone()
    }

    /// Puts back a model copied by [`SimMmu::model`].
    pub(crate) fn set_model(&self, model: MmuModel) {
        *self.shared.model.borrow_mut() = model;
    }

    pub(crate) fn new(ram: &GuestRam, cpus: usize, checks: bool, isa: Isa) -> Self {
        let format = isa.arch().mmu().format();
        Self {
            shared: Rc::new(Shared {
                model: RefCell::new(MmuModel::for_format(cpus, checks, format)),
                slice_base: Cell::new(0),
                in_slice: Cell::new(false),
                // SAFETY: the machine drops its cores (and with them every hook holding
                // this) before its RAM.
                ram: unsafe { RamView::new(ram) },
                unprivileged_sites: RefCell::default(),
                code_pages: RefCell::default(),
            }),
        }
    }

    /// The hooks the model needs on the kernel's code: the ISA's
    /// ([`IsaMmu::install_translation_hooks`], and with the checks on
    /// [`IsaMmu::install_maintenance_hooks`]) and, with the checks on, one on our
    /// guest's `free_pages` (Linux's takes a virtual address and is one of many
    /// ways it frees pages).
    pub(crate) fn install_code_hooks(
        &self,
        cores: &mut [Core],
        kernel: &KernelImage,
    ) -> Result<(), EmuError> {
        *self.shared.code_pages.borrow_mut() = kernel
            .code_physical_ranges()
            .into_iter()
            .map(|r| r.start & !(PAGE_SIZE - 1)..r.end.next_multiple_of(PAGE_SIZE))
            .collect();
        let words: Vec<(u64, u32)> = kernel.code_words().collect();
        let isa = kernel.isa().arch().mmu();
        *self.shared.unprivileged_sites.borrow_mut() =
            isa.unprivileged_sites(&words).into_iter().collect();
        isa.install_translation_hooks(cores, &words)?;
        if self.shared.model.borrow().checks() {
            isa.install_maintenance_hooks(self, cores, kernel, &words)?;
            let free_pages = kernel
                .symbol_address("free_pages")
                .filter(|_| !kernel.is_boot_protocol_image());
            for core in cores.iter_mut() {
                if let (Some(mmu), Some(entry)) = (&core.mmu, free_pages) {
                    mmu.hook_free_pages(&mut core.code_sites, entry);
                }
            }
        }
        let err = uc_err("adding the MMU's code hooks");
        for core in cores.iter_mut() {
            core.code_sites.install(&mut core.uc).map_err(&err)?;
            core.uc.ctl_flush_tb().map_err(&err)?;
        }
        Ok(())
    }

    /// An SBI remote fence `core` asked for (its `ecall` at `pc`, virtual time
    /// `time`), carried out by the host.
    pub(crate) fn remote_fence(&self, core: &Core, inv: Invalidation, pc: u64, time: u64) {
        let Some(mmu) = &core.mmu else {
            return;
        };
        let at = At {
            cpu: mmu.cpu,
            pc,
            time,
        };
        let name = "sbi remote sfence.vma";
        mmu.model_for(&core.uc)
            .invalidate_on(&self.shared.ram, inv, name, at);
        mmu.hand_over(Some(&core.uc));
    }

    /// Before `cpu` runs a slice starting at virtual time `now`: flush the Unicorn TLB
    /// the model asked to flush.
    pub(crate) fn before_slice(&mut self, cores: &mut [Core], cpu: usize, now: u64) {
        let core = &mut cores[cpu];
        let mut model = self.shared.model.borrow_mut();
        match &core.mmu {
            Some(mmu) if model.take_flush(cpu, &|entry| mmu.may_hold(entry)) => {
                mmu.flush_soft_tlb(&mut core.uc)
            }
            None if model.take_flush(cpu, &|_| true) => core.uc.ctl_flush_tlb().expect("TLB flush"),
            _ => {}
        }
        drop(model);
        self.shared.slice_base.set(now);
        self.shared.in_slice.set(true);
    }

    /// After `cpu`'s slice: compare the page tables it was let write, and take the
    /// write permission back.
    pub(crate) fn after_slice(&mut self, cores: &mut [Core], cpu: usize) {
        self.shared.in_slice.set(false);
        let regs = cores[cpu].mmu.as_ref().map(|mmu| mmu.regs(&cores[cpu].uc));
        let mut model = self.shared.model.borrow_mut();
        if let Some(regs) = regs {
            model.set_translation_regs(cpu, regs);
        }
        model.take_new_pt_pages();
        if model.close_windows(&self.shared.ram, cpu) {
            let core = &mut cores[cpu];
            match &core.mmu {
                Some(mmu) => mmu.flush_soft_tlb(&mut core.uc),
                None => core.uc.ctl_flush_tlb().expect("TLB flush"),
            }
        }
        drop(model);
        let core = &cores[cpu];
        if let Some(mmu) = &core.mmu {
            mmu.hand_over(Some(&core.uc));
        }
    }
}
