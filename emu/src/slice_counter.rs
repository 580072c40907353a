//! What a core's hooks write during a slice: the instructions counted so far, the
//! budget, where the slice is to stop and why, and the hooks run at block starts
//! and `msr daif` sites. Shared (`Rc`) by every hook on the core, the simulated
//! MMU and the recorder; it knows none of them.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;

use crate::board::IrqWatch;

/// Per-core state written by the hooks during a slice (`Cell`s: hooks run inside
/// `emu_start`, while the machine is borrowed by the run loop).
#[derive(Debug, Default)]
pub(crate) struct SliceCounter {
    /// Instructions of the blocks run this slice, each counted whole as it starts.
    pub(crate) executed: Cell<u64>,
    /// The core's instructions before this slice.
    pub(crate) retired_earlier: Cell<u64>,
    pub(crate) budget: Cell<u64>,
    pub(crate) stop_requested: Cell<bool>,
    pub(crate) block_start: Cell<u64>,
    pub(crate) block_size: Cell<u32>,
    /// Exception number from the INTR hook.
    pub(crate) exception: Cell<Option<u32>>,
    /// The last block run ends in a WFE that waits (`arch/aarch64/wfe.rs`).
    pub(crate) wfe_wait: Cell<bool>,
    /// arm64: the machine is stepping through a block up to an instruction inside
    /// it (`arch/aarch64/step.rs`), with the guest's own debug state. The block hook
    /// then leaves the budget and IRQs alone, as if the block ran whole.
    pub(crate) stepping: Cell<Option<crate::arch::aarch64::debug_state::GuestDebug>>,
    /// The kernel's WFE/SEV sites (set once the kernel is known).
    pub(crate) event_sites: OnceCell<Rc<crate::arch::aarch64::wfe::EventSites>>,
    /// The guest issued an inner-shareable TLBI: other cores must flush their TLBs.
    pub(crate) tlb_broadcast: Cell<bool>,
    /// The guest invalidated the instruction cache: other cores drop translated code.
    pub(crate) code_broadcast: Cell<bool>,
    /// Test aid ([`crate::MachineConfig::churn_soft_tlb`]): flush Unicorn's soft TLB
    /// every this many blocks (0: never).
    pub(crate) churn_every: Cell<u64>,
    pub(crate) blocks: Cell<u64>,
    /// Instructions into the slice after which this core's virtual timer output
    /// rises (`u64::MAX`: it does not).
    pub(crate) timer_fires_after: Cell<u64>,
    /// This core's IRQ line may be asserted: block starts check whether the IRQ can
    /// be taken there.
    pub(crate) irq_maybe_pending: Cell<bool>,
    /// Where the block hook stopped the slice for an IRQ, if it did.
    pub(crate) irq_stop: Cell<Option<IrqStop>>,
    /// RISC-V: the trap vector (`stvec`) as the slice started; QEMU enters it for
    /// the interrupts it takes, which the block hook counts there.
    pub(crate) trap_vector: Cell<u64>,
    /// RISC-V: interrupts QEMU took during the slice.
    pub(crate) interrupts_taken: Cell<u64>,
    /// Hooks the block hook runs where a block starts (see [`crate::block_start`]).
    pub(crate) block_starts: crate::block_start::BlockStartHooks<SliceCounter>,
    /// arm64: hooks the MSR hook runs at `msr daif, Xt` sites.
    pub(crate) daif_writes: crate::code_sites::InsnSites<SliceCounter>,
}

/// Where a slice stops so that an IRQ is taken at its instruction boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IrqStop {
    /// Before the block that was about to start.
    BlockStart,
    /// Before the instruction at this address, inside the block that was about to
    /// start, where the core's timer fires: the machine runs the block up to there.
    Within(u64),
}

impl SliceCounter {
    /// Resets the counter for a slice of `budget` instructions; `irqs` says what
    /// the block hook watches for.
    pub(crate) fn start(&self, budget: u64, retired_earlier: u64, irqs: IrqWatch) {
        self.executed.set(0);
        self.retired_earlier.set(retired_earlier);
        self.budget.set(budget.max(1));
        self.stop_requested.set(false);
        self.block_start.set(u64::MAX);
        self.block_size.set(0);
        self.exception.set(None);
        self.wfe_wait.set(false);
        self.timer_fires_after
            .set(irqs.timer_fires_after.unwrap_or(u64::MAX));
        self.irq_maybe_pending.set(irqs.line_high);
        self.irq_stop.set(None);
        self.interrupts_taken.set(0);
    }

    /// Notes that something may have asserted the core's IRQ line (`high`: a GIC
    /// access left it asserted, or the timer output is high).
    pub(crate) fn irq_line_may_have_risen(&self, high: bool) {
        if high {
            self.irq_maybe_pending.set(true);
        }
    }

    /// Whether the instructions run so far have reached the core's timer deadline;
    /// once they have, the deadline is forgotten (the caller raises the line).
    pub(crate) fn take_timer_deadline(&self) -> bool {
        let due = self.executed.get() >= self.timer_fires_after.get();
        if due {
            self.timer_fires_after.set(u64::MAX);
        }
        due
    }

    /// The stop before the timer deadline's instruction, if it falls inside the
    /// block of `insns` instructions at `addr` about to run.
    pub(crate) fn timer_deadline_within(&self, addr: u64, insns: u64) -> Option<IrqStop> {
        let (executed, fires_after) = (self.executed.get(), self.timer_fires_after.get());
        (fires_after > executed && fires_after - executed < insns)
            .then(|| IrqStop::Within(addr + 4 * (fires_after - executed)))
    }

    /// Whether the slice stopped at `pc` to wait after a WFE that found no event.
    pub(crate) fn waits_after_wfe_at(&self, pc: u64) -> bool {
        self.wfe_wait.get()
            && self
                .event_sites
                .get()
                .is_some_and(|sites| sites.after_wait(pc))
    }

    /// Whether the block of `insns` instructions about to start needs a look for an
    /// IRQ ([`crate::arch::Arch::irq_stop`]): one may be pending, or the timer fires by its end. The
    /// common answer, no, costs two comparisons.
    pub(crate) fn irq_due_by(&self, insns: u64) -> bool {
        let before_timer = self
            .timer_fires_after
            .get()
            .saturating_sub(self.executed.get());
        self.irq_maybe_pending.get() || before_timer < insns
    }

    /// Instructions retired when the slice stopped at `pc` in the middle of (or at the
    /// end of) the last block entered; `pc` itself not counted.
    pub(crate) fn retired_before(&self, pc: u64) -> u64 {
        let (start, size) = (self.block_start.get(), self.block_size.get() as u64);
        if start != u64::MAX && pc >= start && pc <= start + size {
            self.executed.get() - size / 4 + (pc - start) / 4
        } else {
            self.executed.get()
        }
    }

    /// The core's instructions since power-on, up to (not including) `pc` in this slice.
    pub(crate) fn retired_total_before(&self, pc: u64) -> u64 {
        self.retired_earlier.get() + self.retired_before(pc)
    }

    /// Shortens the slice so that it ends at the first block boundary at least `insns`
    /// instructions from now.
    pub(crate) fn shorten_to(&self, insns: u64) {
        self.budget
            .set(self.budget.get().min(self.executed.get() + insns.max(1)));
    }
}
