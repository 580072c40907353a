//! Synthetic event streams for every finding kind.

use super::*;
use crate::event::{CpuId, IrqMaskCause};
use crate::finding::FindingKind;

/// Builds a stream: locks are named; `cpu`/`task` set the context of what follows.
struct Script {
    strings: StringTable,
    events: Vec<Event>,
    cpu: u16,
    task: u32,
    time: u64,
    addrs: HashMap<String, u64>,
}

impl Script {
    fn new() -> Self {
        Script {
            strings: StringTable::new(),
            events: Vec::new(),
            cpu: 0,
            task: 1,
            time: 0,
            addrs: HashMap::new(),
        }
    }

    fn on(&mut self, cpu: u16, task: u32) -> &mut Self {
        self.cpu = cpu;
        self.task = task;
        self
    }

    fn push(&mut self, kind: EventKind) -> &mut Self {
        self.time += 10;
        self.events.push(Event {
            time: self.time,
            cpu: CpuId(self.cpu),
            task: TaskId(self.task),
            pc: 0x1000 + self.time,
            caller: 0x2000 + self.time,
            kind,
        });
        self
    }

    /// The current CPU's events from here on have `frames` above their pc and caller.
    fn stack(&mut self, frames: &[u64]) -> &mut Self {
        let frames = self.strings.intern(&backtrace::encode(frames));
        self.push(EventKind::Stack { frames })
    }

    fn lock(&mut self, name: &str) -> LockRef {
        let next = 0x8000 + 0x40 * self.addrs.len() as u64;
        let addr = *self.addrs.entry(name.to_string()).or_insert(next);
        // Locks named "cls#n" are instances of class "cls".
        let class = name.split('#').next().unwrap();
        LockRef {
            addr,
            class: self.strings.intern(class),
        }
    }

    fn take(&mut self, name: &str, flavor: LockFlavor) -> &mut Self {
        let lock = self.lock(name);
        self.push(EventKind::LockAttempt { lock, flavor });
        self.push(EventKind::LockAcquired { lock, flavor })
    }

    fn attempt(&mut self, name: &str, flavor: LockFlavor) -> &mut Self {
        let lock = self.lock(name);
        self.push(EventKind::LockAttempt { lock, flavor })
    }

    fn spin(&mut self, name: &str) -> &mut Self {
        self.take(name, LockFlavor::Spin)
    }

    fn mutex(&mut self, name: &str) -> &mut Self {
        self.take(name, LockFlavor::Mutex)
    }

    fn unlock(&mut self, name: &str, flavor: LockFlavor) -> &mut Self {
        let lock = self.lock(name);
        self.push(EventKind::LockRelease { lock, flavor })
    }

    fn unspin(&mut self, name: &str) -> &mut Self {
        self.unlock(name, LockFlavor::Spin)
    }

    /// A read acquisition (`recursive`: lockdep's `read` 2, else 1).
    fn read(&mut self, name: &str, recursive: bool) -> &mut Self {
        let lock = self.lock(name);
        self.push(EventKind::ReadLock {
            lock,
            recursive,
            trylock: false,
        })
    }

    fn irqs(&mut self, on: bool) -> &mut Self {
        self.push(EventKind::IrqMask {
            old: on,
            new: !on,
            cause: IrqMaskCause::Instruction,
        })
    }

    fn hardirq(&mut self) -> &mut Self {
        self.push(EventKind::IrqMask {
            old: false,
            new: true,
            cause: IrqMaskCause::ExceptionEntry,
        });
        self.push(EventKind::HardIrqEnter { intid: 27 })
    }

    fn hardirq_exit(&mut self) -> &mut Self {
        self.push(EventKind::HardIrqExit { intid: 27 });
        self.push(EventKind::IrqMask {
            old: true,
            new: false,
            cause: IrqMaskCause::Eret,
        })
    }

    fn run(&self) -> Validator {
        let mut v = Validator::new();
        v.feed(&self.events, &self.strings);
        v
    }

    fn kinds(&self) -> Vec<FindingKind> {
        self.run().findings().iter().map(|f| f.kind).collect()
    }
}

/// A script whose CPUs 0..4 have IRQs on.
fn script() -> Script {
    let mut s = Script::new();
    for cpu in 0..4 {
        s.on(cpu, cpu as u32 + 1).irqs(true);
    }
    s.on(0, 1);
    s
}

#[test]
fn a_clean_nested_pattern_gives_nothing() {
    let mut s = script();
    for _ in 0..3 {
        s.on(0, 1).mutex("m").spin("a").spin("b");
        s.unspin("b").unspin("a").unlock("m", LockFlavor::Mutex);
        s.on(1, 2)
            .mutex("m")
            .spin("a")
            .unspin("a")
            .unlock("m", LockFlavor::Mutex);
    }
    assert_eq!(s.kinds(), []);
    let v = s.run();
    assert_eq!(v.stats().dependencies, 2);
    assert!(v.stats().chain_cache_hits > 0);
}

#[test]
fn abba_is_a_circular_dependency() {
    let mut s = script();
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let v = s.run();
    let f = v.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, FindingKind::CircularDependency);
    assert_eq!(f[0].key, "a -> b");
    assert!(f[0].details.iter().any(|l| l.contains("Chain exists of:")));
    assert!(f[0].details.iter().any(|l| l.trim() == "a --> b"));
    assert!(f[0]
        .details
        .iter()
        .any(|l| l.contains("CPU0") && l.contains("CPU1")));
    // Seen again: the same cause is not reported twice.
    let mut again = s;
    again.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    again.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    assert_eq!(again.kinds(), [FindingKind::CircularDependency]);
}

#[test]
fn a_four_lock_cycle_is_found_with_its_chain() {
    let mut s = script();
    for (x, y) in [("a", "b"), ("b", "c"), ("c", "d")] {
        s.spin(x).spin(y).unspin(y).unspin(x);
    }
    assert_eq!(s.kinds(), []);
    s.on(2, 3).spin("d").spin("a").unspin("a").unspin("d");
    let v = s.run();
    let f = &v.findings()[0];
    assert_eq!(v.findings().len(), 1);
    assert_eq!(f.kind, FindingKind::CircularDependency);
    assert_eq!(f.key, "a -> b -> c -> d");
    assert!(
        f.details.iter().any(|l| l.trim() == "a --> b --> c --> d"),
        "{:#?}",
        f.details
    );
    // Each dependency of the chain with where it was first taken, the new one
    // (d --> a) last, as lockdep's "existing dependency chain (in reverse order)".
    for (depth, lock, held) in [(3, "d", "c"), (2, "c", "b"), (1, "b", "a")] {
        let at = f
            .details
            .iter()
            .position(|l| l.starts_with(&format!("-> #{depth} ({lock}){{")))
            .unwrap_or_else(|| panic!("#{depth} {lock}: {:#?}", f.details));
        assert!(
            f.details[at + 1].contains(&format!("taken with ({held}) held by ?/")),
            "{:#?}",
            f.details
        );
    }
    assert!(f.details.iter().any(|l| l.starts_with("-> #0 (a){")));
}

