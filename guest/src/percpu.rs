//! Per-CPU kernel data, found through TPIDR_EL1.
//!
//! Each CPU's `PerCpu` is written by that CPU only, except the fields documented
//! as shared (they are atomics or sit behind their own lock). TPIDR_EL1 holds the
//! address of the running CPU's slot from `init_this_cpu` on.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::arch;
use crate::config::MAX_CPUS;
use crate::sched::{RunQueue, Thread};
use crate::smp::IpiMailbox;

#[repr(C)]
pub struct PerCpu {
    /// Logical CPU number (0 = the boot CPU).
    pub id: usize,
    /// Spinlocks and explicit preempt_disable() held by this CPU; non-zero means the
    /// running thread must not be switched out. Own CPU only.
    pub preempt_count: AtomicU32,
    /// Nesting depth of hard-IRQ handlers on this CPU. Own CPU only.
    pub hardirq_depth: AtomicU32,
    /// Set (by this CPU's tick or by a waker anywhere) when the scheduler should run.
    pub need_resched: AtomicBool,
    /// The thread running on this CPU. Own CPU only.
    pub current: AtomicPtr<Thread>,
    /// This CPU's idle thread (the boot context). Set once at bring-up.
    pub idle: AtomicPtr<Thread>,
    /// Timer interrupts taken (read by the irqmask scenario).
    pub timer_irqs: AtomicU64,
    /// Threads ready to run on this CPU (shared; behind its own lock).
    pub rq: RunQueue,
    /// IPI requests addressed to this CPU (shared; behind its own lock).
    pub ipi: IpiMailbox,
}

impl PerCpu {
    /// CONTEXT: any (const).
    const fn new(id: usize) -> Self {
        PerCpu {
            id,
            preempt_count: AtomicU32::new(0),
            hardirq_depth: AtomicU32::new(0),
            need_resched: AtomicBool::new(false),
            current: AtomicPtr::new(core::ptr::null_mut()),
            idle: AtomicPtr::new(core::ptr::null_mut()),
            timer_irqs: AtomicU64::new(0),
            rq: RunQueue::new(),
            ipi: IpiMailbox::new(),
        }
    }
}

static PER_CPU: [PerCpu; MAX_CPUS] = {
    let mut i = 0;
    // `[PerCpu::new(i); N]` needs Copy; build the array element by element.
    let mut slots = [const { PerCpu::new(0) }; MAX_CPUS];
    while i < MAX_CPUS {
        slots[i] = PerCpu::new(i);
        i += 1;
    }
    slots
};

/// Points TPIDR_EL1 at CPU `id`'s slot.
///
/// CONTEXT: once per CPU at bring-up, IRQs masked, before any lock is taken.
pub fn init_this_cpu(id: usize) {
    let slot: *const PerCpu = &PER_CPU[id];
    // SAFETY: TPIDR_EL1 is reserved for this pointer; nothing else uses it.
    unsafe { arch::set_this_cpu_data(slot as usize) };
}

/// The running CPU's data.
///
/// CONTEXT: any, after `init_this_cpu`. With preemption enabled the thread may move
/// CPUs only at a switch, and threads never migrate here, so the reference stays valid
/// for the running thread.
pub fn this_cpu() -> &'static PerCpu {
    let slot = arch::this_cpu_data() as *const PerCpu;
    // SAFETY: init_this_cpu stored the address of a static PerCpu.
    unsafe { &*slot }
}

/// Logical number of the running CPU.
///
/// CONTEXT: any, after `init_this_cpu`.
pub fn cpu_id() -> usize {
    this_cpu().id
}

/// Another CPU's data (for the shared fields).
///
/// CONTEXT: any.
pub fn cpu(id: usize) -> &'static PerCpu {
    &PER_CPU[id]
}

/// Timer interrupts this CPU has taken so far.
///
/// CONTEXT: any.
pub fn timer_irqs() -> u64 {
    this_cpu().timer_irqs.load(Relaxed)
}
