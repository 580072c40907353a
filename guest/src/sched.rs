//! Kernel threads, per-CPU run queues, context switch, preemption, sleep and wake.
//!
//! A thread belongs to one CPU for life (no migration). Each CPU runs its own
//! round-robin queue; the timer tick asks for a reschedule, which happens when the
//! thread is preemptible (preempt count zero, not in an IRQ handler, IRQs on) —
//! at IRQ exit or at the `preempt_enable` that makes it so.
//!
//! Synchronization rules:
//! - `run_queue` (one per CPU, spinlock, taken with IRQs masked) protects that
//!   CPU's queue links (`Thread::rq_next`) and `Thread::queued` of its threads.
//! - `Thread::state` is an atomic: a thread sets itself SLEEPING, and wakers set it
//!   RUNNING under the thread's run_queue lock.
//! - `Thread::wait_next`/`waiting` belong to the lock of the wait list the thread is
//!   on (a WaitQueue's `wait_queue` lock or a mutex's `wait_lock`).
//! - `PerCpu::current` is written by its own CPU in `schedule` with IRQs masked.
//!   Lock order: wait_queue / wait_lock -> run_queue.

use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};

use crate::config::{MAX_CPUS, PAGE_SIZE, THREAD_STACK_PAGES};
use crate::page_alloc::{self, Gfp};
use crate::percpu::{cpu, this_cpu};
use crate::switch::{cpu_switch_to, Context};
use crate::sync::{self, local_irq_restore, local_irq_save, SpinLock};

pub const RUNNING: u32 = 0;
pub const SLEEPING: u32 = 1;
pub const DEAD: u32 = 2;

const NAME_MAX: usize = 16;

/// A kernel thread. Lives at the bottom of its own stack allocation (the idle
/// threads live in a static array and run on the boot stacks).
#[repr(C)]
pub struct Thread {
    context: UnsafeCell<Context>,
    name: [u8; NAME_MAX],
    pub cpu: usize,
    pub state: AtomicU32,
    /// On its CPU's run queue (run_queue lock).
    queued: UnsafeCell<bool>,
    rq_next: UnsafeCell<*mut Thread>,
    /// On some wait list (that list's lock).
    pub(crate) waiting: UnsafeCell<bool>,
    pub(crate) wait_next: UnsafeCell<*mut Thread>,
    entry: fn(usize),
    arg: usize,
    /// Physical base of the stack allocation (0 for idle threads).
    stack_base: usize,
    pub id: usize,
    /// STACK_CANARY while the stack has not grown into this struct (it sits at the
    /// bottom of the thread's stack allocation; this field is hit first).
    canary: u64,
}

const STACK_CANARY: u64 = 0x57ac_c0de_57ac_c0de;

// SAFETY: the UnsafeCell fields follow the synchronization rules above.
unsafe impl Sync for Thread {}
unsafe impl Send for Thread {}

impl Thread {
    /// CONTEXT: any (const).
    const fn idle() -> Self {
        Thread {
            context: UnsafeCell::new(Context::EMPTY),
            name: *b"idle\0\0\0\0\0\0\0\0\0\0\0\0",
            cpu: 0,
            state: AtomicU32::new(RUNNING),
            queued: UnsafeCell::new(false),
            rq_next: UnsafeCell::new(null_mut()),
            waiting: UnsafeCell::new(false),
            wait_next: UnsafeCell::new(null_mut()),
            entry: idle_entry_unused,
            arg: 0,
            stack_base: 0,
            id: 0,
            canary: STACK_CANARY,
        }
    }

    /// CONTEXT: any.
    pub fn name(&self) -> &str {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_MAX);
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }

    /// CONTEXT: any.
    fn is_idle(&self) -> bool {
        self.stack_base == 0
    }
}

/// CONTEXT: never called (idle threads start as the boot context).
fn idle_entry_unused(_: usize) {}

struct IdleThreads([Thread; MAX_CPUS]);
// SAFETY: each CPU initialises and uses only its own idle thread.
unsafe impl Sync for IdleThreads {}
static IDLE_THREADS: IdleThreads = IdleThreads([const { Thread::idle() }; MAX_CPUS]);

