//! Self-tests for the host's lock validator, in the spirit of Linux's locking
//! self-tests: each `selftest-lock-*` scenario makes one known-good or known-bad
//! locking pattern, and its summary in [`CASES`] ends with the findings the
//! host must report, in parentheses (`(no finding)` for the good ones).
//!
//! The cases run on the scenario thread (CPU 0); the hard-IRQ parts run in the
//! call-function IPI handler on CPU 1 (`smp_call_function_single`, which waits for
//! them). Locks are the cases' own (named `lt_*`), so nothing else in the kernel
//! adds dependencies to them. Two locks built at run time with the same name are
//! one class, which gives recursion on a class without a real self-deadlock. Every
//! case but `abba-deadlock` powers off cleanly: the findings are the host's to make.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};

use crate::mutex::{mutex_lock, mutex_trylock, mutex_unlock, RawMutex};
use crate::page_alloc::{self, Gfp};
use crate::percpu::cpu_id;
use crate::println;
use crate::scenarios::Scenario;
use crate::sync::{
    local_irq_disable, local_irq_enable, might_sleep, preempt_disable, spin_lock, spin_lock_irq,
    spin_lock_irqsave, spin_trylock, spin_unlock, spin_unlock_irq, spin_unlock_irqrestore,
    RawSpinLock,
};

static A: RawSpinLock = RawSpinLock::new("lt_a");
static B: RawSpinLock = RawSpinLock::new("lt_b");
static C: RawSpinLock = RawSpinLock::new("lt_c");
static D: RawSpinLock = RawSpinLock::new("lt_d");
static SAFE: RawSpinLock = RawSpinLock::new("lt_safe");
static UNSAFE: RawSpinLock = RawSpinLock::new("lt_unsafe");
static MA: RawMutex = RawMutex::new("lt_mutex_a");
static MB: RawMutex = RawMutex::new("lt_mutex_b");

/// The scenario function for `name`, if it is one of these.
///
/// CONTEXT: any; pure.
pub fn lookup(name: &str) -> Option<fn(usize)> {
    let index = CASES.iter().position(|case| case.name == name)?;
    SELECTED.store(index, Relaxed);
    Some(run_selected)
}