#[test]
fn the_fs_reclaim_cycle_through_a_may_sleep_allocation() {
    // pcpu_mutex -> fs_reclaim (a GFP_KERNEL allocation), fs_reclaim -> fs_lock
    // (a shrinker), fs_lock -> pcpu_mutex (free under fs_lock).
    let mut s = script();
    let pseudo = LockRef {
        addr: 0x9999,
        class: s.strings.intern("fs_reclaim"),
    };
    s.mutex("pcpu_mutex");
    s.push(EventKind::PageAlloc {
        order: 0,
        gfp: crate::event::gfp::KERNEL,
        pa: 0x1000,
    });
    s.unlock("pcpu_mutex", LockFlavor::Mutex);
    s.push(EventKind::LockAttempt {
        lock: pseudo,
        flavor: LockFlavor::Pseudo,
    });
    s.push(EventKind::LockAcquired {
        lock: pseudo,
        flavor: LockFlavor::Pseudo,
    });
    s.mutex("fs_lock").unlock("fs_lock", LockFlavor::Mutex);
    s.push(EventKind::LockRelease {
        lock: pseudo,
        flavor: LockFlavor::Pseudo,
    });
    assert_eq!(s.kinds(), []);
    s.on(1, 2).mutex("fs_lock").mutex("pcpu_mutex");
    let v = s.run();
    assert_eq!(v.findings().len(), 1, "{:#?}", v.findings());
    assert_eq!(v.findings()[0].key, "fs_lock -> pcpu_mutex -> fs_reclaim");
    // An atomic allocation does not take the pseudo-lock.
    let mut atomic = script();
    atomic.mutex("x");
    atomic.push(EventKind::PageAlloc {
        order: 0,
        gfp: crate::event::gfp::ATOMIC,
        pa: 0,
    });
    assert_eq!(atomic.run().stats().dependencies, 0);
}

#[test]
fn irq_inversion_safe_learned_first() {
    let mut s = script();
    s.hardirq().spin("safe").unspin("safe").hardirq_exit();
    s.irqs(false)
        .spin("safe")
        .spin("unsafe")
        .unspin("unsafe")
        .unspin("safe")
        .irqs(true);
    assert_eq!(s.kinds(), []);
    s.on(1, 2).spin("unsafe").unspin("unsafe");
    let v = s.run();
    assert_eq!(
        v.findings().iter().map(|f| f.kind).collect::<Vec<_>>(),
        [FindingKind::IrqInversion]
    );
    assert_eq!(v.findings()[0].key, "safe -> unsafe");
}

#[test]
fn irq_inversion_unsafe_learned_first() {
    let mut s = script();
    s.spin("unsafe").unspin("unsafe");
    s.irqs(false)
        .spin("safe")
        .spin("unsafe")
        .unspin("unsafe")
        .unspin("safe")
        .irqs(true);
    assert_eq!(s.kinds(), []);
    s.on(1, 2)
        .hardirq()
        .spin("safe")
        .unspin("safe")
        .hardirq_exit();
    let v = s.run();
    assert_eq!(
        v.findings().iter().map(|f| f.kind).collect::<Vec<_>>(),
        [FindingKind::IrqInversion]
    );
    assert_eq!(v.findings()[0].key, "safe -> unsafe");
}

#[test]
fn irq_inversion_learned_by_the_edge() {
    let mut s = script();
    s.spin("unsafe").unspin("unsafe");
    s.hardirq().spin("safe").unspin("safe").hardirq_exit();
    // safe -> mid -> unsafe, the last edge closing the path.
    s.irqs(false)
        .spin("safe")
        .spin("mid")
        .unspin("mid")
        .unspin("safe");
    assert_eq!(s.kinds(), []);
    s.spin("mid")
        .spin("unsafe")
        .unspin("unsafe")
        .unspin("mid")
        .irqs(true);
    let v = s.run();
    assert_eq!(v.findings().len(), 1);
    assert_eq!(v.findings()[0].kind, FindingKind::IrqInversion);
    assert!(v.findings()[0]
        .details
        .iter()
        .any(|l| l.trim() == "safe --> mid --> unsafe"));
}

#[test]
fn inconsistent_irq_state_both_orders() {
    let mut s = script();
    s.spin("a").unspin("a");
    s.hardirq().spin("a").unspin("a").hardirq_exit();
    let v = s.run();
    assert_eq!(v.findings().len(), 1);
    assert_eq!(v.findings()[0].kind, FindingKind::InconsistentIrqState);
    assert!(v.findings()[0].details[1].contains("{HARDIRQ-ON-W} -> {IN-HARDIRQ-W}"));

    let mut s = script();
    s.hardirq().spin("a").unspin("a").hardirq_exit();
    s.on(1, 2).spin("a").unspin("a");
    let v = s.run();
    assert_eq!(v.findings().len(), 1);
    assert!(v.findings()[0].details[1].contains("{IN-HARDIRQ-W} -> {HARDIRQ-ON-W}"));

    // With IRQs off in task context it is consistent.
    let mut s = script();
    s.hardirq().spin("a").unspin("a").hardirq_exit();
    s.on(1, 2).irqs(false).spin("a").unspin("a").irqs(true);
    assert_eq!(s.kinds(), []);
}

#[test]
fn irqs_enabled_in_hardirq_after_spin_unlock_irq() {
    let mut s = script();
    s.hardirq();
    s.take("pcpu_lock", LockFlavor::SpinIrq);
    s.unlock("pcpu_lock", LockFlavor::SpinIrq).irqs(true);
    s.irqs(false).hardirq_exit();
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::IrqsEnabledInHardirq]);
    assert!(v.findings()[0].key.contains("pcpu_lock"));
}

#[test]
fn irqs_enabled_with_an_irq_safe_lock_held() {
    let mut s = script();
    s.hardirq().spin("a").unspin("a").hardirq_exit();
    s.on(1, 2)
        .irqs(false)
        .spin("a")
        .irqs(true)
        .irqs(false)
        .unspin("a")
        .irqs(true);
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    // lockdep: enabling IRQs with a hardirq-safe lock held is the inconsistent
    // {IN-HARDIRQ-W} -> {HARDIRQ-ON-W} usage (mark_held_locks), not a separate kind.
    assert_eq!(kinds, [FindingKind::InconsistentIrqState]);
    assert!(v.findings()[0].details[1].contains("{IN-HARDIRQ-W} -> {HARDIRQ-ON-W}"));
}

#[test]
fn a_correct_irqsave_in_irq_pattern_is_clean() {
    let mut s = script();
    s.hardirq();
    s.take("a", LockFlavor::SpinIrqSave)
        .unlock("a", LockFlavor::SpinIrqSave);
    s.hardirq_exit();
    s.on(1, 2).irqs(false);
    s.take("a", LockFlavor::SpinIrqSave)
        .unlock("a", LockFlavor::SpinIrqSave);
    s.irqs(true);
    assert_eq!(s.kinds(), []);
}

#[test]
fn sleep_in_atomic_each_reason() {
    let mut s = script();
    s.spin("a").mutex("m");
    assert_eq!(s.kinds(), [FindingKind::SleepInAtomic]);
    assert_eq!(s.run().findings()[0].key, "spinlock a held");

    let mut s = script();
    s.irqs(false).push(EventKind::MightSleep);
    assert_eq!(s.run().findings()[0].key, "IRQs disabled");

    let mut s = script();
    s.hardirq().push(EventKind::MightSleep);
    assert_eq!(s.run().findings()[0].key, "in hard-IRQ context");

    let mut s = script();
    s.mutex("m").push(EventKind::MightSleep);
    assert_eq!(s.kinds(), []);
}

