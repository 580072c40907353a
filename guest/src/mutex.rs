//! A sleeping mutex with a FIFO wait list and direct handoff: `mutex_unlock` gives
//! the mutex to the first waiter, so waiters are served in arrival order.
//!
//! Synchronization rules: `owner` is an atomic (the fast paths use compare-exchange
//! on it). `wait_lock` (spinlock, taken irqsave) protects the wait list and every
//! change of `owner` while the list may be non-empty. Lock order: wait_lock ->
//! run_queue (unlock wakes the new owner).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering::*};

use crate::sched::{self, current_thread_ptr, Thread};
use crate::sync::{self, LockName, RawSpinLock};

/// The mutex the primitives operate on. `repr(C)`: +0 owner thread (null = free),
/// +8 the wait_lock spinlock (32 bytes), +40 wait-list head, +48 tail, +56 name
/// pointer, +64 name length.
#[repr(C)]
pub struct RawMutex {
    owner: AtomicPtr<Thread>,
    wait_lock: RawSpinLock,
    head: UnsafeCell<*mut Thread>,
    tail: UnsafeCell<*mut Thread>,
    name: LockName,
}

// SAFETY: head/tail are only touched under wait_lock; the rest is atomic or immutable.
unsafe impl Sync for RawMutex {}
unsafe impl Send for RawMutex {}

impl RawMutex {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str) -> Self {
        RawMutex {
            owner: AtomicPtr::new(null_mut()),
            wait_lock: RawSpinLock::new("mutex.wait_lock"),
            head: UnsafeCell::new(null_mut()),
            tail: UnsafeCell::new(null_mut()),
            name: LockName::new(name),
        }
    }

    /// CONTEXT: any.
    pub fn name(&self) -> &'static str {
        self.name.as_str()
    }

    /// Whether the running thread owns the mutex.
    ///
    /// CONTEXT: thread context.
    pub fn is_owned_by_current(&self) -> bool {
        self.owner.load(Relaxed) == current_thread_ptr()
    }

    /// The owning thread's name, number and CPU, if the mutex is held (a
    /// racy snapshot, for diagnostics such as a watchdog report).
    ///
    /// CONTEXT: any.
    pub fn owner_info(&self) -> Option<(&'static str, usize, usize)> {
        let owner = self.owner.load(Acquire);
        // SAFETY: an owner is a live thread: it cannot exit while owning the
        // mutex (a racy read may see a just-released owner, still alive as it
        // is running mutex_unlock).
        (!owner.is_null()).then(|| unsafe { ((*owner).name(), (*owner).id, (*owner).cpu) })
    }

    /// CONTEXT: wait_lock held.
    unsafe fn enqueue(&self, thread: *mut Thread) {
        sync::lockdep_assert_held(&self.wait_lock);
        *(*thread).wait_next.get() = null_mut();
        *(*thread).waiting.get() = true;
        let tail = *self.tail.get();
        if tail.is_null() {
            *self.head.get() = thread;
        } else {
            *(*tail).wait_next.get() = thread;
        }
        *self.tail.get() = thread;
    }

    /// CONTEXT: wait_lock held.
    unsafe fn dequeue(&self) -> *mut Thread {
        sync::lockdep_assert_held(&self.wait_lock);
        let thread = *self.head.get();
        if !thread.is_null() {
            *self.head.get() = *(*thread).wait_next.get();
            if (*self.head.get()).is_null() {
                *self.tail.get() = null_mut();
            }
            *(*thread).waiting.get() = false;
        }
        thread
    }
}

/// Takes `mutex`, sleeping while another thread owns it.
///
/// CONTEXT: may sleep: thread context, no spinlock held, IRQs on. Not recursive.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mutex_lock(mutex: &RawMutex) {
    sync::might_sleep();
    let me = current_thread_ptr();
    if mutex.owner.load(Relaxed) == me {
        panic!("mutex_lock: {} already held by this thread", mutex.name());
    }
    if mutex
        .owner
        .compare_exchange(null_mut(), me, Acquire, Relaxed)
        .is_ok()
    {
        return;
    }
    loop {
        let flags = sync::spin_lock_irqsave(&mutex.wait_lock);
        // Handoff: unlock made us the owner before waking us.
        if mutex.owner.load(Acquire) == me
            || mutex
                .owner
                .compare_exchange(null_mut(), me, Acquire, Relaxed)
                .is_ok()
        {
            sync::spin_unlock_irqrestore(&mutex.wait_lock, flags);
            return;
        }
        // SAFETY: wait_lock held; `me` is the running thread, listed at most once.
        unsafe {
            if !*(*me).waiting.get() {
                mutex.enqueue(me);
            }
        }
        sched::set_current_sleeping();
        sync::spin_unlock_irqrestore(&mutex.wait_lock, flags);
        sched::schedule();
    }
}

/// Takes `mutex` if it is free; returns whether it did.
///
/// CONTEXT: thread context; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mutex_trylock(mutex: &RawMutex) -> bool {
    mutex
        .owner
        .compare_exchange(null_mut(), current_thread_ptr(), Acquire, Relaxed)
        .is_ok()
}

/// Releases `mutex`, handing it to the first waiter if there is one.
///
/// CONTEXT: `mutex` owned by the running thread; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mutex_unlock(mutex: &RawMutex) {
    let me = current_thread_ptr();
    if mutex.owner.load(Relaxed) != me {
        panic!("mutex_unlock: {} not owned by this thread", mutex.name());
    }
    let flags = sync::spin_lock_irqsave(&mutex.wait_lock);
    // SAFETY: wait_lock held.
    let next = unsafe { mutex.dequeue() };
    mutex.owner.store(next, Release);
    if !next.is_null() {
        // SAFETY: a listed waiter is alive (it sleeps in mutex_lock).
        sched::wake_up_thread(unsafe { &*next });
    }
    sync::spin_unlock_irqrestore(&mutex.wait_lock, flags);
}

/// Panics unless the running thread owns `mutex`. The host hooks this symbol too.
///
/// CONTEXT: any.
#[no_mangle]
#[inline(never)]
pub extern "C" fn lockdep_assert_mutex_held(mutex: &RawMutex) {
    if !mutex.is_owned_by_current() {
        panic!(
            "lockdep_assert_mutex_held: {} is not held by this thread",
            mutex.name()
        );
    }
}

/// Data protected by a sleeping mutex (the mutex first, so a static's symbol names it).
#[repr(C)]
pub struct Mutex<T> {
    raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, i.e. by the owner.
unsafe impl<T: Send> Sync for Mutex<T> {}
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str, data: T) -> Self {
        Mutex {
            raw: RawMutex::new(name),
            data: UnsafeCell::new(data),
        }
    }

    /// CONTEXT: any.
    pub fn raw(&self) -> &RawMutex {
        &self.raw
    }

    /// CONTEXT: see mutex_lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        mutex_lock(&self.raw);
        MutexGuard { mutex: self }
    }
}

pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    /// CONTEXT: the guard's owner (mutex held).
    fn deref(&self) -> &T {
        // SAFETY: the guard owns the mutex.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    /// CONTEXT: the guard's owner (mutex held).
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard owns the mutex.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    /// CONTEXT: the guard's owner; releases the mutex (see mutex_unlock).
    fn drop(&mut self) {
        mutex_unlock(&self.mutex.raw);
    }
}
