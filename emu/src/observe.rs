//! The run loop's seam to whatever watches a run (today the recorder): the loop
//! reports its own decisions through [`RunObserver`] and knows nothing else of
//! what an observer does with them. What happens inside a slice (lock calls,
//! system-register writes, TLB maintenance) an observer sees through hooks it
//! installs on the cores itself when it attaches.

use traces::EventKind;
use unicorn_engine::Unicorn;

/// What [`crate::Machine`]'s run loop tells an observer, in run order.
pub(crate) trait RunObserver {
    /// The scheduler gave `cpu` a slice of at most `insns` instructions, starting
    /// with `total_insns` retired by all CPUs so far.
    fn slice_starts(&self, cpu: usize, insns: u64, total_insns: u64);

    /// The run loop entered an exception on `cpu`: an IRQ when `irq` holds the
    /// INTID the handler will read (1023: spurious), else a synchronous one.
    /// PSTATE and SP are already the handler's; SPSR_EL1 holds the old PSTATE.
    fn exception_entered(
        &self,
        uc: &Unicorn<'_, ()>,
        cpu: usize,
        irq: Option<u32>,
        return_pc: u64,
        now: u64,
    );

    /// A slice has ended and been accounted: whatever the observer gathered during
    /// it is due now (before the run may stop).
    fn slice_ended(&self);
}

/// Where a part of the machine other than the run loop (the simulated MMU) puts
/// what it sees inside a slice, for the observer to take into its stream in order.
pub(crate) trait EventQueue {
    /// `kind`, seen on `cpu` at virtual `time` at `pc` (`caller`: the return
    /// address, 0 if none); `uc` is given where guest memory may be read.
    fn queue(
        &self,
        uc: Option<&Unicorn<'_, ()>>,
        cpu: usize,
        time: u64,
        pc: u64,
        caller: u64,
        kind: EventKind,
    );
}