#[test]
fn recursive_locking_same_lock_and_same_class() {
    let mut s = script();
    s.spin("a").attempt("a", LockFlavor::Spin);
    let kinds = s.kinds();
    assert_eq!(kinds[0], FindingKind::RecursiveLocking);
    // Waiting for a lock the task holds: a real (self) deadlock too.
    assert_eq!(
        kinds,
        [FindingKind::RecursiveLocking, FindingKind::Deadlock]
    );

    let mut s = script();
    s.spin("c#1").spin("c#2").unspin("c#2").unspin("c#1");
    assert_eq!(s.kinds(), [FindingKind::RecursiveLocking]);

    // A trylock of a held class does not wait: no report.
    let mut s = script();
    let lock = s.lock("a");
    s.spin("b");
    s.spin("a");
    s.push(EventKind::Trylock {
        lock,
        flavor: LockFlavor::Spin,
        acquired: false,
    });
    assert_eq!(s.kinds(), []);
}

#[test]
fn bad_unlock() {
    let mut s = script();
    s.spin("a").unspin("a").unspin("a");
    assert_eq!(s.kinds(), [FindingKind::BadUnlock]);
    // Another task's lock.
    let mut s = script();
    s.mutex("m").on(1, 2).unlock("m", LockFlavor::Mutex);
    assert_eq!(s.kinds(), [FindingKind::BadUnlock]);
}

#[test]
fn context_violation() {
    let mut s = script();
    let lock = s.lock("a");
    s.spin("a").push(EventKind::AssertHeld { lock }).unspin("a");
    assert_eq!(s.kinds(), []);
    s.push(EventKind::AssertHeld { lock });
    assert_eq!(s.kinds(), [FindingKind::ContextViolation]);
}

#[test]
fn a_real_abba_deadlock_is_found_in_the_wait_for_graph() {
    let mut s = script();
    s.on(0, 1).mutex("a");
    s.on(1, 2).mutex("b");
    s.on(0, 1).attempt("b", LockFlavor::Mutex);
    let v = s.run();
    assert!(!v.deadlocked());
    s.on(1, 2).attempt("a", LockFlavor::Mutex);
    let v = s.run();
    assert!(v.deadlocked());
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [FindingKind::CircularDependency, FindingKind::Deadlock]
    );
    let d = &v.findings()[1];
    assert_eq!(d.key, "a b");
    assert!(
        d.details
            .iter()
            .any(|l| l.contains("?/2 --(a)--> ?/1 --(b)--> ?/2")),
        "{:#?}",
        d.details
    );
}

#[test]
fn a_three_task_wait_cycle_and_a_chain_that_resolves() {
    let mut s = script();
    s.on(0, 1).spin("a");
    s.on(1, 2).spin("b");
    s.on(2, 3).spin("c");
    s.on(0, 1).attempt("b", LockFlavor::Spin);
    s.on(1, 2).attempt("c", LockFlavor::Spin);
    assert!(!s.run().deadlocked());
    // c is released and taken by task2: the chain untangles.
    let mut ok = Script {
        events: s.events.clone(),
        strings: s.strings.clone(),
        addrs: s.addrs.clone(),
        time: s.time,
        ..script()
    };
    ok.on(2, 3).unspin("c");
    let c = ok.lock("c");
    ok.on(1, 2).push(EventKind::LockAcquired {
        lock: c,
        flavor: LockFlavor::Spin,
    });
    ok.on(2, 3).attempt("a", LockFlavor::Spin);
    assert!(!ok.run().deadlocked());
    s.on(2, 3).attempt("a", LockFlavor::Spin);
    assert!(s.run().deadlocked());
}

#[test]
fn online_in_slices_equals_offline() {
    let mut s = script();
    s.spin("a").spin("b").unspin("b").unspin("a");
    s.hardirq().spin("b").unspin("b").hardirq_exit();
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let whole = s.run();
    let mut sliced = Validator::new();
    for chunk in s.events.chunks(3) {
        sliced.feed(chunk, &s.strings);
    }
    assert_eq!(whole.findings(), sliced.findings());
    assert!(!whole.findings().is_empty());
}

#[test]
fn an_irq_taken_while_waiting_does_not_wait() {
    // task1 waits for m (held by task2); an IRQ on its CPU takes a spinlock that
    // task2 then wants: task1's handler runs, so no deadlock.
    let mut s = script();
    s.on(1, 2).mutex("m");
    s.on(0, 1).attempt("m", LockFlavor::Mutex);
    s.hardirq().spin("a");
    s.on(1, 2).attempt("a", LockFlavor::Spin);
    assert!(!s.run().deadlocked());
    // The handler returns without releasing a (bad, but) now task1 really waits.
    s.on(0, 1).hardirq_exit();
    s.on(1, 2).attempt("a", LockFlavor::Spin);
    assert!(s.run().deadlocked());
}

#[test]
fn held_locks_report_lists_what_each_task_holds_now() {
    let mut s = Script::new();
    s.on(0, 1).mutex("big").spin("small");
    s.on(1, 2).mutex("other");
    s.on(1, 2).unlock("other", LockFlavor::Mutex);
    let report = s.run().held_locks_report();
    assert_eq!(report.len(), 3, "{report:?}");
    assert_eq!(report[0], "2 lock(s) held by ?/1:");
    assert!(report[1].starts_with(" #0: 0x8000 (big){"), "{report:?}");
    assert!(report[1].contains("} (mutex), at: "), "{report:?}");
    assert!(report[2].starts_with(" #1: 0x8040 (small){"), "{report:?}");
    s.on(0, 1)
        .unlock("small", LockFlavor::Spin)
        .unlock("big", LockFlavor::Mutex);
    assert!(s.run().held_locks_report().is_empty());
}

impl Script {
    /// A trylock of `name` that got (`acquired`) or did not get the lock; no attempt
    /// event, as the recorder emits it.
    fn trylock(&mut self, name: &str, acquired: bool) -> &mut Self {
        let lock = self.lock(name);
        self.push(EventKind::Trylock {
            lock,
            flavor: LockFlavor::Spin,
            acquired,
        })
    }
}

#[test]
fn a_successful_trylock_adds_no_dependency_to_itself() {
    // a -> t is never recorded (a trylock does not wait), so t then a is no cycle.
    let mut s = script();
    s.spin("a").trylock("t", true).unspin("t").unspin("a");
    s.on(1, 2).spin("t").spin("a").unspin("a").unspin("t");
    assert_eq!(s.kinds(), []);
    assert_eq!(s.run().stats().dependencies, 1, "only t -> a");
}

#[test]
fn locks_taken_while_a_trylock_is_held_depend_on_it() {
    // t is held (through a trylock) when b is taken: t -> b, and b then t is ABBA.
    let mut s = script();
    s.trylock("t", true).spin("b").unspin("b").unspin("t");
    s.on(1, 2).spin("b").spin("t").unspin("t").unspin("b");
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::CircularDependency]);
    assert_eq!(v.findings()[0].key, "b -> t");
    assert_eq!(v.stats().dependencies, 2);

    // A failed trylock holds nothing, so nothing depends on it.
    let mut s = script();
    s.trylock("t", false).spin("b").unspin("b");
    s.on(1, 2).spin("b").spin("t").unspin("t").unspin("b");
    assert_eq!(s.kinds(), []);
    assert_eq!(s.run().stats().dependencies, 1, "only b -> t");
}