/// A CPU's queue of runnable threads (FIFO).
pub struct RunQueue {
    list: SpinLock<RunList>,
}

struct RunList {
    head: *mut Thread,
    tail: *mut Thread,
}

// SAFETY: the thread pointers are only followed under the run_queue lock.
unsafe impl Send for RunList {}

impl RunQueue {
    /// CONTEXT: any (const).
    pub const fn new() -> Self {
        RunQueue {
            list: SpinLock::new(
                "run_queue",
                RunList {
                    head: null_mut(),
                    tail: null_mut(),
                },
            ),
        }
    }
}

impl RunList {
    /// CONTEXT: run_queue lock held.
    unsafe fn push(&mut self, thread: *mut Thread) {
        *(*thread).rq_next.get() = null_mut();
        *(*thread).queued.get() = true;
        if self.tail.is_null() {
            self.head = thread;
        } else {
            *(*self.tail).rq_next.get() = thread;
        }
        self.tail = thread;
    }

    /// CONTEXT: run_queue lock held.
    unsafe fn pop(&mut self) -> *mut Thread {
        let thread = self.head;
        if !thread.is_null() {
            self.head = *(*thread).rq_next.get();
            if self.head.is_null() {
                self.tail = null_mut();
            }
            *(*thread).queued.get() = false;
        }
        thread
    }

    /// CONTEXT: run_queue lock held (through the guard).
    fn is_empty(&self) -> bool {
        self.head.is_null()
    }
}

/// The running thread.
///
/// CONTEXT: any, after `init_this_cpu`.
pub fn current() -> &'static Thread {
    // SAFETY: set at bring-up and only ever to live threads.
    unsafe { &*this_cpu().current.load(Relaxed) }
}

/// CONTEXT: any, after init_this_cpu.
fn current_ptr() -> *mut Thread {
    this_cpu().current.load(Relaxed)
}

/// Makes the running boot context this CPU's idle thread.
///
/// CONTEXT: each CPU once at bring-up, IRQs masked.
pub fn init_this_cpu() {
    let cpu = this_cpu();
    let idle = &IDLE_THREADS.0[cpu.id] as *const Thread as *mut Thread;
    // SAFETY: only this CPU touches its idle thread, and nobody runs it yet.
    unsafe {
        (*idle).cpu = cpu.id;
        (*idle).id = cpu.id;
    }
    cpu.idle.store(idle, Relaxed);
    cpu.current.store(idle, Relaxed);
}

static NEXT_THREAD_ID: AtomicUsize = AtomicUsize::new(MAX_CPUS);

/// Creates a kernel thread running `entry(arg)` on CPU `cpu_id` and makes it
/// runnable. Returns None if there is no memory for its stack.
///
/// CONTEXT: may sleep (allocates its stack with Gfp::Kernel); no spinlock held.
pub fn spawn_on(
    cpu_id: usize,
    name: &str,
    entry: fn(usize),
    arg: usize,
) -> Option<&'static Thread> {
    sync::might_sleep();
    let order = THREAD_STACK_PAGES.trailing_zeros() as usize;
    let base = page_alloc::alloc_pages(order, Gfp::Kernel)?;
    let thread = base as *mut Thread;
    let mut name_bytes = [0u8; NAME_MAX];
    let len = name.len().min(NAME_MAX);
    name_bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    let stack_top = (base + THREAD_STACK_PAGES * PAGE_SIZE) as u64;
    let context = Context::for_new_thread(stack_top, thread as u64);
    // SAFETY: fresh pages, ours alone until the thread is queued below.
    unsafe {
        thread.write(Thread {
            context: UnsafeCell::new(context),
            name: name_bytes,
            cpu: cpu_id,
            state: AtomicU32::new(RUNNING),
            queued: UnsafeCell::new(false),
            rq_next: UnsafeCell::new(null_mut()),
            waiting: UnsafeCell::new(false),
            wait_next: UnsafeCell::new(null_mut()),
            entry,
            arg,
            stack_base: base,
            id: NEXT_THREAD_ID.fetch_add(1, Relaxed),
            canary: STACK_CANARY,
        });
    }
    enqueue_and_kick(thread);
    // SAFETY: the thread lives until it exits; callers only use it while it may not
    // have exited (they synchronise with it first).
    Some(unsafe { &*thread })
}

