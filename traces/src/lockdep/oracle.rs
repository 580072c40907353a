//! The kernel's own lockdep as the oracle of ours: Linux's locking self-test
//! (`lib/locking-selftest.c`, `CONFIG_DEBUG_LOCKING_API_SELFTESTS`) runs hundreds of
//! small cases, each with the verdict lockdep must give. The recorder's Linux
//! profile marks each case (`selftest:case:<fn>` with `expected | mask << 1`,
//! `selftest:end` with the kernel's `debug_locks`); here every case's events go
//! to a fresh [`Validator`], whose verdict is compared with the kernel's.
//!
//! A case that used something the event model cannot express (read locks,
//! `nest_lock` acquisitions, softirq context: `unmodelled:…` markers) is listed as
//! unmodelled, never counted as agreement.

use std::collections::BTreeSet;

use crate::event::{Event, EventKind, IrqMaskCause, StrId};
use crate::finding::FindingKind;
use crate::strings::StringTable;
use crate::Validator;

const CASE_PREFIX: &str = "selftest:case:";
const CASE_END: &str = "selftest:end";
const DONE: &str = "selftest:done";
const UNMODELLED_PREFIX: &str = "unmodelled:";
/// The self-test's `LOCKTYPE_WW`: a case about the wound/wait mutex API, whose
/// checks (acquire contexts, `ww_acquire_done`) are not lock dependencies.
const LOCKTYPE_WW: u64 = 0x10;

/// The findings that are lockdep reports (what turns the kernel's `debug_locks`
/// off); the others (sleeping in atomic context, a real deadlock, a `CONTEXT:`
/// claim) are other tools' business in Linux.
pub fn is_lockdep_report(kind: FindingKind) -> bool {
    matches!(
        kind,
        FindingKind::CircularDependency
            | FindingKind::IrqInversion
            | FindingKind::InconsistentIrqState
            | FindingKind::IrqsEnabledInHardirq
            | FindingKind::RecursiveLocking
            | FindingKind::BadUnlock
            | FindingKind::HeldLockFreed
    )
}

/// One self-test case and both verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case function (e.g. `AA_spin`).
    pub name: String,
    /// The self-test's lock-type mask of the case.
    pub mask: u32,
    /// The self-test expects lockdep to report.
    pub expected_report: bool,
    /// The kernel's lockdep reported (`debug_locks` was 0 at the case's end).
    pub kernel_reported: bool,
    /// Kinds of our validator's lockdep reports in the case.
    pub host_reports: Vec<FindingKind>,
    /// What the case used that the event model cannot express.
    pub unmodelled: Vec<String>,
}

/// How one case came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseVerdict {
    /// Our validator reported exactly when the kernel's lockdep did.
    Agree,
    /// One reported and the other did not.
    Disagree,
    /// The case used lock types or contexts the validator does not model.
    Unmodelled,
}

impl CaseResult {
    /// Whether our validator reported anything in the case.
    pub fn host_reported(&self) -> bool {
        !self.host_reports.is_empty()
    }

    /// How the case came out.
    pub fn verdict(&self) -> CaseVerdict {
        if !self.unmodelled.is_empty() {
            CaseVerdict::Unmodelled
        } else if self.host_reported() == self.kernel_reported {
            CaseVerdict::Agree
        } else {
            CaseVerdict::Disagree
        }
    }
}

struct OpenCase {
    name: String,
    mask: u32,
    expected_report: bool,
    validator: Validator,
    unmodelled: BTreeSet<String>,
}

/// Splits a run's events into self-test cases and judges each.
#[derive(Default)]
pub struct SelftestOracle {
    open: Option<OpenCase>,
    /// Every class announced as a local lock so far (announced once per run, it
    /// is told to each case's validator).
    local_classes: Vec<StrId>,
    cases: Vec<CaseResult>,
    done: bool,
}

impl SelftestOracle {
    /// An oracle before the first case.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next events of the run.
    pub fn feed(&mut self, events: &[Event], strings: &StringTable) {
        // Runs of a case's ordinary events go to its validator in one call.
        let mut run_start = 0;
        for (i, e) in events.iter().enumerate() {
            if let EventKind::LocalLockClass { class } = e.kind {
                self.local_classes.push(class);
            }
            let EventKind::Marker { label, value } = e.kind else {
                continue;
            };
            let Some(label) = strings.get(label) else {
                continue;
            };
            let control = label.starts_with(CASE_PREFIX)
                || label == CASE_END
                || label == DONE
                || label.starts_with(UNMODELLED_PREFIX);
            if !control {
                continue;
            }
            self.feed_open(&events[run_start..i], strings);
            run_start = i + 1;
            if let Some(name) = label.strip_prefix(CASE_PREFIX) {
                self.start(e, name, value, strings);
            } else if label == CASE_END {
                self.end(value);
            } else if label == DONE {
                self.done = true;
            } else if let Some(open) = &mut self.open {
                open.unmodelled
                    .insert(label[UNMODELLED_PREFIX.len()..].to_string());
            }
        }
        self.feed_open(&events[run_start..], strings);
    }

