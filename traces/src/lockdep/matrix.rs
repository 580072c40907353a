//! A trace-level matrix modelled on Linux's `lib/locking-selftest.c`: each case is
//! a one-line program in a tiny DSL and the findings lockdep's rules give for it.
//!
//! DSL (tokens separated by spaces; a lock is `CLASS` or `CLASS#instance`):
//! - `A` spin_lock(A) (attempt + acquired), `/A` spin_unlock(A)
//! - `m:A` mutex_lock(A), `/m:A` mutex_unlock(A)
//! - `?A` a trylock that succeeds, `!A` one that fails
//! - `~A` an attempt that never completes (the CPU spins)
//! - `on` / `off` local_irq_enable / local_irq_disable
//! - `irq{` / `}` hard-IRQ entry / exit (entry masks IRQs, exit restores them)
//! - `sleep` might_sleep(), `alloc` a GFP_KERNEL page allocation (`alloc:nofs`,
//!   `alloc:noio`, `alloc:atomic`, `alloc:nowait` for the other GFP masks)
//! - `p+` / `p-` preempt_disable / preempt_enable (the task's count goes up / down)
//! - `R+` / `R-` fs_reclaim_acquire / fs_reclaim_release
//! - `rc{` / `rc}` direct reclaim entry / exit (the task is PF_MEMALLOC inside)
//! - `@c.t` what follows runs on CPU `c` as task `t`
//! - `chain:N` nests classes `L0 … L(N-1)` and releases them (a long chain)
//!
//! A subclass (`spin_lock_nested(lock, n)`) is the class name with `/n` (`A/1#2`),
//! as the probe contract in [`crate::event::LockRef`] names it.
//!
//! Not modelled (so no cases): soft IRQs, read locks.

use super::*;
use crate::event::{CpuId, IrqMaskCause};
use crate::finding::FindingKind;
use FindingKind::*;

/// The kinds of findings a DSL program gives, sorted.
fn run(program: &str) -> Vec<FindingKind> {
    let mut kinds: Vec<FindingKind> = validate(program)
        .findings()
        .iter()
        .map(|f| f.kind)
        .collect();
    kinds.sort();
    kinds
}

