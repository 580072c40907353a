//! The lock validator: lockdep's analysis over the recorded event stream, plus a
//! wait-for graph that catches real deadlocks.
//!
//! [`Validator`] is a pure function of the events it is fed (in order), so it gives
//! the same findings online (fed slice by slice during `run`) and offline (`check`
//! on a trace file).
//!
//! # Model
//! - **Classes**: the recorder's `class` string (a static lock's symbol, a dynamic
//!   lock's init site, `/n` appended for a `spin_lock_nested` subclass). `fs_reclaim` is a pseudo-lock: direct reclaim holds it, and
//!   every allocation that may enter FS reclaim (`PageAlloc` whose GFP bits have
//!   `__GFP_DIRECT_RECLAIM` and `__GFP_FS`, e.g. GFP_KERNEL) acquires
//!   and releases it on the spot, as Linux's `might_alloc()` does — except in direct
//!   reclaim (`ReclaimEnter`..`ReclaimExit`, Linux's PF_MEMALLOC).
//! - **Held locks** per task, each tagged with the task's hard-IRQ nesting depth at
//!   acquisition: a handler's locks sit on the interrupted task's stack but (as in
//!   lockdep) make no dependencies with the interrupted code's locks. Hard-IRQ depth is
//!   per task (a handler may switch tasks and comes back on the interrupted one); the
//!   IRQ mask is per CPU.
//! - **Dependencies**: a blocking acquisition (`LockAttempt`) of B adds the edge A → B
//!   from the innermost held lock A of the same context, and from each trylock above
//!   it (lockdep's `check_prevs_add`). The first occurrence of each edge is kept.
//!   A chain (context + held classes + new class) seen once is not validated again;
//!   the cache is keyed by the whole chain, so it cannot skip an unseen one. A
//!   successful trylock adds no edge and no recursion check, but is held.
//! - **IRQ usage** (marked at the attempt, before any wait, as lockdep's
//!   `mark_usage`): a class acquired in hard-IRQ context is *hardirq-safe* (not by a
//!   trylock); acquired with IRQs on outside hard-IRQ context (or held while IRQs are
//!   turned on) it is *hardirq-unsafe*. A class that is both is one
//!   `inconsistent-irq-state`, whichever fact came first.
//! - **Readers** (`ReadLock`, from Linux's lockdep; our guest has none): held with
//!   their read level (1, or 2 for a recursive reader), which is part of the chain.
//!   A recursive reader may nest in a reader of its class. Each edge keeps the
//!   dependency kinds seen (-(SR)->, -(ER)->, -(SN)->, -(EN)->: shared or exclusive
//!   holder, recursive reader or not next), and every search follows strong paths
//!   only (no -(*R)-> followed by -(S*)->), as lockdep's `__bfs` does; a cycle is
//!   a deadlock only if it is strong all round (`hlock_conflict`). A reader marks
//!   the `_READ` usage bits: read in hard-IRQ context and read with IRQs on is
//!   consistent; read in it and written with IRQs on is not; a path that ends in
//!   recursive reads only meets a class's written usage, not its read usage.
//! - **Softirqs** (`SoftIrqEnter`/`Exit`, `SoftirqsOn`/`Off`, from Linux's lockdep;
//!   a task starts with softirqs enabled, and our guest never changes that): the
//!   same usage rules in a state of their own (`IN-SOFTIRQ`, `SOFTIRQ-ON`); a lock
//!   counts as used with softirqs enabled only with hard IRQs enabled too, and
//!   turning softirqs on marks the locks held then.
//! - **Atomic context** for sleep points: hard IRQ, a spinlock held, IRQs masked, or
//!   a nonzero preemption count (`PreemptDisable`/`PreemptEnable`).
//! - **Wait-for graph**: a task between `LockAttempt` and `LockAcquired` waits for
//!   the lock; a lock's owner is the task that holds it. A task between `CsdWait`
//!   and the call's `CsdUnlock` waits for its target CPU to take an IPI: while that
//!   CPU has IRQs masked, it waits for the task running there (which cannot take
//!   it before it unmasks). A cycle task → lock or IPI → owner → … → task is a real
//!   deadlock ([`Validator::deadlocked`]).
//!
//! # Findings (kinds from DESIGN.md)
//! `circular-dependency`, `irq-inversion`, `inconsistent-irq-state`,
//! `irqs-enabled-in-hardirq`, `sleep-in-atomic`, `recursive-locking`, `bad-unlock`,
//! `held-lock-freed` (`LockMemoryFreed` over a lock the task holds),
//! `context-violation` (an assert-held on a lock the task does not hold), `deadlock`.
//!
//! A `local_lock_t` class (`LocalLockClass`) is no real lock for IRQ inversion, as
//! in lockdep (`usage_skip`): the searches for a hardirq-safe or -unsafe class
//! neither match nor pass through it.
//! Each is reported once per distinct cause (its `key`).
//!
//! Not checked: a `Sleep` event itself (the guest blocks inside the scheduler with
//! its run-queue lock held and IRQs masked); `might_sleep`, mutex acquisitions and
//! blocking allocations (GFP `__GFP_DIRECT_RECLAIM`) are the sleep points checked.

mod graph;
pub mod oracle;
mod report;

use std::collections::{HashMap, HashSet, VecDeque};

use crate::event::{backtrace, Event, EventKind, LockFlavor, LockRef, StrId, TaskId};
use crate::finding::{Finding, Findings};
use crate::fx::FxHashMap as FxMap;
use crate::strings::StringTable;

/// The pseudo-lock's class name.
pub const FS_RECLAIM: &str = "fs_reclaim";

/// Marker: lockdep was reset for the event's task (Linux's `lockdep_reset`, which
/// its locking self-test calls after each case): the locks it holds are forgotten.
pub const LOCKDEP_RESET_MARKER: &str = "lockdep:reset";

/// Marker: the recorder sees what Linux's lockdep sees, no more: acquisitions are
/// announced before any wait, and no sleep is seen. So there is no wait-for graph
/// to find a real deadlock in, and no sleep-in-atomic check (the kernel's own
/// `might_sleep` knows its boot stages and sleeping primitives); only lockdep's
/// checks apply.
pub const LOCKDEP_ONLY_MARKER: &str = "recorder:lockdep-only";

