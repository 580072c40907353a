//! Thin wrappers over the AArch64 instructions and system registers the kernel uses.
//!
//! Everything here is a single instruction or a fixed short sequence; policy (what to
//! mask when, which lock protects what) lives in the callers.

use core::arch::asm;

/// Reads a system register by name: `read_sysreg!("cntvct_el0")`.
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let value: u64;
        // SAFETY: reading an EL1/EL0-accessible system register has no side effects
        // on memory; the caller names a register that exists on ARMv8.0.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

/// Writes a system register by name (unsafe: the caller knows what the write does).
macro_rules! write_sysreg {
    ($reg:literal, $value:expr) => {{
        let value: u64 = $value;
        core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags));
    }};
}

pub(crate) use read_sysreg;
pub(crate) use write_sysreg;

/// The PSTATE.I bit as it appears in DAIF.
pub const DAIF_IRQ: u64 = 1 << 7;

/// This CPU's affinity fields (Aff3..Aff0) from MPIDR_EL1, the value PSCI and the
/// device tree use to name a CPU.
///
/// CONTEXT: any.
pub fn mpidr_affinity() -> u64 {
    read_sysreg!("mpidr_el1") & 0xff_00ff_ffff
}

/// The virtual counter (CNTVCT_EL0); `isb` first so the read is not hoisted.
///
/// CONTEXT: any.
pub fn counter() -> u64 {
    // SAFETY: `isb` only orders instruction execution.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
    read_sysreg!("cntvct_el0")
}

/// Current DAIF value (only the I bit matters to the kernel).
///
/// CONTEXT: any.
pub fn daif() -> u64 {
    read_sysreg!("daif")
}

/// Writes DAIF with `msr daif, xN`: the emulator observes this form of the write,
/// which it cannot for `msr daifset/daifclr, #imm`.
///
/// # Safety
/// Unmasking IRQs lets the IRQ handler run here; the caller must be ready for it.
///
/// CONTEXT: any; see Safety.
pub unsafe fn set_daif(value: u64) {
    // The compiler must not move memory accesses across an IRQ mask change.
    asm!("msr daif, {}", in(reg) value, options(nostack, preserves_flags));
}

/// Waits for an interrupt. Wakes even when IRQs are masked at PSTATE (the IRQ then
/// stays pending), which is what lets the idle loop check-then-sleep race-free.
///
/// CONTEXT: idle loop (IRQs may be masked: a pending IRQ still ends it).
pub fn wait_for_interrupt() {
    // SAFETY: WFI has no architectural side effect beyond suspending execution.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an event (WFE): returns at once if this CPU's event register is set
/// (clearing it), else when an event arrives (another CPU's SEV, an interrupt).
/// Spin-wait loops call it between checks, as arm64 Linux does, so a waiting CPU
/// costs nothing until the lock holder signals.
///
/// CONTEXT: any (a hint: an implementation may return at any time).
pub fn wait_for_event() {
    // SAFETY: WFE has no architectural side effect beyond suspending execution.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Signals an event to every CPU (SEV): wakes the CPUs waiting in WFE and sets
/// each CPU's event register. A spin-lock release ends with it, after its store.
///
/// CONTEXT: any.
pub fn send_event() {
    // SAFETY: SEV only sets event registers; the barrier orders the release store
    // before the event, as a waiter re-reads the lock word when it wakes.
    unsafe { asm!("dsb ishst", "sev", options(nostack, preserves_flags)) };
}

/// Full-system data barrier, then instruction barrier.
///
/// CONTEXT: any.
pub fn dsb_sy_isb() {
    // SAFETY: barriers only order memory accesses and instruction fetch.
    unsafe { asm!("dsb sy", "isb", options(nostack, preserves_flags)) };
}

/// Inner-shareable store barrier (before publishing page-table entries).
///
/// CONTEXT: any.
pub fn dsb_ishst() {
    // SAFETY: as above.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// Instruction synchronisation barrier.
///
/// CONTEXT: any.
pub fn isb() {
    // SAFETY: as above.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}