/// Feeds a DSL program to a fresh validator.
fn validate(program: &str) -> Validator {
    let mut strings = StringTable::new();
    let mut events = Vec::new();
    let mut addrs: HashMap<String, u64> = HashMap::new();
    let (mut cpu, mut task, mut time) = (0u16, 1u32, 0u64);
    let mut preempt: HashMap<u32, u32> = HashMap::new();
    let mut push = |cpu: u16, task: u32, kind: EventKind| {
        time += 10;
        events.push(Event {
            time,
            cpu: CpuId(cpu),
            task: TaskId(task),
            pc: 0x1000 + time,
            caller: 0x2000 + time,
            kind,
        });
    };
    let mut lock = |name: &str, strings: &mut StringTable| {
        let next = 0x8000 + 0x40 * addrs.len() as u64;
        let addr = *addrs.entry(name.to_string()).or_insert(next);
        LockRef {
            addr,
            class: strings.intern(name.split('#').next().unwrap()),
        }
    };
    let mut tokens: Vec<String> = Vec::new();
    for token in program.split_whitespace() {
        match token.strip_prefix("chain:") {
            Some(n) => {
                let n: usize = n.parse().unwrap();
                tokens.extend((0..n).map(|i| format!("L{i}")));
                tokens.extend((0..n).rev().map(|i| format!("/L{i}")));
            }
            None => tokens.push(token.to_string()),
        }
    }
    for token in &tokens {
        let irq_mask = |old: bool, new: bool, cause| EventKind::IrqMask { old, new, cause };
        let fs = LockRef {
            addr: 0,
            class: strings.intern(FS_RECLAIM),
        };
        let pseudo = LockFlavor::Pseudo;
        match token.as_str() {
            "on" => push(cpu, task, irq_mask(true, false, IrqMaskCause::Instruction)),
            "off" => push(cpu, task, irq_mask(false, true, IrqMaskCause::Instruction)),
            "irq{" => {
                push(
                    cpu,
                    task,
                    irq_mask(false, true, IrqMaskCause::ExceptionEntry),
                );
                push(cpu, task, EventKind::HardIrqEnter { intid: 27 });
            }
            "}" => {
                push(cpu, task, EventKind::HardIrqExit { intid: 27 });
                push(cpu, task, irq_mask(true, false, IrqMaskCause::Eret));
            }
            "sleep" => push(cpu, task, EventKind::MightSleep),
            "p+" | "p-" => {
                let count = preempt.entry(task).or_insert(0);
                if token == "p+" {
                    *count += 1;
                    push(cpu, task, EventKind::PreemptDisable { count: *count });
                } else {
                    *count -= 1;
                    push(cpu, task, EventKind::PreemptEnable { count: *count });
                }
            }
            t if t.starts_with("alloc") => {
                use crate::event::gfp;
                let flags = match t {
                    "alloc" => gfp::KERNEL,
                    "alloc:nofs" => gfp::NOFS,
                    "alloc:noio" => gfp::NOIO,
                    "alloc:atomic" => gfp::ATOMIC,
                    "alloc:nowait" => gfp::NOWAIT,
                    _ => panic!("unknown allocation {t}"),
                };
                let pa = 0x4000;
                push(
                    cpu,
                    task,
                    EventKind::PageAlloc {
                        order: 0,
                        gfp: flags,
                        pa,
                    },
                );
            }
            "R+" => {
                push(
                    cpu,
                    task,
                    EventKind::LockAttempt {
                        lock: fs,
                        flavor: pseudo,
                    },
                );
                push(
                    cpu,
                    task,
                    EventKind::LockAcquired {
                        lock: fs,
                        flavor: pseudo,
                    },
                );
            }
            "rc{" => push(cpu, task, EventKind::ReclaimEnter),
            "rc}" => push(cpu, task, EventKind::ReclaimExit),
            "R-" => push(
                cpu,
                task,
                EventKind::LockRelease {
                    lock: fs,
                    flavor: pseudo,
                },
            ),
            t if t.starts_with('@') => {
                let (c, k) = t[1..].split_once('.').unwrap();
                (cpu, task) = (c.parse().unwrap(), k.parse().unwrap());
            }
            t => {
                let (release, t) = match t.strip_prefix('/') {
                    Some(rest) => (true, rest),
                    None => (false, t),
                };
                let (flavor, t) = match t.strip_prefix("m:") {
                    Some(rest) => (LockFlavor::Mutex, rest),
                    None => (LockFlavor::Spin, t),
                };
                let (op, name) = match t.chars().next().unwrap() {
                    c @ ('?' | '!' | '~') => (c, &t[1..]),
                    _ => (' ', t),
                };
                let l = lock(name, &mut strings);
                let kind = |acquired| EventKind::Trylock {
                    lock: l,
                    flavor,
                    acquired,
                };
                match (release, op) {
                    (true, _) => push(cpu, task, EventKind::LockRelease { lock: l, flavor }),
                    (false, '?') => push(cpu, task, kind(true)),
                    (false, '!') => push(cpu, task, kind(false)),
                    (false, '~') => push(cpu, task, EventKind::LockAttempt { lock: l, flavor }),
                    _ => {
                        push(cpu, task, EventKind::LockAttempt { lock: l, flavor });
                        push(cpu, task, EventKind::LockAcquired { lock: l, flavor });
                    }
                }
            }
        }
    }
    let mut v = Validator::new();
    v.feed(&events, &strings);
    v
}

