//! Spinlocks, IRQ masking and preemption control.
//!
//! The primitives are `#[no_mangle] #[inline(never)]` functions with stable names so
//! the host can probe them by symbol (docs/machine.md lists them). Rust code uses
//! them through `SpinLock<T>` and its guards.
//!
//! Every acquisition of a spinlock goes through `spin_lock` or a successful
//! `spin_trylock`, and every release through `spin_unlock`: the `_irq`/`_irqsave`
//! forms mask IRQs with `local_irq_*` and then call those. A host probe on the
//! three plain primitives sees every lock operation; the outer forms say how.
//!
//! A spinlock is a ticket lock on LDAXR/STLXR loops (the Cortex-A72 has no LSE).
//! Holding one disables preemption; the `_irq`/`_irqsave` forms also mask IRQs on
//! this CPU so an IRQ handler cannot spin on a lock its own CPU holds.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering::*};

use crate::arch::{self, IRQ_MASKED};
use crate::percpu::this_cpu;

/// A lock's name where the host can read it: the pointer and length of a
/// `&'static str`, in that order (`repr(C)`; a `&str` field's layout is not fixed).
#[repr(C)]
pub struct LockName {
    ptr: *const u8,
    len: usize,
}

impl LockName {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str) -> Self {
        LockName {
            ptr: name.as_ptr(),
            len: name.len(),
        }
    }

    /// CONTEXT: any.
    pub fn as_str(&self) -> &'static str {
        // SAFETY: built from a &'static str in `new` and never changed.
        unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// The lock word the primitives operate on. `repr(C)` with a fixed layout the host
/// may read: +0 next ticket, +4 ticket being served, +8 owner (CPU number + 1, 0 =
/// free), +16 name pointer, +24 name length.
#[repr(C)]
pub struct RawSpinLock {
    next: AtomicU32,
    serving: AtomicU32,
    owner: AtomicU32,
    _reserved: u32,
    name: LockName,
}

// SAFETY: all mutable state is atomic; the name is an immutable &'static str.
unsafe impl Sync for RawSpinLock {}
unsafe impl Send for RawSpinLock {}

impl RawSpinLock {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str) -> Self {
        RawSpinLock {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            owner: AtomicU32::new(0),
            _reserved: 0,
            name: LockName::new(name),
        }
    }

    /// CONTEXT: any.
    pub fn name(&self) -> &'static str {
        self.name.as_str()
    }

    /// Whether the running CPU holds this lock.
    ///
    /// CONTEXT: any.
    pub fn held_by_this_cpu(&self) -> bool {
        self.owner.load(Relaxed) == this_cpu().id as u32 + 1
    }

    /// CONTEXT: preemption disabled by the caller (spin_lock); spins, does not sleep.
    fn acquire(&self) {
        let ticket = self.next.fetch_add(1, Acquire);
        // A release ends with SEV (see `release`): a wait costs a WFE per holder
        // change, not a spin per instruction. A SEV between the check and the WFE
        // leaves the event register set, so the WFE returns at once.
        while self.serving.load(Acquire) != ticket {
            arch::wait_for_event();
        }
        self.owner.store(this_cpu().id as u32 + 1, Relaxed);
    }

    /// CONTEXT: preemption disabled by the caller (spin_trylock).
    fn try_acquire(&self) -> bool {
        let serving = self.serving.load(Acquire);
        let got = self
            .next
            .compare_exchange(serving, serving.wrapping_add(1), Acquire, Relaxed)
            .is_ok();
        if got {
            self.owner.store(this_cpu().id as u32 + 1, Relaxed);
        }
        got
    }

    /// CONTEXT: lock held by this CPU (checked).
    fn release(&self) {
        if !self.held_by_this_cpu() {
            panic!("spin_unlock of {} not held by this CPU", self.name());
        }
        self.owner.store(0, Relaxed);
        let serving = self.serving.load(Relaxed);
        self.serving.store(serving.wrapping_add(1), Release);
        arch::send_event();
    }
}

// ---------------------------------------------------------------------------
// IRQ masking on this CPU.

/// Whether IRQs are unmasked on this CPU.
///
/// CONTEXT: any.
pub fn irqs_enabled() -> bool {
    arch::irq_mask_word() & IRQ_MASKED == 0
}

