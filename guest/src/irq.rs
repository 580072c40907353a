//! IRQ dispatch and the per-CPU timer tick.

use core::sync::atomic::{AtomicUsize, Ordering::*};

use crate::arch;
use crate::config::TICK_COUNTS;
use crate::percpu::this_cpu;

/// Arms this CPU's virtual timer for the next tick.
///
/// CONTEXT: IRQs masked (bring-up or the timer IRQ itself), or a caller that owns
/// the timer (the irqmask scenario).
pub fn arm_tick() {
    arm_timer_at(arch::counter() + TICK_COUNTS);
}

/// Programs this CPU's timer to fire at counter value `deadline`.
///
/// CONTEXT: as arm_tick.
pub fn arm_timer_at(deadline: u64) {
    arch::set_timer(deadline);
}

/// Whether this CPU's timer has reached its deadline (its interrupt pending).
///
/// CONTEXT: any.
pub fn timer_condition_met() -> bool {
    arch::timer_pending()
}

/// The IPI messages the kernel sends, numbered as Linux numbers them on arm64 and
/// RISC-V alike: the host reads the number at `smp_cross_call`'s entry.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IpiMessage {
    /// Run the scheduler.
    Reschedule = 0,
    /// Run the queued cross-CPU calls.
    CallFunction = 1,
}

/// The interrupts the kernel takes, whatever the interrupt controller calls them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Irq {
    /// This CPU's timer (the arm64 path dispatches GIC numbers directly).
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    Timer,
    /// IPI: run the scheduler.
    Reschedule,
    /// IPI: run the queued cross-CPU calls.
    CallFunction,
}

/// A function every CPU's timer tick calls (0 = none): scenarios use it for
/// work in hard-IRQ context and for watchdogs. An atomic: set by a scenario
/// thread, read by the ticks.
static TICK_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with None removes) the function the timer tick calls on every
/// CPU, in hard-IRQ context with IRQs masked.
///
/// CONTEXT: any.
pub fn set_tick_hook(hook: Option<fn()>) {
    TICK_HOOK.store(hook.map_or(0, |f| f as usize), Release);
}

/// CONTEXT: hard-IRQ (the tick), IRQs masked.
fn run_tick_hook() {
    let raw = TICK_HOOK.load(Acquire);
    if raw != 0 {
        // SAFETY: only set_tick_hook stores non-zero values, and those are fn().
        let hook: fn() = unsafe { core::mem::transmute::<usize, fn()>(raw) };
        hook();
    }
}

/// CONTEXT: hard-IRQ on this CPU, IRQs masked.
fn on_timer_tick() {
    let cpu = this_cpu();
    cpu.timer_irqs.fetch_add(1, Relaxed);
    arm_tick();
    run_tick_hook();
    // Round-robin: give the next runnable thread its turn.
    cpu.need_resched.store(true, Relaxed);
}

/// Handles every pending interrupt, then preempts the interrupted thread if a
/// reschedule is due and it is preemptible.
///
/// CONTEXT: hard-IRQ (from the vectors), IRQs masked throughout.
#[cfg(target_arch = "aarch64")]
pub fn handle_irq() {
    use crate::gic;
    let cpu = this_cpu();
    cpu.hardirq_depth.fetch_add(1, Relaxed);
    loop {
        let iar = gic::acknowledge();
        let id = iar & 0x3ff;
        if id >= gic::SPURIOUS {
            break;
        }
        match id {
            gic::PPI_VIRTUAL_TIMER => on_timer_tick(),
            gic::SGI_RESCHEDULE => cpu.need_resched.store(true, Relaxed),
            gic::SGI_CALL_FUNCTION => crate::smp::handle_call_function_ipi(),
            other => panic!("unexpected interrupt {}", other),
        }
        gic::end_of_interrupt(iar);
    }
    cpu.hardirq_depth.fetch_sub(1, Relaxed);
    crate::sched::preempt_from_irq();
}

/// As the arm64 `handle_irq`, with the RISC-V interrupt causes.
///
/// CONTEXT: hard-IRQ (from the trap vector), IRQs masked throughout.
#[cfg(target_arch = "riscv64")]
pub fn handle_irq() {
    let cpu = this_cpu();
    cpu.hardirq_depth.fetch_add(1, Relaxed);
    arch::irqchip::handle_pending(|irq| match irq {
        Ok(Irq::Timer) => on_timer_tick(),
        Ok(Irq::Reschedule) => cpu.need_resched.store(true, Relaxed),
        Ok(Irq::CallFunction) => crate::smp::handle_call_function_ipi(),
        Err(other) => panic!("unexpected interrupt {}", other),
    });
    cpu.hardirq_depth.fetch_sub(1, Relaxed);
    crate::sched::preempt_from_irq();
}