#[test]
fn dependencies_reach_through_trylocks_to_the_first_blocking_lock() {
    // a (blocking), then t (trylock), then b: lockdep's check_prevs_add adds t -> b
    // and, since t was a trylock, also a -> b; it stops at a.
    let mut s = script();
    s.spin("z").spin("a").trylock("t", true).spin("b");
    s.unspin("b").unspin("t").unspin("a").unspin("z");
    assert_eq!(s.kinds(), []);
    let deps = s.run().stats().dependencies;
    assert_eq!(deps, 3, "z -> a, t -> b, a -> b (no z -> b, nothing -> t)");
    // b then a closes a -> b.
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::CircularDependency]);
    assert_eq!(v.findings()[0].key, "a -> b");
}

#[test]
fn enabling_irqs_with_a_spinlock_held_makes_it_hardirq_unsafe() {
    // a is only ever taken with IRQs off, but IRQs are turned on while it is held:
    // an interrupt there whose handler takes a deadlocks.
    let mut s = script();
    s.irqs(false).spin("a").irqs(true);
    s.irqs(false).unspin("a").irqs(true);
    assert_eq!(s.kinds(), []);
    s.on(1, 2).hardirq().spin("a").unspin("a").hardirq_exit();
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::InconsistentIrqState]);
    assert!(v.findings()[0].details[1].contains("{HARDIRQ-ON-W} -> {IN-HARDIRQ-W}"));

    // The same with the hard-IRQ use learned first is reported when IRQs go on
    // (irqs_enabled_with_an_irq_safe_lock_held); without IRQs going on, all is well.
    let mut s = script();
    s.irqs(false).spin("a").unspin("a").irqs(true);
    s.on(1, 2).hardirq().spin("a").unspin("a").hardirq_exit();
    assert_eq!(s.kinds(), []);
}

#[test]
fn a_spinlock_held_while_irqs_go_on_is_unsafe_for_irq_inversion_too() {
    // safe -> a (a taken under safe, IRQs off); a held while IRQs go on makes a
    // hardirq-unsafe, so the hardirq-safe class safe leads to an unsafe one.
    let mut s = script();
    s.hardirq().spin("safe").unspin("safe").hardirq_exit();
    s.irqs(false)
        .spin("safe")
        .spin("a")
        .unspin("a")
        .unspin("safe");
    s.spin("a").irqs(true);
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::IrqInversion]);
    assert_eq!(v.findings()[0].key, "safe -> a");
}

#[test]
fn a_deadlock_report_names_the_task_each_cpu_switched_to() {
    let mut s = script();
    s.on(0, 1).mutex("a");
    s.on(1, 2).mutex("b");
    s.on(0, 1).attempt("b", LockFlavor::Mutex);
    // Task 1 sleeps on b; CPU 0 runs task 3 from now on.
    s.push(EventKind::ContextSwitch {
        from: TaskId(1),
        to: TaskId(3),
    });
    s.on(1, 2).attempt("a", LockFlavor::Mutex);
    let v = s.run();
    assert!(v.deadlocked());
    let d = &v.findings()[1];
    assert!(
        d.details.iter().any(|l| l.starts_with("  cpu0: ?/3,")),
        "{:#?}",
        d.details
    );
    assert!(d.details.iter().any(|l| l.starts_with("  cpu1: ?/2,")));
    assert!(d
        .details
        .iter()
        .any(|l| l.starts_with("?/1 waits for 0x8040 (b){") && l.contains("held by ?/2,")));
    assert!(d
        .details
        .iter()
        .any(|l| l.starts_with("?/2 waits for 0x8000 (a){") && l.contains("held by ?/1,")));
}

#[test]
fn a_symbolizer_names_the_code_in_reports() {
    let mut s = script();
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let mut v = Validator::with_symbolizer(Box::new(|addr, _| Some(format!("f{addr:x}+0x4"))));
    v.feed(&s.events, &s.strings);
    let f = &v.findings()[0];
    assert_eq!(f.kind, FindingKind::CircularDependency);
    assert!(
        f.details
            .iter()
            .any(|l| l.contains(" <f") && l.contains("+0x4>")),
        "{:#?}",
        f.details
    );
}

#[test]
fn classes_resolve_whatever_order_their_string_ids_come_in() {
    // "p" gets string id 0 but is first used after "q" (id 1).
    let mut s = script();
    s.strings.intern("p");
    s.spin("q")
        .unspin("q")
        .spin("p")
        .spin("q")
        .unspin("q")
        .unspin("p");
    s.on(1, 2).spin("q").spin("p").unspin("p").unspin("q");
    let v = s.run();
    assert_eq!(v.stats().classes, 3, "fs_reclaim, p, q");
    assert_eq!(v.findings()[0].key, "p -> q");
}

#[test]
fn pseudo_locks_are_classed_by_name_and_an_unnamed_one_is_fs_reclaim() {
    let pseudo = |s: &mut Script, name: &str, acquire: bool| {
        let lock = s.lock(name);
        let flavor = LockFlavor::Pseudo;
        if acquire {
            s.push(EventKind::LockAttempt { lock, flavor });
            s.push(EventKind::LockAcquired { lock, flavor });
        } else {
            s.push(EventKind::LockRelease { lock, flavor });
        }
    };
    let may_sleep_alloc = EventKind::PageAlloc {
        order: 0,
        gfp: crate::event::gfp::KERNEL,
        pa: 0x4000_0000,
    };
    // A named pseudo-lock is its own class: an allocation under it depends on it.
    let mut s = script();
    pseudo(&mut s, "cpu_hotplug", true);
    s.push(may_sleep_alloc);
    pseudo(&mut s, "cpu_hotplug", false);
    assert_eq!(s.run().stats().dependencies, 1, "cpu_hotplug -> fs_reclaim");
    assert_eq!(s.run().stats().classes, 2);
    // An unnamed one is fs_reclaim itself; taken by direct reclaim (PF_MEMALLOC), an
    // allocation inside does not take it again: no self-dependency.
    let mut s = script();
    s.push(EventKind::ReclaimEnter);
    pseudo(&mut s, "", true);
    s.push(may_sleep_alloc);
    pseudo(&mut s, "", false);
    s.push(EventKind::ReclaimExit);
    assert_eq!(s.kinds(), []);
    assert_eq!(s.run().stats().dependencies, 0);
    assert_eq!(s.run().stats().classes, 1);
    // Out of reclaim again, fs_reclaim held and a sleeping allocation is the wrong
    // nesting (a recursive fs_reclaim).
    pseudo(&mut s, "", true);
    s.push(may_sleep_alloc);
    assert_eq!(s.kinds(), [FindingKind::RecursiveLocking]);
}

#[test]
fn stats_count_every_event_fed() {
    let mut s = script();
    s.spin("a")
        .unspin("a")
        .trylock("t", true)
        .trylock("u", false);
    let v = s.run();
    assert_eq!(v.stats().events, s.events.len() as u64);
    assert_eq!(
        v.stats().lock_events,
        5,
        "attempt, acquired, release, 2 trylocks"
    );
}