    fn feed_open(&mut self, events: &[Event], strings: &StringTable) {
        if let Some(open) = &mut self.open {
            if !events.is_empty() {
                open.validator.feed(events, strings);
            }
        }
    }

    fn start(&mut self, marker: &Event, name: &str, value: u64, strings: &StringTable) {
        let mut validator = Validator::new();
        // `dotest` runs each case with IRQs on (it warns otherwise); a fresh
        // validator would assume them off.
        let mut preamble = vec![Event {
            kind: EventKind::IrqMask {
                old: true,
                new: false,
                cause: IrqMaskCause::Eret,
            },
            ..*marker
        }];
        preamble.extend(self.local_classes.iter().map(|&class| Event {
            kind: EventKind::LocalLockClass { class },
            ..*marker
        }));
        validator.feed(&preamble, strings);
        let mask = value >> 1;
        let mut unmodelled = BTreeSet::new();
        if mask & LOCKTYPE_WW != 0 {
            unmodelled.insert("ww-mutex".to_string());
        }
        self.open = Some(OpenCase {
            name: name.to_string(),
            mask: mask as u32,
            expected_report: value & 1 == 0,
            validator,
            unmodelled,
        });
    }

    fn end(&mut self, debug_locks: u64) {
        let Some(open) = self.open.take() else {
            return; // lockdep_reset outside a case
        };
        let host_reports = open
            .validator
            .findings()
            .iter()
            .map(|f| f.kind)
            .filter(|&k| is_lockdep_report(k))
            .collect();
        self.cases.push(CaseResult {
            name: open.name,
            mask: open.mask,
            expected_report: open.expected_report,
            kernel_reported: debug_locks == 0,
            host_reports,
            unmodelled: open.unmodelled.into_iter().collect(),
        });
    }

    /// The cases judged so far, in the order they ran.
    pub fn cases(&self) -> &[CaseResult] {
        &self.cases
    }

    /// Whether the self-test has finished (`locking_selftest` returned).
    pub fn done(&self) -> bool {
        self.done
    }

    /// How many cases had each verdict: (agree, disagree, unmodelled).
    pub fn tally(&self) -> (usize, usize, usize) {
        tally(&self.cases)
    }
}