/// Queues `thread` on its CPU and makes that CPU reschedule.
///
/// CONTEXT: any; takes the target's run_queue lock (irqsave).
fn enqueue_and_kick(thread: *mut Thread) {
    // SAFETY: `cpu` is immutable after creation.
    let target = unsafe { (*thread).cpu };
    {
        let mut rq = cpu(target).rq.list.lock_irqsave();
        // SAFETY: run_queue lock held.
        unsafe {
            if !*(*thread).queued.get() {
                rq.push(thread);
            }
        }
    }
    kick_cpu(target);
}

/// CONTEXT: any; does not sleep.
fn kick_cpu(target: usize) {
    if target == this_cpu().id {
        this_cpu().need_resched.store(true, Relaxed);
    } else {
        crate::smp::send_reschedule(target);
    }
}

/// Makes a SLEEPING thread runnable again. Returns whether it was sleeping.
///
/// CONTEXT: any, IRQ handlers included; takes the target's run_queue lock.
#[no_mangle]
#[inline(never)]
pub extern "C" fn wake_up_thread(thread: &Thread) -> bool {
    let target = thread.cpu;
    let ptr = thread as *const Thread as *mut Thread;
    let woke = {
        let mut rq = cpu(target).rq.list.lock_irqsave();
        let woke = thread
            .state
            .compare_exchange(SLEEPING, RUNNING, AcqRel, Acquire)
            .is_ok();
        // A thread that is still current (on its way into schedule) may be queued
        // too: schedule then finds it queued and leaves it there.
        // SAFETY: run_queue lock held.
        unsafe {
            if woke && !*thread.queued.get() {
                rq.push(ptr);
            }
        }
        woke
    };
    if woke {
        kick_cpu(target);
    }
    woke
}

/// Marks the running thread as going to sleep; the next `schedule` takes it off
/// the CPU unless a wake_up_thread comes first.
///
/// CONTEXT: thread context, under the lock of the wait list it just joined.
pub fn set_current_sleeping() {
    current().state.store(SLEEPING, Release);
}

/// Picks the next thread and switches to it.
///
/// CONTEXT: thread context, may sleep: no spinlock held, not in an IRQ handler.
/// The running thread stays off the CPU if it set itself SLEEPING.
#[no_mangle]
#[inline(never)]
pub extern "C" fn schedule() {
    let cpu = this_cpu();
    if cpu.preempt_count.load(Relaxed) != 0 || cpu.hardirq_depth.load(Relaxed) != 0 {
        panic!("scheduling while atomic: {}", current().name());
    }
    // The idle thread is what runs when nothing else can: it must never block.
    if current().is_idle() && current().state.load(Relaxed) != RUNNING {
        panic!("cpu{}: the idle thread tried to sleep", cpu.id);
    }
    switch_threads(false);
}

/// Preemption from the tick or a reschedule IPI, at IRQ exit.
///
/// CONTEXT: hard-IRQ exit path (hardirq_depth already dropped), IRQs masked.
pub fn preempt_from_irq() {
    let cpu = this_cpu();
    if cpu.need_resched.load(Relaxed)
        && cpu.preempt_count.load(Relaxed) == 0
        && cpu.hardirq_depth.load(Relaxed) == 0
    {
        switch_threads(true);
    }
}

/// Reschedules now if one is pending and the running thread is preemptible.
///
/// CONTEXT: any; switches only with preempt count zero, IRQs on, outside IRQs.
pub fn preempt_if_needed() {
    let cpu = this_cpu();
    if cpu.need_resched.load(Relaxed)
        && cpu.preempt_count.load(Relaxed) == 0
        && cpu.hardirq_depth.load(Relaxed) == 0
        && sync::irqs_enabled()
        && !crate::panic::panicking()
    {
        switch_threads(true);
    }
}

/// Gives up the CPU to the next runnable thread, staying runnable.
///
/// CONTEXT: may sleep.
pub fn yield_now() {
    schedule();
}