#[test]
fn masking_irqs_again_with_an_irq_safe_lock_held_is_not_enabling_them() {
    let mut s = script();
    s.hardirq().spin("a").unspin("a").hardirq_exit();
    s.on(1, 2).irqs(false).spin("a").irqs(false);
    s.unspin("a").irqs(true);
    assert_eq!(s.kinds(), []);
}

#[test]
fn task_names_from_markers_appear_in_reports() {
    let mut s = script();
    let label = s.strings.intern("task:kworker/1");
    s.push(EventKind::Marker { label, value: 2 });
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let v = s.run();
    assert!(
        v.findings()[0]
            .details
            .iter()
            .any(|l| l.starts_with("kworker/1/2 is trying to acquire lock:")),
        "{:#?}",
        v.findings()[0].details
    );
}

/// A validator over `s` whose symbolizer names every address `f<hex>+0x4`.
fn symbolized(s: &Script) -> Validator {
    let mut v = Validator::with_symbolizer(Box::new(|addr, _| Some(format!("f{addr:x}+0x4"))));
    v.feed(&s.events, &s.strings);
    v
}

#[test]
fn report_sites_name_the_lock_its_usage_and_the_calling_code_task_and_time() {
    let mut s = script();
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    // Task 2 holds b (acquired at this event) when it tries a.
    let b_acquired = s
        .events
        .iter()
        .find(|e| e.task == TaskId(2) && matches!(e.kind, EventKind::LockAcquired { .. }))
        .unwrap();
    let (t, caller) = (b_acquired.time, b_acquired.caller);
    let held_line = |v: &Validator| {
        let d = &v.findings()[0].details;
        let at = d
            .iter()
            .position(|l| l == "but task is already holding lock:")
            .unwrap();
        d[at + 1].clone()
    };
    let v = symbolized(&s);
    let usage = v.usage(v.by_name["b"]);
    assert_eq!(
        held_line(&v),
        format!(" 0x8040 (b){usage}, at: {caller:#x} <f{caller:x}+0x4> [cpu1 t={t}]")
    );
    // Without symbols, bare addresses.
    assert_eq!(
        held_line(&s.run()),
        format!(" 0x8040 (b){usage}, at: {caller:#x} [cpu1 t={t}]")
    );
}

#[test]
fn keys_name_the_calling_function_without_its_offset() {
    let mut s = script();
    s.unspin("never_taken");
    let v = symbolized(&s);
    let caller = s.events.last().unwrap().caller;
    assert_eq!(v.findings()[0].key, format!("never_taken f{caller:x}"));
    assert_eq!(
        s.run().findings()[0].key,
        format!("never_taken {caller:#x}")
    );
}

#[test]
fn the_scenario_of_a_long_cycle_names_the_lock_before_the_source() {
    // a -> b -> c -> d -> e, then e -> a closes it: CPU1 holds d and takes e.
    let mut s = script();
    for pair in ["a", "b", "c", "d", "e"].windows(2) {
        s.on(0, 1)
            .spin(pair[0])
            .spin(pair[1])
            .unspin(pair[1])
            .unspin(pair[0]);
    }
    s.on(1, 2).spin("e").spin("a").unspin("a").unspin("e");
    let v = s.run();
    let d = &v.findings()[0].details;
    assert!(
        d.iter().any(|l| l.trim() == "a --> b --> c --> d --> e"),
        "{d:#?}"
    );
    let cpu1 = |lock: &str| format!("       {:<28}lock({lock});", "");
    let at = d
        .iter()
        .position(|l| l == "  lock(e);")
        .expect("CPU0 takes e");
    assert_eq!(d[at + 1], cpu1("d"), "{d:#?}");
    assert_eq!(d[at + 2], cpu1("e"));
    assert_eq!(d[at + 3], "  lock(a);");
}

#[test]
fn recursive_reports_say_whether_it_is_the_same_lock() {
    let mut s = script();
    s.spin("c#1").spin("c#1");
    let v = s.run();
    assert_eq!(
        v.findings()[0].details[3],
        "but task is already holding the same lock:"
    );
    let mut s = script();
    s.spin("c#1").spin("c#2");
    let v = s.run();
    assert!(
        v.findings()[0].details[3] == "but task is already holding another lock of the same class:",
        "{:#?}",
        v.findings()[0].details
    );
}

#[test]
fn releasing_one_instance_of_a_class_keeps_the_other_held() {
    let script_with = |assert_on: &str| {
        let mut s = script();
        s.spin("c#1").spin("c#2").unspin("c#1");
        let lock = s.lock(assert_on);
        s.push(EventKind::AssertHeld { lock });
        s.kinds()
    };
    assert_eq!(script_with("c#2"), [FindingKind::RecursiveLocking]);
    assert_eq!(
        script_with("c#1"),
        [FindingKind::RecursiveLocking, FindingKind::ContextViolation]
    );
}

#[test]
fn the_irq_inversion_scenario_names_the_lock_before_the_unsafe_one() {
    // safe -> m1 -> m2 -> m3 -> unsafe (all taken with IRQs off), unsafe taken with
    // IRQs on elsewhere, safe taken in hard-IRQ context.
    let mut s = script();
    s.spin("unsafe").unspin("unsafe");
    s.hardirq().spin("safe").unspin("safe").hardirq_exit();
    s.irqs(false);
    for pair in ["safe", "m1", "m2", "m3", "unsafe"].windows(2) {
        s.spin(pair[0])
            .spin(pair[1])
            .unspin(pair[1])
            .unspin(pair[0]);
    }
    s.irqs(true);
    let v = s.run();
    let d = &v.findings()[0].details;
    assert_eq!(v.findings()[0].kind, FindingKind::IrqInversion);
    let cpu1 = |what: &str| format!("       {:<28}{what}", "");
    let at = d
        .iter()
        .position(|l| l == "  lock(unsafe);")
        .expect("the scenario names CPU0 taking unsafe");
    assert_eq!(d[at + 1], cpu1("local_irq_disable();"));
    assert_eq!(d[at + 2], cpu1("lock(safe);"));
    assert_eq!(d[at + 3], cpu1("lock(m3);"), "{d:#?}");
}

#[test]
fn irqs_enabled_in_hardirq_blames_only_a_spin_unlock_irq_just_before() {
    // A plain spin_unlock before the IRQs go on is not the cause.
    let mut s = script();
    s.hardirq().spin("a").unspin("a").irqs(true);
    s.irqs(false).hardirq_exit();
    let v = s.run();
    assert_eq!(v.findings()[0].kind, FindingKind::IrqsEnabledInHardirq);
    assert!(
        !v.findings()[0]
            .details
            .iter()
            .any(|l| l.starts_with("after releasing")),
        "{:#?}",
        v.findings()[0].details
    );
}

/// Through the [`crate::Analysis`] seam, one event at a time, the validator finds what
/// it finds fed the whole stream at once.
#[test]
fn the_analysis_seam_feeds_the_validator_event_by_event() {
    let mut s = script();
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let mut analysis: Box<dyn crate::Analysis> = Box::new(Validator::new());
    for event in &s.events {
        analysis.event(event, &s.strings);
    }
    analysis.finish();
    assert_eq!(analysis.findings().len(), 1);
    assert_eq!(analysis.findings(), s.run().findings());
}

