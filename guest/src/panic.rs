//! The panic path: one `PANIC: <message> at <file>:<line>` line, then PSCI
//! SYSTEM_OFF with status 1 (docs/machine.md, "Ending a run").

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering::*};

use crate::percpu::this_cpu;

/// CPU number + 1 of the first CPU to panic; 0 while nobody has.
static PANIC_OWNER: AtomicU32 = AtomicU32::new(0);

/// Whether some CPU is on its way down.
///
/// CONTEXT: any.
pub fn panicking() -> bool {
    PANIC_OWNER.load(Relaxed) != 0
}

#[panic_handler]
fn on_panic(info: &PanicInfo) -> ! {
    crate::sync::local_irq_disable();
    let me = this_cpu().id as u32 + 1;
    match PANIC_OWNER.compare_exchange(0, me, AcqRel, Acquire) {
        Ok(_) => {}
        // A panic while printing the first one: give up on printing.
        Err(owner) if owner == me => {
            crate::console::print_raw("\nPANIC: nested panic while panicking\n");
            crate::psci::system_off(1)
        }
        // Another CPU is already reporting; let it finish and power off.
        Err(_) => loop {
            crate::arch::wait_for_interrupt();
        },
    }
    match info.location() {
        Some(at) => crate::console::print_line_dying(format_args!(
            "PANIC: {} at {}:{}",
            info.message(),
            at.file(),
            at.line()
        )),
        None => crate::console::print_line_dying(format_args!("PANIC: {}", info.message())),
    }
    crate::psci::system_off(1)
}