/// CONTEXT: schedule / preemption points; masks IRQs and takes this CPU's run_queue lock itself,
/// releases it before the switch.
fn switch_threads(preempted: bool) {
    let flags = local_irq_save();
    let cpu = this_cpu();
    let prev = current_ptr();
    // SAFETY: prev is the running thread.
    if unsafe { (*prev).canary } != STACK_CANARY {
        panic!("stack overflow in thread {}", current().name());
    }
    let next = {
        let mut rq = cpu.rq.list.lock();
        cpu.need_resched.store(false, Relaxed);
        // SAFETY: run_queue lock held; prev is this CPU's running thread.
        unsafe {
            let state = (*prev).state.load(Acquire);
            let stays_runnable = state == RUNNING || (preempted && state == SLEEPING);
            if !(*prev).is_idle() && !*(*prev).queued.get() && stays_runnable {
                rq.push(prev);
            }
            let next = rq.pop();
            if next.is_null() {
                cpu.idle.load(Relaxed)
            } else {
                next
            }
        }
    };
    if next != prev {
        cpu.current.store(next, Relaxed);
        // As arm64 Linux's __switch_to: complete this CPU's TLB maintenance in
        // flight, or a thread preempted between its TLBI and its `dsb ish` would
        // leave the TLBI to the next thread, and its own `dsb ish` (on another
        // CPU if it migrates) would not complete it.
        crate::arch::complete_tlb_maintenance();
        // SAFETY: both threads belong to this CPU; prev's context is saved here and
        // next's was saved when it last switched out (or built by spawn_on).
        let last = unsafe { cpu_switch_to(prev, next) };
        finish_switch(last);
    }
    local_irq_restore(flags);
}

/// Runs on the thread that was switched to: frees the previous thread's stack if it
/// exited.
///
/// CONTEXT: right after a switch, IRQs masked.
fn finish_switch(last: *mut Thread) {
    // SAFETY: `last` ran on this CPU until the switch; a DEAD thread is never
    // queued again, so nobody else refers to it.
    unsafe {
        if (*last).state.load(Acquire) == DEAD {
            if *(*last).queued.get() {
                panic!("thread {} exited while queued to run", (*last).name());
            }
            let order = THREAD_STACK_PAGES.trailing_zeros() as usize;
            page_alloc::free_pages((*last).stack_base, order);
        }
    }
}

/// First Rust code of a new thread.
///
/// CONTEXT: entered from cpu_switch_to with IRQs masked and no lock held.
#[no_mangle]
extern "C" fn thread_start(last: *mut Thread, me: *mut Thread) -> ! {
    finish_switch(last);
    sync::local_irq_enable();
    // SAFETY: `me` is the running thread.
    let (entry, arg) = unsafe { ((*me).entry, (*me).arg) };
    entry(arg);
    thread_exit()
}

/// Ends the running thread; its stack is freed by the next thread on this CPU.
///
/// CONTEXT: thread context, no lock held.
pub fn thread_exit() -> ! {
    sync::local_irq_disable();
    current().state.store(DEAD, Release);
    switch_threads(false);
    unreachable!("a dead thread was scheduled");
}

/// The idle loop: sleeps in WFI until an interrupt makes work, then schedules.
///
/// CONTEXT: the idle thread of each CPU, after bring-up; IRQs may be on or off.
pub fn idle_loop() -> ! {
    let cpu = this_cpu();
    loop {
        sync::local_irq_disable();
        // Checked with IRQs masked: an IRQ arriving after the check still ends the
        // WFI (it stays pending), so no wakeup is lost.
        if !cpu.need_resched.load(Relaxed) && run_queue_is_empty() {
            crate::arch::wait_for_interrupt();
        }
        sync::local_irq_enable();
        if cpu.need_resched.load(Relaxed) || !run_queue_is_empty() {
            schedule();
        }
    }
}

/// CONTEXT: any; takes this CPU's run_queue lock (irqsave).
fn run_queue_is_empty() -> bool {
    this_cpu().rq.list.lock_irqsave().is_empty()
}

// ---------------------------------------------------------------------------
// Wait queues and completions.

/// Threads waiting for a condition. The condition is checked under the
/// `wait_queue` lock, and wakers change what it reads before calling `wake_all`,
/// so a wakeup between the check and the sleep is not lost.
pub struct WaitQueue {
    list: SpinLock<WaitList>,
}

struct WaitList {
    head: *mut Thread,
}

