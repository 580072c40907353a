//! Exception vectors (VBAR_EL1) and the trap frame.
//!
//! Every entry saves the full general-register state, ELR, SPSR, ESR and FAR in a
//! `TrapFrame` on the current stack and pushes a frame record {interrupted x29,
//! ELR} inside it, with x29 pointing at it: a frame-pointer unwinder walking from
//! the handler passes through the exception into the interrupted code. The kernel
//! never touches FP/SIMD registers (softfloat target, CPACR_EL1.FPEN = 0), so they
//! are not saved.
//!
//! Only two kinds are expected: IRQs and synchronous exceptions at EL1 with SP_EL1.
//! Everything else, and every synchronous exception (the kernel makes no system
//! calls and takes no page faults on purpose), prints ESR/FAR/ELR and panics.

use crate::percpu::this_cpu;

/// Saved state of the interrupted context. The layout is fixed (the assembly
/// below and the host's unwinder rely on it).
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub sp: u64,
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    /// Which of the 16 vector entries was taken.
    pub kind: u64,
    _pad: u64,
    /// The frame record {interrupted x29, ELR}; x29 points here during the handler.
    pub record: [u64; 2],
}

const FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();
const _: () = assert!(FRAME_SIZE % 16 == 0 && FRAME_SIZE == 320);

core::arch::global_asm!(
    r#"
    .macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       exception_entry
    .endm

    .text
    .balign 0x800
    .global exception_vectors
exception_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

    // x0 = vector kind; x0/x1 already saved at [sp].
exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    add     x1, sp, #{frame}
    stp     x30, x1, [sp, #240]         // x30, interrupted sp
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x1, x2, [sp, #256]
    mrs     x2, esr_el1
    mrs     x3, far_el1
    stp     x2, x3, [sp, #272]
    stp     x0, xzr, [sp, #288]         // kind, pad
    stp     x29, x1, [sp, #304]         // frame record: x29, ELR
    add     x29, sp, #304
    mov     x0, sp
    bl      exception_dispatch

    // Return: ELR/SPSR come back from the frame (another thread may have taken
    // exceptions while this one was switched out inside the handler). IRQs are
    // masked first, as Linux's kernel_exit does: a handler may have unmasked
    // them, and one taken between the msr of ELR and the eret would overwrite
    // ELR with its own return address.
    msr     daifset, #2
    ldp     x1, x2, [sp, #256]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret
"#,
    frame = const FRAME_SIZE,
);

const KIND_NAMES: [&str; 16] = [
    "sync (EL1t)",
    "IRQ (EL1t)",
    "FIQ (EL1t)",
    "SError (EL1t)",
    "sync",
    "IRQ",
    "FIQ",
    "SError",
    "sync (lower EL, AArch64)",
    "IRQ (lower EL, AArch64)",
    "FIQ (lower EL, AArch64)",
    "SError (lower EL, AArch64)",
    "sync (lower EL, AArch32)",
    "IRQ (lower EL, AArch32)",
    "FIQ (lower EL, AArch32)",
    "SError (lower EL, AArch32)",
];
const KIND_EL1H_SYNC: u64 = 4;
const KIND_EL1H_IRQ: u64 = 5;

/// CONTEXT: any; pure.
fn exception_class_name(esr: u64) -> &'static str {
    match esr >> 26 {
        0x00 => "unknown/undefined instruction",
        0x07 => "FP/SIMD access trapped",
        0x15 => "SVC",
        0x16 => "HVC",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Entry from the vectors.
///
/// CONTEXT: exception entry, IRQs masked by the hardware.
#[no_mangle]
extern "C" fn exception_dispatch(frame: &mut TrapFrame) {
    match frame.kind {
        KIND_EL1H_IRQ => crate::irq::handle_irq(),
        _ => unexpected_exception(frame),
    }
}

/// CONTEXT: exception entry, IRQs masked; never returns (panics).
fn unexpected_exception(frame: &TrapFrame) -> ! {
    let kind = KIND_NAMES[(frame.kind & 15) as usize];
    let class = if frame.kind == KIND_EL1H_SYNC {
        exception_class_name(frame.esr)
    } else {
        ""
    };
    crate::console::print_line_dying(format_args!(
        "cpu{}: unexpected exception: {} {} ESR=0x{:x} FAR=0x{:x} ELR=0x{:x}",
        this_cpu().id,
        kind,
        class,
        frame.esr,
        frame.far,
        frame.elr
    ));
    panic!("unhandled exception: {} {}", kind, class);
}
