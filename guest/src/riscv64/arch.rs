//! The RISC-V (RV64GC, S-mode) side of the names the kernel takes from `arch`:
//! the same set as the arm64 arch.rs, by meaning.
//!
//! - IRQ masking is `sstatus.SIE`. [`irq_mask_word`] reports it in arm64's
//!   polarity (the [`IRQ_MASKED`] bit set = masked), so `sync.rs` saves and
//!   restores one word on both ISAs.
//! - The counter is the `time` CSR, the timer an SBI `set_timer` deadline.
//! - The per-CPU pointer lives in `tp`; each hart's id in `sscratch`, set at
//!   entry (the kernel takes no traps from user mode, so `sscratch` is free).
//! - There is no WFE/SEV: spin-waits spin.

use core::arch::asm;

pub use crate::head::{publish_secondary, secondary_entry_address};
pub(crate) use crate::irqchip;
pub use crate::sbi::{cpu_on, system_off};

/// Frequency of [`counter`]: the `timebase-frequency` of QEMU's riscv64 virt.
pub const COUNTER_HZ: u64 = 10_000_000;

/// The bit of [`irq_mask_word`] that says IRQs are masked.
pub const IRQ_MASKED: u64 = 1;

/// `sstatus.SIE`: supervisor interrupts enabled.
const SSTATUS_SIE: u64 = 1 << 1;
/// `sip.STIP`: the supervisor timer interrupt is pending.
pub const SIP_STIP: u64 = 1 << 5;
/// `sip.SSIP`: the supervisor software interrupt (an IPI) is pending.
pub const SIP_SSIP: u64 = 1 << 1;

/// The IRQ mask as a word: [`IRQ_MASKED`] when `sstatus.SIE` is clear.
///
/// CONTEXT: any.
#[inline(always)]
pub fn irq_mask_word() -> u64 {
    let sstatus: u64;
    // SAFETY: reading sstatus has no side effect.
    unsafe { asm!("csrr {}, sstatus", out(reg) sstatus, options(nomem, nostack)) };
    if sstatus & SSTATUS_SIE == 0 {
        IRQ_MASKED
    } else {
        0
    }
}

/// Masks or unmasks IRQs as the [`IRQ_MASKED`] bit of `word` says.
///
/// # Safety
/// Unmasking IRQs lets the trap handler run here; the caller must be ready.
///
/// CONTEXT: any; see Safety.
#[inline(always)]
pub unsafe fn set_irq_mask_word(word: u64) {
    // The compiler must not move memory accesses across an IRQ mask change.
    if word & IRQ_MASKED != 0 {
        asm!("csrc sstatus, {}", in(reg) SSTATUS_SIE, options(nostack));
    } else {
        asm!("csrs sstatus, {}", in(reg) SSTATUS_SIE, options(nostack));
    }
}

/// This hart's id (the device tree's `reg` of its cpu node).
///
/// CONTEXT: any, after entry.
pub fn this_cpu_hw_id() -> u64 {
    let hart: u64;
    // SAFETY: reading sscratch has no side effect.
    unsafe { asm!("csrr {}, sscratch", out(reg) hart, options(nomem, nostack)) };
    hart
}

/// The `time` CSR.
///
/// CONTEXT: any.
pub fn counter() -> u64 {
    let time: u64;
    // SAFETY: reading the time CSR has no side effect.
    unsafe { asm!("rdtime {}", out(reg) time, options(nomem, nostack)) };
    time
}

/// Waits for an interrupt; a pending one ends the wait even with `sstatus.SIE`
/// clear, which lets the idle loop check-then-sleep race-free.
///
/// CONTEXT: idle loop (IRQs may be masked).
pub fn wait_for_interrupt() {
    // SAFETY: WFI has no architectural side effect beyond suspending execution.
    unsafe { asm!("wfi", options(nomem, nostack)) };
}

/// A spin-wait step (RISC-V has no WFE; the lock word is simply re-read).
///
/// CONTEXT: any.
pub fn wait_for_event() {
    core::hint::spin_loop();
}

/// The counterpart of arm64's SEV: nothing to signal, waiters spin.
///
/// CONTEXT: any.
pub fn send_event() {}

/// Orders page-table stores before later accesses and fences (`fence rw, rw`).
///
/// CONTEXT: any.
pub fn table_store_barrier() {
    // SAFETY: a fence only.
    unsafe { asm!("fence rw, rw", options(nostack)) };
}

/// Instruction-stream synchronisation (`fence.i`).
///
/// CONTEXT: any.
pub fn context_barrier() {
    // SAFETY: a fence only.
    unsafe { asm!("fence.i", options(nostack)) };
}

/// `sfence.vma` completes at once: nothing is left in flight at a switch.
///
/// CONTEXT: any.
pub fn complete_tlb_maintenance() {}

/// The running hart's per-CPU data pointer (`tp`).
///
/// CONTEXT: any.
#[inline(always)]
pub fn this_cpu_data() -> usize {
    let pointer: usize;
    // SAFETY: reads tp, which the kernel reserves for this pointer.
    unsafe { asm!("mv {}, tp", out(reg) pointer, options(nomem, nostack, preserves_flags)) };
    pointer
}

/// Sets [`this_cpu_data`].
///
/// # Safety
/// Every later `this_cpu_data` on this hart returns `pointer`.
///
/// CONTEXT: bring-up of this CPU.
#[inline(always)]
pub unsafe fn set_this_cpu_data(pointer: usize) {
    asm!("mv tp, {}", in(reg) pointer, options(nomem, nostack, preserves_flags));
}

/// Programs this hart's timer (SBI `set_timer`, which also clears `sip.STIP`).
///
/// CONTEXT: IRQs masked, or a caller that owns the timer.
pub fn set_timer(deadline: u64) {
    crate::sbi::set_timer(deadline);
}

/// Whether this hart's timer interrupt is pending (`sip.STIP`).
///
/// CONTEXT: any.
pub fn timer_pending() -> bool {
    read_sip() & SIP_STIP != 0
}

/// The `sip` CSR.
///
/// CONTEXT: any.
pub fn read_sip() -> u64 {
    let sip: u64;
    // SAFETY: reading sip has no side effect.
    unsafe { asm!("csrr {}, sip", out(reg) sip, options(nomem, nostack)) };
    sip
}

/// Clears `sip.SSIP` (the IPI being handled).
///
/// CONTEXT: IRQ handler.
pub fn clear_software_interrupt() {
    // SAFETY: acknowledges this hart's software interrupt only.
    unsafe { asm!("csrc sip, {}", in(reg) SIP_SSIP, options(nostack)) };
}

/// Enables the timer and software interrupts in `sie` (SIE still gates them).
///
/// CONTEXT: bring-up of this CPU, IRQs masked.
pub fn enable_timer_and_software_interrupts() {
    // SAFETY: only selects which interrupts may be taken once SIE is set.
    unsafe { asm!("csrs sie, {}", in(reg) SIP_STIP | SIP_SSIP, options(nostack)) };
}

/// The frame pointer (`s0`) of the caller.
///
/// CONTEXT: any.
#[inline(always)]
pub fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads the frame pointer register only.
    unsafe { asm!("mv {}, s0", out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// The frame record at `fp`: (the caller's frame pointer, the return address),
/// stored just below `fp` by the RISC-V frame-pointer convention.
///
/// # Safety
/// `fp` is a frame pointer of the running stack.
///
/// CONTEXT: any.
#[inline(always)]
pub unsafe fn frame_record(fp: usize) -> (usize, usize) {
    (*((fp - 16) as *const usize), *((fp - 8) as *const usize))
}
