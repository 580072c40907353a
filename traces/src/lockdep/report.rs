//! The lockdep-style text of each finding (headline, who, the locks with their usage
//! bits, a stack per dependency, the "possible unsafe locking scenario" table, held
//! locks, the reporter's `stack backtrace:`) and the same facts structured for the
//! JSON report ([`Finding::locks`], [`Finding::sites`], [`Finding::tasks`]).

use super::{ClassId, Held, IrqState, Site, Validator, Wait, Waiting};
use crate::event::{Event, LockFlavor};
use crate::finding::{Finding, FindingKind, FindingLock, FindingSite, FindingTask};

/// Functions that call IRQ handlers: the guest's (`handle_irq` may be inlined into
/// `exception_dispatch`) and Linux's.
const IRQ_DISPATCHERS: &[&str] = &[
    "handle_irq",
    "exception_dispatch",
    "__handle_irq_event_percpu",
];

/// Indentation of a stack frame line, as lockdep prints them.
const FRAME_INDENT: &str = "       ";

/// A finding being written: its text and its structured parts.
#[derive(Default)]
struct Draft {
    lines: Vec<String>,
    locks: Vec<FindingLock>,
    sites: Vec<FindingSite>,
    tasks: Vec<u32>,
}

impl Draft {
    fn line(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }
}

impl Validator {
    fn name(&self, class: ClassId) -> &str {
        &self.classes[class as usize].name
    }

    /// `0x40081234 <func+0x14>` (or the bare address without symbols).
    pub(super) fn code(&self, addr: u64, ret: bool) -> String {
        if addr == 0 {
            return "?".into();
        }
        match self.symbolize.as_ref().and_then(|s| s(addr, ret)) {
            Some(symbol) => format!("{addr:#x} <{symbol}>"),
            None => format!("{addr:#x}"),
        }
    }

    /// The function part of a symbolised address, for keys (stable across offsets).
    fn func_of(&self, addr: u64, ret: bool) -> String {
        match self.symbolize.as_ref().and_then(|s| s(addr, ret)) {
            Some(symbol) => symbol.split('+').next().unwrap_or(&symbol).to_string(),
            None => format!("{addr:#x}"),
        }
    }

    /// lockdep's `comm/pid`.
    fn task_label(&self, task: u32) -> String {
        let pid = self.pid(task);
        match self.task_names.get(&task) {
            Some(name) => format!("{name}/{pid}"),
            None => format!("?/{pid}"),
        }
    }

    /// The task's pid as the kernel knows it, else its number in the trace.
    fn pid(&self, task: u32) -> u64 {
        self.task_pids
            .get(&task)
            .copied()
            .unwrap_or(u64::from(task))
    }

    /// lockdep's usage bits, `{hardirq-write hardirq-read softirq-write
    /// softirq-read}`: `+` used with IRQs on, `-` used in IRQ context, `?` both, `.`
    /// neither.
    pub(super) fn usage(&self, class: ClassId) -> String {
        let c = &self.classes[class as usize];
        let bits = |on: bool, used_in: bool| match (on, used_in) {
            (true, true) => '?',
            (true, false) => '+',
            (false, true) => '-',
            (false, false) => '.',
        };
        let char_of = |state, read| bits(c.has(state, false, read), c.has(state, true, read));
        format!(
            "{{{}{}{}{}}}",
            char_of(IrqState::Hard, false),
            char_of(IrqState::Hard, true),
            char_of(IrqState::Soft, false),
            char_of(IrqState::Soft, true)
        )
    }

    /// `(name){usage}`.
    fn lock_label(&self, class: ClassId) -> String {
        format!("({}){}", self.name(class), self.usage(class))
    }

    /// lockdep's `at:` (the code that called the lock function), with when and where.
    fn at(&self, site: &Site) -> String {
        let code = match site.caller {
            0 => self.code(site.pc, false),
            caller => self.code(caller, true),
        };
        let irq = site
            .irq
            .map_or(String::new(), |irq| format!(" hardirq {irq}"));
        format!("at: {code} [cpu{} t={}{irq}]", site.cpu, site.time)
    }

