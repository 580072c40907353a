//! The context switch: a thread's callee-saved state and `cpu_switch_to`, which
//! swaps it for another thread's (the AArch64 procedure-call standard's x19-x30
//! and sp).

/// Callee-saved state of a switched-out thread (the layout `cpu_switch_to` uses).
#[repr(C)]
pub struct Context {
    x19_x28: [u64; 10],
    fp: u64,
    lr: u64,
    sp: u64,
}

impl Context {
    /// The context of a thread that has never been switched out (an idle thread).
    pub const EMPTY: Context = Context {
        x19_x28: [0; 10],
        fp: 0,
        lr: 0,
        sp: 0,
    };

    /// The context a new thread starts from: `thread_trampoline` on an empty
    /// stack ending at `stack_top`, with the thread's address in x19.
    ///
    /// CONTEXT: any; pure.
    pub fn for_new_thread(stack_top: u64, thread: u64) -> Self {
        let mut x19_x28 = [0; 10];
        x19_x28[0] = thread;
        Context {
            x19_x28,
            fp: 0,
            lr: thread_trampoline as *const () as u64,
            sp: stack_top,
        }
    }
}

core::arch::global_asm!(
    r#"
    .text
    // x0 = previous thread, x1 = next thread (Context first in Thread).
    // Returns the previous thread in x0 on the next thread's stack.
    .global cpu_switch_to
cpu_switch_to:
    stp     x19, x20, [x0, #0]
    stp     x21, x22, [x0, #16]
    stp     x23, x24, [x0, #32]
    stp     x25, x26, [x0, #48]
    stp     x27, x28, [x0, #64]
    stp     x29, x30, [x0, #80]
    mov     x9, sp
    str     x9, [x0, #96]
    ldp     x19, x20, [x1, #0]
    ldp     x21, x22, [x1, #16]
    ldp     x23, x24, [x1, #32]
    ldp     x25, x26, [x1, #48]
    ldp     x27, x28, [x1, #64]
    ldp     x29, x30, [x1, #80]
    ldr     x9, [x1, #96]
    mov     sp, x9
    ret

    // First instructions of a new thread: x0 = previous thread, x19 = this one.
    .global thread_trampoline
thread_trampoline:
    mov     x1, x19
    bl      thread_start
    brk     #0
"#
);

// Thread holds Rust fn pointers, but the assembly only touches its Context.
#[allow(improper_ctypes)]
extern "C" {
    /// Saves the callee-saved state into `prev`'s context, loads `next`'s and
    /// returns on `next`'s stack, with `prev` as the result.
    pub fn cpu_switch_to(
        prev: *mut crate::sched::Thread,
        next: *mut crate::sched::Thread,
    ) -> *mut crate::sched::Thread;
    fn thread_trampoline();
}
