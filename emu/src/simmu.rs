//! Wiring of the simulated MMU ([`crate::tlb::MmuModel`] over [`crate::arch::aarch64::mmu`]) into the
//! cores: Unicorn's virtual-TLB mode and its fill hook, the TLBI and translation
//! register writes seen by the SYS/MSR hooks, page-table pages write-protected in
//! Unicorn, code hooks on the kernel's DSBs (and the ISBs right after maintenance) and
//! on `free_pages`.
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
//!   per iteration, so only ISBs within 4 instructions of a TLBI or DSB are hooked.
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

use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::rc::Rc;

use traces::aarch64::TlbiScope;
use traces::{BarrierOption, EventKind};
use unicorn_engine::{MemType, Prot, RegisterARM64, RegisterRISCV, TlbEntry, TlbType, Unicorn};

use crate::arch::aarch64::exception::Synchronous;
use crate::arch::aarch64::insn;
use crate::arch::aarch64::mmu::{Access, Fault, TranslationRegs, PAGE_SIZE};
use crate::arch::aarch64::regs::{read_xreg, translation_regs};
use crate::arch::aarch64::syshook::SysAccess;
use crate::cpu::{read_insn, Core, SliceCounter};
use crate::error::{uc_err, EmuError};
use crate::kernel::KernelImage;
use crate::memory::GuestRam;
use crate::record::abi::Abi;
use crate::record::Recorder;
use crate::tlb::{At, Barrier, FillAnswer, Invalidation, MmuModel, RamView};
use crate::Isa;

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
    /// Which registers select the tables and hold the return address.
    abi: Abi,
    shared: Rc<Shared>,
    counter: Rc<SliceCounter>,
    regs: Cell<TranslationRegs>,
    regs_dirty: Cell<bool>,
    /// The translation fault the fill hook refused an access with.
    fault: Cell<Option<(u64, Access, Fault)>>,
    /// Set when the machine starts recording (see the module doc).
    recorder: OnceCell<Rc<Recorder>>,
}