    /// The code of `site`, innermost first: its pc, its caller, then the recorded
    /// frames above them.
    fn frames(&self, site: &Site) -> Vec<u64> {
        let mut frames = vec![site.pc];
        if site.caller != 0 {
            frames.push(site.caller);
        }
        if let Some(above) = site.stack.and_then(|id| self.stacks.get(&id.0)) {
            frames.extend_from_slice(above);
        }
        frames
    }

    fn stack_lines(&self, site: &Site, out: &mut Draft) {
        for (i, &addr) in self.frames(site).iter().enumerate() {
            out.line(format!("{FRAME_INDENT}{}", self.code(addr, i > 0)));
        }
    }

    /// The hard IRQ `site` ran in and its handler: the function the IRQ dispatcher
    /// called (found in the backtrace by the dispatcher's name, [`IRQ_DISPATCHERS`]),
    /// with the dispatcher's call site (its line names an inlined handler).
    fn irq_context(&self, site: &Site) -> Option<String> {
        let irq = site.irq?;
        let frames = self.frames(site);
        let is_return = |i: usize| i > 0;
        let dispatcher = (1..frames.len()).find(|&i| {
            let func = self.func_of(frames[i], is_return(i));
            IRQ_DISPATCHERS.iter().any(|d| func.ends_with(d))
        });
        Some(match dispatcher {
            Some(i) => format!(
                "in hard IRQ {irq}, handler {} called from {}",
                self.func_of(frames[i - 1], is_return(i - 1)),
                self.code(frames[i], true)
            ),
            None => format!("in hard IRQ {irq}"),
        })
    }

    fn finding_site(&self, role: &str, lock: Option<ClassId>, site: &Site) -> FindingSite {
        FindingSite {
            role: role.into(),
            lock: lock.map(|c| self.name(c).to_string()),
            cpu: Some(site.cpu.into()),
            task: Some(site.task),
            time: Some(site.time),
            irq: site.irq,
            frames: self.frames(site),
        }
    }

    /// A structured site, and its task among the finding's tasks.
    fn record_site(&self, role: &str, lock: Option<ClassId>, site: &Site, out: &mut Draft) {
        out.sites.push(self.finding_site(role, lock, site));
        if !out.tasks.contains(&site.task) {
            out.tasks.push(site.task);
        }
    }

    fn record_lock(&self, class: ClassId, addr: Option<u64>, out: &mut Draft) {
        let name = self.name(class);
        if out.locks.iter().any(|l| l.class == name && l.addr == addr) {
            return;
        }
        out.locks.push(FindingLock {
            class: name.to_string(),
            addr: addr.filter(|&a| a != 0),
            usage: Some(self.usage(class)),
        });
    }

    /// ` 0x400b9ce0 (pcpu_mutex){+.+.}, at: …` for a lock instance at `site`.
    fn lock_line(&self, class: ClassId, addr: u64, site: &Site, role: &str, out: &mut Draft) {
        out.line(format!(
            " {addr:#x} {}, {}",
            self.lock_label(class),
            self.at(site)
        ));
        self.record_lock(class, Some(addr), out);
        self.record_site(role, Some(class), site, out);
    }