/// Each case: name, program, the kinds lockdep reports (sorted), and the rule.
#[rustfmt::skip]
const CASES: &[(&str, &str, &[FindingKind], &str)] = &[
    // --- Plain dependency cycles (selftest "locking_selftest" AA/ABBA/… groups). ---
    ("AA", "A ~A", &[Deadlock, RecursiveLocking], "check_deadlock; the wait-for graph also sees the self-spin"),
    ("AA-instances", "A#1 A#2", &[RecursiveLocking], "class-level: two instances of one class, no subclass"),
    ("A-A-sequential", "A /A A /A", &[], "released before re-taken"),
    ("AB-clean", "A B /B /A A B /B /A", &[], "consistent order"),
    ("ABBA", "A B /B /A B A /A /B", &[CircularDependency], "check_noncircular"),
    ("ABBA-two-tasks", "A B /B /A @1.2 B A /A /B", &[CircularDependency], "classes are global across tasks"),
    ("ABBA-mutex", "on m:A m:B /m:B /m:A m:B m:A /m:A /m:B", &[CircularDependency], "mutexes are locks too"),
    ("ABBA-mixed", "on m:A B /B /m:A B m:A", &[CircularDependency, SleepInAtomic], "cycle, and a mutex under a spinlock sleeps"),
    ("ABBCCA", "A B /B /A B C /C /B C A /A /C", &[CircularDependency], "three-lock cycle"),
    ("ABCABC", "A B /B /A C A /A /C B C /C /B", &[CircularDependency], "edges AB, CA, BC close a cycle"),
    ("ABBCCDDA", "A B /B /A B C /C /B C D /D /C D A /A /D", &[CircularDependency], "four-lock cycle"),
    ("ABCDBDDA", "A B /B /A C D /D /C B D /D /B D A /A /D", &[CircularDependency], "A->B->D->A"),
    ("ABCDBCDA", "A B /B /A C D /D /C B C /C /B D A /A /D", &[CircularDependency], "A->B->C->D->A"),
    ("ABC-clean-diamond", "A B /B /A A C /C /A B D /D /B C D /D /C", &[], "a DAG"),
    ("ABC-nested-transitive", "A B C /C /B /A A C /C /A", &[], "A->C implied, no cycle"),
    ("ABC-nested-then-CA", "A B C /C /B /A C A /A /C", &[CircularDependency], "A->B->C then C->A"),
    ("nested-subclass", "A#1 A/1#2 /A/1#2 /A#1", &[], "spin_lock_nested: subclass 1 is its own class"),
    ("nested-subclass-two-levels", "A#1 A/1#2 A/2#3 /A/2#3 /A/1#2 /A#1", &[], "subclasses 0, 1, 2 nest"),
    ("nested-subclass-inverted", "A#1 A/1#2 /A/1#2 /A#1 A/1#2 A#1 /A#1 /A/1#2", &[CircularDependency], "A -> A/1 then A/1 -> A"),
    ("nested-subclass-recursive", "A/1#1 A/1#2", &[RecursiveLocking], "same subclass twice"),
    ("double-unlock", "A /A /A", &[BadUnlock], "release of a lock not held"),
    ("unlock-unheld", "/A", &[BadUnlock], "release of a lock not held"),
    ("unlock-other-task", "A @1.2 /A", &[BadUnlock], "held_locks are per task"),
    ("unlock-out-of-order", "A B /A /B", &[], "lockdep allows non-nested release"),
    ("long-chain-70-clean", "chain:70 chain:70", &[], "deep nesting, one order"),
    ("long-chain-70-cycle", "chain:70 L69 L0", &[CircularDependency], "cycle past 64 classes"),
    ("long-chain-70-recursive", "chain:70 L0 L1 ~L0", &[Deadlock, RecursiveLocking], "AA past 64 classes"),
    ("long-chain-70-two-tasks", "chain:70 @1.2 L40 L3 /L3 /L40", &[CircularDependency], "back edge into a long chain"),
    // --- Hard-IRQ usage (selftest "irqsafe"/"irq_inversion"/"irq_read_recursion"). ---
    ("irqsafe1-safe-first", "irq{ A /A } on A /A", &[InconsistentIrqState], "{IN-HARDIRQ-W} -> {HARDIRQ-ON-W}"),
    ("irqsafe1-unsafe-first", "on A /A off irq{ A /A }", &[InconsistentIrqState], "{HARDIRQ-ON-W} -> {IN-HARDIRQ-W}"),
    ("irqsafe1-irqs-off-ok", "irq{ A /A } off A /A on", &[], "taken with IRQs off everywhere"),
    ("irqsafe1-other-cpu", "irq{ A /A } @1.2 on A /A", &[InconsistentIrqState], "usage is per class, not per CPU"),
    ("irqsafe2-inner", "irq{ A B /B /A } on B /B", &[InconsistentIrqState], "B is hardirq-safe too"),
    ("irqsafe2-inner-reversed", "on B /B off irq{ A B /B /A }", &[InconsistentIrqState], "other order"),
    ("inversion-safe-edge-unsafe", "irq{ A /A } off A B /B /A on B /B", &[IrqInversion], "safe -> unsafe, edge in the middle"),
    ("inversion-safe-unsafe-edge", "irq{ A /A } on B /B off A B /B /A", &[IrqInversion], "learned by the edge"),
    ("inversion-edge-safe-unsafe", "off A B /B /A irq{ A /A } on B /B", &[IrqInversion], "learned by the unsafe mark"),
    ("inversion-edge-unsafe-safe", "off A B /B /A on B /B off irq{ A /A }", &[IrqInversion], "learned by the safe mark"),
    ("inversion-unsafe-safe-edge", "on B /B off irq{ A /A } off A B /B /A", &[IrqInversion], "learned by the edge"),
    ("inversion-unsafe-edge-safe", "on B /B off A B /B /A irq{ A /A }", &[IrqInversion], "learned by the safe mark"),
    ("inversion-through-middle", "irq{ A /A } off A C /C /A C B /B /C on B /B", &[IrqInversion], "safe A -> C -> unsafe B"),
    ("inversion-through-middle-edge-last", "irq{ A /A } on B /B off C B /B /C A C /C /A", &[IrqInversion], "the edge A->C completes the path"),
    ("no-inversion-unsafe-before-safe", "irq{ A /A } off B A /A /B on B /B", &[], "unsafe B -> safe A is allowed"),
    ("safe-safe-order", "irq{ A /A } irq{ B /B } off A B /B /A", &[], "both safe, both irqs off"),
    ("unsafe-unsafe-order", "on A B /B /A", &[], "no IRQ usage"),
    ("irq-nested-in-irq-AB", "irq{ A B /B /A } irq{ B A /A /B }", &[CircularDependency], "IRQ contexts have dependencies too"),
    ("irq-and-process-no-cross-edge", "off A irq{ B /B } /A irq{ B A /A /B }", &[], "an IRQ's locks depend not on the interrupted code's"),
    ("irq-AA-in-irq", "irq{ A ~A", &[Deadlock, RecursiveLocking], "recursion inside the handler"),
    // --- Enabling IRQs with a hardirq-safe lock held (one cause, one kind). ---
    ("enable-with-safe-held", "irq{ A /A } off A on off /A on", &[InconsistentIrqState], "mark_held_locks: {IN-HARDIRQ-W} -> {HARDIRQ-ON-W}"),
    ("enable-with-safe-held-twice", "irq{ A /A } off A on off on off /A on", &[InconsistentIrqState], "reported once"),
    ("enable-with-unsafe-held-then-irq", "off A on off /A irq{ A /A }", &[InconsistentIrqState], "held with IRQs on = HARDIRQ-ON"),
    ("enable-with-safe-under-unsafe", "irq{ A /A } off B A on off /A /B on", &[InconsistentIrqState], "A inconsistent; B -> A (unsafe -> safe) is allowed"),
    ("enable-after-release", "irq{ A /A } off A /A on", &[], "released before IRQs on"),
    ("enable-in-hardirq", "irq{ on off }", &[IrqsEnabledInHardirq], "IRQs on inside a handler"),
    ("enable-in-hardirq-twice", "irq{ on off on off }", &[IrqsEnabledInHardirq], "reported once per handler"),
    // --- Usage marked at the attempt, before the wait. ---
    ("irq-spins-on-own-cpu-lock", "on A irq{ ~A", &[Deadlock, InconsistentIrqState], "mark_usage runs before the spin"),
    ("irq-spins-irqs-off-holder", "irq{ A /A } off A @1.2 irq{ ~A", &[], "holder on another CPU with IRQs off: no bug"),
    ("unsafe-attempt-marks", "irq{ A /A } @1.2 on ~A", &[InconsistentIrqState], "ENABLED marked at the attempt"),
    ("attempt-adds-edge", "A B /B /A @1.2 B ~A", &[CircularDependency], "check_prevs_add before the wait"),
    // --- Trylock variants. ---
    ("trylock-in-irq-not-safe", "irq{ ?A /A } on A /A", &[], "mark_usage skips USED_IN for trylocks"),
    ("trylock-in-irq-then-unsafe-first", "on A /A off irq{ ?A /A }", &[], "same, other order"),
    ("trylock-irqs-on-marks-unsafe", "on ?A /A off irq{ A /A }", &[InconsistentIrqState], "trylocks still mark ENABLED"),
    ("trylock-no-edge", "A ?B /B /A B A /A /B", &[], "a trylock adds no dependency"),
    ("trylock-held-then-lock", "?A B /B /A B A /A /B", &[CircularDependency], "later acquisitions depend on a held trylock"),
    ("trylock-AA", "A ?A#2", &[], "trylock skips check_deadlock"),
    ("trylock-failed-not-held", "!A B /B B A /A /B", &[], "a failed trylock holds nothing"),
    ("trylock-failed-in-irq", "irq{ !A } on A /A", &[], "a failed trylock marks nothing"),
    ("trylock-stack-edges", "A ?T C /C /T /A C A /A /C", &[CircularDependency], "check_prevs_add walks past trylocks to A"),
    ("trylock-stack-edges-T", "A ?T C /C /T /A C T /T /C", &[CircularDependency], "T -> C added too"),
    ("trylock-below-lock", "A B ?T C /C /T /B /A C B /B /C", &[CircularDependency], "B -> C from the plain lock under the trylock"),
    ("trylock-inversion-via-held", "irq{ A /A } off A ?B /B /A on B /B", &[], "no A -> B from a trylock"),
    ("trylock-in-irq-inversion-none", "irq{ ?A /A } off A B /B /A on B /B", &[], "A is not hardirq-safe"),
    // --- Sleeping in atomic context (___might_sleep). ---
    ("sleep-under-spin", "on A sleep /A", &[SleepInAtomic], "spinlock held"),
    ("sleep-irqs-off", "off sleep", &[SleepInAtomic], "irqs_disabled()"),
    ("sleep-in-hardirq", "irq{ sleep }", &[SleepInAtomic], "in_interrupt()"),
    ("sleep-ok", "on sleep", &[], "process context, IRQs on"),
    ("sleep-under-mutex", "on m:A sleep /m:A", &[], "a mutex may be held across sleep"),
    ("mutex-under-spin", "on A m:B /m:B /A", &[SleepInAtomic], "mutex_lock might sleep"),
    ("mutex-in-hardirq", "irq{ m:A /m:A }", &[SleepInAtomic], "mutex_lock in IRQ"),
    ("sleep-after-unlock", "on A /A sleep", &[], "nothing held"),
    ("sleep-preempt-off", "on p+ sleep p-", &[SleepInAtomic], "___might_sleep: in_atomic() with no lock held"),
    ("sleep-preempt-nested", "on p+ p+ p- sleep p-", &[SleepInAtomic], "count still 1"),
    ("sleep-preempt-back-on", "on p+ p- sleep", &[], "count back to 0"),
    ("mutex-preempt-off", "on p+ m:A /m:A p-", &[SleepInAtomic], "mutex_lock might sleep"),
    ("sleep-preempt-other-task", "on p+ @1.2 on sleep", &[], "the count is per task"),
    // --- fs_reclaim (selftest "fs_reclaim" group). ---
    ("fs-reclaim-correct", "on alloc R+ R-", &[], "allocation outside reclaim"),
    ("fs-reclaim-mutex-cycle", "on m:X alloc /m:X R+ m:X /m:X R-", &[CircularDependency], "X -> fs_reclaim -> X"),
    ("fs-reclaim-mutex-cycle-reversed", "on R+ m:X /m:X R- m:X alloc /m:X", &[CircularDependency], "same, learned the other way"),
    ("fs-reclaim-no-cycle", "on m:X alloc /m:X R+ m:Y /m:Y R-", &[], "reclaim takes a different lock"),
    ("fs-reclaim-alloc-in-reclaim", "on rc{ R+ alloc R- rc}", &[], "PF_MEMALLOC: allocation inside reclaim does not recurse"),
    ("gfp-kernel-under-spin", "on A alloc /A", &[SleepInAtomic], "might_sleep_if(blocking)"),
    ("gfp-nofs-under-spin", "on A alloc:nofs /A", &[SleepInAtomic], "NOFS still blocks"),
    ("gfp-noio-irqs-off", "off alloc:noio", &[SleepInAtomic], "NOIO still blocks"),
    ("gfp-atomic-under-spin", "on A alloc:atomic /A", &[], "ATOMIC never blocks"),
    ("gfp-nowait-in-irq", "irq{ alloc:nowait }", &[], "NOWAIT never blocks"),
    ("gfp-kernel-in-irq", "irq{ alloc }", &[SleepInAtomic], "blocking allocation in hard IRQ"),
    ("gfp-nofs-no-reclaim-cycle", "on m:X alloc:nofs /m:X R+ m:X /m:X R-", &[], "NOFS does not take fs_reclaim"),
    ("gfp-atomic-no-reclaim-cycle", "on m:X alloc:atomic /m:X R+ m:X /m:X R-", &[], "ATOMIC does not take fs_reclaim"),
    ("gfp-nofs-wrong-nesting-ok", "on R+ alloc:nofs R-", &[], "NOFS inside fs_reclaim: no recursion"),
    ("fs-reclaim-wrong-nesting", "on R+ alloc R-", &[RecursiveLocking], "selftest fs_reclaim_wrong_nesting: fs_reclaim held outside reclaim"),
    ("fs-reclaim-alloc-after-reclaim", "on rc{ R+ R- rc} alloc", &[], "PF_MEMALLOC cleared on exit"),
    ("fs-reclaim-mutex-cycle-in-reclaim", "on m:X alloc /m:X rc{ R+ m:X /m:X R- rc}", &[CircularDependency], "the guest's direct_reclaim shape"),
    ("fs-reclaim-three", "on m:X m:Y /m:Y /m:X m:Y alloc /m:Y R+ m:X /m:X R-", &[CircularDependency], "X -> Y -> fs_reclaim -> X"),
    ("fs-reclaim-atomic-alloc", "on A /A off R+ A /A R-", &[], "spinlock taken in reclaim, never allocating under it"),
    // --- Multiple CPUs / tasks: real deadlocks in the wait-for graph. ---
    ("abba-real-deadlock", "A @1.2 B @0.1 ~B @1.2 ~A", &[CircularDependency, Deadlock], "both wait"),
    ("abba-no-deadlock-yet", "A @1.2 B @0.1 ~B", &[], "one waiter: no cycle yet"),
    ("three-task-cycle", "A @1.2 B @2.3 C @0.1 ~B @1.2 ~C @2.3 ~A", &[CircularDependency, Deadlock], "three-way"),
];