/// Masks IRQs on this CPU.
///
/// CONTEXT: any; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn local_irq_disable() {
    // SAFETY: masking IRQs is always safe.
    unsafe { arch::set_irq_mask_word(arch::irq_mask_word() | IRQ_MASKED) };
}

/// Unmasks IRQs on this CPU.
///
/// CONTEXT: not in hard-IRQ context; IRQ handlers may run from here on.
#[no_mangle]
#[inline(never)]
pub extern "C" fn local_irq_enable() {
    // SAFETY: kernel code outside IRQ handlers is always ready for an IRQ.
    unsafe { arch::set_irq_mask_word(arch::irq_mask_word() & !IRQ_MASKED) };
}

/// Masks IRQs and returns the previous DAIF value for `local_irq_restore`.
///
/// CONTEXT: any; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn local_irq_save() -> u64 {
    let flags = arch::irq_mask_word();
    // SAFETY: masking IRQs is always safe.
    unsafe { arch::set_irq_mask_word(flags | IRQ_MASKED) };
    flags
}

/// Puts the IRQ mask back as `local_irq_save` found it.
///
/// CONTEXT: `flags` from local_irq_save on this CPU, in the same context.
#[no_mangle]
#[inline(never)]
pub extern "C" fn local_irq_restore(flags: u64) {
    let now = arch::irq_mask_word();
    // SAFETY: restores a state this context had before.
    unsafe { arch::set_irq_mask_word((now & !IRQ_MASKED) | (flags & IRQ_MASKED)) };
}

// ---------------------------------------------------------------------------
// Preemption.

/// Forbids switching the running thread out until the matching `preempt_enable`.
///
/// CONTEXT: any; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn preempt_disable() {
    this_cpu().preempt_count.fetch_add(1, Relaxed);
}

/// Undoes one `preempt_disable`; reschedules here if that was the last one and a
/// reschedule is pending.
///
/// CONTEXT: after preempt_disable on this CPU. May switch threads when the count
/// reaches zero with IRQs on outside IRQ context.
#[no_mangle]
#[inline(never)]
pub extern "C" fn preempt_enable() {
    let previous = this_cpu().preempt_count.fetch_sub(1, Relaxed);
    if previous == 0 {
        panic!("preempt_enable without preempt_disable");
    }
    if previous == 1 {
        crate::sched::preempt_if_needed();
    }
}

/// Whether the running context may not sleep: a spinlock or preempt_disable is
/// held, IRQs are masked, or this is an IRQ handler.
///
/// CONTEXT: any.
pub fn in_atomic() -> bool {
    let cpu = this_cpu();
    cpu.preempt_count.load(Relaxed) != 0 || cpu.hardirq_depth.load(Relaxed) != 0 || !irqs_enabled()
}

/// Marks a point that may sleep. Sleeping from atomic context is a kernel bug: this
/// prints a `BUG:` line (the host also probes this symbol) but carries on, as Linux
/// does; `schedule()` itself refuses to switch from atomic context.
///
/// CONTEXT: must be sleepable: no spinlock held, IRQs on, not in an IRQ handler.
#[no_mangle]
#[inline(never)]
pub extern "C" fn might_sleep() {
    if in_atomic() && !crate::panic::panicking() {
        crate::println!(
            "cpu{}: BUG: sleeping function called from invalid context",
            this_cpu().id
        );
    }
}

// ---------------------------------------------------------------------------
// Spinlock primitives (stable symbols).

/// Takes `lock`, spinning; disables preemption while held.
///
/// CONTEXT: any; does not sleep. If the lock is also taken from IRQ handlers, the
/// caller must have IRQs masked (use the _irq/_irqsave forms).
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_lock(lock: &RawSpinLock) {
    preempt_disable();
    lock.acquire();
}

/// Releases `lock`.
///
/// CONTEXT: `lock` held by this CPU.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_unlock(lock: &RawSpinLock) {
    lock.release();
    preempt_enable();
}

/// Takes `lock` if it is free; returns whether it did.
///
/// CONTEXT: any; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_trylock(lock: &RawSpinLock) -> bool {
    preempt_disable();
    let got = lock.try_acquire();
    if !got {
        preempt_enable();
    }
    got
}

/// Masks IRQs, then takes `lock`.
///
/// CONTEXT: IRQs on (spin_unlock_irq will unconditionally unmask them); not in an
/// IRQ handler.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_lock_irq(lock: &RawSpinLock) {
    local_irq_disable();
    spin_lock(lock);
}