/// The cases; each summary ends with the findings the host must report.
pub const CASES: &[Scenario] = &[
    Scenario {
        name: "selftest-lock-aa-spin",
        summary: "lock self-test: two spinlocks of one class nested (recursive-locking)",
        main: aa_spin,
    },
    Scenario {
        name: "selftest-lock-aa-mutex",
        summary: "lock self-test: two mutexes of one class nested (recursive-locking)",
        main: aa_mutex,
    },
    Scenario {
        name: "selftest-lock-abba-spin",
        summary: "lock self-test: A then B, later B then A (circular-dependency)",
        main: abba_spin,
    },
    Scenario {
        name: "selftest-lock-abba-mutex",
        summary: "lock self-test: mutex A then B, later B then A (circular-dependency)",
        main: abba_mutex,
    },
    Scenario {
        name: "selftest-lock-abbcca",
        summary: "lock self-test: A->B, B->C, C->A (circular-dependency)",
        main: abbcca,
    },
    Scenario {
        name: "selftest-lock-abbccdda",
        summary: "lock self-test: A->B, B->C, C->D, D->A (circular-dependency)",
        main: abbccdda,
    },
    Scenario {
        name: "selftest-lock-abba-trylock",
        summary: "lock self-test: A then trylock B, later B then A (no finding)",
        main: abba_trylock,
    },
    Scenario {
        name: "selftest-lock-nested-ok",
        summary: "lock self-test: A->B->C->D the same way every time (no finding)",
        main: nested_ok,
    },
    Scenario {
        name: "selftest-lock-mutex-spin-ok",
        summary: "lock self-test: a spinlock inside a mutex (no finding)",
        main: mutex_spin_ok,
    },
    Scenario {
        name: "selftest-lock-safe-then-unsafe",
        summary: "lock self-test: lock taken in hard IRQ, then safe->unsafe, unsafe learned last (irq-inversion)",
        main: safe_then_unsafe,
    },
    Scenario {
        name: "selftest-lock-unsafe-then-safe",
        summary: "lock self-test: unsafe learned first, then safe->unsafe, safe learned last (irq-inversion)",
        main: unsafe_then_safe,
    },
    Scenario {
        name: "selftest-lock-irq-on-then-in-irq",
        summary: "lock self-test: a lock taken with IRQs on, then in hard IRQ (inconsistent-irq-state)",
        main: on_then_in_irq,
    },
    Scenario {
        name: "selftest-lock-in-irq-then-irq-on",
        summary: "lock self-test: a lock taken in hard IRQ, then with IRQs on (inconsistent-irq-state)",
        main: in_irq_then_on,
    },
    Scenario {
        name: "selftest-lock-irqsave-in-irq-ok",
        summary: "lock self-test: irqsave in the handler and in threads (no finding)",
        main: irqsave_in_irq_ok,
    },
    Scenario {
        name: "selftest-lock-unlock-irq-in-irq",
        summary: "lock self-test: spin_lock_irq/spin_unlock_irq in a hard-IRQ handler (irqs-enabled-in-hardirq)",
        main: spin_lock_irq_in_irq,
    },
    Scenario {
        name: "selftest-lock-irqs-on-safe-held",
        summary: "lock self-test: IRQs turned on with a hardirq-safe lock held (inconsistent-irq-state)",
        main: irqs_on_with_safe_lock,
    },
    Scenario {
        name: "selftest-lock-mutex-under-spin",
        summary: "lock self-test: mutex_lock with a spinlock held (sleep-in-atomic)",
        main: mutex_under_spin,
    },
    Scenario {
        name: "selftest-lock-sleep-irqs-off",
        summary: "lock self-test: might_sleep with IRQs off (sleep-in-atomic)",
        main: sleep_irqs_off,
    },
    Scenario {
        name: "selftest-lock-sleep-in-irq",
        summary: "lock self-test: might_sleep in a hard-IRQ handler (sleep-in-atomic)",
        main: sleep_in_irq,
    },
    Scenario {
        name: "selftest-lock-gfp-kernel-in-spin",
        summary: "lock self-test: a GFP_KERNEL allocation with a spinlock held (sleep-in-atomic)",
        main: gfp_kernel_under_spin,
    },
    Scenario {
        name: "selftest-lock-gfp-atomic-ok",
        summary: "lock self-test: a GFP_ATOMIC allocation with a spinlock held (no finding)",
        main: gfp_atomic_under_spin_ok,
    },
    Scenario {
        name: "selftest-lock-bad-unlock",
        summary: "lock self-test: release of a lock the task does not hold (bad-unlock)",
        main: bad_unlock,
    },
    Scenario {
        name: "selftest-lock-assert-unheld",
        summary: "lock self-test: lockdep_assert_held on a lock the task does not hold (context-violation)",
        main: assert_unheld,
    },
    Scenario {
        name: "selftest-lock-abba-deadlock",
        summary: "lock self-test: two threads take two mutexes in opposite orders at once (circular-dependency, deadlock)",
        main: abba_deadlock,
    },
    Scenario {
        name: "selftest-lock-free-held",
        summary: "lock self-test: memory holding a lock the thread holds is freed (held-lock-freed)",
        main: free_held,
    },
];

static SELECTED: AtomicUsize = AtomicUsize::new(0);

/// Runs the selected case, then powers off cleanly.
///
/// CONTEXT: scenario thread on CPU 0; may sleep.
fn run_selected(arg: usize) {
    let case = &CASES[SELECTED.load(Relaxed)];
    (case.main)(arg);
    println!("cpu0: {}: done", case.name);
    crate::arch::system_off(0);
}

/// CONTEXT: as `spin_lock`: IRQs on or off, preemption off while held; does not sleep.
fn lock(l: &RawSpinLock) {
    spin_lock(l);
}

