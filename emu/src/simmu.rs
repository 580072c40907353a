//! Wiring of the simulated MMU ([`crate::tlb::MmuModel`] over [`crate::arch::aarch64::mmu`]) into the
//! cores: Unicorn's virtual-TLB mode and its fill hook, page-table pages
//! write-protected in Unicorn, and a code hook on `free_pages`. What differs by
//! instruction set is asked of an [`IsaMmuHooks`] (`arch/<isa>/simmu.rs`): the table
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
//! threads) go through [`CoreMmu::host_page`](crate::core_mmu::CoreMmu::host_page), not through Unicorn's TLB, so every
//! fill during a slice is the guest's, at the instruction that made it: recording
//! changes nothing the model sees.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use unicorn_engine::{TlbType, Unicorn};

use crate::arch::aarch64::mmu::PAGE_SIZE;
use crate::core_mmu::{CoreMmu, IsaMmu, Shared};
use crate::cpu::Core;
use crate::error::{uc_err, EmuError};
use crate::kernel::KernelImage;
use crate::memory::GuestRam;
use crate::slice_counter::SliceCounter;
use crate::tlb::{At, Invalidation, MmuModel, RamView};
use crate::Isa;

/// The hooks an instruction set's MMU needs on the cores, beside what a core's
/// MMU asks of it ([`IsaMmu`]).
pub(crate) trait IsaMmuHooks: IsaMmu {
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

/// Switches `uc` to the virtual TLB answered by the model.
pub(crate) fn install_core(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    shared: &Rc<Shared>,
    counter: &Rc<SliceCounter>,
    isa: Isa,
) -> Result<Rc<CoreMmu>, EmuError> {
    let arch = isa.arch();
    let core = Rc::new(CoreMmu::new(cpu, arch.mmu(), arch.abi(), shared, counter));
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
    /// ([`IsaMmuHooks::install_translation_hooks`], and with the checks on
    /// [`IsaMmuHooks::install_maintenance_hooks`]) and, with the checks on, one on our
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
            cpu: mmu.cpu(),
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
