//! Interrupts on RISC-V without an interrupt controller the kernel drives: the
//! timer is `sip.STIP`, and both IPIs arrive as one software interrupt
//! (`sip.SSIP`, raised through SBI), their kinds kept in a per-CPU word as Linux's
//! riscv IPI mux does.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use crate::arch;
use crate::config::MAX_CPUS;
use crate::irq::{IpiMessage, Irq};
use crate::percpu::this_cpu;

/// Hart id of each logical CPU.
static HART_ID: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// IPIs waiting on each CPU: bit 0 = reschedule, bit 1 = call function.
static PENDING_IPIS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// CONTEXT: any; pure.
fn ipi_bit(msg: IpiMessage) -> usize {
    match msg {
        IpiMessage::Reschedule => 1,
        IpiMessage::CallFunction => 2,
    }
}

/// Nothing shared to set up.
///
/// CONTEXT: boot CPU, once.
pub fn init_distributor() {}

/// Records this CPU's hart id and enables its timer and software interrupts.
///
/// CONTEXT: each CPU once at bring-up, IRQs masked.
pub fn init_this_cpu(cpu: usize, hart: u64) {
    HART_ID[cpu].store(hart, Relaxed);
    arch::enable_timer_and_software_interrupts();
}

/// Sends IPI `msg` to logical CPU `cpu`. Stores before this call are visible to
/// the target's handler.
///
/// CONTEXT: any; does not sleep.
pub fn send_ipi(cpu: usize, msg: IpiMessage) {
    PENDING_IPIS[cpu].fetch_or(ipi_bit(msg), AcqRel);
    crate::sbi::send_ipi(HART_ID[cpu].load(Relaxed));
}

/// Handles every pending interrupt of this hart with `handle`; an interrupt the
/// kernel does not use reaches it as its cause number.
///
/// CONTEXT: IRQ handler, IRQs masked.
pub fn handle_pending(mut handle: impl FnMut(Result<Irq, u32>)) {
    let me = this_cpu().id;
    loop {
        let sip = arch::read_sip();
        if sip & arch::SIP_SSIP != 0 {
            arch::clear_software_interrupt();
            let ipis = PENDING_IPIS[me].swap(0, AcqRel);
            if ipis & 1 != 0 {
                handle(Ok(Irq::Reschedule));
            }
            if ipis & 2 != 0 {
                handle(Ok(Irq::CallFunction));
            }
        } else if sip & arch::SIP_STIP != 0 {
            handle(Ok(Irq::Timer));
        } else if sip & (1 << 9) != 0 {
            handle(Err(9));
        } else {
            break;
        }
    }
}