/// The DOT graph: every class a node, every dependency an edge, and exactly the
/// edges of the reported ABBA cycle red (here all of them, plus none other).
#[test]
fn the_dependency_graph_draws_the_reported_cycle_in_red() {
    let mut s = script();
    s.on(0, 1).spin("a").spin("b").unspin("b").unspin("a");
    s.on(0, 1).spin("c").spin("a").unspin("a").unspin("c");
    s.on(1, 2).spin("b").spin("a").unspin("a").unspin("b");
    let dot = s.run().dot();
    assert!(
        dot.starts_with("digraph lockdep {") && dot.ends_with("}\n"),
        "{dot}"
    );
    for class in ["a", "b", "c"] {
        assert!(dot.contains(&format!("[label=\"{class}")), "{dot}");
    }
    let edges: Vec<&str> = dot.lines().filter(|l| l.contains("->")).collect();
    let red: Vec<&str> = edges
        .iter()
        .copied()
        .filter(|l| l.contains("color=red"))
        .collect();
    // a -> b, c -> a, and b -> a, which closes the cycle.
    assert_eq!(edges.len(), 3, "{dot}");
    assert_eq!(red.len(), 2, "{dot}");
    assert!(
        edges.iter().any(|l| !l.contains("color=red")),
        "c -> a is not on the cycle: {dot}"
    );
}

#[test]
fn each_dependency_shows_the_stack_of_its_first_occurrence_and_the_reporter_its_own() {
    let mut s = script();
    s.on(0, 1).stack(&[0x5000, 0x5100]).spin("a").spin("b");
    // The dependency a -> b was made above; the same pair again, elsewhere, adds
    // nothing.
    let b_first = s.events[s.events.len() - 2]; // the attempt
    assert!(matches!(b_first.kind, EventKind::LockAttempt { .. }));
    s.unspin("b").unspin("a");
    s.stack(&[0x7000])
        .spin("a")
        .spin("b")
        .unspin("b")
        .unspin("a");
    s.on(1, 2).stack(&[0x6000]).spin("b").spin("a");
    let closing = s.events[s.events.len() - 2];
    let v = s.run();
    let f = &v.findings()[0];
    let d = &f.details;
    let at = d
        .iter()
        .position(|l| l.starts_with("-> #1 (b){"))
        .expect("the dependency a -> b");
    let frame = |addr: u64| format!("       {addr:#x}");
    assert_eq!(
        d[at + 2..at + 6],
        [
            frame(b_first.pc),
            frame(b_first.caller),
            frame(0x5000),
            frame(0x5100)
        ],
        "{d:#?}"
    );
    let trace = d
        .iter()
        .position(|l| l == "Call trace:")
        .expect("a stack backtrace");
    assert_eq!(
        d[trace + 1..],
        [frame(closing.pc), frame(closing.caller), frame(0x6000)]
    );
    // The structured parts: the reporter first, with the same frames.
    assert_eq!(f.sites[0].role, "reporter");
    assert_eq!(f.sites[0].frames, [closing.pc, closing.caller, 0x6000]);
    let dependency = f.sites.iter().find(|s| s.role == "dependency").unwrap();
    assert_eq!(
        dependency.frames,
        [b_first.pc, b_first.caller, 0x5000, 0x5100]
    );
    assert_eq!(dependency.lock.as_deref(), Some("b"));
    let classes: Vec<&str> = f.locks.iter().map(|l| l.class.as_str()).collect();
    assert!(
        classes.contains(&"a") && classes.contains(&"b"),
        "{classes:?}"
    );
    assert_eq!(f.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [2, 1]);
}

#[test]
fn usage_bits_are_lockdeps_four_characters() {
    let mut s = script();
    s.on(1, 2).irqs(true).spin("on").unspin("on");
    s.irqs(false).spin("off").unspin("off");
    s.hardirq().spin("irq").unspin("irq").hardirq_exit();
    s.spin("both").unspin("both").hardirq();
    s.spin("both").unspin("both").hardirq_exit();
    let v = s.run();
    let usage = |name: &str| v.usage(v.by_name[name]);
    assert_eq!(usage("on"), "{+.+.}");
    assert_eq!(usage("off"), "{....}");
    assert_eq!(usage("irq"), "{-...}");
    assert_eq!(usage("both"), "{?.+.}");
}

#[test]
fn an_irq_finding_names_the_irq_and_the_handler_its_dispatcher_called() {
    let mut s = script();
    s.on(0, 1).hardirq();
    // The reporting event's code: pc 0x1000+t in f<pc>, called from 0x2000+t in
    // f<caller>, called by the dispatcher at 0x3000.
    s.stack(&[0x3000, 0x3100]);
    s.spin("a").unspin("a").irqs(true);
    let names = |addr: u64, _| {
        Some(match addr {
            0x3000 => "percpu_guest::irq::handle_irq+0x20".to_string(),
            _ => format!("f{addr:x}+0x4"),
        })
    };
    let mut v = Validator::with_symbolizer(Box::new(names));
    v.feed(&s.events, &s.strings);
    let f = &v.findings()[0];
    assert_eq!(f.kind, FindingKind::IrqsEnabledInHardirq);
    let irq = s.events.iter().find_map(|e| match e.kind {
        EventKind::HardIrqEnter { intid } => Some(intid),
        _ => None,
    });
    let on = s.events.last().unwrap();
    let line = format!(
        "in hard IRQ {}, handler f{:x} called from 0x3000 <percpu_guest::irq::handle_irq+0x20>",
        irq.unwrap(),
        on.caller
    );
    assert!(f.details.contains(&line), "{line}\n{:#?}", f.details);
    assert_eq!(f.sites[0].irq, irq);
}

#[test]
fn an_irq_queued_behind_the_code_it_interrupted_deadlocks_whoever_holds_the_lock() {
    // task2 holds a; task1 queues for it (a ticket: its turn comes first), and
    // a handler on task1's CPU queues for it too: task2's release hands a to
    // task1, which cannot run until the handler returns, which waits for a.
    let mut s = script();
    s.on(1, 2).spin("a");
    s.on(0, 1).attempt("a", LockFlavor::Spin);
    assert!(!s.run().deadlocked());
    s.hardirq().attempt("a", LockFlavor::Spin);
    let v = s.run();
    assert!(v.deadlocked());
    let deadlock = v
        .findings()
        .iter()
        .find(|f| f.kind == FindingKind::Deadlock)
        .expect("a deadlock finding");
    assert!(
        deadlock.details[0].contains("already waiting for"),
        "{:?}",
        deadlock.details
    );
    // A handler queued for another lock waits only for its holder.
    let mut other = script();
    other.on(1, 2).spin("a").spin("b");
    other.on(0, 1).attempt("a", LockFlavor::Spin);
    other.hardirq().attempt("b", LockFlavor::Spin);
    assert!(!other.run().deadlocked());
}

/// Task 1 on cpu0 holds `pcpu_lock` (IRQs off) and waits for its cross-CPU call
/// to cpu1; task 2 on cpu1 spins for `pcpu_lock` with IRQs masked, so it never
/// takes the IPI: the porting bug of an IPI TLB flush issued under a spinlock.
fn ipi_under_spinlock(s: &mut Script, unmask_first: bool, unlock_first: bool) {
    const CSD: u64 = 0xffff_0000_0081_3f40;
    s.on(0, 1).irqs(false).spin("pcpu_lock");
    s.push(EventKind::CsdWait {
        target: CpuId(1),
        csd: CSD,
    });
    s.on(1, 2);
    if unlock_first {
        s.push(EventKind::CsdUnlock { csd: CSD });
    }
    if !unmask_first {
        s.irqs(false);
    }
    s.attempt("pcpu_lock", LockFlavor::SpinIrqSave);
}

