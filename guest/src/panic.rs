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

/// CONTEXT: any; masks IRQs, takes CONSOLE_LOCK if it can; never returns.
#[panic_handler]
fn on_panic(info: &PanicInfo) -> ! {
    crate::sync::local_irq_disable();
    let me = this_cpu().id as u32 + 1;
    match PANIC_OWNER.compare_exchange(0, me, AcqRel, Acquire) {
        Ok(_) => {}
        // A panic while printing the first one: give up on printing.
        Err(owner) if owner == me => {
            crate::console::print_raw("\nPANIC: nested panic while panicking\n");
            crate::arch::system_off(1)
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
    print_backtrace(me as usize - 1);
    crate::arch::system_off(1)
}

/// Frames printed at most (a corrupt chain must not loop forever).
const MAX_FRAMES: usize = 32;

/// Prints the return addresses of the frame-record chain from here, through any
/// exception frames (whose records hold the interrupted PC), to the thread's first
/// frame (x29 = 0). Checks each record lies above the previous one in RAM.
///
/// CONTEXT: panic path only, IRQs masked.
fn print_backtrace(cpu: usize) {
    let info = crate::bootinfo::boot_info();
    let ram = info.ram_base as usize..(info.ram_base + info.ram_size) as usize;
    let mut fp = crate::arch::frame_pointer();
    for _ in 0..MAX_FRAMES {
        if fp == 0 || fp % 16 != 0 || !ram.contains(&fp) {
            break;
        }
        // SAFETY: a 16-aligned address in identity-mapped RAM on this CPU's stack.
        let (next, pc) = unsafe { crate::arch::frame_record(fp) };
        if pc == 0 {
            break;
        }
        crate::console::print_line_dying(format_args!("cpu{}:   at 0x{:x}", cpu, pc));
        if next <= fp {
            break;
        }
        fp = next;
    }
}