/// Marker prefix: the rest of the label is the kernel's pid of the task whose
/// number is the marker's value (Linux's `task_struct::pid`; without it a task's
/// number stands for its pid in reports).
pub const TASK_PID_MARKER_PREFIX: &str = "task-pid:";

/// Marker prefix: the rest of the label says which of the kernel's locking the
/// recorder sees (Linux: through lockdep, or through which lock primitives).
pub const COVERAGE_MARKER_PREFIX: &str = "recorder:lock-coverage:";

/// Names code addresses for reports: `(address, is_return_address)` →
/// `"function+0x10"`. Return addresses are named by the call that made them.
pub type Symbolizer = Box<dyn Fn(u64, bool) -> Option<String>>;

/// Where something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Virtual time.
    pub time: u64,
    /// The CPU.
    pub cpu: u16,
    /// The task running there.
    pub task: u32,
    /// The event's PC.
    pub pc: u64,
    /// The event's caller (return address), 0 if none.
    pub caller: u64,
    /// The frames above `pc` and `caller` (a `Stack` event's string), if recorded.
    pub stack: Option<StrId>,
    /// The hard IRQ being handled (innermost), if in hard-IRQ context.
    pub irq: Option<u32>,
}

type ClassId = u32;

#[derive(Debug, Clone)]
struct Class {
    name: String,
    /// lockdep's usage bits, each with where it was first set (see [`Usage`]).
    usage: [Option<Site>; 8],
    /// A `local_lock_t` (lockdep's `LD_LOCK_PERCPU`).
    local: bool,
}

/// The interrupt contexts lockdep tracks usage for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IrqState {
    Hard,
    Soft,
}

impl IrqState {
    const ALL: [IrqState; 2] = [IrqState::Hard, IrqState::Soft];

    /// lockdep's name of the state, e.g. in `{IN-HARDIRQ-W}`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            IrqState::Hard => "HARDIRQ",
            IrqState::Soft => "SOFTIRQ",
        }
    }
}

/// One of lockdep's usage bits: `LOCK_USED_IN_<STATE>[_READ]` (`used_in`) or
/// `LOCK_ENABLED_<STATE>[_READ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    state: IrqState,
    used_in: bool,
    read: bool,
}

impl Usage {
    fn of(state: IrqState, used_in: bool, read: bool) -> Self {
        Usage {
            state,
            used_in,
            read,
        }
    }

    fn index(self) -> usize {
        (self.state as usize) * 4 + usize::from(!self.used_in) * 2 + usize::from(self.read)
    }
}

impl Class {
    fn usage(&self, bit: Usage) -> Option<Site> {
        self.usage[bit.index()]
    }

    fn usage_mut(&mut self, bit: Usage) -> &mut Option<Site> {
        &mut self.usage[bit.index()]
    }

    fn has(&self, state: IrqState, used_in: bool, read: bool) -> bool {
        self.usage(Usage::of(state, used_in, read)).is_some()
    }

    /// Usage lockdep reports as an inconsistent state: written in the IRQ context
    /// and held with it enabled, or read in it and written with it enabled.
    fn inconsistent(&self, state: IrqState) -> bool {
        let has = |used_in, read| self.has(state, used_in, read);
        (has(true, false) && (has(false, false) || has(false, true)))
            || (has(true, true) && has(false, false))
    }

    /// Where it became safe for `state` (a write first, else a read).
    fn safe_site(&self, state: IrqState) -> Option<Site> {
        self.usage(Usage::of(state, true, false))
            .or(self.usage(Usage::of(state, true, true)))
    }

    /// Where it became unsafe for `state` (a write first, else a read).
    fn unsafe_site(&self, state: IrqState) -> Option<Site> {
        self.usage(Usage::of(state, false, false))
            .or(self.usage(Usage::of(state, false, true)))
    }
}

/// lockdep's dependency kinds (`calc_dep`): bit `(prev is exclusive) + 2 * (next is
/// not a recursive reader)`, i.e. -(SR)->, -(ER)->, -(SN)->, -(EN)->.
const DEP_SR: u8 = 1;
const DEP_ER: u8 = 2;
const DEP_SN: u8 = 4;
const DEP_EN: u8 = 8;

/// The dependency `prev` → `next` given their read levels (0 write, 1 read, 2
/// recursive read).
fn dep_of(prev_read: u8, next_read: u8) -> u8 {
    1 << (u8::from(prev_read == 0) + 2 * u8::from(next_read != 2))
}

/// The same dependency seen from its far end (`calc_depb`): ER and SN swap.
fn dep_backwards(dep: u8) -> u8 {
    dep & (DEP_SR | DEP_EN) | (dep & DEP_ER) << 1 | (dep & DEP_SN) >> 1
}

#[derive(Debug, Clone, Copy)]
struct Held {
    class: ClassId,
    addr: u64,
    flavor: LockFlavor,
    trylock: bool,
    /// 0 a writer (exclusive), 1 a reader, 2 a recursive reader.
    read: u8,
    /// The task's hard-IRQ depth when it was taken.
    ctx: u32,
    site: Site,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    addr: u64,
    class: ClassId,
    site: Site,
    /// The task's hard-IRQ depth when it began: an IRQ taken while it waits (e.g.
    /// inside `mutex_lock` before the task sleeps) runs, so does not wait for it.
    ctx: u32,
    /// A spinlock: the task waits on its CPU (a mutex's waiter sleeps, and its CPU
    /// goes on to other work).
    spins: bool,
    /// Its CPU had IRQs masked when the wait began (so while it spins).
    masked: bool,
}

impl TaskState {
    /// A hard-IRQ handler waiting for a lock the code it interrupted was already
    /// waiting for: a spinlock is granted in arrival order (a ticket, or a queue
    /// node, as Linux's qspinlock), so the handler's turn comes after the
    /// interrupted acquisition's, which cannot complete before the handler
    /// returns. The CPU waits for itself whoever holds the lock now.
    /// Returns (the handler's wait, the interrupted one).
    fn irq_queued_behind_itself(&self) -> Option<(Waiting, Waiting)> {
        if self.hardirq == 0 {
            return None;
        }
        let irq_wait = *self.waiting.iter().rev().find(|w| w.ctx == self.hardirq)?;
        let queued = *self
            .waiting
            .iter()
            .find(|w| w.ctx < self.hardirq && w.addr == irq_wait.addr)?;
        Some((irq_wait, queued))
    }
}

