//! One core's side of the simulated MMU ([`crate::simmu`] wires it in): the
//! fill hook's answers from the model, the host's own reads through the core's
//! translation, and what the core's Unicorn TLB may hold. It knows the core only
//! by its number, its engine and its slice counter.

use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::rc::Rc;

use traces::riscv64::PageTableFormat;
use traces::EventKind;
use unicorn_engine::{MemType, Prot, TlbEntry, Unicorn};

use crate::arch::aarch64::exception::Synchronous;
use crate::arch::aarch64::mmu::{Access, Fault, TranslationRegs, PAGE_SIZE};
use crate::code_sites::CodeSites;
use crate::memory::{read_insn, GuestMemory};
use crate::observe::EventQueue;
use crate::record::abi::IsaAbi;
use crate::slice_counter::SliceCounter;
use crate::tlb::{At, FillAnswer, MmuModel, RamView, SoftTlbEntry};

/// What a core's MMU asks of its instruction set: one per ISA, in
/// `arch/<isa>/simmu.rs`; [`crate::arch::Arch::mmu`] picks it (with its
/// [`crate::simmu::IsaMmuHooks`]).
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
    pub(crate) slice_base: Cell<u64>,
    /// Whether a guest slice is running (fills outside one are the host's own reads).
    pub(crate) in_slice: Cell<bool>,
    pub(crate) ram: RamView,
    /// The kernel's `ldtr`/`sttr` instructions (Linux's uaccess): at EL1 they
    /// access memory with EL0's permissions.
    pub(crate) unprivileged_sites: RefCell<traces::fx::FxHashSet<u64>>,
    /// Physical pages of the kernel's executable segments, page-aligned.
    pub(crate) code_pages: RefCell<Vec<std::ops::Range<u64>>>,
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
    recorder: OnceCell<Rc<dyn EventQueue>>,
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
    /// CPU `cpu`'s side, translating as `isa` says, with `abi` to name the
    /// caller of what it records.
    pub(crate) fn new(
        cpu: usize,
        isa: &'static dyn IsaMmu,
        abi: &'static dyn IsaAbi,
        shared: &Rc<Shared>,
        counter: &Rc<SliceCounter>,
    ) -> Self {
        Self {
            cpu,
            isa,
            abi,
            shared: shared.clone(),
            counter: counter.clone(),
            regs: Cell::new(TranslationRegs::default()),
            regs_dirty: Cell::new(true),
            fault: Cell::new(None),
            recorder: OnceCell::new(),
            soft_tlb: RefCell::default(),
        }
    }

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
    pub(crate) fn start_recording(&self, recorder: Rc<dyn EventQueue>) {
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
    pub(crate) fn may_hold(&self, entry: SoftTlbEntry) -> bool {
        let mirror = self.soft_tlb.borrow();
        match entry {
            SoftTlbEntry::Page(va) => mirror.pages.contains(&(va & !(PAGE_SIZE - 1))),
            SoftTlbEntry::WritableFrame(pa) => mirror.writable.contains(&(pa & !(PAGE_SIZE - 1))),
        }
    }

    /// Flushes this core's Unicorn TLB.
    pub(crate) fn flush_soft_tlb(&self, uc: &mut Unicorn<'_, ()>) {
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

    pub(crate) fn regs(&self, uc: &Unicorn<'_, ()>) -> TranslationRegs {
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

    pub(crate) fn fill(
        &self,
        uc: &mut Unicorn<'_, ()>,
        va: u64,
        kind: MemType,
    ) -> Option<TlbEntry> {
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
    pub(crate) fn hook_free_pages(self: &Rc<Self>, sites: &mut CodeSites, entry: u64) {
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