// SAFETY: thread pointers are followed under the wait_queue lock only.
unsafe impl Send for WaitList {}

impl WaitQueue {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str) -> Self {
        WaitQueue {
            list: SpinLock::new(name, WaitList { head: null_mut() }),
        }
    }

    /// Sleeps until `condition()` is true. `condition` runs with the queue's lock
    /// held (irqsave), so it must be quick and may not sleep.
    ///
    /// CONTEXT: may sleep; no spinlock held.
    pub fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        sync::might_sleep();
        let me = current_ptr();
        loop {
            {
                let mut list = self.list.lock_irqsave();
                if condition() {
                    // SAFETY: wait_queue lock held.
                    unsafe { list.remove(me) };
                    current().state.store(RUNNING, Release);
                    return;
                }
                // SAFETY: wait_queue lock held; `me` is the running thread.
                unsafe {
                    if !*(*me).waiting.get() {
                        *(*me).waiting.get() = true;
                        *(*me).wait_next.get() = list.head;
                        list.head = me;
                    }
                }
                set_current_sleeping();
            }
            schedule();
        }
    }

    /// Wakes every waiter (each rechecks its condition).
    ///
    /// CONTEXT: any, IRQ handlers included; takes the wait_queue lock (irqsave),
    /// then run_queue locks.
    pub fn wake_all(&self) {
        let mut list = self.list.lock_irqsave();
        while !list.head.is_null() {
            let thread = list.head;
            // SAFETY: wait_queue lock held; waiters stay alive while listed.
            unsafe {
                list.head = *(*thread).wait_next.get();
                *(*thread).waiting.get() = false;
                wake_up_thread(&*thread);
            }
        }
    }
}

impl WaitList {
    /// CONTEXT: wait_queue lock held.
    unsafe fn remove(&mut self, thread: *mut Thread) {
        if !*(*thread).waiting.get() {
            return;
        }
        let mut link: *mut *mut Thread = &mut self.head;
        while !(*link).is_null() {
            if *link == thread {
                *link = *(*thread).wait_next.get();
                break;
            }
            link = (**link).wait_next.get();
        }
        *(*thread).waiting.get() = false;
    }
}

/// A counting completion: `complete` adds one, `wait` takes one (sleeping until
/// there is one).
pub struct Completion {
    count: AtomicU32,
    waiters: WaitQueue,
}

impl Completion {
    /// CONTEXT: any (const).
    pub const fn new() -> Self {
        Completion {
            count: AtomicU32::new(0),
            waiters: WaitQueue::new("completion"),
        }
    }

    /// CONTEXT: any, IRQ handlers included.
    pub fn complete(&self) {
        self.count.fetch_add(1, Release);
        self.waiters.wake_all();
    }

    /// CONTEXT: may sleep.
    pub fn wait(&self) {
        self.waiters.wait_until(|| {
            let available = self.count.load(Acquire);
            available > 0
                && self
                    .count
                    .compare_exchange(available, available - 1, AcqRel, Acquire)
                    .is_ok()
        });
    }

    /// Waits for `n` completions.
    ///
    /// CONTEXT: may sleep.
    pub fn wait_n(&self, n: usize) {
        for _ in 0..n {
            self.wait();
        }
    }
}

/// The running thread's identity for mutex ownership.
///
/// CONTEXT: any, after init_this_cpu.
pub fn current_thread_ptr() -> *mut Thread {
    current_ptr()
}

// The host's recorder reads these fields of a Thread (emu/src/record/abi.rs):
// after the ISA's `Context`, at the same distances on every ISA.
const CONTEXT_SIZE: usize = core::mem::size_of::<Context>();
const _: () = {
    use core::mem::offset_of;
    assert!(CONTEXT_SIZE == if cfg!(target_arch = "riscv64") { 112 } else { 104 });
    assert!(offset_of!(Thread, name) == CONTEXT_SIZE);
    assert!(offset_of!(Thread, state) == CONTEXT_SIZE + 24);
    assert!(offset_of!(Thread, queued) == CONTEXT_SIZE + 28);
    assert!(offset_of!(Thread, id) == CONTEXT_SIZE + 80);
    assert!(offset_of!(Thread, canary) == CONTEXT_SIZE + 88);
};