/// CONTEXT: as `spin_unlock`: the caller holds `l`.
fn unlock(l: &RawSpinLock) {
    spin_unlock(l);
}

/// Takes `first` then `second`, releases both.
///
/// CONTEXT: as `spin_lock`: holds neither lock on entry; does not sleep.
fn pair(first: &RawSpinLock, second: &RawSpinLock) {
    lock(first);
    lock(second);
    unlock(second);
    unlock(first);
}

/// Runs `f` in hard-IRQ context on another CPU and waits for it.
///
/// CONTEXT: thread with IRQs on, no spinlock held.
fn in_hardirq(f: fn(usize)) {
    let target = if crate::smp::online_cpus() > 1 { 1 } else { 0 };
    crate::smp::smp_call_function_single(target, f, 0);
}

// ---------------------------------------------------------------------------
// Recursion and cycles.

/// Two locks of one class, nested (recursive-locking).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn aa_spin(_: usize) {
    let first = RawSpinLock::new("lt_same_class");
    let second = RawSpinLock::new("lt_same_class");
    pair(&first, &second);
}

/// Two mutexes of one class, nested (recursive-locking).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn aa_mutex(_: usize) {
    let first = RawMutex::new("lt_same_mutex_class");
    let second = RawMutex::new("lt_same_mutex_class");
    mutex_lock(&first);
    mutex_lock(&second);
    mutex_unlock(&second);
    mutex_unlock(&first);
}

/// A -> B, then B -> A (circular-dependency).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abba_spin(_: usize) {
    pair(&A, &B);
    pair(&B, &A);
}

/// The same with mutexes (circular-dependency).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abba_mutex(_: usize) {
    for (first, second) in [(&MA, &MB), (&MB, &MA)] {
        mutex_lock(first);
        mutex_lock(second);
        mutex_unlock(second);
        mutex_unlock(first);
    }
}

/// A -> B, B -> C, C -> A (circular-dependency).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abbcca(_: usize) {
    pair(&A, &B);
    pair(&B, &C);
    pair(&C, &A);
}

/// A -> B, B -> C, C -> D, D -> A (circular-dependency).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abbccdda(_: usize) {
    pair(&A, &B);
    pair(&B, &C);
    pair(&C, &D);
    pair(&D, &A);
}

/// A then trylock B, later B -> A: a trylock cannot wait, so no cycle (no finding).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abba_trylock(_: usize) {
    lock(&A);
    if spin_trylock(&B) {
        unlock(&B);
    }
    unlock(&A);
    pair(&B, &A);
    // The mutex flavour too.
    mutex_lock(&MA);
    if mutex_trylock(&MB) {
        mutex_unlock(&MB);
    }
    mutex_unlock(&MA);
    mutex_lock(&MB);
    mutex_lock(&MA);
    mutex_unlock(&MA);
    mutex_unlock(&MB);
}

/// A -> B -> C -> D the same way every time, out-of-order unlock included (no finding).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn nested_ok(_: usize) {
    for _ in 0..3 {
        lock(&A);
        lock(&B);
        lock(&C);
        lock(&D);
        unlock(&D);
        unlock(&B);
        unlock(&C);
        unlock(&A);
        pair(&B, &D);
    }
}

/// A mutex, then a spinlock inside it (no finding).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn mutex_spin_ok(_: usize) {
    for _ in 0..2 {
        mutex_lock(&MA);
        lock(&A);
        unlock(&A);
        mutex_lock(&MB);
        mutex_unlock(&MB);
        mutex_unlock(&MA);
    }
}

// ---------------------------------------------------------------------------
// Hard-IRQ usage.

/// CONTEXT: hard-IRQ on the IPI target (through `in_hardirq`): takes and releases SAFE.
fn take_safe(_: usize) {
    lock(&SAFE);
    unlock(&SAFE);
}

/// SAFE -> UNSAFE with IRQs off, both orders of learning the two facts.
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn safe_to_unsafe_with_irqs_off() {
    local_irq_disable();
    pair(&SAFE, &UNSAFE);
    local_irq_enable();
}