impl CoreMmu {
    fn at(&self, pc: u64) -> At {
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

    /// A hooked barrier at `pc`, after the model saw it.
    fn record_barrier(&self, uc: &Unicorn<'_, ()>, barrier: Barrier, at: At) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        self.hand_over(Some(uc));
        let kind = match barrier {
            Barrier::Dsb(crm) => EventKind::Dsb {
                option: BarrierOption(crm as u8),
            },
            Barrier::Isb => EventKind::Isb,
        };
        recorder.queue(Some(uc), self.cpu, at.time, at.pc, self.abi.link(uc), kind);
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

    fn regs<D>(&self, uc: &Unicorn<'_, D>) -> TranslationRegs {
        if self.abi.0 == Isa::Riscv64 {
            // No hook sees a `csrw satp`: read it every time (one register).
            let satp = uc.reg_read(RegisterRISCV::SATP).unwrap_or(0);
            return TranslationRegs::Sv39 { satp };
        }
        if self.regs_dirty.replace(false) {
            self.regs.set(translation_regs(uc));
        }
        self.regs.get()
    }

    /// The model, told this core's translation registers first: what it is about
    /// to do may compare this core's stores to page tables, and whether a page is
    /// still a table depends on every core's registers.
    fn model_for<D>(&self, uc: &Unicorn<'_, D>) -> RefMut<'_, MmuModel> {
        let regs = self.regs(uc);
        let mut model = self.shared.model.borrow_mut();
        model.set_translation_regs(self.cpu, regs);
        model
    }

    /// From the MSR hook: a write to a translation register invalidates the cache.
    pub(crate) fn on_msr(&self, access: &SysAccess<'_>) {
        let cp = access.cp;
        // SCTLR_EL1, TTBR0/1_EL1, TCR_EL1 (op0 3, op1 0, CRn 1 or 2, CRm 0).
        if cp.op0 == 3 && cp.op1 == 0 && cp.crm == 0 && (cp.crn == 1 || cp.crn == 2) {
            self.regs_dirty.set(true);
        }
    }

    /// From the SYS hook: TLB maintenance reaches the model before it runs.
    pub(crate) fn on_sys(&self, access: &SysAccess<'_>) {
        let cp = access.cp;
        if cp.op1 != 0 || cp.crn != 8 {
            return;
        }
        let (op, broadcast) = trace_tlbi(cp.op1, cp.crm, cp.op2);
        let at = self.at(access.pc());
        if let (Some(scope), Some(uc)) = (TlbiScope::of(op, cp.val), access.engine()) {
            let name = op.mnemonic(broadcast);
            self.model_for(&uc)
                .tlbi(&self.shared.ram, scope, broadcast, name, at);
        }
        if let (Some(recorder), Some(uc)) = (self.recorder.get(), access.engine()) {
            self.hand_over(Some(&uc));
            let kind = EventKind::Tlbi {
                op,
                broadcast,
                operand: cp.val,
            };
            recorder.queue(
                Some(&uc),
                self.cpu,
                at.time,
                at.pc,
                self.abi.link(&uc),
                kind,
            );
        }
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
    /// host's own reads) has EL0's (U-mode's) permissions: the core runs at EL0, or
    /// at EL1 one of the kernel's `ldtr`/`sttr` (Linux's uaccess) makes it. Unicorn
    /// fills a TLB per privilege, so the answer is kept for the right one.
    fn access_is_el0<D>(&self, uc: &Unicorn<'_, D>, pc: u64, access: Access) -> bool {
        match self.abi.0 {
            Isa::Riscv64 => uc.reg_read(RegisterRISCV::PRIV).is_ok_and(|p| p == 0),
            Isa::Aarch64 => {
                let pstate = uc.reg_read(RegisterARM64::PSTATE).unwrap_or(0b0100);
                pstate & 0b1100 == 0
                    || (access != Access::Fetch
                        && self.shared.unprivileged_sites.borrow().contains(&pc))
            }
        }
    }

    /// Tells the model of every `free_pages(addr, order)` (entry at `entry`).
    fn hook_free_pages(
        self: &Rc<Self>,
        uc: &mut Unicorn<'static, ()>,
        entry: u64,
    ) -> Result<(), EmuError> {
        let m = self.clone();
        uc.add_code_hook(entry, entry, move |uc, pc, _| {
            let (addr, order) = (m.abi.arg(uc, 0), m.abi.arg(uc, 1).min(20));
            let at = m.at(pc);
            m.model_for(uc)
                .pages_freed(&m.shared.ram, addr, 4096 << order, at);
            m.hand_over(Some(uc));
        })
        .map_err(uc_err("adding the free_pages hook"))?;
        Ok(())
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
                let decoded = match self.abi.0 {
                    Isa::Aarch64 => word
                        .and_then(insn::decode_mem_access)
                        .map(|a| a.address(|r| read_xreg(uc, r))),
                    Isa::Riscv64 => {
                        word.and_then(|w| crate::arch::riscv64::hart::access_address(uc, w))
                    }
                };
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

/// RISC-V: Unicorn's soft TLB is flushed at every CSR instruction on `satp`. QEMU
/// keeps it across a change of mode, so the fetches between turning translation on
/// and the `sfence.vma` after it would reach the model only when host timing has
/// refilled the soft TLB meanwhile (DESIGN.md): flushed here, they always do.
fn install_satp_hooks(cores: &mut [Core], words: &[(u64, u32)]) -> Result<(), EmuError> {
    const SATP: u32 = 0x180;
    let sites: Vec<u64> = words
        .iter()
        .filter(|&&(_, w)| w & 0x7f == 0x73 && (w >> 12) & 7 != 0 && (w >> 12) & 7 != 4)
        .filter(|&&(_, w)| w >> 20 == SATP)
        .map(|&(addr, _)| addr)
        .collect();
    for core in cores.iter_mut() {
        for &addr in &sites {
            core.uc
                .add_code_hook(addr, addr, |uc, _, _| {
                    let _ = uc.ctl_flush_tlb();
                })
                .map_err(uc_err("adding a satp hook"))?;
        }
        core.uc
            .ctl_flush_tb()
            .map_err(uc_err("adding satp hooks"))?;
    }
    Ok(())
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
        abi: Abi(isa),
        shared: shared.clone(),
        counter: counter.clone(),
        regs: Cell::new(TranslationRegs::default()),
        regs_dirty: Cell::new(true),
        fault: Cell::new(None),
        recorder: OnceCell::new(),
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
        let format = match isa {
            Isa::Aarch64 => traces::riscv64::PageTableFormat::Vmsa,
            Isa::Riscv64 => traces::riscv64::PageTableFormat::Sv39,
        };
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

    /// Code hooks on every DSB/ISB of the kernel, at its link address and where it
    /// runs before the MMU is on (a boot-protocol kernel's physical alias), and on
    /// our guest's `free_pages` (checks only; Linux's takes a virtual address and
    /// is one of many ways it frees pages).
    pub(crate) fn install_barrier_hooks(
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
        if kernel.isa() == Isa::Riscv64 {
            install_satp_hooks(cores, &words)?;
        } else {
            *self.shared.unprivileged_sites.borrow_mut() = words
                .iter()
                .filter(|&&(_, word)| insn::is_unprivileged(word))
                .map(|&(addr, _)| addr)
                .collect();
        }
        if !self.shared.model.borrow().checks() {
            return Ok(());
        }
        if kernel.isa() == Isa::Riscv64 {
            return self.install_sfence_hooks(cores, kernel, &words);
        }
        let mut barriers = barrier_sites(&words);
        let aliases: Vec<_> = barriers
            .iter()
            .filter_map(|&(addr, barrier)| Some((kernel.physical_alias(addr)?, barrier)))
            .collect();
        barriers.extend(aliases);
        let free_pages = kernel
            .symbol_address("free_pages")
            .filter(|_| !kernel.is_boot_protocol_image());
        for core in cores.iter_mut() {
            let Some(mmu) = core.mmu.clone() else {
                continue;
            };
            for &(addr, barrier) in &barriers {
                let m = mmu.clone();
                core.uc
                    .add_code_hook(addr, addr, move |uc, pc, _| {
                        let at = m.at(pc);
                        m.model_for(uc).barrier(&m.shared.ram, m.cpu);
                        m.record_barrier(uc, barrier, at);
                    })
                    .map_err(uc_err("adding a barrier hook"))?;
            }
            if let Some(entry) = free_pages {
                mmu.hook_free_pages(&mut core.uc, entry)?;
            }
            core.uc
                .ctl_flush_tb()
                .map_err(uc_err("adding barrier hooks"))?;
        }
        Ok(())
    }

    /// RISC-V: code hooks on every `sfence.vma` of the kernel (no CSR or system
    /// instruction hook exists there) and on our guest's `free_pages`.
    fn install_sfence_hooks(
        &self,
        cores: &mut [Core],
        kernel: &KernelImage,
        words: &[(u64, u32)],
    ) -> Result<(), EmuError> {
        let sites: Vec<(u64, u32, u32)> = words
            .iter()
            .filter(|&&(_, word)| word & 0xfe00_7fff == 0x1200_0073)
            .map(|&(addr, word)| (addr, (word >> 15) & 31, (word >> 20) & 31))
            .collect();
        let free_pages = kernel.symbol_address("free_pages");
        for core in cores.iter_mut() {
            let Some(mmu) = core.mmu.clone() else {
                continue;
            };
            for &(addr, rs1, rs2) in &sites {
                let m = mmu.clone();
                core.uc
                    .add_code_hook(addr, addr, move |uc, pc, _| {
                        // rs1 = x0: every address; rs2 = x0: every ASID.
                        let (start, len) = match rs1 {
                            0 => (0, 0),
                            _ => (m.abi.xreg(uc, rs1) & !(PAGE_SIZE - 1), PAGE_SIZE),
                        };
                        let asid = (rs2 != 0).then(|| m.abi.xreg(uc, rs2) as u16);
                        let inv = Invalidation {
                            cpus: 1 << m.cpu,
                            start,
                            len,
                            asid,
                        };
                        let name = if rs1 == 0 {
                            "sfence.vma"
                        } else {
                            "sfence.vma va"
                        };
                        let at = m.at(pc);
                        m.model_for(uc).invalidate_on(&m.shared.ram, inv, name, at);
                        m.hand_over(Some(uc));
                    })
                    .map_err(uc_err("adding an sfence.vma hook"))?;
            }
            if let Some(entry) = free_pages {
                mmu.hook_free_pages(&mut core.uc, entry)?;
            }
            core.uc
                .ctl_flush_tb()
                .map_err(uc_err("adding sfence.vma hooks"))?;
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
        if self.shared.model.borrow_mut().take_flush(cpu) {
            cores[cpu].uc.ctl_flush_tlb().expect("TLB flush");
        }
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
            cores[cpu].uc.ctl_flush_tlb().expect("TLB flush");
        }
        drop(model);
        let core = &cores[cpu];
        if let Some(mmu) = &core.mmu {
            mmu.hand_over(Some(&core.uc));
        }
    }
}

/// A TLBI (SYS with op1 0, CRn 8) as the trace names it, and whether it is broadcast
/// (…OS, range …IS/…OS, …IS: CRm 1, 2, 3, 5). The ops the model decodes get their
/// kind; the others are `Other(op1:CRm:op2)`.
fn trace_tlbi(op1: u32, crm: u32, op2: u32) -> (traces::TlbiOp, bool) {
    use traces::TlbiOp as T;
    let op = match (crm, op2) {
        (1 | 3 | 7, 0) => T::Vmalle1,
        (1 | 3 | 7, 1) => T::Vae1,
        (1 | 3 | 7, 2) => T::Aside1,
        (1 | 3 | 7, 3) => T::Vaae1,
        (1 | 3 | 7, 5) => T::Vale1,
        (1 | 3 | 7, 7) => T::Vaale1,
        _ => T::Other(((op1 << 7) | (crm << 3) | op2) as u16),
    };
    (op, matches!(crm, 1 | 2 | 3 | 5))
}

/// Whether `word` is a TLBI (SYS with CRn = 8).
fn is_tlbi(word: u32) -> bool {
    word & 0xfff8_f000 == 0xd508_8000
}

/// The barriers to hook: every DSB, and the ISBs that follow TLB maintenance or a DSB
/// closely (within 4 instructions). ISBs elsewhere, such as in spin-wait loops, are
/// left alone: they are hot and cannot complete a TLBI.
fn barrier_sites(words: &[(u64, u32)]) -> Vec<(u64, Barrier)> {
    let mut sites = Vec::new();
    for (i, &(addr, word)) in words.iter().enumerate() {
        match Barrier::decode(word) {
            Some(Barrier::Isb) => {
                let recent = &words[i.saturating_sub(4)..i];
                let after_maintenance = recent.iter().any(|&(a, w)| {
                    a + 16 >= addr
                        && (is_tlbi(w) || matches!(Barrier::decode(w), Some(Barrier::Dsb(_))))
                });
                if after_maintenance {
                    sites.push((addr, Barrier::Isb));
                }
            }
            Some(b) => sites.push((addr, b)),
            None => {}
        }
    }
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlbis_keep_their_kind_in_the_trace() {
        use traces::TlbiOp as T;
        let ops = [
            T::Vmalle1,
            T::Vae1,
            T::Aside1,
            T::Vaae1,
            T::Vale1,
            T::Vaale1,
        ];
        for (crm, broadcast) in [(1, true), (3, true), (7, false)] {
            for (op2, op) in [0, 1, 2, 3, 5, 7].into_iter().zip(ops) {
                assert_eq!(
                    trace_tlbi(0, crm, op2),
                    (op, broadcast),
                    "crm {crm} op2 {op2}"
                );
            }
        }
        assert_eq!(trace_tlbi(0, 3, 3).0.mnemonic(true), "vaae1is");
        // tlbi rvae1is (a range form the model does not decode): op1 0, CRm 2, op2 1.
        assert_eq!(trace_tlbi(0, 2, 1), (T::Other((2 << 3) | 1), true));
        assert_eq!(TlbiScope::of(trace_tlbi(0, 2, 1).0, 0), None);
        assert_eq!(trace_tlbi(0, 7, 3), (T::Vaae1, false));
    }

    #[test]
    fn hooks_dsbs_and_the_isbs_after_maintenance_only() {
        const DSB_ISH: u32 = 0xd503_3b9f;
        const DSB_ISHST: u32 = 0xd503_3a9f;
        const ISB: u32 = 0xd503_3fdf;
        const TLBI_VAAE1IS: u32 = 0xd508_8360;
        const NOP: u32 = 0xd503_201f;
        let code = [
            DSB_ISHST,
            TLBI_VAAE1IS,
            DSB_ISH,
            ISB,
            NOP,
            NOP,
            NOP,
            NOP,
            NOP,
            ISB,
            TLBI_VAAE1IS,
            ISB,
        ];
        let words: Vec<(u64, u32)> = code
            .iter()
            .enumerate()
            .map(|(i, &w)| (0x1000 + 4 * i as u64, w))
            .collect();
        assert!(is_tlbi(TLBI_VAAE1IS) && !is_tlbi(DSB_ISH) && !is_tlbi(NOP));
        assert_eq!(
            barrier_sites(&words),
            vec![
                (0x1000, Barrier::Dsb(0b1010)),
                (0x1008, Barrier::Dsb(0b1011)),
                (0x100c, Barrier::Isb),
                (0x102c, Barrier::Isb),
            ]
        );
    }
}
