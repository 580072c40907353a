//! SBI calls to the firmware (OpenSBI on QEMU, the host on our board): the
//! legacy-free extensions TIME, IPI, RFENCE, HSM and SRST.

const EXT_TIME: u64 = 0x5449_4D45;
const EXT_IPI: u64 = 0x0073_5049;
const EXT_RFENCE: u64 = 0x5246_4E43;
const EXT_HSM: u64 = 0x0048_534D;
/// HSM `hart_start`.
const HSM_HART_START: u64 = 0;
/// `SBI_ERR_ALREADY_AVAILABLE`: `hart_start` of a hart that is running.
const ERR_ALREADY_AVAILABLE: i64 = -6;
/// `SBI_ERR_INVALID_PARAM`.
const ERR_INVALID_PARAM: i64 = -3;
const EXT_SRST: u64 = 0x5352_5354;

/// CONTEXT: any; does not sleep.
fn call(extension: u64, function: u64, args: [u64; 4]) -> i64 {
    let error: i64;
    // SAFETY: an SBI call: the firmware returns error/value in a0/a1 and
    // preserves every other register.
    unsafe {
        core::arch::asm!(
            "ecall",
            inout("a0") args[0] => error,
            inout("a1") args[1] => _,
            in("a2") args[2],
            in("a3") args[3],
            in("a6") function,
            in("a7") extension,
            options(nostack),
        );
    }
    error
}

/// Sets this hart's timer deadline (and clears its pending timer interrupt).
///
/// CONTEXT: any; does not sleep.
pub fn set_timer(deadline: u64) {
    call(EXT_TIME, 0, [deadline, 0, 0, 0]);
}

/// Raises a software interrupt on hart `hart`.
///
/// CONTEXT: any; does not sleep.
pub fn send_ipi(hart: u64) {
    call(EXT_IPI, 0, [1, hart, 0, 0]);
}

/// `sfence.vma` of `start..start + size` on hart `hart`, by the firmware.
///
/// CONTEXT: any; does not sleep.
pub fn remote_sfence_vma(hart: u64, start: u64, size: u64) {
    call(EXT_RFENCE, 1, [1, hart, start, size]);
}

/// Starts hart `hart` at `entry` with a0 = its hart id, a1 = `context` (its
/// logical CPU number). Returns the SBI error (0 = success).
///
/// The CPU number is published first (`head.rs`): a hart the firmware sent to
/// `_start` instead, now or earlier, takes it from there. Such a hart is
/// already running, so "already available" means it is on its way.
///
/// CONTEXT: boot CPU; does not sleep.
pub fn cpu_on(hart: u64, entry: u64, context: u64) -> i64 {
    if !crate::arch::publish_secondary(hart, context) {
        return ERR_INVALID_PARAM;
    }
    match call(EXT_HSM, HSM_HART_START, [hart, entry, context, 0]) {
        ERR_ALREADY_AVAILABLE => 0,
        error => error,
    }
}

/// Ends the whole machine (SRST shutdown). `status` 0 = the scenario passed;
/// otherwise the reset reason is "system failure".
///
/// CONTEXT: any; never returns.
pub fn system_off(status: u64) -> ! {
    call(EXT_SRST, 0, [0, u64::from(status != 0), 0, 0]);
    loop {
        crate::arch::wait_for_interrupt();
    }
}
