//! IRQ dispatch and the per-CPU timer tick.

use core::sync::atomic::{AtomicUsize, Ordering::*};

use crate::arch::{self, write_sysreg};
use crate::config::TICK_COUNTS;
use crate::gic;
use crate::percpu::this_cpu;

/// Arms this CPU's virtual timer for the next tick.
///
/// CONTEXT: IRQs masked (bring-up or the timer IRQ itself), or a caller that owns
/// the timer (the irqmask scenario).
pub fn arm_tick() {
    arm_timer_at(arch::counter() + TICK_COUNTS);
}

/// Programs the virtual timer to fire at counter value `deadline` and enables it.
///
/// CONTEXT: as arm_tick.
pub fn arm_timer_at(deadline: u64) {
    // SAFETY: the virtual timer belongs to this CPU's kernel; enable, unmasked.
    unsafe {
        write_sysreg!("cntv_cval_el0", deadline);
        write_sysreg!("cntv_ctl_el0", 1);
    }
    arch::isb();
}

/// Whether the virtual timer's condition is met (CNTV_CTL_EL0.ISTATUS).
///
/// CONTEXT: any.
pub fn timer_condition_met() -> bool {
    arch::read_sysreg!("cntv_ctl_el0") & (1 << 2) != 0
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
pub fn handle_irq() {
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