/// A cross-CPU call a task waits for (`CsdWait` until its `CsdUnlock`).
#[derive(Debug, Clone, Copy)]
struct CsdWaiting {
    task: u32,
    target: u16,
    csd: u64,
    site: Site,
    /// The task's hard-IRQ depth when it began (as [`Waiting::ctx`]).
    ctx: u32,
    /// Its CPU had IRQs masked when the call was made pending: the mask it spins
    /// with (queueing the call masks them only for a moment).
    masked: bool,
}

/// What a task in a wait-for cycle waits for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Lock(Waiting),
    /// Its target CPU, IRQs masked, to take the IPI of this call.
    Ipi(CsdWaiting),
}

#[derive(Debug, Default, Clone)]
struct TaskState {
    held: Vec<Held>,
    hardirq: u32,
    /// Direct-reclaim nesting (`ReclaimEnter`/`ReclaimExit`): Linux's PF_MEMALLOC.
    reclaim: u32,
    /// The preemption count the last `preempt_disable`/`preempt_enable` left.
    preempt: u32,
    /// IRQs were turned on inside the current hard-IRQ handler (reported once).
    irqs_on_in_hardirq: bool,
    /// Softirq context nesting (`SoftIrqEnter`/`SoftIrqExit`).
    softirq: u32,
    /// Softirqs are disabled (`SoftirqsOff`; a task starts with them on).
    softirqs_off: bool,
    /// The IRQ numbers of the handlers running, innermost last.
    irqs: Vec<u32>,
    /// Acquisitions begun and not completed, innermost last (a mutex's attempt
    /// stays pending while its internal `wait_lock` comes and goes).
    waiting: Vec<Waiting>,
}

#[derive(Debug, Clone, Copy)]
struct CpuState {
    masked: bool,
    /// The last lock event on this CPU, if it was a release (to name what an
    /// `spin_unlock_irq` released before it turned IRQs on).
    last_release: Option<(ClassId, LockFlavor, Site)>,
    /// The task it runs and where its last event was.
    running: Option<(u32, u64)>,
    /// The backtrace its last `Stack` event named.
    stack: Option<StrId>,
}

impl Default for CpuState {
    fn default() -> Self {
        // A CPU powers on with IRQs masked.
        CpuState {
            masked: true,
            last_release: None,
            running: None,
            stack: None,
        }
    }
}

/// The first occurrence of a dependency A → B: where B was acquired (attempted)
/// with A held (lockdep keeps this stack with the dependency).
#[derive(Debug, Clone, Copy)]
struct Edge {
    next: Site,
    /// The dependency kinds seen ([`DEP_SR`] …).
    dep: u8,
}

/// Counters for reports and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Events fed.
    pub events: u64,
    /// Of those, lock operations.
    pub lock_events: u64,
    /// Lock classes seen.
    pub classes: u64,
    /// Distinct dependencies (class A held while B was taken).
    pub dependencies: u64,
    /// Distinct held-lock chains (lockdep's chain cache).
    pub chains: u64,
    /// Acquisitions whose chain was already known, so needed no graph search.
    pub chain_cache_hits: u64,
}

/// The validator. Feed it events in order with [`Validator::feed`].
pub struct Validator {
    symbolize: Option<Symbolizer>,
    /// Whether the events show more than lockdep sees: waits and sleeps (see
    /// [`LOCKDEP_ONLY_MARKER`]).
    beyond_lockdep: bool,
    /// What the recorder said it sees of the kernel's locking (see
    /// [`COVERAGE_MARKER_PREFIX`]).
    coverage: Option<String>,
    classes: Vec<Class>,
    by_name: HashMap<String, ClassId>,
    /// Class of each string id seen (index = `StrId`), `u32::MAX` = not resolved.
    by_str: Vec<ClassId>,
    fs_reclaim: ClassId,
    tasks: FxMap<u32, TaskState>,
    task_names: FxMap<u32, String>,
    /// The kernel's own pid of each task, when the recorder read it (Linux).
    task_pids: FxMap<u32, u64>,
    cpus: Vec<CpuState>,
    edges: FxMap<(ClassId, ClassId), Edge>,
    forward: Vec<Vec<ClassId>>,
    backward: Vec<Vec<ClassId>>,
    /// Chains already validated, keyed by the full chain (context, then each held
    /// class of that context with its trylock bit, then the new class): a key that
    /// cannot collide, so no unvalidated chain is ever skipped.
    chains: HashSet<Box<[u32]>>,
    owners: FxMap<u64, u32>,
    /// Cross-CPU calls waited for, by call address.
    csd_waits: FxMap<u64, CsdWaiting>,
    findings: Findings,
    /// The frames of each backtrace string seen (by string id).
    stacks: FxMap<u32, Box<[u64]>>,
    /// Dependencies on a reported cycle or IRQ-inversion path (red in the graph).
    flagged: std::collections::BTreeSet<(ClassId, ClassId)>,
    deadlocked: bool,
    stats: Stats,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

const UNRESOLVED: ClassId = u32::MAX;

fn is_spin(flavor: LockFlavor) -> bool {
    matches!(
        flavor,
        LockFlavor::Spin | LockFlavor::SpinIrq | LockFlavor::SpinIrqSave
    )
}

impl Validator {
    /// A validator that has seen nothing.
    pub fn new() -> Self {
        let mut v = Validator {
            symbolize: None,
            classes: Vec::new(),
            by_name: HashMap::new(),
            by_str: Vec::new(),
            fs_reclaim: 0,
            tasks: FxMap::default(),
            task_names: FxMap::default(),
            task_pids: FxMap::default(),
            cpus: Vec::new(),
            edges: FxMap::default(),
            forward: Vec::new(),
            backward: Vec::new(),
            chains: HashSet::new(),
            owners: FxMap::default(),
            csd_waits: FxMap::default(),
            findings: Findings::default(),
            stacks: FxMap::default(),
            flagged: Default::default(),
            deadlocked: false,
            beyond_lockdep: true,
            coverage: None,
            stats: Stats::default(),
        };
        v.fs_reclaim = v.class_named(FS_RECLAIM);
        v
    }