/// SAFE is learned hardirq-safe first, UNSAFE hardirq-unsafe last (irq-inversion).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn safe_then_unsafe(_: usize) {
    in_hardirq(take_safe);
    safe_to_unsafe_with_irqs_off();
    lock(&UNSAFE);
    unlock(&UNSAFE);
}

/// UNSAFE is learned hardirq-unsafe first, SAFE hardirq-safe last (irq-inversion).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn unsafe_then_safe(_: usize) {
    lock(&UNSAFE);
    unlock(&UNSAFE);
    safe_to_unsafe_with_irqs_off();
    in_hardirq(take_safe);
}

/// A with IRQs on, then A in hard-IRQ context (inconsistent-irq-state).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn on_then_in_irq(_: usize) {
    lock(&A);
    unlock(&A);
    in_hardirq(|_| {
        lock(&A);
        unlock(&A);
    });
}

/// A in hard-IRQ context, then with IRQs on (inconsistent-irq-state).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn in_irq_then_on(_: usize) {
    in_hardirq(|_| {
        lock(&A);
        unlock(&A);
    });
    lock(&A);
    unlock(&A);
}

/// The correct pattern: irqsave in the handler and in the thread (no finding).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn irqsave_in_irq_ok(_: usize) {
    in_hardirq(|_| {
        let flags = spin_lock_irqsave(&A);
        spin_unlock_irqrestore(&A, flags);
    });
    for _ in 0..2 {
        let flags = spin_lock_irqsave(&A);
        let inner = spin_lock_irqsave(&B);
        spin_unlock_irqrestore(&B, inner);
        spin_unlock_irqrestore(&A, flags);
    }
    in_hardirq(|_| {
        let flags = spin_lock_irqsave(&B);
        spin_unlock_irqrestore(&B, flags);
    });
}

/// `spin_unlock_irq` in a handler turns IRQs on in hard-IRQ context (the irq
/// variant's bug; irqs-enabled-in-hardirq).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn spin_lock_irq_in_irq(_: usize) {
    in_hardirq(|_| {
        spin_lock_irq(&A);
        spin_unlock_irq(&A);
        local_irq_disable();
    });
}

/// IRQs turned on with a hardirq-safe lock held (inconsistent-irq-state: lockdep
/// marks every held lock HARDIRQ-ON when IRQs are enabled, and SAFE is IN-HARDIRQ).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn irqs_on_with_safe_lock(_: usize) {
    in_hardirq(take_safe);
    spin_lock_irq(&SAFE);
    local_irq_enable();
    local_irq_disable();
    spin_unlock_irq(&SAFE);
}

// ---------------------------------------------------------------------------
// Sleeping in atomic context.

/// mutex_lock with a spinlock held (sleep-in-atomic).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn mutex_under_spin(_: usize) {
    lock(&A);
    mutex_lock(&MA);
    mutex_unlock(&MA);
    unlock(&A);
}

/// might_sleep with IRQs off (sleep-in-atomic).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn sleep_irqs_off(_: usize) {
    local_irq_disable();
    might_sleep();
    local_irq_enable();
}

/// might_sleep in a hard-IRQ handler (sleep-in-atomic).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn sleep_in_irq(_: usize) {
    in_hardirq(|_| might_sleep());
}

/// A GFP_KERNEL allocation (may sleep, may reclaim) with a spinlock held
/// (sleep-in-atomic).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn gfp_kernel_under_spin(_: usize) {
    lock(&A);
    let page = page_alloc::alloc_pages(0, Gfp::Kernel);
    unlock(&A);
    if let Some(page) = page {
        page_alloc::free_pages(page, 0);
    }
}

/// A GFP_ATOMIC allocation with a spinlock held is fine (no finding).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn gfp_atomic_under_spin_ok(_: usize) {
    lock(&A);
    let page = page_alloc::alloc_pages(0, Gfp::Atomic);
    unlock(&A);
    if let Some(page) = page {
        page_alloc::free_pages(page, 0);
    }
}

// ---------------------------------------------------------------------------
// Unlock balance and real deadlocks.

