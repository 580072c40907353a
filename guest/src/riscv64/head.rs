//! The first instructions on RISC-V: the boot hart's entry (from the firmware,
//! a0 = hart id, a1 = device tree) and the secondary harts' entry (SBI HSM
//! `hart_start`, a0 = hart id, a1 = the logical CPU number).
//!
//! Both run in S-mode with the MMU off; they mask interrupts, keep the hart id in
//! `sscratch`, set a stack and the trap vector, then call into Rust.
//!
//! Only one hart may run the boot path. QEMU's virt has been seen (rarely,
//! under host load) to send a second hart to `_start`: beside the boot hart, or
//! instead of the `secondary_entry` that SBI `hart_start` named for it. A late
//! hart zeroing the BSS under the first would wreck it. So `_start` holds a
//! lottery of its own, as Linux's `head.S` does: the first hart through boots;
//! any other waits until the boot hart publishes its logical CPU number in
//! [`SECONDARY_SLOTS`] (before `hart_start`), then enters as that secondary.
//! A hart no one starts waits there for good.

use core::sync::atomic::{AtomicU64, Ordering::Release};

use crate::config::{BOOT_STACK_SIZE, MAX_CPUS};

/// One boot stack per CPU. Each later becomes the stack of that CPU's idle thread.
#[repr(C, align(4096))]
pub struct BootStacks(pub [[u8; BOOT_STACK_SIZE]; MAX_CPUS]);

#[no_mangle]
pub static mut BOOT_STACKS: BootStacks = BootStacks([[0; BOOT_STACK_SIZE]; MAX_CPUS]);

const _: () = assert!(BOOT_STACK_SIZE.is_power_of_two());

/// Per hart id: 0, or 1 + the logical CPU number the boot hart has asked that
/// hart to come up as. In `.data`, not `.bss`: a hart may read it before the
/// boot hart has zeroed the BSS.
#[no_mangle]
#[link_section = ".data.secondary_slots"]
pub static SECONDARY_SLOTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Publishes that hart `hart` is to come up as logical CPU `cpu` (whichever
/// entry it arrives at). `false`: the hart id is past [`SECONDARY_SLOTS`].
///
/// CONTEXT: boot CPU, before starting that hart.
pub fn publish_secondary(hart: u64, cpu: u64) -> bool {
    match SECONDARY_SLOTS.get(hart as usize) {
        Some(slot) => {
            slot.store(cpu + 1, Release);
            true
        }
        None => false,
    }
}

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    csrw    sie, zero
    csrci   sstatus, 2
    la      t0, boot_lottery
    li      t1, 1
    amoadd.w t1, t1, (t0)
    bnez    t1, lost_boot_lottery
    csrw    sscratch, a0
    mv      s1, a1                  // the device tree's physical address

    // Zero the BSS (boot stacks included) before anything lives there.
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    li      a0, 0
    call    boot_cpu_setup
    mv      a0, s1
    call    kernel_main
3:  wfi
    j       3b

    // a0 = hart id. Waits for the boot hart to publish this hart's CPU number.
lost_boot_lottery:
    li      t0, {max_cpus}
    bgeu    a0, t0, 6f
    la      t1, SECONDARY_SLOTS
    slli    t2, a0, 3
    add     t1, t1, t2
5:  ld      t2, 0(t1)
    beqz    t2, 5b
    fence   r, rw
    addi    a1, t2, -1
    j       secondary_entry
6:  wfi
    j       6b

    // In .data, not .bss: the winner zeroes the BSS while others may still draw.
    .data
    .balign 4
boot_lottery:
    .word   0

    .text
    .global secondary_entry
secondary_entry:
    csrw    sie, zero
    csrci   sstatus, 2
    csrw    sscratch, a0
    mv      s1, a1
    mv      a0, a1
    call    boot_cpu_setup
    mv      a0, s1
    call    secondary_main
4:  wfi
    j       4b

    // a0 = logical CPU number. Points sp at the top of that CPU's boot stack,
    // installs the trap vector and ends the frame-pointer chain. Clobbers t0-t1.
boot_cpu_setup:
    la      t0, BOOT_STACKS
    addi    t1, a0, 1
    slli    t1, t1, {stack_shift}
    add     sp, t0, t1
    la      t0, trap_entry
    csrw    stvec, t0
    mv      s0, zero
    ret
"#,
    stack_shift = const BOOT_STACK_SIZE.trailing_zeros(),
    max_cpus = const MAX_CPUS,
);

/// Physical address of the secondary entry point handed to SBI `hart_start`.
///
/// CONTEXT: any.
pub fn secondary_entry_address() -> u64 {
    extern "C" {
        fn secondary_entry();
    }
    secondary_entry as *const () as u64
}