/// How many of `cases` had each verdict: (agree, disagree, unmodelled).
pub fn tally(cases: &[CaseResult]) -> (usize, usize, usize) {
    let count = |v| cases.iter().filter(|c| c.verdict() == v).count();
    (
        count(CaseVerdict::Agree),
        count(CaseVerdict::Disagree),
        count(CaseVerdict::Unmodelled),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CpuId, LockFlavor, LockRef, TaskId};

    struct Run {
        events: Vec<Event>,
        strings: StringTable,
    }

    impl Run {
        fn new() -> Self {
            Self {
                events: Vec::new(),
                strings: StringTable::new(),
            }
        }

        fn push(&mut self, kind: EventKind) -> &mut Self {
            let time = self.events.len() as u64;
            self.events.push(Event {
                time,
                cpu: CpuId(0),
                task: TaskId(1),
                pc: 0x1000 + time,
                caller: 0x2000 + time,
                kind,
            });
            self
        }

        fn marker(&mut self, label: &str, value: u64) -> &mut Self {
            let label = self.strings.intern(label);
            self.push(EventKind::Marker { label, value })
        }

        fn lock(&mut self, name: &str, addr: u64) -> &mut Self {
            let lock = LockRef {
                addr,
                class: self.strings.intern(name),
            };
            let flavor = LockFlavor::Spin;
            self.push(EventKind::LockAttempt { lock, flavor })
                .push(EventKind::LockAcquired { lock, flavor })
        }

        fn unlock(&mut self, name: &str, addr: u64) -> &mut Self {
            let lock = LockRef {
                addr,
                class: self.strings.intern(name),
            };
            let flavor = LockFlavor::Spin;
            self.push(EventKind::LockRelease { lock, flavor })
        }
    }

    #[test]
    fn each_case_gets_a_fresh_validator_and_both_verdicts() {
        let mut run = Run::new();
        // AA: lockdep must report (expected 0), and the kernel did (debug_locks 0).
        run.marker("selftest:case:AA_spin", 1 << 1)
            .lock("A", 0xa)
            .lock("A", 0xa)
            .marker("selftest:end", 0);
        // ABBA over two cases would be a cycle; each case alone is clean.
        run.marker("selftest:case:AB_spin", 1 | 1 << 1)
            .lock("A", 0xa)
            .lock("B", 0xb)
            .unlock("B", 0xb)
            .unlock("A", 0xa)
            .marker("selftest:end", 1);
        run.marker("selftest:case:BA_spin", 1 | 1 << 1)
            .lock("B", 0xb)
            .lock("A", 0xa)
            .unlock("A", 0xa)
            .unlock("B", 0xb)
            .marker("selftest:end", 1);
        // The kernel reported, ours did not: a disagreement.
        run.marker("selftest:case:missed", 0)
            .lock("C", 0xc)
            .unlock("C", 0xc)
            .marker("selftest:end", 0);
        // A read lock: unmodelled whatever the verdicts.
        run.marker("selftest:case:rlock_AA", 0)
            .marker("unmodelled:read-lock", 0xd)
            .marker("selftest:end", 0)
            .marker("selftest:done", 0);

        let mut oracle = SelftestOracle::new();
        // Fed in two pieces, split inside a case.
        let (first, second) = run.events.split_at(5);
        oracle.feed(first, &run.strings);
        assert!(!oracle.done());
        oracle.feed(second, &run.strings);
        assert!(oracle.done());

        let cases = oracle.cases();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["AA_spin", "AB_spin", "BA_spin", "missed", "rlock_AA"]
        );
        assert_eq!(cases[0].host_reports, [FindingKind::RecursiveLocking]);
        assert!(cases[0].expected_report && cases[0].kernel_reported);
        assert_eq!(cases[0].mask, 1);
        assert_eq!(cases[0].verdict(), CaseVerdict::Agree);
        assert!(!cases[1].expected_report && !cases[1].host_reported());
        assert_eq!(cases[2].verdict(), CaseVerdict::Agree);
        assert_eq!(cases[3].verdict(), CaseVerdict::Disagree);
        assert_eq!(cases[4].unmodelled, ["read-lock"]);
        assert_eq!(cases[4].verdict(), CaseVerdict::Unmodelled);
        assert_eq!(oracle.tally(), (3, 1, 1));
    }

    #[test]
    fn a_case_starts_with_irqs_on_so_its_locks_are_hardirq_unsafe() {
        // irq-safe A (taken in a hard IRQ), then A taken with IRQs on in process
        // context: inconsistent state, which needs the case's IRQs-on start.
        let mut run = Run::new();
        run.marker("selftest:case:irqsafe_then_on", 0);
        run.push(EventKind::HardIrqEnter { intid: 0 })
            .lock("A", 0xa)
            .unlock("A", 0xa)
            .push(EventKind::HardIrqExit { intid: 0 })
            .lock("A", 0xa)
            .unlock("A", 0xa)
            .marker("selftest:end", 0);
        let mut oracle = SelftestOracle::new();
        oracle.feed(&run.events, &run.strings);
        let case = &oracle.cases()[0];
        assert_eq!(case.host_reports, [FindingKind::InconsistentIrqState]);
        assert_eq!(case.verdict(), CaseVerdict::Agree);
    }

    /// The kernel announces its `local_lock_t` classes once, before the cases
    /// (at boot); every case's fresh validator must know them. lockdep's
    /// `local_lock_3A` shape: local → B with IRQs on, A taken in a hard IRQ, then
    /// A → local with IRQs off: no inversion through a local lock, but one through
    /// an ordinary lock of the same shape.
    #[test]
    fn every_case_knows_the_local_lock_classes_announced_before_it() {
        let mut run = Run::new();
        let local = run.strings.intern("local_A");
        run.push(EventKind::LocalLockClass { class: local });
        let irqs = |masked: bool| EventKind::IrqMask {
            old: !masked,
            new: masked,
            cause: IrqMaskCause::Instruction,
        };
        for (case, middle) in [("3A", "local_A"), ("3A_again", "local_A"), ("plain", "M")] {
            // Expected no report (value bit 0 set) and the kernel made none.
            run.marker(&format!("selftest:case:{case}"), 1 | 1 << 1)
                .lock(middle, 0x10)
                .lock("B", 0xb)
                .unlock("B", 0xb)
                .unlock(middle, 0x10)
                .push(EventKind::HardIrqEnter { intid: 0 })
                .lock("A", 0xa)
                .unlock("A", 0xa)
                .push(EventKind::HardIrqExit { intid: 0 })
                .push(irqs(true))
                .lock("A", 0xa)
                .lock(middle, 0x10)
                .unlock(middle, 0x10)
                .unlock("A", 0xa)
                .push(irqs(false))
                .marker("selftest:end", 1);
        }
        let mut oracle = SelftestOracle::new();
        oracle.feed(&run.events, &run.strings);
        let reports: Vec<&[FindingKind]> = oracle
            .cases()
            .iter()
            .map(|c| c.host_reports.as_slice())
            .collect();
        let inversion: &[FindingKind] = &[FindingKind::IrqInversion];
        assert_eq!(reports, [&[][..], &[][..], inversion]);
    }
}