/// Releases a lock that was taken behind the validator's back (its ticket and
/// owner written directly, not through `spin_lock`), so no task holds it as far
/// as the host knows (bad-unlock).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn bad_unlock(_: usize) {
    preempt_disable();
    take_unseen(&A);
    unlock(&A);
}

/// Takes `lock` by writing its ticket and owner directly, not through `spin_lock`:
/// the guest's own checks see it held, the host saw no acquisition.
///
/// CONTEXT: the scenario thread; `lock` is free and only this case uses it.
fn take_unseen(lock: &RawSpinLock) {
    let words = lock as *const RawSpinLock as *const AtomicU32;
    // SAFETY: RawSpinLock is repr(C) {next u32, serving u32, owner u32, ...}
    // (docs/machine.md); the lock is free and only this case uses it; atomics
    // accessed as atomics.
    unsafe {
        let next = &*words;
        let owner = &*words.add(2);
        next.fetch_add(1, Acquire);
        owner.store(cpu_id() as u32 + 1, Relaxed);
    }
}

/// Releases a lock taken by [`take_unseen`] the same way.
///
/// CONTEXT: as take_unseen.
fn release_unseen(lock: &RawSpinLock) {
    let words = lock as *const RawSpinLock as *const AtomicU32;
    // SAFETY: as in take_unseen.
    unsafe {
        let serving = &*words.add(1);
        let owner = &*words.add(2);
        owner.store(0, Relaxed);
        serving.fetch_add(1, Release);
    }
}

/// `lockdep_assert_held` on a lock the guest holds but took behind the host's
/// back, so the task holds it as far as the guest knows and not as far as the
/// host does (context-violation): the assertion's claim checked at run time.
///
/// CONTEXT: the scenario thread on CPU 0; may sleep; breaks exactly the rule its scenario summary names, no other.
fn assert_unheld(_: usize) {
    take_unseen(&B);
    crate::sync::lockdep_assert_held(&B);
    release_unseen(&B);
}

static HOLDS_B: AtomicBool = AtomicBool::new(false);

/// Two threads take MA and MB in opposite orders at the same time: a real
/// deadlock, which the host must stop and report (circular-dependency, deadlock).
///
/// CONTEXT: the scenario thread on CPU 0 (its hard-IRQ parts through `in_hardirq`); may sleep; breaks exactly the rule its scenario summary names, no other.
fn abba_deadlock(_: usize) {
    let other = if crate::smp::online_cpus() > 1 { 1 } else { 0 };
    mutex_lock(&MA);
    if crate::sched::spawn_on(other, "lt-abba", abba_other, 0).is_none() {
        panic!("lock selftest: no memory for a thread");
    }
    while !HOLDS_B.load(Acquire) {
        crate::sched::yield_now();
    }
    mutex_lock(&MB);
    mutex_unlock(&MB);
    mutex_unlock(&MA);
}

/// CONTEXT: thread on the other CPU; may sleep (takes MB then MA: half of the deadlock).
fn abba_other(_: usize) {
    mutex_lock(&MB);
    HOLDS_B.store(true, Release);
    mutex_lock(&MA);
    mutex_unlock(&MA);
    mutex_unlock(&MB);
}

/// Lock memory freed (re-initialised, as Linux's `spin_lock_init` checks) while the
/// thread holds the lock in it (held-lock-freed); its neighbour is freed first,
/// which is fine.
///
/// CONTEXT: the scenario thread on CPU 0; may sleep; breaks exactly the rule its scenario summary names, no other.
fn free_held(_: usize) {
    let locks = [
        RawSpinLock::new("lt_in_freed_memory"),
        RawSpinLock::new("lt_neighbour"),
    ];
    let size = core::mem::size_of::<RawSpinLock>();
    spin_lock(&locks[0]);
    crate::sync::debug_check_no_locks_freed(&locks[1] as *const RawSpinLock as usize, size);
    crate::sync::debug_check_no_locks_freed(locks.as_ptr() as usize, size);
    spin_unlock(&locks[0]);
}
