//! Findings: what an analysis reports about a run, online during `run` or offline
//! from a trace (`check`), in one shape for both and for every analysis.

use std::fmt;

/// Declares [`FindingKind`] from one list: each variant with its report name, and
/// `ALL` and `as_str` from the same list, so they cannot drift apart.
macro_rules! finding_kinds {
    ($($(#[$doc:meta])* $kind:ident => $name:literal,)+) => {
        /// The kinds DESIGN.md names (and `freed-page-in-tlb`); the JSON report's
        /// `kind` is [`FindingKind::as_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FindingKind {
            $($(#[$doc])* $kind,)+
        }

        impl FindingKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [FindingKind] = &[$(FindingKind::$kind,)+];

            /// The kind's report name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(FindingKind::$kind => $name,)+
                }
            }
        }
    };
}

finding_kinds! {
    /// Lock classes taken in an order that closes a cycle in the dependency graph
    /// (lockdep's "possible circular locking dependency").
    CircularDependency => "circular-dependency",
    /// A lock taken with IRQs enabled ordered against one taken in hard-IRQ context
    /// (lockdep's "HARDIRQ-safe -> HARDIRQ-unsafe lock order").
    IrqInversion => "irq-inversion",
    /// One lock class used both in hard-IRQ context and with IRQs enabled
    /// (lockdep's "inconsistent lock state").
    InconsistentIrqState => "inconsistent-irq-state",
    /// A hard-IRQ handler enabled IRQs.
    IrqsEnabledInHardirq => "irqs-enabled-in-hardirq",
    /// A task slept while it held a spin lock, had IRQs or preemption off, or ran
    /// in an interrupt.
    SleepInAtomic => "sleep-in-atomic",
    /// A task took a lock class it already holds (lockdep's "possible recursive
    /// locking").
    RecursiveLocking => "recursive-locking",
    /// A release of a lock the task does not hold.
    BadUnlock => "bad-unlock",
    /// Memory freed or re-initialised while the task holds a lock in it (lockdep's
    /// `debug_check_no_locks_freed`).
    HeldLockFreed => "held-lock-freed",
    /// A `CONTEXT:` claim (assert-held) the guest made that did not hold.
    ContextViolation => "context-violation",
    /// CPUs that waited for each other until nothing could run: a real deadlock
    /// in this run, not a possible one.
    Deadlock => "deadlock",
    /// A CPU used a TLB entry after the tables stopped giving it.
    StaleTlb => "stale-tlb",
    /// An address mapped again while some CPU's TLB still holds its old
    /// translation (no TLBI reached that CPU since the unmap).
    MissingTlbFlush => "missing-tlb-flush",
    /// A live descriptor replaced without break-before-make: made invalid, then
    /// invalidated by a TLBI, and only then given its new value.
    BreakBeforeMake => "break-before-make",
    /// A descriptor store not ordered before its TLBI (`dsb ishst`), or a TLBI not
    /// completed (`dsb ish`) before the mapping is relied on.
    MissingBarrier => "missing-barrier",
    /// A page freed while some CPU's TLB still held a translation to it (mapped, or
    /// unmapped but not yet invalidated): a latent use-after-free through the TLB.
    FreedPageInTlb => "freed-page-in-tlb",
}

impl FindingKind {
    /// The kind whose report name is `name`.
    pub fn from_name(name: &str) -> Option<FindingKind> {
        FindingKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lock a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingLock {
    /// Its class (lockdep's lock name).
    pub class: String,
    /// The instance's address, when the finding is about one instance.
    pub addr: Option<u64>,
    /// lockdep's usage bits when the finding was made, e.g. `{+.+.}`.
    pub usage: Option<String>,
}

/// A place a finding points at: what happened there, who did it, and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingSite {
    /// What happened there, e.g. `acquire`, `held`, `dependency`, `in-hardirq`,
    /// `irqs-on`, `wait`, `reporter`, `free`.
    pub role: String,
    /// The lock class involved, if any.
    pub lock: Option<String>,
    /// The CPU.
    pub cpu: Option<u32>,
    /// The task running there.
    pub task: Option<u32>,
    /// The virtual time.
    pub time: Option<u64>,
    /// The hard IRQ being handled there, if any.
    pub irq: Option<u32>,
    /// The code: the pc first, then return addresses, innermost first.
    pub frames: Vec<u64>,
}

/// A task a finding involves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingTask {
    /// The guest's number for it.
    pub id: u32,
    /// Its name, where known.
    pub name: Option<String>,
}

/// One finding, reported once per distinct cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The headline, one line (e.g. "possible circular locking dependency").
    pub title: String,
    /// What identifies the cause, so repeats can be folded (e.g. the lock classes of a
    /// cycle in order, or a virtual page): two findings with the same kind and key
    /// are the same finding.
    pub key: String,
    /// The lockdep-style body: chains, scenario table, symbolised stacks; one entry
    /// per line.
    pub details: Vec<String>,
    /// The CPU that made the finding's defining event, if one did.
    pub cpu: Option<u32>,
    /// Virtual time (instruction count) of that event.
    pub time: Option<u64>,
    /// The locks it is about (structured, for the JSON report).
    pub locks: Vec<FindingLock>,
    /// The places it points at, the reporting event's first.
    pub sites: Vec<FindingSite>,
    /// The tasks involved.
    pub tasks: Vec<FindingTask>,
}

impl Finding {
    /// A finding with no structured parts yet.
    pub fn new(kind: FindingKind, title: &str, key: String, details: Vec<String>) -> Self {
        Finding {
            kind,
            title: title.to_string(),
            key,
            details,
            cpu: None,
            time: None,
            locks: Vec::new(),
            sites: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The CPUs its sites name, in order, each once.
    pub fn cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self.cpu.into_iter().collect();
        cpus.extend(self.sites.iter().filter_map(|s| s.cpu));
        cpus.sort_unstable();
        cpus.dedup();
        cpus
    }

    /// Whether the two are the same finding (kind and key).
    pub fn same_cause(&self, other: &Finding) -> bool {
        self.kind == other.kind && self.key == other.key
    }
}

/// Keeps the first finding of each distinct cause, in the order they were made.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    list: Vec<Finding>,
}

impl Findings {
    /// Adds `finding` unless one with the same cause is already there; returns
    /// whether it was new.
    pub fn report(&mut self, finding: Finding) -> bool {
        if self.list.iter().any(|known| known.same_cause(&finding)) {
            return false;
        }
        self.list.push(finding);
        true
    }

    /// The findings, in the order they were made.
    pub fn as_slice(&self) -> &[Finding] {
        &self.list
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind, key: &str) -> Finding {
        Finding::new(kind, kind.as_str(), key.into(), vec![])
    }

    #[test]
    fn names_round_trip_and_are_distinct() {
        for &kind in FindingKind::ALL {
            assert_eq!(FindingKind::from_name(kind.as_str()), Some(kind));
        }
        let mut names: Vec<_> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FindingKind::ALL.len());
        assert_eq!(FindingKind::from_name("nonsense"), None);
    }

    #[test]
    fn a_cause_is_reported_once() {
        let mut findings = Findings::default();
        assert!(findings.is_empty());
        assert!(findings.report(finding(FindingKind::StaleTlb, "va 0x1000")));
        assert!(!findings.is_empty());
        assert!(!findings.report(finding(FindingKind::StaleTlb, "va 0x1000")));
        assert!(findings.report(finding(FindingKind::StaleTlb, "va 0x2000")));
        assert!(findings.report(finding(FindingKind::Deadlock, "va 0x1000")));
        assert_eq!(findings.as_slice().len(), 3);
    }
}
