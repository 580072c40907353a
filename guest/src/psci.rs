//! PSCI 0.2 calls over HVC (docs/machine.md, "Board" and "Ending a run").

const PSCI_CPU_ON: u64 = 0xC400_0003;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

/// CONTEXT: any; does not sleep.
fn hvc_call(function: u64, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let result: u64;
    // SAFETY: PSCI calls are handled by the hypervisor/firmware; the registers
    // the SMCCC says it may clobber (x0-x17) are marked as clobbered.
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") function => result,
            inout("x1") arg1 => _, inout("x2") arg2 => _, inout("x3") arg3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    result as i64
}

/// Starts the CPU with affinity `mpidr` at physical address `entry` with x0 = `context`.
/// Returns the PSCI status (0 = success).
///
/// CONTEXT: any; does not sleep.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    hvc_call(PSCI_CPU_ON, mpidr, entry, context)
}

/// Ends the whole machine. `status` travels in x1: 0 = the scenario passed,
/// non-zero = the guest failed (our board reports it; QEMU ignores it).
///
/// CONTEXT: any; never returns.
pub fn system_off(status: u64) -> ! {
    hvc_call(PSCI_SYSTEM_OFF, status, 0, 0);
    // SYSTEM_OFF does not return; if it ever did, stop here quietly.
    loop {
        crate::arch::wait_for_interrupt();
    }
}
