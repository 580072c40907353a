//! The trap vector (`stvec`, direct mode) and the trap frame.
//!
//! Every trap saves the general registers, sepc, sstatus, scause and stval in a
//! `TrapFrame` on the current stack and builds a frame record {interrupted s0,
//! sepc} with s0 just above it, so a frame-pointer unwinder walking from the
//! handler passes through the trap into the interrupted code. Interrupts go to
//! the IRQ code; every exception (the kernel makes no system calls and takes
//! no page faults on purpose) prints its cause and panics.

use crate::percpu::this_cpu;

/// Saved state of the interrupted context (the assembly below fixes the layout).
#[repr(C)]
pub struct TrapFrame {
    /// x1..x31 (x[0] is ra, x[1] sp, ...).
    pub x: [u64; 31],
    pub sepc: u64,
    pub sstatus: u64,
    pub scause: u64,
    pub stval: u64,
    _pad: u64,
    /// The frame record {interrupted s0, sepc}; s0 points just above it.
    pub record: [u64; 2],
}

const FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();
const _: () = assert!(FRAME_SIZE % 16 == 0 && FRAME_SIZE == 304);

core::arch::global_asm!(
    r#"
    .text
    .balign 4
    .global trap_entry
trap_entry:
    addi    sp, sp, -{frame}
    sd      x1, 0(sp)
    sd      x3, 16(sp)
    sd      x4, 24(sp)
    sd      x5, 32(sp)
    sd      x6, 40(sp)
    sd      x7, 48(sp)
    sd      x8, 56(sp)
    sd      x9, 64(sp)
    sd      x10, 72(sp)
    sd      x11, 80(sp)
    sd      x12, 88(sp)
    sd      x13, 96(sp)
    sd      x14, 104(sp)
    sd      x15, 112(sp)
    sd      x16, 120(sp)
    sd      x17, 128(sp)
    sd      x18, 136(sp)
    sd      x19, 144(sp)
    sd      x20, 152(sp)
    sd      x21, 160(sp)
    sd      x22, 168(sp)
    sd      x23, 176(sp)
    sd      x24, 184(sp)
    sd      x25, 192(sp)
    sd      x26, 200(sp)
    sd      x27, 208(sp)
    sd      x28, 216(sp)
    sd      x29, 224(sp)
    sd      x30, 232(sp)
    sd      x31, 240(sp)
    addi    t0, sp, {frame}
    sd      t0, 8(sp)                   // the interrupted sp
    csrr    t0, sepc
    sd      t0, 248(sp)
    csrr    t1, sstatus
    sd      t1, 256(sp)
    csrr    t1, scause
    sd      t1, 264(sp)
    csrr    t1, stval
    sd      t1, 272(sp)
    sd      s0, 288(sp)                 // frame record: s0, sepc
    sd      t0, 296(sp)
    addi    s0, sp, {frame}
    mv      a0, sp
    call    trap_dispatch

    // Return: sepc/sstatus come back from the frame (another thread may have
    // trapped while this one was switched out inside the handler). Interrupts
    // are masked first, as Linux's ret_from_exception does: a handler may have
    // unmasked them, and one taken between the csrw of sepc and the sret
    // would overwrite sepc with its own return address.
    csrci   sstatus, 2
    ld      t0, 248(sp)
    csrw    sepc, t0
    ld      t0, 256(sp)
    csrw    sstatus, t0
    ld      x1, 0(sp)
    ld      x3, 16(sp)
    ld      x4, 24(sp)
    ld      x5, 32(sp)
    ld      x6, 40(sp)
    ld      x7, 48(sp)
    ld      x8, 56(sp)
    ld      x9, 64(sp)
    ld      x10, 72(sp)
    ld      x11, 80(sp)
    ld      x12, 88(sp)
    ld      x13, 96(sp)
    ld      x14, 104(sp)
    ld      x15, 112(sp)
    ld      x16, 120(sp)
    ld      x17, 128(sp)
    ld      x18, 136(sp)
    ld      x19, 144(sp)
    ld      x20, 152(sp)
    ld      x21, 160(sp)
    ld      x22, 168(sp)
    ld      x23, 176(sp)
    ld      x24, 184(sp)
    ld      x25, 192(sp)
    ld      x26, 200(sp)
    ld      x27, 208(sp)
    ld      x28, 216(sp)
    ld      x29, 224(sp)
    ld      x30, 232(sp)
    ld      x31, 240(sp)
    addi    sp, sp, {frame}
    sret
"#,
    frame = const FRAME_SIZE,
);

/// The top bit of scause: an interrupt, not an exception.
const SCAUSE_INTERRUPT: u64 = 1 << 63;

/// CONTEXT: any; pure.
fn exception_name(code: u64) -> &'static str {
    match code {
        0 => "instruction address misaligned",
        1 => "instruction access fault",
        2 => "illegal instruction",
        3 => "breakpoint",
        4 => "load address misaligned",
        5 => "load access fault",
        6 => "store address misaligned",
        7 => "store access fault",
        8 | 9 => "environment call",
        12 => "instruction page fault",
        13 => "load page fault",
        15 => "store page fault",
        _ => "other",
    }
}

/// Entry from the trap vector.
///
/// CONTEXT: trap entry, IRQs masked by the hardware.
#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.scause & SCAUSE_INTERRUPT != 0 {
        crate::irq::handle_irq();
    } else {
        unexpected_exception(frame);
    }
}

/// CONTEXT: trap entry, IRQs masked; never returns (panics).
fn unexpected_exception(frame: &TrapFrame) -> ! {
    let name = exception_name(frame.scause);
    crate::console::print_line_dying(format_args!(
        "cpu{}: unexpected exception: {} scause=0x{:x} stval=0x{:x} sepc=0x{:x}",
        this_cpu().id,
        name,
        frame.scause,
        frame.stval,
        frame.sepc
    ));
    panic!("unhandled exception: {}", name);
}