    /// A validator whose reports name code addresses with `symbolize`.
    pub fn with_symbolizer(symbolize: Symbolizer) -> Self {
        let mut v = Self::new();
        v.symbolize = Some(symbolize);
        v
    }

    /// Analyses `events` (the next ones of the stream); `strings` names their lock
    /// classes (it may grow between calls, ids never change).
    pub fn feed(&mut self, events: &[Event], strings: &StringTable) {
        for event in events {
            self.event(event, strings);
        }
    }

    /// What was found so far.
    pub fn findings(&self) -> &[Finding] {
        self.findings.as_slice()
    }

    /// What the recorder said it sees of the kernel's locking, if it said.
    pub fn coverage(&self) -> Option<&str> {
        self.coverage.as_deref()
    }

    /// Whether a real deadlock (a cycle in the wait-for graph) has been found.
    pub fn deadlocked(&self) -> bool {
        self.deadlocked
    }

    /// Its counters so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.classes = self.classes.len() as u64;
        stats.dependencies = self.edges.len() as u64;
        stats.chains = self.chains.len() as u64;
        stats
    }

    fn class_named(&mut self, name: &str) -> ClassId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.classes.len() as ClassId;
        self.classes.push(Class {
            name: name.to_string(),
            usage: [None; 8],
            local: false,
        });
        self.by_name.insert(name.to_string(), id);
        self.forward.push(Vec::new());
        self.backward.push(Vec::new());
        id
    }

    fn class_of(
        &mut self,
        lock: LockRef,
        flavor: Option<LockFlavor>,
        strings: &StringTable,
    ) -> ClassId {
        if flavor == Some(LockFlavor::Pseudo) {
            return self.fs_reclaim_or(lock, strings);
        }
        let index = lock.class.0 as usize;
        if let Some(&id) = self.by_str.get(index) {
            if id != UNRESOLVED {
                return id;
            }
        }
        let name = strings
            .get(lock.class)
            .map(str::to_string)
            .unwrap_or_else(|| format!("lock@{:#x}", lock.addr));
        let id = self.class_named(&name);
        if self.by_str.len() <= index {
            self.by_str.resize(index + 1, UNRESOLVED);
        }
        self.by_str[index] = id;
        id
    }

    /// A pseudo-lock's class: its name if the table has one, else `fs_reclaim`.
    fn fs_reclaim_or(&mut self, lock: LockRef, strings: &StringTable) -> ClassId {
        match strings.get(lock.class) {
            Some(name) if !name.is_empty() => {
                let name = name.to_string();
                self.class_named(&name)
            }
            _ => self.fs_reclaim,
        }
    }

    fn cpu(&mut self, cpu: u16) -> &mut CpuState {
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize(i + 1, CpuState::default());
        }
        &mut self.cpus[i]
    }

    fn task(&mut self, task: TaskId) -> &mut TaskState {
        self.tasks.entry(task.0).or_default()
    }

    /// Where `e` happened, with its backtrace and IRQ context.
    fn site_of(&self, e: &Event) -> Site {
        Site {
            time: e.time,
            cpu: e.cpu.0,
            task: e.task.0,
            pc: e.pc,
            caller: e.caller,
            stack: self.cpus.get(e.cpu.0 as usize).and_then(|c| c.stack),
            irq: self
                .tasks
                .get(&e.task.0)
                .and_then(|t| t.irqs.last().copied()),
        }
    }

    fn event(&mut self, e: &Event, strings: &StringTable) {
        self.stats.events += 1;
        if let EventKind::Stack { frames } = e.kind {
            self.stacks.entry(frames.0).or_insert_with(|| {
                let decoded = strings.get(frames).and_then(backtrace::decode);
                decoded.unwrap_or_default().into_boxed_slice()
            });
            self.cpu(e.cpu.0).stack = Some(frames);
            return;
        }
        let running = match e.kind {
            EventKind::ContextSwitch { to, .. } => to.0,
            _ => e.task.0,
        };
        self.cpu(e.cpu.0).running = Some((running, e.pc));
        match e.kind {
            EventKind::LockAttempt { lock, flavor } => {
                self.stats.lock_events += 1;
                let class = self.class_of(lock, Some(flavor), strings);
                self.attempt(e, lock.addr, class, flavor, 0);
            }
            EventKind::LockAcquired { lock, flavor } => {
                self.stats.lock_events += 1;
                let class = self.class_of(lock, Some(flavor), strings);
                self.acquired(e, lock.addr, class, flavor, false, 0);
            }
            EventKind::ReadLock {
                lock,
                recursive,
                trylock,
            } => {
                self.stats.lock_events += 1;
                let flavor = LockFlavor::Spin;
                let class = self.class_of(lock, Some(flavor), strings);
                let read = if recursive { 2 } else { 1 };
                if !trylock {
                    self.attempt(e, lock.addr, class, flavor, read);
                }
                self.acquired(e, lock.addr, class, flavor, trylock, read);
            }
            EventKind::Trylock {
                lock,
                flavor,
                acquired,
            } => {
                self.stats.lock_events += 1;
                if acquired {
                    let class = self.class_of(lock, Some(flavor), strings);
                    self.acquired(e, lock.addr, class, flavor, true, 0);
                }
            }
            EventKind::LockRelease { lock, flavor } => {
                self.stats.lock_events += 1;
                let class = self.class_of(lock, Some(flavor), strings);
                self.release(e, lock.addr, class, flavor);
            }
            EventKind::AssertHeld { lock } => {
                let class = self.class_of(lock, None, strings);
                self.assert_held(e, lock.addr, class);
            }
            EventKind::IrqMask { new, cause, .. } => {
                self.cpu(e.cpu.0).masked = new;
                if !new && cause == crate::event::IrqMaskCause::Instruction {
                    self.irqs_enabled(e);
                }
            }
            EventKind::HardIrqEnter { intid } => {
                let t = self.task(e.task);
                t.hardirq += 1;
                t.irqs_on_in_hardirq = false;
                t.irqs.push(intid);
            }
            EventKind::HardIrqExit { .. } => {
                let t = self.task(e.task);
                t.hardirq = t.hardirq.saturating_sub(1);
                t.irqs_on_in_hardirq = false;
                t.irqs.pop();
            }
            EventKind::CsdWait { target, csd } => {
                let wait = CsdWaiting {
                    task: e.task.0,
                    target: target.0,
                    csd,
                    site: self.site_of(e),
                    ctx: self.task(e.task).hardirq,
                    masked: self.masked(e.cpu.0),
                };
                self.csd_waits.insert(csd, wait);
                self.check_wait_cycle(e);
            }
            EventKind::CsdUnlock { csd } => {
                self.csd_waits.remove(&csd);
            }
            EventKind::MightSleep => self.sleep_point(e, "might_sleep()"),
            EventKind::SoftIrqEnter => self.task(e.task).softirq += 1,
            EventKind::SoftIrqExit => {
                let t = self.task(e.task);
                t.softirq = t.softirq.saturating_sub(1);
            }
            EventKind::SoftirqsOff => self.task(e.task).softirqs_off = true,
            EventKind::SoftirqsOn => self.softirqs_enabled(e),
            EventKind::LocalLockClass { class } => {
                let name = strings.get(class).unwrap_or_default().to_string();
                let id = self.class_named(&name);
                self.classes[id as usize].local = true;
            }
            EventKind::LockMemoryFreed { addr, len } => self.memory_freed(e, addr, len),
            EventKind::ReclaimEnter => self.task(e.task).reclaim += 1,
            EventKind::ReclaimExit => {
                let t = self.task(e.task);
                t.reclaim = t.reclaim.saturating_sub(1);
            }
            EventKind::PreemptDisable { count } | EventKind::PreemptEnable { count } => {
                self.task(e.task).preempt = count;
            }
            EventKind::PageAlloc { gfp, .. } => {
                // might_alloc(): fs_reclaim if it may enter FS reclaim, then
                // might_sleep_if(blocking).
                if crate::event::gfp::may_enter_fs_reclaim(gfp) {
                    self.might_alloc(e);
                }
                if crate::event::gfp::may_block(gfp) {
                    self.sleep_point(e, "page allocation");
                }
            }
            EventKind::Marker { label, value } => {
                let label = strings.get(label).unwrap_or_default();
                if let Some(name) = label.strip_prefix("task:") {
                    self.task_names.insert(value as u32, name.to_string());
                } else if let Some(pid) = label.strip_prefix(TASK_PID_MARKER_PREFIX) {
                    if let Ok(pid) = pid.parse() {
                        self.task_pids.insert(value as u32, pid);
                    }
                } else if label == LOCKDEP_RESET_MARKER {
                    let t = self.task(e.task);
                    t.held.clear();
                    t.waiting.clear();
                    self.owners.retain(|_, owner| *owner != e.task.0);
                } else if label == LOCKDEP_ONLY_MARKER {
                    self.beyond_lockdep = false;
                } else if let Some(coverage) = label.strip_prefix(COVERAGE_MARKER_PREFIX) {
                    self.coverage = Some(coverage.to_string());
                }
            }
            _ => {}
        }
    }

    fn masked(&self, cpu: u16) -> bool {
        self.cpus.get(cpu as usize).is_none_or(|c| c.masked)
    }

    fn attempt(&mut self, e: &Event, addr: u64, class: ClassId, flavor: LockFlavor, read: u8) {
        let site = self.site_of(e);
        if flavor == LockFlavor::Mutex {
            self.sleep_point(e, "mutex_lock()");
        }
        let masked = self.masked(e.cpu.0);
        let t = self.tasks.entry(e.task.0).or_default();
        let ctx = t.hardirq;
        if flavor != LockFlavor::Pseudo {
            t.waiting.push(Waiting {
                addr,
                class,
                site,
                ctx,
                spins: is_spin(flavor),
                masked,
            });
        }
        // Usage is marked at the attempt, before any wait (as lockdep's
        // `lock_acquire` marks it before the contended spin).
        self.mark_usage(e, class, masked, false, read);
        // The chain: context, held classes of this context (with how each is
        // held), the new class.
        let t = &self.tasks[&e.task.0];
        let mut chain = vec![ctx];
        let link = |class: ClassId, read: u8, trylock: bool| {
            class << 3 | u32::from(read) << 1 | u32::from(trylock)
        };
        for held in t.held.iter().filter(|h| h.ctx == ctx) {
            chain.push(link(held.class, held.read, held.trylock));
        }
        chain.push(link(class, read, false));
        if !self.chains.insert(chain.into_boxed_slice()) {
            self.stats.chain_cache_hits += 1;
        } else {
            let t = &self.tasks[&e.task.0];
            let same_ctx: Vec<Held> = t.held.iter().filter(|h| h.ctx == ctx).copied().collect();
            // lockdep's check_deadlock: a recursive reader may nest in a reader of
            // its class; then the dependency is added as any other.
            let recursion = same_ctx
                .iter()
                .rev()
                .find(|h| h.class == class && !(read == 2 && h.read != 0));
            if let Some(prev) = recursion {
                let prev = *prev;
                self.report_recursive(e, prev, addr, class, flavor);
            } else {
                for prev in same_ctx.iter().rev() {
                    self.add_edge(e, prev, class, read);
                    if !prev.trylock {
                        break;
                    }
                }
            }
        }
        if flavor != LockFlavor::Pseudo {
            self.check_wait_cycle(e);
        }
    }

    fn acquired(
        &mut self,
        e: &Event,
        addr: u64,
        class: ClassId,
        flavor: LockFlavor,
        trylock: bool,
        read: u8,
    ) {
        let site = self.site_of(e);
        let masked = self.masked(e.cpu.0);
        let t = self.tasks.entry(e.task.0).or_default();
        if let Some(i) = t.waiting.iter().rposition(|w| w.addr == addr) {
            t.waiting.truncate(i);
        }
        let ctx = t.hardirq;
        t.held.push(Held {
            class,
            addr,
            flavor,
            trylock,
            read,
            ctx,
            site,
        });
        if flavor != LockFlavor::Pseudo {
            self.owners.insert(addr, e.task.0);
        }
        if trylock {
            // A trylock has no attempt event: its usage is marked here.
            self.mark_usage(e, class, masked, true, read);
        }
    }

    /// lockdep's `mark_usage`: acquired in hard-IRQ context the class is
    /// hardirq-safe (a trylock never marks that: it cannot deadlock against the
    /// interrupted code); acquired with IRQs on it is hardirq-unsafe.
    /// A reader marks the `_READ` bits. Softirq context and softirqs enabled
    /// mark the softirq bits the same way (used with softirqs enabled only counts
    /// with hard IRQs enabled too).
    fn mark_usage(&mut self, e: &Event, class: ClassId, masked: bool, trylock: bool, read: u8) {
        let site = self.site_of(e);
        let t = self.tasks.entry(e.task.0).or_default();
        let (hardirq, softirq, softirqs_on) = (t.hardirq, t.softirq, !t.softirqs_off);
        let is_read = read != 0;
        // The softirq bits first: a report made while marking the hard-IRQ ones
        // then shows both (as the guest's reports always have).
        if softirq > 0 && !trylock {
            self.mark(
                e,
                class,
                Usage::of(IrqState::Soft, true, is_read),
                read,
                site,
            );
        }
        if hardirq == 0 && !masked && softirqs_on {
            self.mark(
                e,
                class,
                Usage::of(IrqState::Soft, false, is_read),
                read,
                site,
            );
        }
        if hardirq > 0 {
            if !trylock {
                let bit = Usage::of(IrqState::Hard, true, is_read);
                self.mark(e, class, bit, read, site);
            }
        } else if !masked {
            self.mark(
                e,
                class,
                Usage::of(IrqState::Hard, false, is_read),
                read,
                site,
            );
        }
    }

    /// lockdep's `lockdep_softirqs_on`: held locks are now held with softirqs
    /// enabled (if hard IRQs are enabled too).
    fn softirqs_enabled(&mut self, e: &Event) {
        let masked = self.masked(e.cpu.0);
        let t = self.task(e.task);
        t.softirqs_off = false;
        if masked || t.hardirq > 0 {
            return;
        }
        let held = t.held.clone();
        let site = self.site_of(e);
        for h in held {
            let bit = Usage::of(IrqState::Soft, false, h.read != 0);
            self.mark(e, h.class, bit, h.read, site);
        }
    }

    /// A release names the held lock by its instance, as lockdep's
    /// `match_held_lock` does: whatever class the releaser thinks it has (Linux's
    /// `down_write_nested(&sb->s_umount, 1)` is released by a plain `up_write`).
    /// Pseudo-locks, which have no address, go by class.
    fn release(&mut self, e: &Event, addr: u64, class: ClassId, flavor: LockFlavor) {
        let site = self.site_of(e);
        let t = self.tasks.entry(e.task.0).or_default();
        let is_it = |h: &Held| {
            if addr != 0 {
                h.addr == addr
            } else {
                h.class == class
            }
        };
        match t.held.iter().rposition(is_it) {
            Some(i) => {
                t.held.remove(i);
                if flavor != LockFlavor::Pseudo && self.owners.get(&addr) == Some(&e.task.0) {
                    self.owners.remove(&addr);
                }
            }
            None => self.report_bad_unlock(e, class, flavor),
        }
        self.cpu(e.cpu.0).last_release = Some((class, flavor, site));
    }

    fn assert_held(&mut self, e: &Event, addr: u64, class: ClassId) {
        let held = self
            .tasks
            .get(&e.task.0)
            .is_some_and(|t| t.held.iter().any(|h| h.addr == addr));
        if !held {
            self.report_context_violation(e, class);
        }
    }

    /// An allocation that may sleep may enter reclaim: acquire and release the
    /// `fs_reclaim` pseudo-lock, unless the task is in direct reclaim (Linux's
    /// PF_MEMALLOC: no recursion into reclaim). `fs_reclaim` held *outside* direct
    /// reclaim makes this a recursive acquisition, as lockdep's
    /// `fs_reclaim_wrong_nesting` self-test expects.
    fn might_alloc(&mut self, e: &Event) {
        let fs = self.fs_reclaim;
        if self.tasks.get(&e.task.0).is_some_and(|t| t.reclaim > 0) {
            return;
        }
        self.attempt(e, 0, fs, LockFlavor::Pseudo, 0);
        self.acquired(e, 0, fs, LockFlavor::Pseudo, false, 0);
        let t = self.tasks.entry(e.task.0).or_default();
        if let Some(i) = t.held.iter().rposition(|h| h.class == fs) {
            t.held.remove(i);
        }
    }

    /// Whether the task may not sleep here, and why.
    fn atomic_reason(&self, e: &Event) -> Option<String> {
        let t = self.tasks.get(&e.task.0);
        if t.is_some_and(|t| t.hardirq > 0) {
            return Some("in hard-IRQ context".into());
        }
        if let Some(spin) = t.and_then(|t| t.held.iter().rev().find(|h| is_spin(h.flavor))) {
            return Some(format!(
                "spinlock {} held",
                self.classes[spin.class as usize].name
            ));
        }
        if self.masked(e.cpu.0) {
            return Some("IRQs disabled".into());
        }
        // ___might_sleep's in_atomic(): a raised preemption count with no lock held.
        if t.is_some_and(|t| t.preempt > 0) {
            return Some("preemption disabled".into());
        }
        None
    }

    fn sleep_point(&mut self, e: &Event, what: &str) {
        if !self.beyond_lockdep {
            return;
        }
        if let Some(reason) = self.atomic_reason(e) {
            self.report_sleep_in_atomic(e, what, &reason);
        }
    }

    /// IRQs turned on by an instruction.
    fn irqs_enabled(&mut self, e: &Event) {
        let Some(t) = self.tasks.get_mut(&e.task.0) else {
            return;
        };
        if t.hardirq > 0 {
            // The first time in this handler is the cause; what follows in it is
            // its consequence.
            if !std::mem::replace(&mut t.irqs_on_in_hardirq, true) {
                self.report_irqs_on_in_hardirq(e, None);
            }
            return;
        }
        // lockdep's `mark_held_locks`: every lock held now is held with IRQs on.
        // A hardirq-safe one among them is "inconsistent {IN-HARDIRQ-W} ->
        // {HARDIRQ-ON-W}", the same finding as when the facts come the other way.
        let held = t.held.clone();
        let site = self.site_of(e);
        let softirqs_on = self.tasks.get(&e.task.0).is_some_and(|t| !t.softirqs_off);
        for h in held {
            let read = h.read != 0;
            if softirqs_on {
                let bit = Usage::of(IrqState::Soft, false, read);
                self.mark(e, h.class, bit, h.read, site);
            }
            self.mark(
                e,
                h.class,
                Usage::of(IrqState::Hard, false, read),
                h.read,
                site,
            );
        }
    }

    /// lockdep's `usage_match` for a hardirq-safe class (`only_xr`: the path to it
    /// has only recursive-read dependencies, then only a written usage counts). A
    /// class reported as inconsistent is left out: an inversion through it would
    /// be the same cause again.
    fn safe_usage(&self, c: ClassId, only_xr: bool, state: IrqState) -> bool {
        let c = &self.classes[c as usize];
        !c.inconsistent(state)
            && (c.has(state, true, false) || !only_xr && c.has(state, true, true))
    }

    /// [`Self::safe_usage`] for an unsafe class.
    fn unsafe_usage(&self, c: ClassId, only_xr: bool, state: IrqState) -> bool {
        let c = &self.classes[c as usize];
        !c.inconsistent(state)
            && (c.has(state, false, false) || !only_xr && c.has(state, false, true))
    }

    /// lockdep's `debug_check_no_locks_freed`: the task must hold no lock inside
    /// memory it frees or re-initialises.
    fn memory_freed(&mut self, e: &Event, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let freed = self.tasks.get(&e.task.0).and_then(|t| {
            t.held
                .iter()
                .rev()
                .find(|h| h.addr >= addr && h.addr < end)
                .copied()
        });
        if let Some(held) = freed {
            self.report_held_lock_freed(e, &held, addr, len);
        }
    }

    /// lockdep's `mark_lock` + `mark_lock_irq`: a new usage bit of `class`
    /// (acquired or held as `read`) must not conflict with its other bits (an
    /// inconsistent state) nor, along the dependencies, with another class's.
    fn mark(&mut self, e: &Event, class: ClassId, bit: Usage, read: u8, site: Site) {
        let c = &mut self.classes[class as usize];
        if c.usage(bit).is_some() {
            return;
        }
        *c.usage_mut(bit) = Some(site);
        let state = bit.state;
        let excl = Usage::of(state, !bit.used_in, false);
        let excl_read = Usage::of(state, !bit.used_in, true);
        let other = c
            .usage(excl)
            .or(if bit.read { None } else { c.usage(excl_read) });
        if let Some(other) = other {
            // lockdep's `valid_state` stops at the inconsistent state: one cause,
            // one finding (no inversion report for the same mark). Its names say
            // which of the two usages were reads (`{HARDIRQ-ON-R}`).
            let other_read = c.usage(excl).is_none();
            let (on, safe) = if bit.used_in {
                ((other, other_read), (site, bit.read))
            } else {
                ((site, bit.read), (other, other_read))
            };
            self.report_inconsistent(e, class, on, safe, bit.used_in, state);
            return;
        }
        if bit.used_in {
            // A safe class now: nothing it leads to may be unsafe.
            let found = self.bfs(class, read == 2, true, |c, xr| {
                self.unsafe_usage(c, xr, state)
            });
            if let Some(path) = found {
                // lockdep's scenario names the lock next to the one just marked.
                let middle = path.get(1).copied().unwrap_or(class);
                self.report_irq_inversion(e, &path, middle, state);
            }
        } else if let Some(mut path) = self.bfs(class, read != 0, false, |c, xr| {
            self.safe_usage(c, xr, state)
        }) {
            // An unsafe class now: nothing that leads to it may be safe.
            path.reverse();
            let middle = path.len().checked_sub(2).map_or(class, |i| path[i]);
            self.report_irq_inversion(e, &path, middle, state);
        }
    }

    /// lockdep's `__bfs` along strong dependency paths (no -(*R)-> followed by
    /// -(S*)->), forward or backward from `root` (whose `only_xr` is given),
    /// skipping local locks (`usage_skip`): the first class `wanted` accepts (given
    /// whether the path to it has only -(*R)-> dependencies), the root included, and
    /// the path from the root to it. As in lockdep, each class is reached once, by
    /// the first dependency the search meets, strong or not.
    fn bfs(
        &self,
        root: ClassId,
        root_only_xr: bool,
        forward: bool,
        wanted: impl Fn(ClassId, bool) -> bool,
    ) -> Option<Vec<ClassId>> {
        self.strong_search(root, root_only_xr, forward, true, wanted)
    }

    fn strong_search(
        &self,
        root: ClassId,
        root_only_xr: bool,
        forward: bool,
        skip_local: bool,
        wanted: impl Fn(ClassId, bool) -> bool,
    ) -> Option<Vec<ClassId>> {
        // Reached classes: (parent, only_xr, usable).
        let mut reached: FxMap<ClassId, (ClassId, bool)> = FxMap::default();
        let mut queue: VecDeque<(ClassId, ClassId, u8)> = VecDeque::new();
        let visit = |c: ClassId, only_xr: bool, reached: &FxMap<ClassId, (ClassId, bool)>| {
            if skip_local && self.classes[c as usize].local {
                return None;
            }
            if !wanted(c, only_xr) {
                return None;
            }
            let mut path = vec![c];
            let mut at = c;
            while at != root {
                at = reached[&at].0;
                path.push(at);
            }
            path.reverse();
            Some(path)
        };
        reached.insert(root, (root, root_only_xr));
        if let Some(path) = visit(root, root_only_xr, &reached) {
            return Some(path);
        }
        if skip_local && self.classes[root as usize].local {
            return None;
        }
        let graph = if forward {
            &self.forward
        } else {
            &self.backward
        };
        let enqueue = |queue: &mut VecDeque<(ClassId, ClassId, u8)>, c: ClassId| {
            for &next in &graph[c as usize] {
                let dep = if forward {
                    self.edges[&(c, next)].dep
                } else {
                    dep_backwards(self.edges[&(next, c)].dep)
                };
                queue.push_back((next, c, dep));
            }
        };
        enqueue(&mut queue, root);
        while let Some((c, parent, mut dep)) = queue.pop_front() {
            if reached.contains_key(&c) {
                continue;
            }
            if reached[&parent].1 {
                dep &= !(DEP_SR | DEP_SN);
            }
            let only_xr = dep & (DEP_SN | DEP_EN) == 0;
            reached.insert(c, (parent, only_xr));
            if dep == 0 {
                continue; // reached, but by no strong path: lockdep skips it for good
            }
            if let Some(path) = visit(c, only_xr, &reached) {
                return Some(path);
            }
            if skip_local && self.classes[c as usize].local {
                continue;
            }
            enqueue(&mut queue, c);
        }
        None
    }

    fn add_edge(&mut self, e: &Event, prev: &Held, next: ClassId, next_read: u8) {
        let key = (prev.class, next);
        let dep = dep_of(prev.read, next_read);
        if self.edges.get(&key).is_some_and(|edge| edge.dep & dep != 0) {
            return;
        }
        // lockdep's check_noncircular: would this close a strong cycle? Look for
        // B → … → A first, ending so that A → B conflicts with it.
        let cycle = self.strong_search(next, next_read == 2, true, false, |c, only_xr| {
            c == prev.class && (prev.read == 0 || !only_xr)
        });
        match self.edges.get_mut(&key) {
            Some(edge) => edge.dep |= dep,
            None => {
                let next_site = self.site_of(e);
                self.edges.insert(
                    key,
                    Edge {
                        next: next_site,
                        dep,
                    },
                );
                self.forward[prev.class as usize].push(next);
                self.backward[next as usize].push(prev.class);
            }
        }
        match cycle {
            // A reader of the class nesting in a recursive one: lockdep reports
            // it as a recursion, with the same cause.
            Some(path) if path.len() == 1 => {
                let addr = e.kind.lock().map_or(0, |l| l.addr);
                self.report_recursive(e, *prev, addr, next, prev.flavor);
            }
            Some(path) => self.report_circular(e, prev, next, &path),
            None => {}
        }
        // lockdep's check_irq_usage: an IRQ-safe class reaching (through this
        // dependency) a class unsafe for the same IRQ context; the first found.
        for state in IrqState::ALL {
            let safe = self.bfs(prev.class, prev.read != 0, false, |c, xr| {
                self.safe_usage(c, xr, state)
            });
            let Some(mut safe) = safe else {
                continue;
            };
            safe.reverse();
            let unsafe_ = self.bfs(next, next_read == 2, true, |c, xr| {
                self.unsafe_usage(c, xr, state)
            });
            if let Some(unsafe_) = unsafe_ {
                let mut path = safe;
                path.extend(unsafe_);
                // lockdep's scenario names the new dependency's other end.
                let middle = if prev.class == path[0] {
                    next
                } else {
                    prev.class
                };
                self.report_irq_inversion(e, &path, middle, state);
                break;
            }
        }
    }

    /// What `task` is blocked on and who must move first: its innermost pending
    /// acquisition of a lock someone holds, else a cross-CPU call (then the task
    /// running on its target, which takes the IPI unless it is blocked itself with
    /// IRQs masked: see [`Self::ipis_stay_untaken`]).
    fn blocked_on(&self, task: u32) -> Option<(Wait, u32)> {
        let t = self.tasks.get(&task)?;
        let lock = t
            .waiting
            .iter()
            .rev()
            .filter(|w| w.ctx == t.hardirq)
            .find_map(|w| self.owners.get(&w.addr).map(|&o| (Wait::Lock(*w), o)));
        lock.or_else(|| {
            self.csd_waits
                .values()
                .filter(|w| w.task == task && w.ctx == t.hardirq)
                .find_map(|w| {
                    let (running, _) = self.cpus.get(w.target as usize)?.running?;
                    (running != task).then_some((Wait::Ipi(*w), running))
                })
        })
    }

    /// Whether every IPI waited for in `cycle` stays untaken: the task running on
    /// its target (the next in the cycle) waits there, spinning with IRQs masked
    /// (one that sleeps, as a mutex waiter does, leaves its CPU to other work, and
    /// one spinning with IRQs on takes the IPI).
    fn ipis_stay_untaken(cycle: &[(u32, Wait)]) -> bool {
        cycle.iter().enumerate().all(|(i, (_, wait))| {
            !matches!(wait, Wait::Ipi(_))
                || match cycle[(i + 1) % cycle.len()].1 {
                    Wait::Lock(next) => next.spins && next.masked,
                    Wait::Ipi(next) => next.masked,
                }
        })
    }

    /// After `e`'s task started waiting: does the wait-for graph close a cycle?
    fn check_wait_cycle(&mut self, e: &Event) {
        if !self.beyond_lockdep {
            return;
        }
        let start = e.task.0;
        if let Some((irq_wait, queued)) = self
            .tasks
            .get(&start)
            .and_then(TaskState::irq_queued_behind_itself)
        {
            self.report_irq_self_deadlock(e, start, irq_wait, queued);
            return;
        }
        let mut cycle: Vec<(u32, Wait)> = Vec::new();
        let mut task = start;
        for _ in 0..=self.tasks.len() {
            let Some((waiting, owner)) = self.blocked_on(task) else {
                return;
            };
            cycle.push((task, waiting));
            if owner == start {
                if Self::ipis_stay_untaken(&cycle) {
                    self.report_deadlock(e, &cycle);
                }
                return;
            }
            if cycle.iter().any(|&(t, _)| t == owner) {
                // A cycle that does not include this task was reported when it closed.
                return;
            }
            task = owner;
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod matrix;