    fn held_lines(&self, task: u32, out: &mut Draft) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        out.line(format!(
            "{} lock(s) held by {}:",
            t.held.len(),
            self.task_label(task)
        ));
        for (i, h) in t.held.iter().enumerate() {
            out.line(format!(
                " #{i}: {:#x} {} ({}), {}",
                h.addr,
                self.lock_label(h.class),
                h.flavor.name(),
                self.at(&h.site)
            ));
            self.record_lock(h.class, Some(h.addr), out);
            self.record_site("held", Some(h.class), &h.site, out);
        }
    }

    /// lockdep's closing `stack backtrace:` of the reporting context.
    fn reporter_lines(&self, site: &Site, out: &mut Draft) {
        out.line("stack backtrace:");
        let comm = self.task_names.get(&site.task).map_or("?", String::as_str);
        out.line(format!(
            "CPU: {} PID: {} Comm: {comm} t={}",
            site.cpu,
            self.pid(site.task),
            site.time
        ));
        if let Some(irq) = self.irq_context(site) {
            out.line(irq);
        }
        out.line("Call trace:");
        self.stack_lines(site, out);
        out.sites
            .insert(0, self.finding_site("reporter", None, site));
        if !out.tasks.contains(&site.task) {
            out.tasks.insert(0, site.task);
        }
    }

    /// `comm/pid [HC..] enables IRQs at: …`, and its site.
    fn enables_irqs_line(&self, e: &Event, site: &Site, out: &mut Draft) {
        out.line(format!(
            "{} {} enables IRQs {}",
            self.task_label(e.task.0),
            self.irq_state(e),
            self.at(site)
        ));
        self.record_site("irqs-on", None, site, out);
    }

    /// `comm/pid is trying to VERB lock (flavor):`.
    fn trying_to(&self, e: &Event, verb: &str, flavor: LockFlavor) -> String {
        format!(
            "{} is trying to {verb} lock ({}):",
            self.task_label(e.task.0),
            flavor.name()
        )
    }

    /// A usage state's registration (`{IN-HARDIRQ-W} state was registered at:`).
    fn usage_lines(&self, title: &str, site: &Site, role: &str, class: ClassId, out: &mut Draft) {
        out.line(format!(
            "{title} [{} cpu{} t={}]",
            self.task_label(site.task),
            site.cpu,
            site.time
        ));
        self.stack_lines(site, out);
        if let Some(irq) = self.irq_context(site) {
            out.line(format!("{FRAME_INDENT}({irq})"));
        }
        self.record_site(role, Some(class), site, out);
    }

    /// lockdep's `[HC1[1]:SC0[0]:HE0:SE1]`: hard-IRQ context and depth, softirq
    /// context (never), hard IRQs enabled, softirqs enabled (as hard IRQs here).
    fn irq_state(&self, e: &Event) -> String {
        let depth = self.tasks.get(&e.task.0).map_or(0, |t| t.hardirq);
        let enabled = u8::from(!self.masked(e.cpu.0));
        format!(
            "[HC{}[{depth}]:SC0[0]:HE{enabled}:SE{enabled}]",
            u8::from(depth > 0)
        )
    }

    /// Every lock each task holds now (lockdep's "show all locks held"), tasks in
    /// order: what a report of a run that made no progress needs.
    pub fn held_locks_report(&self) -> Vec<String> {
        let mut tasks: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.held.is_empty())
            .map(|(&task, _)| task)
            .collect();
        tasks.sort_unstable();
        let mut out = Draft::default();
        for task in tasks {
            self.held_lines(task, &mut out);
        }
        out.lines
    }

    /// The stacks of the dependencies along `path` (each A → B: where B was first
    /// taken with A held), lockdep's "existing dependency chain", outermost last.
    fn dependency_lines(&self, path: &[ClassId], out: &mut Draft) {
        for (depth, pair) in path.windows(2).enumerate().rev() {
            let (a, b) = (pair[0], pair[1]);
            out.line(format!("-> #{} {}:", depth + 1, self.lock_label(b)));
            match self.edges.get(&(a, b)) {
                Some(edge) => {
                    out.line(format!(
                        "{FRAME_INDENT}taken with ({}) held by {} [cpu{} t={}]",
                        self.name(a),
                        self.task_label(edge.next.task),
                        edge.next.cpu,
                        edge.next.time
                    ));
                    self.stack_lines(&edge.next, out);
                    self.record_site("dependency", Some(b), &edge.next, out);
                }
                None => out.line(format!(
                    "{FRAME_INDENT}(taken with ({}) held)",
                    self.name(a)
                )),
            }
            self.record_lock(b, None, out);
        }
    }

    fn chain_lines(&self, path: &[ClassId], out: &mut Draft) {
        let chain: Vec<&str> = path.iter().map(|&c| self.name(c)).collect();
        out.line("Chain exists of:");
        out.line(format!("  {}", chain.join(" --> ")));
    }

    /// Task holds `prev`, attempts `next` (at `addr`), and `path` is next → … → prev.
    pub(super) fn report_circular(
        &mut self,
        e: &Event,
        prev: &Held,
        next: ClassId,
        path: &[ClassId],
    ) {
        let site = self.site_of(e);
        let addr = e.kind.lock().map_or(0, |l| l.addr);
        let mut out = Draft::default();
        out.line("WARNING: possible circular locking dependency detected");
        out.line(format!(
            "{} is trying to acquire lock:",
            self.task_label(e.task.0)
        ));
        self.lock_line(next, addr, &site, "acquire", &mut out);
        out.line("but task is already holding lock:");
        self.lock_line(prev.class, prev.addr, &prev.site, "held", &mut out);
        out.line("which lock already depends on the new lock.");
        out.line("the existing dependency chain (in reverse order) is:");
        self.dependency_lines(path, &mut out);
        out.line(format!("-> #0 {}:", self.lock_label(next)));
        self.stack_lines(&site, &mut out);
        out.line("other info that might help us debug this:");
        self.chain_lines(path, &mut out);
        // The cycle, closed by the new edge.
        let mut cycle = path.to_vec();
        cycle.push(next);
        self.flag_path(&cycle);
        let (source, target) = (self.name(prev.class), self.name(next));
        // lockdep's scenario: CPU1 holds the class just before `source` on the chain.
        let parent = if path.len() > 2 {
            self.name(path[path.len() - 2])
        } else {
            target
        };
        out.line(" Possible unsafe locking scenario:");
        out.line(format!("       {:<28}CPU1", "CPU0"));
        out.line(format!("       {:<28}----", "----"));
        out.line(format!("  lock({source});"));
        out.line(format!("       {:<28}lock({parent});", ""));
        out.line(format!("       {:<28}lock({source});", ""));
        out.line(format!("  lock({target});"));
        out.line(" *** DEADLOCK ***");
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        let key = cycle_key(
            cycle[..cycle.len() - 1]
                .iter()
                .map(|&c| self.name(c).to_string())
                .collect(),
        );
        self.finding(
            FindingKind::CircularDependency,
            "possible circular locking dependency",
            key,
            out,
            e,
        );
    }

    pub(super) fn report_recursive(
        &mut self,
        e: &Event,
        prev: Held,
        addr: u64,
        class: ClassId,
        flavor: LockFlavor,
    ) {
        let site = self.site_of(e);
        let name = self.name(class).to_string();
        // The lock being taken (at `addr`) is the held one, not just of its class.
        let same = if prev.addr == addr && addr != 0 {
            "the same lock"
        } else {
            "another lock of the same class"
        };
        let mut out = Draft::default();
        out.line("WARNING: possible recursive locking detected");
        out.line(self.trying_to(e, "acquire", flavor));
        self.lock_line(class, addr, &site, "acquire", &mut out);
        out.line(format!("but task is already holding {same}:"));
        self.lock_line(class, prev.addr, &prev.site, "held", &mut out);
        out.line("other info that might help us debug this:");
        out.line(" Possible unsafe locking scenario:");
        out.line("       CPU0");
        out.line("       ----");
        out.line(format!("  lock({name});"));
        out.line(format!("  lock({name});"));
        out.line(" *** DEADLOCK ***");
        out.line(" May be due to missing lock nesting notation");
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        self.finding(
            FindingKind::RecursiveLocking,
            "possible recursive locking",
            name,
            out,
            e,
        );
    }

    pub(super) fn report_bad_unlock(&mut self, e: &Event, class: ClassId, flavor: LockFlavor) {
        let site = self.site_of(e);
        let addr = e.kind.lock().map_or(0, |l| l.addr);
        let name = self.name(class).to_string();
        let mut out = Draft::default();
        out.line("WARNING: bad unlock balance detected!");
        out.line(self.trying_to(e, "release", flavor));
        self.lock_line(class, addr, &site, "release", &mut out);
        out.line("but there are no more locks to release!");
        out.line("other info that might help us debug this:");
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        let key = format!("{name} {}", self.func_of(e.caller, true));
        self.finding(FindingKind::BadUnlock, "bad unlock balance", key, out, e);
    }

    pub(super) fn report_held_lock_freed(&mut self, e: &Event, held: &Held, addr: u64, len: u64) {
        let site = self.site_of(e);
        let name = self.name(held.class).to_string();
        let mut out = Draft::default();
        out.line("WARNING: held lock freed!");
        out.line(format!(
            "{} is freeing memory {addr:#x}-{:#x}, with a lock still held there!",
            self.task_label(e.task.0),
            addr.saturating_add(len).saturating_sub(1)
        ));
        self.lock_line(held.class, held.addr, &held.site, "held", &mut out);
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        let key = format!("{name} {}", self.func_of(e.caller, true));
        self.finding(FindingKind::HeldLockFreed, "held lock freed", key, out, e);
    }

    pub(super) fn report_context_violation(&mut self, e: &Event, class: ClassId) {
        let site = self.site_of(e);
        let addr = e.kind.lock().map_or(0, |l| l.addr);
        let name = self.name(class).to_string();
        let mut out = Draft::default();
        out.line(format!("CONTEXT: lock ({name}) must be held"));
        out.line(format!("{} asserts it held:", self.task_label(e.task.0)));
        self.lock_line(class, addr, &site, "assert", &mut out);
        out.line("but the task does not hold it");
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        let key = format!("{name} {}", self.func_of(e.caller, true));
        self.finding(
            FindingKind::ContextViolation,
            "lock assertion failed: lock not held",
            key,
            out,
            e,
        );
    }

    pub(super) fn report_sleep_in_atomic(&mut self, e: &Event, what: &str, reason: &str) {
        let site = self.site_of(e);
        let t = self.tasks.get(&e.task.0);
        let in_atomic = t.is_some_and(|t| t.hardirq > 0 || t.preempt > 0 || !t.held.is_empty());
        let mut out = Draft::default();
        out.line(format!(
            "BUG: sleeping function called from invalid context {}",
            self.at(&site)
        ));
        out.line(format!(
            "in_atomic(): {}, irqs_disabled(): {}, pid: {}, name: {}",
            u8::from(in_atomic),
            u8::from(self.masked(e.cpu.0)),
            self.pid(e.task.0),
            self.task_names.get(&e.task.0).map_or("?", String::as_str)
        ));
        out.line(format!("{what}: {reason}"));
        self.record_site("sleep", None, &site, &mut out);
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        self.finding(
            FindingKind::SleepInAtomic,
            "sleeping function called from invalid context",
            reason.to_string(),
            out,
            e,
        );
    }

    /// IRQs turned on in a hard-IRQ handler (`held` None), or with the hardirq-safe
    /// lock `held` held.
    pub(super) fn report_irqs_on_in_hardirq(&mut self, e: &Event, held: Option<Held>) {
        let site = self.site_of(e);
        let mut out = Draft::default();
        let key;
        match held {
            None => {
                out.line("WARNING: IRQs enabled inside a hard-IRQ handler");
                self.enables_irqs_line(e, &site, &mut out);
                // What just released a lock and turned IRQs on (spin_unlock_irq).
                let released = self
                    .cpus
                    .get(e.cpu.0 as usize)
                    .and_then(|c| c.last_release)
                    .filter(|(_, flavor, s)| s.task == e.task.0 && *flavor == LockFlavor::SpinIrq);
                match released {
                    Some((class, flavor, rel)) => {
                        out.line(format!(
                            "after releasing {} ({}), {}",
                            self.lock_label(class),
                            flavor.name(),
                            self.at(&rel)
                        ));
                        self.record_lock(class, None, &mut out);
                        self.record_site("release", Some(class), &rel, &mut out);
                        if let Some(acq) = self.classes[class as usize].safe_site(IrqState::Hard) {
                            self.usage_lines(
                                &format!("({}) was taken in hard-IRQ context:", self.name(class)),
                                &acq,
                                "in-hardirq",
                                class,
                                &mut out,
                            );
                            key = format!(
                                "hardirq {} {}",
                                self.name(class),
                                self.func_of(acq.caller, true)
                            );
                        } else {
                            key = format!("hardirq {}", self.name(class));
                        }
                    }
                    None => key = format!("hardirq {}", self.func_of(e.pc, false)),
                }
            }
            Some(h) => {
                let name = self.name(h.class).to_string();
                out.line(format!(
                    "WARNING: IRQs enabled while holding hardirq-safe lock ({name})"
                ));
                self.enables_irqs_line(e, &site, &mut out);
                out.line("while holding:");
                self.lock_line(h.class, h.addr, &h.site, "held", &mut out);
                if let Some(acq) = self.classes[h.class as usize].safe_site(IrqState::Hard) {
                    self.usage_lines(
                        &format!("({name}) is taken in hard-IRQ context:"),
                        &acq,
                        "in-hardirq",
                        h.class,
                        &mut out,
                    );
                }
                irq_scenario(&name, &mut out);
                key = format!("held {name}");
            }
        }
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        self.finding(
            FindingKind::IrqsEnabledInHardirq,
            "IRQs enabled in hard-IRQ context or with a hardirq-safe lock held",
            key,
            out,
            e,
        );
    }

    /// `class` was used with IRQs on (`on`) and in hard-IRQ context (`safe`), each
    /// with whether that usage was a read; `now_safe` says which came second.
    pub(super) fn report_inconsistent(
        &mut self,
        e: &Event,
        class: ClassId,
        (on, on_read): (Site, bool),
        (safe, safe_read): (Site, bool),
        now_safe: bool,
        state: IrqState,
    ) {
        let name = self.name(class).to_string();
        let st = state.name();
        let access = |read: bool| if read { 'R' } else { 'W' };
        let on_bits = format!("{{{st}-ON-{}}}", access(on_read));
        let in_bits = format!("{{IN-{st}-{}}}", access(safe_read));
        let (from, to) = if now_safe {
            (on_bits.as_str(), in_bits.as_str())
        } else {
            (in_bits.as_str(), on_bits.as_str())
        };
        let (on_role, in_role) = match state {
            IrqState::Hard => ("irqs-on", "in-hardirq"),
            IrqState::Soft => ("softirqs-on", "in-softirq"),
        };
        let (now, before, before_role) = if now_safe {
            (safe, on, on_role)
        } else {
            (on, safe, in_role)
        };
        let addr = e.kind.lock().map_or(0, |l| l.addr);
        let mut out = Draft::default();
        out.line("WARNING: inconsistent lock state");
        out.line(format!("inconsistent {from} -> {to} usage."));
        out.line(format!(
            "{} {} takes:",
            self.task_label(now.task),
            self.irq_state(e)
        ));
        if addr != 0 {
            self.lock_line(class, addr, &now, "acquire", &mut out);
        } else {
            out.line(format!(" {}, {}", self.lock_label(class), self.at(&now)));
            self.record_lock(class, None, &mut out);
            self.record_site("acquire", Some(class), &now, &mut out);
        }
        if let Some(irq) = self.irq_context(&now) {
            out.line(irq);
        }
        self.usage_lines(
            &format!("{from} state was registered at:"),
            &before,
            before_role,
            class,
            &mut out,
        );
        out.line("other info that might help us debug this:");
        irq_scenario(&name, &mut out);
        self.held_lines(e.task.0, &mut out);
        let site = self.site_of(e);
        self.reporter_lines(&site, &mut out);
        let key = match state {
            IrqState::Hard => name,
            IrqState::Soft => format!("{name} softirq"),
        };
        self.finding(
            FindingKind::InconsistentIrqState,
            "inconsistent lock state",
            key,
            out,
            e,
        );
    }

    /// `path` = safe → … → unsafe along dependencies; `middle` is the lock lockdep's
    /// scenario shows CPU1 taking after the safe one (the other end of the dependency
    /// that completed the path, or the neighbour of the lock whose usage did).
    pub(super) fn report_irq_inversion(
        &mut self,
        e: &Event,
        path: &[ClassId],
        middle: ClassId,
        state: IrqState,
    ) {
        let st = state.name();
        self.flag_path(path);
        let (safe, unsafe_) = (path[0], path[path.len() - 1]);
        let middle = if middle == safe { unsafe_ } else { middle };
        let (sn, un) = (self.name(safe).to_string(), self.name(unsafe_).to_string());
        let site = self.site_of(e);
        let mut out = Draft::default();
        out.line(format!(
            "WARNING: {st}-safe -> {st}-unsafe lock order detected"
        ));
        out.line(format!(
            "{} {} made the last link, {}",
            self.task_label(e.task.0),
            self.irq_state(e),
            self.at(&site)
        ));
        out.line(format!("a {st}-irq-safe lock:"));
        out.line(format!(" {}", self.lock_label(safe)));
        self.record_lock(safe, None, &mut out);
        if let Some(s) = self.classes[safe as usize].safe_site(state) {
            self.usage_lines(
                &format!("... which became {st}-irq-safe at:"),
                &s,
                if state == IrqState::Hard {
                    "in-hardirq"
                } else {
                    "in-softirq"
                },
                safe,
                &mut out,
            );
        }
        out.line(format!("depends on a {st}-irq-unsafe lock:"));
        out.line(format!(" {}", self.lock_label(unsafe_)));
        self.record_lock(unsafe_, None, &mut out);
        if let Some(s) = self.classes[unsafe_ as usize].unsafe_site(state) {
            self.usage_lines(
                &format!("... which became {st}-irq-unsafe at:"),
                &s,
                if state == IrqState::Hard {
                    "irqs-on"
                } else {
                    "softirqs-on"
                },
                unsafe_,
                &mut out,
            );
        }
        out.line("the dependencies between them (in reverse order):");
        self.dependency_lines(path, &mut out);
        out.line("other info that might help us debug this:");
        self.chain_lines(path, &mut out);
        let middle = self.name(middle).to_string();
        out.line(" Possible interrupt unsafe locking scenario:");
        out.line(format!("       {:<28}CPU1", "CPU0"));
        out.line(format!("       {:<28}----", "----"));
        out.line(format!("  lock({un});"));
        let disable = match state {
            IrqState::Hard => "local_irq_disable();",
            IrqState::Soft => "local_bh_disable();",
        };
        out.line(format!("       {:<28}{disable}", ""));
        out.line(format!("       {:<28}lock({sn});", ""));
        out.line(format!("       {:<28}lock({middle});", ""));
        out.line(match state {
            IrqState::Hard => "  <Interrupt>",
            IrqState::Soft => "  <SoftIRQ>",
        });
        out.line(format!("    lock({sn});"));
        out.line(" *** DEADLOCK ***");
        self.held_lines(e.task.0, &mut out);
        self.reporter_lines(&site, &mut out);
        self.finding(
            FindingKind::IrqInversion,
            &format!("possible irq lock inversion dependency ({st}-safe -> {st}-unsafe)"),
            match state {
                IrqState::Hard => format!("{sn} -> {un}"),
                IrqState::Soft => format!("{sn} -> {un} (softirq)"),
            },
            out,
            e,
        );
    }

    /// `cycle`: each waiting task and what it waits for; the last one's lock is
    /// held by the first task.
    /// See `TaskState::irq_queued_behind_itself`.
    pub(super) fn report_irq_self_deadlock(
        &mut self,
        e: &Event,
        task: u32,
        irq_wait: Waiting,
        queued: Waiting,
    ) {
        self.deadlocked = true;
        let mut out = Draft::default();
        let lock = self.lock_label(irq_wait.class);
        out.line(format!(
            "DEADLOCK: a hard-IRQ handler waits for {:#x} {lock}, which the code it interrupted is already waiting for",
            irq_wait.addr
        ));
        out.line(format!(
            "{} (hard-IRQ) waits for {:#x} {lock}, {}",
            self.task_label(task),
            irq_wait.addr,
            self.at(&irq_wait.site)
        ));
        self.stack_lines(&irq_wait.site, &mut out);
        out.line(format!(
            "interrupted while waiting for it (its turn comes first, and cannot come while the handler runs), {}",
            self.at(&queued.site)
        ));
        self.stack_lines(&queued.site, &mut out);
        self.record_lock(irq_wait.class, Some(irq_wait.addr), &mut out);
        self.record_site("wait", Some(irq_wait.class), &irq_wait.site, &mut out);
        self.held_lines(task, &mut out);
        let name = self.name(irq_wait.class).to_string();
        self.finding(
            FindingKind::Deadlock,
            "deadlock: a hard-IRQ handler waits for a lock its CPU's interrupted code waits for",
            name,
            out,
            e,
        );
    }

    pub(super) fn report_deadlock(&mut self, e: &Event, cycle: &[(u32, Wait)]) {
        self.deadlocked = true;
        let mut out = Draft::default();
        let ipi = cycle.iter().any(|(_, w)| matches!(w, Wait::Ipi(_)));
        out.line(if ipi {
            "DEADLOCK: tasks wait for each other's locks and IPIs"
        } else {
            "DEADLOCK: tasks wait for each other's locks"
        });
        let mut names = Vec::new();
        let mut links = Vec::new();
        for (i, (task, wait)) in cycle.iter().enumerate() {
            let holder = cycle[(i + 1) % cycle.len()].0;
            match wait {
                Wait::Lock(waiting) => {
                    names.push(self.name(waiting.class).to_string());
                    links.push(self.name(waiting.class).to_string());
                    out.line(format!(
                        "{} waits for {:#x} {} held by {}, {}",
                        self.task_label(*task),
                        waiting.addr,
                        self.lock_label(waiting.class),
                        self.task_label(holder),
                        self.at(&waiting.site)
                    ));
                    self.stack_lines(&waiting.site, &mut out);
                    self.record_lock(waiting.class, Some(waiting.addr), &mut out);
                    self.record_site("wait", Some(waiting.class), &waiting.site, &mut out);
                }
                Wait::Ipi(waiting) => {
                    names.push("ipi".to_string());
                    links.push(format!("ipi to cpu{}", waiting.target));
                    out.line(format!(
                        "{} waits for cpu{} to run its cross-CPU call {:#x}, but cpu{} runs {}, which waits with IRQs masked, {}",
                        self.task_label(*task),
                        waiting.target,
                        waiting.csd,
                        waiting.target,
                        self.task_label(holder),
                        self.at(&waiting.site)
                    ));
                    self.stack_lines(&waiting.site, &mut out);
                    self.record_site("wait", None, &waiting.site, &mut out);
                }
            }
        }
        let chain: Vec<String> = cycle
            .iter()
            .zip(&links)
            .map(|((task, _), link)| format!("{} --({link})-->", self.task_label(*task)))
            .collect();
        out.line("Wait-for cycle:");
        out.line(format!(
            "  {} {}",
            chain.join(" "),
            self.task_label(cycle[0].0)
        ));
        for (task, _) in cycle {
            self.held_lines(*task, &mut out);
        }
        out.line("CPUs:");
        for (cpu, state) in self.cpus.iter().enumerate() {
            if let Some((task, pc)) = state.running {
                out.line(format!(
                    "  cpu{cpu}: {}, last event at {}",
                    self.task_label(task),
                    self.code(pc, false)
                ));
            }
        }
        names.sort();
        self.finding(
            FindingKind::Deadlock,
            if ipi {
                "deadlock: a cycle of tasks waiting for locks and IPIs"
            } else {
                "deadlock: a cycle of tasks waiting for locks"
            },
            names.join(" "),
            out,
            e,
        );
    }

    fn finding(&mut self, kind: FindingKind, title: &str, key: String, out: Draft, e: &Event) {
        let mut finding = Finding::new(kind, title, key, out.lines);
        finding.cpu = Some(e.cpu.0 as u32);
        finding.time = Some(e.time);
        finding.locks = out.locks;
        finding.sites = out.sites;
        finding.tasks = out
            .tasks
            .into_iter()
            .map(|id| FindingTask {
                id,
                name: self.task_names.get(&id).cloned(),
            })
            .collect();
        self.findings.report(finding);
    }
}

/// lockdep's one-CPU scenario of a lock taken with IRQs on and in an IRQ handler.
fn irq_scenario(name: &str, out: &mut Draft) {
    out.line(" Possible unsafe locking scenario:");
    out.line("       CPU0");
    out.line("       ----");
    out.line(format!("  lock({name});"));
    out.line("  <Interrupt>");
    out.line(format!("    lock({name});"));
    out.line(" *** DEADLOCK ***");
}

/// A cycle's classes rotated to start at the smallest name, so the same cycle found
/// from any of its edges has one key.
fn cycle_key(names: Vec<String>) -> String {
    let start = names
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map_or(0, |(i, _)| i);
    let mut rotated = names[start..].to_vec();
    rotated.extend_from_slice(&names[..start]);
    rotated.join(" -> ")
}