#[test]
fn the_matrix_has_enough_cases() {
    assert!(CASES.len() >= 80, "{}", CASES.len());
    let mut names: Vec<_> = CASES.iter().map(|c| c.0).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names are unique");
}

#[test]
fn every_case_gives_lockdeps_outcome() {
    let mut wrong = Vec::new();
    for &(name, program, expected, rule) in CASES {
        let mut expected = expected.to_vec();
        expected.sort();
        let got = run(program);
        if got != expected {
            wrong.push(format!(
                "{name} ({rule}): expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn dependencies_walk_past_trylocks_to_the_first_plain_lock() {
    // C's prevs: T (trylock, continue), B (plain, stop) — A -> C is not added.
    assert_eq!(validate("A B ?T C").stats().dependencies, 3); // A->B, T->C, B->C
    assert_eq!(validate("A ?T C").stats().dependencies, 2); // T->C, A->C
    assert_eq!(validate("A ?T").stats().dependencies, 0);
}

/// Pairs `(i, j)`, `i != j` or `i < j`, of `0..n` in a deterministic shuffled order.
fn shuffled_pairs(n: usize, ordered: bool, seed: u64) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| if ordered { i < j } else { i != j })
        .collect();
    let mut x = seed | 1;
    for k in (1..pairs.len()).rev() {
        // xorshift64: a fixed, host-independent shuffle.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pairs.swap(k, (x % (k as u64 + 1)) as usize);
    }
    pairs
}

/// The chain cache must never skip an unvalidated chain: with 72 classes (class
/// ids past 32 and 64, where the old hash collided structurally), every one of the
/// n·(n−1) dependencies is recorded and every two-lock cycle is found, whatever
/// the order the chains arrive in.
#[test]
fn chain_cache_never_skips_a_chain_with_72_classes_in_adversarial_orders() {
    const N: usize = 72;
    let orders = [
        ("ascending", shuffled_pairs(N, true, 0)),
        ("shuffled", shuffled_pairs(N, true, 0x9e37_79b9)),
        ("shuffled-2", shuffled_pairs(N, true, 0xdead_beef)),
    ];
    for (name, forward) in orders {
        let descending: Vec<_> = forward.iter().rev().copied().collect();
        for first in [forward.clone(), descending] {
            let mut program = String::new();
            // Warm the cache with every one-lock chain first (the colliding ones).
            for i in (0..N).rev() {
                program += &format!("L{i} /L{i} ");
            }
            for &(i, j) in &first {
                program += &format!("L{i} L{j} /L{j} /L{i} ");
            }
            for &(i, j) in &first {
                program += &format!("L{j} L{i} /L{i} /L{j} ");
            }
            let v = validate(&program);
            assert_eq!(v.stats().dependencies as usize, N * (N - 1), "{name}");
            let cycles = v
                .findings()
                .iter()
                .filter(|f| f.kind == CircularDependency)
                .count();
            assert_eq!(cycles, N * (N - 1) / 2, "{name}: every pair's cycle");
        }
    }
}

/// Three-lock chains: each `(i, j)` chain `Li Lj Li#2` is a recursion on `Li`,
/// found for every class however the chains (all distinct) arrive.
#[test]
fn chain_cache_keeps_every_recursion_check_with_72_classes() {
    const N: usize = 72;
    let mut program = String::new();
    for (i, j) in shuffled_pairs(N, false, 0x1234_5678) {
        program += &format!("L{j} L{i} /L{i} /L{j} ");
    }
    for i in (0..N).rev() {
        let j = (i * 7 + 3) % N;
        if j != i {
            program += &format!("L{i} L{j} L{i}#2 /L{i}#2 /L{j} /L{i} ");
        }
    }
    let v = validate(&program);
    let recursive: HashSet<&str> = v
        .findings()
        .iter()
        .filter(|f| f.kind == RecursiveLocking)
        .map(|f| f.key.as_str())
        .collect();
    let expected = (0..N).filter(|&i| (i * 7 + 3) % N != i).count();
    assert_eq!(recursive.len(), expected);
}
