//! A workqueue with one worker thread per CPU. `queue_work_on` hands a work item to
//! a CPU's worker, which runs it in thread context (it may sleep).
//!
//! Synchronization rules: each pool's `worker_pool` spinlock (irqsave; queueing
//! happens from IRQ handlers too) protects its list of pending items and their
//! `next` links. `Work::pending` is an atomic: set by the queuer that wins it,
//! cleared by the worker just before running the item (so the item may requeue
//! itself). Lock order: worker_pool -> nothing (the wakeup happens after release).

use core::cell::UnsafeCell;
use core::ptr::null;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use crate::config::MAX_CPUS;
use crate::sched::{self, WaitQueue};
use crate::sync::SpinLock;

/// A unit of deferred work. Lives as long as it may be queued (usually a static).
pub struct Work {
    func: fn(&'static Work),
    pending: AtomicBool,
    next: UnsafeCell<*const Work>,
}

// SAFETY: `next` is only touched under the owning pool's lock.
unsafe impl Sync for Work {}

impl Work {
    /// CONTEXT: any (const).
    pub const fn new(func: fn(&'static Work)) -> Self {
        Work {
            func,
            pending: AtomicBool::new(false),
            next: UnsafeCell::new(null()),
        }
    }
}

struct WorkList {
    head: *const Work,
    tail: *const Work,
}

// SAFETY: followed under the pool lock only.
unsafe impl Send for WorkList {}

struct WorkerPool {
    list: SpinLock<WorkList>,
    queued: AtomicUsize,
    idle: WaitQueue,
}

static POOLS: [WorkerPool; MAX_CPUS] = [const {
    WorkerPool {
        list: SpinLock::new(
            "worker_pool",
            WorkList {
                head: null(),
                tail: null(),
            },
        ),
        queued: AtomicUsize::new(0),
        idle: WaitQueue::new("worker_idle"),
    }
}; MAX_CPUS];

/// Starts one worker thread per CPU in `0..cpus`.
///
/// CONTEXT: may sleep; once at boot.
pub fn init(cpus: usize) {
    for cpu in 0..cpus {
        if sched::spawn_on(cpu, "kworker", worker_main, cpu).is_none() {
            panic!("no memory for the kworker of cpu{}", cpu);
        }
    }
}

/// Queues `work` on `cpu`'s worker. Returns false if it was already pending.
///
/// CONTEXT: any, IRQ handlers included; takes that CPU's worker_pool lock
/// (irqsave); does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn queue_work_on(cpu: usize, work: &'static Work) -> bool {
    if work.pending.swap(true, AcqRel) {
        return false;
    }
    let pool = &POOLS[cpu];
    {
        let mut list = pool.list.lock_irqsave();
        // SAFETY: pool lock held; the item is ours to link (we won `pending`).
        unsafe {
            *work.next.get() = null();
            if list.tail.is_null() {
                list.head = work;
            } else {
                *(*list.tail).next.get() = work;
            }
        }
        list.tail = work;
        pool.queued.fetch_add(1, Release);
    }
    pool.idle.wake_all();
    true
}

/// CONTEXT: the pool's kworker; takes worker_pool (irqsave); does not sleep.
fn take_next(pool: &WorkerPool) -> Option<&'static Work> {
    let mut list = pool.list.lock_irqsave();
    let work = list.head;
    if work.is_null() {
        return None;
    }
    // SAFETY: pool lock held; queued items are alive ('static).
    unsafe {
        list.head = *(*work).next.get();
        if list.head.is_null() {
            list.tail = null();
        }
        pool.queued.fetch_sub(1, Release);
        (*work).pending.store(false, Release);
        Some(&*work)
    }
}

/// The worker thread of CPU `cpu`.
///
/// CONTEXT: thread; runs items with no lock held, so they may sleep.
fn worker_main(cpu: usize) {
    let pool = &POOLS[cpu];
    loop {
        pool.idle.wait_until(|| pool.queued.load(Acquire) > 0);
        while let Some(work) = take_next(pool) {
            (work.func)(work);
        }
    }
}