#[test]
fn an_ipi_waited_for_under_a_lock_its_target_spins_on_with_irqs_masked_deadlocks() {
    let mut s = script();
    ipi_under_spinlock(&mut s, false, false);
    let v = s.run();
    assert!(v.deadlocked());
    let d = v
        .findings()
        .iter()
        .find(|f| f.kind == FindingKind::Deadlock)
        .expect("a deadlock finding");
    assert_eq!(d.key, "ipi pcpu_lock");
    assert!(d.title.contains("IPIs"), "{}", d.title);
    for line in [
        "?/1 waits for cpu1 to run its cross-CPU call 0xffff000000813f40, but cpu1 runs ?/2, which waits with IRQs masked",
        "?/2 --(pcpu_lock)--> ?/1 --(ipi to cpu1)--> ?/2",
    ] {
        assert!(
            d.details.iter().any(|l| l.contains(line)),
            "{line}\n{:#?}",
            d.details
        );
    }
}

#[test]
fn an_ipi_wait_is_no_deadlock_while_its_target_can_take_it_or_after_it_ran() {
    // The target spins with IRQs on: it takes the IPI while it waits.
    let mut s = script();
    ipi_under_spinlock(&mut s, true, false);
    assert!(!s.run().deadlocked());
    // The call already ran (csd_unlock) before the target masked and waited.
    let mut s = script();
    ipi_under_spinlock(&mut s, false, true);
    assert!(!s.run().deadlocked());
    // The target waits, IRQs masked, for a mutex the sender holds: it sleeps, and
    // its CPU takes the IPI once it runs something else.
    let mut s = script();
    s.on(0, 1).mutex("m");
    s.push(EventKind::CsdWait {
        target: CpuId(1),
        csd: 0x40,
    });
    s.on(1, 2).irqs(false).attempt("m", LockFlavor::Mutex);
    assert!(!s.run().deadlocked());
    // Two CPUs call each other with IRQs on (each masks them only for a moment
    // to queue its call): each takes the other's IPI while it waits.
    let mut s = script();
    for (cpu, target) in [(0, 1), (1, 0)] {
        s.on(cpu, cpu as u32 + 1).push(EventKind::CsdWait {
            target: CpuId(target),
            csd: 0x80 + u64::from(cpu),
        });
        s.irqs(false);
    }
    assert!(!s.run().deadlocked());
    // The same with IRQs off when the calls were made: neither ever takes one.
    let mut s = script();
    for (cpu, target) in [(0, 1), (1, 0)] {
        s.on(cpu, cpu as u32 + 1)
            .irqs(false)
            .push(EventKind::CsdWait {
                target: CpuId(target),
                csd: 0x80 + u64::from(cpu),
            });
    }
    assert!(s.run().deadlocked());
}

/// lockdep's `local_lock_2` and `local_lock_3A` self-tests: a local lock taken
/// with IRQs on, then under an IRQ-safe lock, is no IRQ inversion (lockdep's
/// `usage_skip`) — neither as its end nor as a way through (`3A`: local → B).
/// The same classes as ordinary locks are an inversion.
#[test]
fn a_local_lock_is_neither_end_nor_middle_of_an_irq_inversion() {
    for local in [true, false] {
        let mut s = script();
        if local {
            let class = s.strings.intern("local_A");
            s.push(EventKind::LocalLockClass { class });
        }
        s.spin("local_A").spin("B").unspin("B").unspin("local_A");
        s.hardirq().spin("A").unspin("A").hardirq_exit();
        s.irqs(false)
            .spin("A")
            .spin("local_A")
            .unspin("local_A")
            .unspin("A")
            .irqs(true);
        let expected: &[FindingKind] = if local {
            &[]
        } else {
            &[FindingKind::IrqInversion]
        };
        assert_eq!(s.kinds(), expected, "local: {local}");
    }
}

/// A local lock still makes dependencies: it closes a cycle like any lock.
#[test]
fn a_local_lock_still_closes_a_cycle() {
    let mut s = script();
    let class = s.strings.intern("local_A");
    s.push(EventKind::LocalLockClass { class });
    s.spin("local_A").spin("B").unspin("B").unspin("local_A");
    s.spin("B").spin("local_A").unspin("local_A").unspin("B");
    assert_eq!(s.kinds(), [FindingKind::CircularDependency]);
}

/// lockdep's `init_held_*` self-tests: re-initialising (or freeing) a lock the
/// task holds; memory next to it, or a lock another task holds, is fine.
#[test]
fn freeing_memory_with_a_held_lock_in_it_is_reported() {
    let mut s = script();
    s.spin("A");
    let addr = s.lock("A").addr;
    s.push(EventKind::LockMemoryFreed {
        addr: addr + 8,
        len: 64,
    });
    s.on(1, 2).push(EventKind::LockMemoryFreed { addr, len: 8 });
    assert_eq!(s.kinds(), []);
    s.on(0, 1).push(EventKind::LockMemoryFreed { addr, len: 8 });
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::HeldLockFreed]);
    assert!(v.findings()[0]
        .details
        .iter()
        .any(|l| l.contains("held lock freed")));
}

/// Linux's `lockdep_reset` forgets the task's held locks (its self-test leaves
/// `A` held after an A-A case); without it, taking `A` again would be recursive.
#[test]
fn a_lockdep_reset_forgets_the_tasks_held_locks() {
    let mut s = script();
    s.spin("A");
    s.on(1, 2).spin("B");
    let reset = s.strings.intern(LOCKDEP_RESET_MARKER);
    s.on(0, 1).push(EventKind::Marker {
        label: reset,
        value: 0,
    });
    s.spin("A").unspin("A");
    assert_eq!(s.kinds(), []);
    // Only the resetting task's: task 2 still holds B (and now waits for itself).
    s.on(1, 2).spin("B");
    assert_eq!(
        s.kinds(),
        [FindingKind::RecursiveLocking, FindingKind::Deadlock]
    );
}

/// With lockdep's view only (Linux's lockdep hooks), an attempt on a lock another
/// task holds is no wait, so no real deadlock; lockdep's cycle is still found. A
/// mutex taken under a spinlock is no sleep-in-atomic finding either.
#[test]
fn with_lockdeps_view_only_there_is_no_wait_for_graph_nor_sleep_check() {
    for lockdep_only in [false, true] {
        let mut s = script();
        if lockdep_only {
            let label = s.strings.intern(LOCKDEP_ONLY_MARKER);
            s.push(EventKind::Marker { label, value: 0 });
        }
        s.spin("S")
            .mutex("M")
            .unlock("M", LockFlavor::Mutex)
            .unspin("S");
        let sleeps = s.kinds().contains(&FindingKind::SleepInAtomic);
        assert_eq!(sleeps, !lockdep_only);
    }
}

