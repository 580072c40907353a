//! The context switch on RISC-V: a thread's callee-saved state (ra, sp, s0-s11)
//! and `cpu_switch_to`, which swaps it for another thread's.

/// Callee-saved state of a switched-out thread (the layout `cpu_switch_to` uses).
#[repr(C)]
pub struct Context {
    ra: u64,
    sp: u64,
    s: [u64; 12],
}

impl Context {
    /// The context of a thread that has never been switched out (an idle thread).
    pub const EMPTY: Context = Context {
        ra: 0,
        sp: 0,
        s: [0; 12],
    };

    /// The context a new thread starts from: `thread_trampoline` on an empty
    /// stack ending at `stack_top`, with the thread's address in s1.
    ///
    /// CONTEXT: any; pure.
    pub fn for_new_thread(stack_top: u64, thread: u64) -> Self {
        let mut s = [0; 12];
        s[1] = thread;
        Context {
            ra: thread_trampoline as *const () as u64,
            sp: stack_top,
            s,
        }
    }
}

core::arch::global_asm!(
    r#"
    .text
    // a0 = previous thread, a1 = next thread (Context first in Thread).
    // Returns the previous thread in a0 on the next thread's stack.
    .global cpu_switch_to
cpu_switch_to:
    sd      ra, 0(a0)
    sd      sp, 8(a0)
    sd      s0, 16(a0)
    sd      s1, 24(a0)
    sd      s2, 32(a0)
    sd      s3, 40(a0)
    sd      s4, 48(a0)
    sd      s5, 56(a0)
    sd      s6, 64(a0)
    sd      s7, 72(a0)
    sd      s8, 80(a0)
    sd      s9, 88(a0)
    sd      s10, 96(a0)
    sd      s11, 104(a0)
    ld      ra, 0(a1)
    ld      sp, 8(a1)
    ld      s0, 16(a1)
    ld      s1, 24(a1)
    ld      s2, 32(a1)
    ld      s3, 40(a1)
    ld      s4, 48(a1)
    ld      s5, 56(a1)
    ld      s6, 64(a1)
    ld      s7, 72(a1)
    ld      s8, 80(a1)
    ld      s9, 88(a1)
    ld      s10, 96(a1)
    ld      s11, 104(a1)
    ret

    // First instructions of a new thread: a0 = previous thread, s1 = this one.
    .global thread_trampoline
thread_trampoline:
    mv      a1, s1
    call    thread_start
    ebreak
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
