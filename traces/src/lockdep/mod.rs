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

/// Marker: the recorder does not see lock waits (Linux's lockdep is told of an
/// acquisition before the lock is waited for), so there is no wait-for graph to
/// find a real deadlock in; only lockdep's own checks apply.
pub const NO_WAITS_MARKER: &str = "recorder:no-waits";

/// Names code addresses for reports: `(address, is_return_address)` →
/// `"function+0x10"`. Return addresses are named by the call that made them.
pub type Symbolizer = Box<dyn Fn(u64, bool) -> Option<String>>;

/// Where something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub time: u64,
    pub cpu: u16,
    pub task: u32,
    pub pc: u64,
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
    /// First acquisition in hard-IRQ context.
    in_hardirq: Option<Site>,
    /// First acquisition (or hold) with IRQs on outside hard-IRQ context.
    hardirq_on: Option<Site>,
    /// A `local_lock_t` (lockdep's `LD_LOCK_PERCPU`).
    local: bool,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    class: ClassId,
    addr: u64,
    flavor: LockFlavor,
    trylock: bool,
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
}

/// Counters for reports and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub lock_events: u64,
    pub classes: u64,
    pub dependencies: u64,
    pub chains: u64,
    pub chain_cache_hits: u64,
}

/// The validator. Feed it events in order with [`Validator::feed`].
pub struct Validator {
    symbolize: Option<Symbolizer>,
    /// Whether lock waits are recorded (see [`NO_WAITS_MARKER`]).
    waits_recorded: bool,
    classes: Vec<Class>,
    by_name: HashMap<String, ClassId>,
    /// Class of each string id seen (index = `StrId`), `u32::MAX` = not resolved.
    by_str: Vec<ClassId>,
    fs_reclaim: ClassId,
    tasks: FxMap<u32, TaskState>,
    task_names: FxMap<u32, String>,
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
    pub fn new() -> Self {
        let mut v = Validator {
            symbolize: None,
            classes: Vec::new(),
            by_name: HashMap::new(),
            by_str: Vec::new(),
            fs_reclaim: 0,
            tasks: FxMap::default(),
            task_names: FxMap::default(),
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
            waits_recorded: true,
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

    /// Whether a real deadlock (a cycle in the wait-for graph) has been found.
    pub fn deadlocked(&self) -> bool {
        self.deadlocked
    }

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
            in_hardirq: None,
            hardirq_on: None,
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
                self.attempt(e, lock.addr, class, flavor);
            }
            EventKind::LockAcquired { lock, flavor } => {
                self.stats.lock_events += 1;
                let class = self.class_of(lock, Some(flavor), strings);
                self.acquired(e, lock.addr, class, flavor, false);
            }
            EventKind::Trylock {
                lock,
                flavor,
                acquired,
            } => {
                self.stats.lock_events += 1;
                if acquired {
                    let class = self.class_of(lock, Some(flavor), strings);
                    self.acquired(e, lock.addr, class, flavor, true);
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
                } else if label == LOCKDEP_RESET_MARKER {
                    let t = self.task(e.task);
                    t.held.clear();
                    t.waiting.clear();
                    self.owners.retain(|_, owner| *owner != e.task.0);
                } else if label == NO_WAITS_MARKER {
                    self.waits_recorded = false;
                }
            }
            _ => {}
        }
    }

    fn masked(&self, cpu: u16) -> bool {
        self.cpus.get(cpu as usize).is_none_or(|c| c.masked)
    }

    fn attempt(&mut self, e: &Event, addr: u64, class: ClassId, flavor: LockFlavor) {
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
        self.mark_usage(e, class, ctx, masked, false);
        // The chain: context, held classes of this context, the new class.
        let t = &self.tasks[&e.task.0];
        let mut chain = vec![ctx];
        for held in t.held.iter().filter(|h| h.ctx == ctx) {
            chain.push(held.class << 1 | held.trylock as u32);
        }
        chain.push(class << 1);
        if !self.chains.insert(chain.into_boxed_slice()) {
            self.stats.chain_cache_hits += 1;
        } else {
            let t = &self.tasks[&e.task.0];
            let same_ctx: Vec<Held> = t.held.iter().filter(|h| h.ctx == ctx).copied().collect();
            if let Some(prev) = same_ctx.iter().rev().find(|h| h.class == class) {
                let prev = *prev;
                self.report_recursive(e, prev, addr, class, flavor);
            } else {
                for prev in same_ctx.iter().rev() {
                    self.add_edge(e, prev, class);
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
            ctx,
            site,
        });
        if flavor != LockFlavor::Pseudo {
            self.owners.insert(addr, e.task.0);
        }
        if trylock {
            // A trylock has no attempt event: its usage is marked here.
            self.mark_usage(e, class, ctx, masked, true);
        }
    }

    /// lockdep's `mark_usage`: acquired in hard-IRQ context the class is
    /// hardirq-safe (a trylock never marks that: it cannot deadlock against the
    /// interrupted code); acquired with IRQs on it is hardirq-unsafe.
    fn mark_usage(&mut self, e: &Event, class: ClassId, ctx: u32, masked: bool, trylock: bool) {
        let site = self.site_of(e);
        if ctx > 0 {
            if !trylock {
                self.mark_in_hardirq(e, class, site);
            }
        } else if !masked {
            self.mark_hardirq_on(e, class, site);
        }
    }

    fn release(&mut self, e: &Event, addr: u64, class: ClassId, flavor: LockFlavor) {
        let site = self.site_of(e);
        let t = self.tasks.entry(e.task.0).or_default();
        match t
            .held
            .iter()
            .rposition(|h| h.addr == addr && h.class == class)
        {
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
        self.attempt(e, 0, fs, LockFlavor::Pseudo);
        self.acquired(e, 0, fs, LockFlavor::Pseudo, false);
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
        for h in held {
            self.mark_hardirq_on(e, h.class, site);
        }
    }

    /// Hardirq-safe and not also unsafe: a class that is both was reported as
    /// inconsistent, and an inversion through it would be the same cause again.
    fn only_safe(&self, c: ClassId) -> bool {
        let c = &self.classes[c as usize];
        c.in_hardirq.is_some() && c.hardirq_on.is_none() && !c.local
    }

    /// Hardirq-unsafe and not also safe (see [`Self::only_safe`]).
    fn only_unsafe(&self, c: ClassId) -> bool {
        let c = &self.classes[c as usize];
        c.hardirq_on.is_some() && c.in_hardirq.is_none() && !c.local
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

    fn mark_in_hardirq(&mut self, e: &Event, class: ClassId, site: Site) {
        if self.classes[class as usize].in_hardirq.is_some() {
            return;
        }
        self.classes[class as usize].in_hardirq = Some(site);
        if let Some(on) = self.classes[class as usize].hardirq_on {
            // lockdep's `mark_lock_irq` stops at the inconsistent state: one
            // cause, one finding (no inversion report for the same mark).
            self.report_inconsistent(e, class, on, site, true);
            return;
        }
        // A safe class now: nothing it leads to may be unsafe.
        if let Some(path) = self.usage_search(class, true, |c| self.only_unsafe(c)) {
            // lockdep's scenario names the lock next to the one just marked.
            self.report_irq_inversion(e, &path, path[1]);
        }
    }

    fn mark_hardirq_on(&mut self, e: &Event, class: ClassId, site: Site) {
        if self.classes[class as usize].hardirq_on.is_some() {
            return;
        }
        self.classes[class as usize].hardirq_on = Some(site);
        if let Some(safe) = self.classes[class as usize].in_hardirq {
            self.report_inconsistent(e, class, site, safe, false);
            return;
        }
        // An unsafe class now: nothing that leads to it may be safe.
        if let Some(mut path) = self.usage_search(class, false, |c| self.only_safe(c)) {
            path.reverse();
            self.report_irq_inversion(e, &path, path[path.len() - 2]);
        }
    }

    /// Breadth-first search from `from` (excluded) along the graph (`forward` or
    /// backward) for a class satisfying `wanted`; the path from `from` to it.
    fn search(
        &self,
        from: ClassId,
        forward: bool,
        wanted: impl Fn(ClassId) -> bool,
    ) -> Option<Vec<ClassId>> {
        self.search_graph(from, forward, false, wanted)
    }

    /// [`Self::search`] for IRQ usage: local locks are skipped (lockdep's
    /// `usage_skip`).
    fn usage_search(
        &self,
        from: ClassId,
        forward: bool,
        wanted: impl Fn(ClassId) -> bool,
    ) -> Option<Vec<ClassId>> {
        self.search_graph(from, forward, true, wanted)
    }

    fn search_graph(
        &self,
        from: ClassId,
        forward: bool,
        skip_local: bool,
        wanted: impl Fn(ClassId) -> bool,
    ) -> Option<Vec<ClassId>> {
        let graph = if forward {
            &self.forward
        } else {
            &self.backward
        };
        if skip_local && self.classes[from as usize].local {
            return None; // lockdep skips the search's root too
        }
        let mut parent: FxMap<ClassId, ClassId> = FxMap::default();
        let mut queue = VecDeque::from([from]);
        parent.insert(from, from);
        while let Some(c) = queue.pop_front() {
            for &next in &graph[c as usize] {
                if parent.contains_key(&next) {
                    continue;
                }
                parent.insert(next, c);
                if skip_local && self.classes[next as usize].local {
                    continue; // neither a match nor a way through
                }
                if wanted(next) {
                    let mut path = vec![next];
                    let mut at = next;
                    while at != from {
                        at = parent[&at];
                        path.push(at);
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(next);
            }
        }
        None
    }

    /// The path `from` → … → `to` along dependencies, if there is one.
    fn path(&self, from: ClassId, to: ClassId) -> Option<Vec<ClassId>> {
        if from == to {
            return Some(vec![from]);
        }
        self.search(from, true, |c| c == to)
    }

    fn add_edge(&mut self, e: &Event, prev: &Held, next: ClassId) {
        let key = (prev.class, next);
        if self.edges.contains_key(&key) {
            return;
        }
        // Would A → B close a cycle? Look for B → … → A first.
        let cycle = self.path(next, prev.class);
        self.edges.insert(
            key,
            Edge {
                next: self.site_of(e),
            },
        );
        self.forward[prev.class as usize].push(next);
        self.backward[next as usize].push(prev.class);
        if let Some(path) = cycle {
            self.report_circular(e, prev, next, &path);
        }
        // A hardirq-safe class reaching (through this edge) a hardirq-unsafe one.
        let safe = if self.only_safe(prev.class) {
            Some(vec![prev.class])
        } else {
            self.usage_search(prev.class, false, |c| self.only_safe(c))
                .map(|mut p| {
                    p.reverse();
                    p
                })
        };
        if let Some(safe) = safe {
            let unsafe_ = if self.only_unsafe(next) {
                Some(vec![next])
            } else {
                self.usage_search(next, true, |c| self.only_unsafe(c))
            };
            if let Some(unsafe_) = unsafe_ {
                let mut path = safe;
                path.extend(unsafe_);
                // lockdep's scenario names the new dependency's other end.
                let middle = if prev.class == path[0] {
                    next
                } else {
                    prev.class
                };
                self.report_irq_inversion(e, &path, middle);
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
        if !self.waits_recorded {
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