#[test]
fn without_recorded_waits_there_is_no_wait_for_graph() {
    for waits in [true, false] {
        let mut s = script();
        if !waits {
            let label = s.strings.intern(LOCKDEP_ONLY_MARKER);
            s.push(EventKind::Marker { label, value: 0 });
        }
        s.spin("A");
        s.on(1, 2).spin("B").attempt("A", LockFlavor::Spin);
        s.on(0, 1).attempt("B", LockFlavor::Spin);
        let v = s.run();
        assert_eq!(v.deadlocked(), waits);
        assert!(v
            .findings()
            .iter()
            .any(|f| f.kind == FindingKind::CircularDependency));
    }
}

/// lockdep's check_deadlock: a recursive reader nests in any reader of its class;
/// a non-recursive reader, or any nesting in a writer, is recursion.
#[test]
fn only_a_recursive_reader_nests_in_a_reader_of_its_class() {
    for (first_read, second_recursive, expected) in [
        (Some(false), true, &[][..]),
        (Some(true), true, &[][..]),
        (Some(true), false, &[FindingKind::RecursiveLocking][..]),
        (None, true, &[FindingKind::RecursiveLocking][..]),
    ] {
        let mut s = script();
        match first_read {
            Some(recursive) => s.read("X#1", recursive),
            None => s.spin("X#1"),
        };
        s.read("X#2", second_recursive).unspin("X#2").unspin("X#1");
        assert_eq!(
            s.kinds(),
            expected,
            "{first_read:?} then {second_recursive}"
        );
    }
}

/// lockdep-design.rst's strong paths: X read recursively then Y written, against
/// Y written then X read. A recursive reader of X is not blocked by B's wait, so
/// X -(SN)-> Y -(ER)-> X is no deadlock; a non-recursive one waits behind a
/// writer, so X -(SN)-> Y -(EN)-> X is.
#[test]
fn a_cycle_through_a_recursive_read_is_no_deadlock_unless_strong() {
    for (recursive, expected) in [
        (true, &[][..]),
        (false, &[FindingKind::CircularDependency][..]),
    ] {
        let mut s = script();
        s.read("X", true).spin("Y").unspin("Y").unspin("X");
        s.on(1, 2)
            .spin("Y")
            .read("X", recursive)
            .unspin("X")
            .unspin("Y");
        assert_eq!(s.kinds(), expected, "recursive: {recursive}");
    }
}

/// Read in hard-IRQ context and read with IRQs on is consistent for recursive
/// readers; written with IRQs on it is not (lockdep's `valid_state`), and a
/// non-recursive reader with IRQs on inverts against its own use in IRQs.
#[test]
fn irq_usage_of_readers_follows_lockdeps_read_bits() {
    let mut s = script();
    s.hardirq().read("R", true).unspin("R").hardirq_exit();
    s.read("R", true).unspin("R");
    assert_eq!(s.kinds(), []);
    s.spin("R").unspin("R");
    assert_eq!(s.kinds(), [FindingKind::InconsistentIrqState]);

    let mut s = script();
    s.read("N", false).unspin("N");
    s.hardirq().read("N", false).unspin("N").hardirq_exit();
    assert_eq!(s.kinds(), [FindingKind::IrqInversion]);
}

/// lockdep names each usage of an inconsistent state by its access: a read in
/// hard-IRQ context then a write with IRQs on is `{IN-HARDIRQ-R} ->
/// {HARDIRQ-ON-W}`; a read with IRQs on then a write in hard-IRQ context is
/// `{HARDIRQ-ON-R} -> {IN-HARDIRQ-W}` (`print_usage_bug`'s `usage_str`).
#[test]
fn inconsistent_states_name_read_usages_with_r() {
    let read_in_irq_then_write = script()
        .hardirq()
        .read("R", true)
        .unspin("R")
        .hardirq_exit()
        .spin("R")
        .unspin("R")
        .run();
    let read_then_write_in_irq = script()
        .read("R", true)
        .unspin("R")
        .hardirq()
        .spin("R")
        .unspin("R")
        .hardirq_exit()
        .run();
    for (v, usage) in [
        (read_in_irq_then_write, "{IN-HARDIRQ-R} -> {HARDIRQ-ON-W}"),
        (read_then_write_in_irq, "{HARDIRQ-ON-R} -> {IN-HARDIRQ-W}"),
    ] {
        assert_eq!(v.findings().len(), 1);
        let details = &v.findings()[0].details;
        assert!(details[1].contains(usage), "{details:?}");
    }
}

/// Softirq usage mirrors hard-IRQ usage: a lock taken in softirq context and
/// with softirqs enabled is inconsistent; with softirqs disabled around it
/// (`local_bh_disable`) it is fine; and hard and soft states are separate (taken
/// in softirq, held with hard IRQs on but softirqs off: clean).
#[test]
fn softirq_usage_is_a_state_of_its_own() {
    // A softirq runs with softirqs disabled (`__do_softirq`).
    let mut s = script();
    s.push(EventKind::SoftirqsOff)
        .push(EventKind::SoftIrqEnter)
        .spin("S")
        .unspin("S")
        .push(EventKind::SoftIrqExit);
    s.spin("S").unspin("S");
    assert_eq!(s.kinds(), []);
    s.push(EventKind::SoftirqsOn).spin("S").unspin("S");
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::InconsistentIrqState]);
    assert!(v.findings()[0]
        .details
        .iter()
        .any(|l| l.contains("{IN-SOFTIRQ-W} -> {SOFTIRQ-ON-W}")));
}

/// Enabling softirqs marks the locks held then as softirq-unsafe (lockdep's
/// `lockdep_softirqs_on` → `mark_held_locks`), and a softirq-safe lock depending
/// on one is a softirq inversion.
#[test]
fn a_softirq_safe_lock_may_not_depend_on_a_softirq_unsafe_one() {
    let mut s = script();
    s.push(EventKind::SoftirqsOff)
        .spin("U")
        .push(EventKind::SoftirqsOn)
        .unspin("U");
    s.push(EventKind::SoftirqsOff)
        .push(EventKind::SoftIrqEnter)
        .spin("SAFE")
        .unspin("SAFE")
        .push(EventKind::SoftIrqExit);
    s.spin("SAFE").spin("U").unspin("U").unspin("SAFE");
    let v = s.run();
    let kinds: Vec<_> = v.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::IrqInversion]);
    assert_eq!(v.findings()[0].key, "SAFE -> U (softirq)");
}

/// A release finds the held lock by its instance, as lockdep's `match_held_lock`:
/// Linux takes `sb->s_umount` with `down_write_nested(…, 1)` (class `/1`) and
/// releases it with `up_write`, whose map was last acquired elsewhere as subclass 0.
/// Releasing another instance of the class is still a bad unlock.
#[test]
fn a_release_matches_the_held_instance_whatever_class_it_names() {
    let mut s = Script::new();
    s.spin("s_umount/1");
    let addr = s.addrs["s_umount/1"];
    let plain = LockRef {
        addr,
        class: s.strings.intern("s_umount"),
    };
    s.push(EventKind::LockRelease {
        lock: plain,
        flavor: LockFlavor::Spin,
    });
    assert_eq!(s.kinds(), []);
    let mut s = Script::new();
    s.spin("s_umount#1").unlock("s_umount#2", LockFlavor::Spin);
    assert_eq!(s.kinds(), [FindingKind::BadUnlock]);
}
