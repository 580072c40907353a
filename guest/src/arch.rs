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

// ---------------------------------------------------------------------------
// The names the rest of the kernel uses on every architecture (riscv64/arch.rs
// defines the same set, by meaning).

/// Frequency of [`counter`]: the board's CNTFRQ_EL0 (QEMU virt and ours).
pub const COUNTER_HZ: u64 = 62_500_000;

pub use self::daif as irq_mask_word;
pub use self::dsb_ishst as table_store_barrier;
pub use self::isb as context_barrier;
pub use self::mpidr_affinity as this_cpu_hw_id;
pub use self::set_daif as set_irq_mask_word;
pub use self::DAIF_IRQ as IRQ_MASKED;
pub(crate) use crate::gic as irqchip;
pub use crate::head::secondary_entry_address;
pub use crate::psci::{cpu_on, system_off};

/// The running CPU's per-CPU data pointer (TPIDR_EL1).
///
/// CONTEXT: any.
#[inline(always)]
pub fn this_cpu_data() -> usize {
    read_sysreg!("tpidr_el1") as usize
}

/// Sets [`this_cpu_data`].
///
/// # Safety
/// Every later `this_cpu_data` on this CPU returns `pointer`.
///
/// CONTEXT: bring-up of this CPU.
#[inline(always)]
pub unsafe fn set_this_cpu_data(pointer: usize) {
    write_sysreg!("tpidr_el1", pointer as u64);
}

/// Completes this CPU's TLB maintenance in flight (`dsb ish`): a context switch
/// must not hand a TLBI over to the next thread.
///
/// CONTEXT: any.
#[inline(always)]
pub fn complete_tlb_maintenance() {
    // SAFETY: a barrier only.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Programs this CPU's timer to interrupt at counter value `deadline` (the
/// virtual timer, enabled and unmasked).
///
/// CONTEXT: IRQs masked, or a caller that owns the timer.
#[inline(always)]
pub fn set_timer(deadline: u64) {
    // SAFETY: the virtual timer belongs to this CPU's kernel; enable, unmasked.
    unsafe {
        write_sysreg!("cntv_cval_el0", deadline);
        write_sysreg!("cntv_ctl_el0", 1);
    }
    isb();
}

/// Whether this CPU's timer condition is met (CNTV_CTL_EL0.ISTATUS).
///
/// CONTEXT: any.
#[inline(always)]
pub fn timer_pending() -> bool {
    read_sysreg!("cntv_ctl_el0") & (1 << 2) != 0
}

/// The frame pointer (x29) of the caller.
///
/// CONTEXT: any.
#[inline(always)]
pub fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads the frame pointer register only.
    unsafe { asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// The frame record at `fp`: (the caller's frame pointer, the return address).
///
/// # Safety
/// `fp` is a frame pointer of the running stack.
///
/// CONTEXT: any.
#[inline(always)]
pub unsafe fn frame_record(fp: usize) -> (usize, usize) {
    (*(fp as *const usize), *((fp + 8) as *const usize))
}