/// Releases `lock` and unmasks IRQs.
///
/// CONTEXT: `lock` held by this CPU, taken with spin_lock_irq.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_unlock_irq(lock: &RawSpinLock) {
    // spin_unlock cannot reschedule with IRQs still masked; check once they are on.
    spin_unlock(lock);
    local_irq_enable();
    crate::sched::preempt_if_needed();
}

/// Masks IRQs, takes `lock`, returns the previous IRQ state.
///
/// CONTEXT: any, IRQ handlers included; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_lock_irqsave(lock: &RawSpinLock) -> u64 {
    let flags = local_irq_save();
    spin_lock(lock);
    flags
}

/// Releases `lock` and restores the IRQ state saved by spin_lock_irqsave.
///
/// CONTEXT: `lock` held by this CPU, taken with spin_lock_irqsave returning `flags`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_unlock_irqrestore(lock: &RawSpinLock, flags: u64) {
    spin_unlock(lock);
    local_irq_restore(flags);
    crate::sched::preempt_if_needed();
}

/// Panics unless the running CPU holds `lock`. The host hooks this symbol too.
///
/// CONTEXT: any.
#[no_mangle]
#[inline(never)]
pub extern "C" fn lockdep_assert_held(lock: &RawSpinLock) {
    if !lock.held_by_this_cpu() {
        panic!(
            "lockdep_assert_held: {} is not held by this CPU",
            lock.name()
        );
    }
}

// ---------------------------------------------------------------------------
// Typed wrapper.

/// Data protected by a spinlock (the lock word first, so a static's symbol names it).
#[repr(C)]
pub struct SpinLock<T> {
    raw: RawSpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, i.e. with the lock held.
unsafe impl<T: Send> Sync for SpinLock<T> {}
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// CONTEXT: any (const).
    pub const fn new(name: &'static str, data: T) -> Self {
        SpinLock {
            raw: RawSpinLock::new(name),
            data: UnsafeCell::new(data),
        }
    }

    /// CONTEXT: any.
    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// CONTEXT: see spin_lock.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        spin_lock(&self.raw);
        SpinGuard {
            lock: self,
            irq: IrqMode::Keep,
        }
    }

    /// CONTEXT: see spin_trylock.
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        // `then`, not `then_some`: a guard built for a failed attempt would
        // "release" a lock this CPU does not hold when dropped.
        spin_trylock(&self.raw).then(|| SpinGuard {
            lock: self,
            irq: IrqMode::Keep,
        })
    }

    /// CONTEXT: see spin_lock_irq.
    pub fn lock_irq(&self) -> SpinGuard<'_, T> {
        spin_lock_irq(&self.raw);
        SpinGuard {
            lock: self,
            irq: IrqMode::Enable,
        }
    }

    /// CONTEXT: see spin_lock_irqsave.
    pub fn lock_irqsave(&self) -> SpinGuard<'_, T> {
        let flags = spin_lock_irqsave(&self.raw);
        SpinGuard {
            lock: self,
            irq: IrqMode::Restore(flags),
        }
    }
}

enum IrqMode {
    Keep,
    Enable,
    Restore(u64),
}

/// Proof that the lock is held; releases it (the matching way) on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    irq: IrqMode,
}

impl<T> SpinGuard<'_, T> {
    /// CONTEXT: any.
    pub fn raw(&self) -> &RawSpinLock {
        &self.lock.raw
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    /// CONTEXT: the guard's CPU (lock held).
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    /// CONTEXT: the guard's CPU (lock held).
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    /// CONTEXT: the guard's CPU; releases the lock the way it was taken.
    fn drop(&mut self) {
        match self.irq {
            IrqMode::Keep => spin_unlock(&self.lock.raw),
            IrqMode::Enable => spin_unlock_irq(&self.lock.raw),
            IrqMode::Restore(flags) => spin_unlock_irqrestore(&self.lock.raw, flags),
        }
    }
}

/// Memory `[addr, addr+len)` is about to be freed or re-initialised: the host
/// checks that the calling thread holds no lock inside it, as Linux's
/// `debug_check_no_locks_freed` does (a probe symbol; nothing to do here but be
/// called).
///
/// CONTEXT: any.
#[no_mangle]
#[inline(never)]
pub extern "C" fn debug_check_no_locks_freed(addr: usize, len: usize) {
    core::hint::black_box((addr, len));
}
