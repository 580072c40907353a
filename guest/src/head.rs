//! The first instructions: the arm64 `Image` header, the boot CPU's entry and the
//! secondary CPUs' entry (docs/machine.md, "Boot").
//!
//! Both entries run at EL1h with the MMU off and DAIF masked. They only set up a
//! stack and the exception vectors, then call into Rust.

use crate::config::{BOOT_STACK_SIZE, MAX_CPUS};

/// One boot stack per CPU. Each later becomes the stack of that CPU's idle thread.
#[repr(C, align(4096))]
pub struct BootStacks(pub [[u8; BOOT_STACK_SIZE]; MAX_CPUS]);

#[no_mangle]
pub static mut BOOT_STACKS: BootStacks = BootStacks([[0; BOOT_STACK_SIZE]; MAX_CPUS]);

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _image_header
_image_header:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   _kernel_size            // image_size, BSS included
    .quad   0b0010                  // flags: little endian, 4 KiB pages
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5: no PE header

    .text
    .global primary_entry
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // the device tree's physical address

    // Zero the BSS (boot stacks included) before anything lives there.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    mov     x0, #0
    bl      boot_cpu_setup
    mov     x0, x19
    bl      kernel_main
3:  wfi
    b       3b

    // PSCI CPU_ON enters here with x0 = the logical CPU number (the context id).
    .global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    bl      boot_cpu_setup
    mov     x0, x19
    bl      secondary_main
4:  wfi
    b       4b

    // x0 = logical CPU number. Points SP at the top of that CPU's boot stack,
    // installs the vectors and ends the frame-pointer chain. Clobbers x0-x3.
boot_cpu_setup:
    adrp    x1, BOOT_STACKS
    add     x1, x1, :lo12:BOOT_STACKS
    add     x2, x0, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el1, x1
    // No FP/SIMD in the kernel: trap any use (CPACR_EL1.FPEN = 0).
    msr     cpacr_el1, xzr
    isb
    mov     x29, xzr
    ret
"#,
    stack_size = const BOOT_STACK_SIZE,
);

/// Physical address of the secondary entry point handed to PSCI CPU_ON.
///
/// CONTEXT: any.
pub fn secondary_entry_address() -> u64 {
    extern "C" {
        fn secondary_entry();
    }
    secondary_entry as *const () as u64
}
