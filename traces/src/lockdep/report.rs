//! The lockdep-style text of each finding: headline, chain, "possible unsafe locking
//! scenario" table, and where each dependency was first seen.

use super::{ClassId, Held, Site, Validator, Waiting};
use crate::event::{Event, LockFlavor};
use crate::finding::FindingKind;

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

    /// The function part of a symbolised caller, for keys (stable across offsets).
    fn func_of(&self, addr: u64, ret: bool) -> String {
        match self.symbolize.as_ref().and_then(|s| s(addr, ret)) {
            Some(symbol) => symbol.split('+').next().unwrap_or(&symbol).to_string(),
            None => format!("{addr:#x}"),
        }
    }

    fn who(&self, site: &Site) -> String {
        match self.task_names.get(&site.task) {
            Some(name) => format!("cpu{} task{} ({name})", site.cpu, site.task),
            None => format!("cpu{} task{}", site.cpu, site.task),
        }
    }

    /// `at <pc> called from <caller>, cpuN taskM (name), t=…`
    fn site(&self, site: &Site) -> String {
        format!(
            "at {} called from {}, {}, t={}",
            self.code(site.pc, false),
            self.code(site.caller, true),
            self.who(site),
            site.time
        )
    }

    fn edge_lines(&self, path: &[ClassId], out: &mut Vec<String>) {
        out.push("the first occurrence of each dependency:".into());
        for pair in path.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            match self.edges.get(&(a, b)) {
                Some(edge) => {
                    out.push(format!("-> ({}) --> ({}):", self.name(a), self.name(b)));
                    out.push(format!(
                        "     {} taken {}",
                        self.name(a),
                        self.site(&edge.prev)
                    ));
                    out.push(format!(
                        "     {} taken {}",
                        self.name(b),
                        self.site(&edge.next)
                    ));
                }
                None => out.push(format!("-> ({}) --> ({})", self.name(a), self.name(b))),
            }
        }
    }

    fn held_lines(&self, task: u32, out: &mut Vec<String>) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        out.push(format!("{} lock(s) held by task{task}:", t.held.len()));
        for (i, h) in t.held.iter().enumerate() {
            out.push(format!(
                " #{i}: ({}) ({}) {}",
                self.name(h.class),
                h.flavor.name(),
                self.site(&h.site)
            ));
        }
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
        let mut out = Vec::new();
        for task in tasks {
            self.held_lines(task, &mut out);
        }
        out
    }

    /// Task holds `prev`, attempts `next`, and `path` is next → … → prev.
    pub(super) fn report_circular(
        &mut self,
        e: &Event,
        prev: &Held,
        next: ClassId,
        path: &[ClassId],
    ) {
        let site = Site::of(e);
        let mut lines = vec![
            "WARNING: possible circular locking dependency detected".to_string(),
            format!(
                "{} is trying to acquire lock ({}) {}",
                self.who(&site),
                self.name(next),
                self.site(&site)
            ),
            format!(
                "but task is already holding lock ({}) taken {}",
                self.name(prev.class),
                self.site(&prev.site)
            ),
            "which lock already depends on the new lock.".into(),
        ];
        let chain: Vec<&str> = path.iter().map(|&c| self.name(c)).collect();
        lines.push("Chain exists of:".into());
        lines.push(format!("  {}", chain.join(" --> ")));
        // The cycle, closed by the new edge.
        let mut cycle = path.to_vec();
        cycle.push(next);
        self.flag_path(&cycle);
        self.edge_lines(&cycle, &mut lines);
        let (source, target) = (
            self.name(prev.class).to_string(),
            self.name(next).to_string(),
        );
        // lockdep's scenario: CPU1 holds the class just before `source` on the chain.
        let parent = if path.len() > 2 {
            self.name(path[path.len() - 2]).to_string()
        } else {
            target.clone()
        };
        lines.push(" Possible unsafe locking scenario:".into());
        lines.push(format!("       {:<28}{}", "CPU0", "CPU1"));
        lines.push(format!("       {:<28}{}", "----", "----"));
        lines.push(format!("  lock({source});"));
        lines.push(format!("       {:<28}lock({parent});", ""));
        lines.push(format!("       {:<28}lock({source});", ""));
        lines.push(format!("  lock({target});"));
        lines.push("  *** DEADLOCK ***".into());
        self.held_lines(e.task.0, &mut lines);
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
            lines,
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
        let site = Site::of(e);
        let name = self.name(class).to_string();
        // The lock being taken (at `addr`) is the held one, not just of its class.
        let same = if prev.addr == addr && addr != 0 {
            "the same lock"
        } else {
            "another lock of the same class"
        };
        let mut lines = vec![
            "WARNING: possible recursive locking detected".to_string(),
            format!(
                "{} is trying to acquire lock ({name}) ({}) {}",
                self.who(&site),
                flavor.name(),
                self.site(&site)
            ),
            format!(
                "but task is already holding {same} ({name}) taken {}",
                self.site(&prev.site)
            ),
            " Possible unsafe locking scenario:".into(),
            "       CPU0".into(),
            "       ----".into(),
            format!("  lock({name});"),
            format!("  lock({name});"),
            "  *** DEADLOCK ***".into(),
            " May be due to missing lock nesting notation".into(),
        ];
        self.held_lines(e.task.0, &mut lines);
        self.finding(
            FindingKind::RecursiveLocking,
            "possible recursive locking",
            name,
            lines,
            e,
        );
    }

    pub(super) fn report_bad_unlock(&mut self, e: &Event, class: ClassId, flavor: LockFlavor) {
        let site = Site::of(e);
        let name = self.name(class).to_string();
        let mut lines = vec![
            "WARNING: bad unlock balance detected!".to_string(),
            format!(
                "{} is trying to release lock ({name}) ({}) {}",
                self.who(&site),
                flavor.name(),
                self.site(&site)
            ),
            "but there are no more locks to release!".into(),
        ];
        self.held_lines(e.task.0, &mut lines);
        let key = format!("{name} {}", self.func_of(e.caller, true));
        self.finding(FindingKind::BadUnlock, "bad unlock balance", key, lines, e);
    }

    pub(super) fn report_context_violation(&mut self, e: &Event, class: ClassId) {
        let site = Site::of(e);
        let name = self.name(class).to_string();
        let mut lines = vec![
            format!("CONTEXT: lock ({name}) must be held"),
            format!("{} asserts it {}", self.who(&site), self.site(&site)),
            "but the task does not hold it".into(),
        ];
        self.held_lines(e.task.0, &mut lines);
        let key = format!("{name} {}", self.func_of(e.caller, true));
        self.finding(
            FindingKind::ContextViolation,
            "lock assertion failed: lock not held",
            key,
            lines,
            e,
        );
    }

    pub(super) fn report_sleep_in_atomic(&mut self, e: &Event, what: &str, reason: &str) {
        let site = Site::of(e);
        let mut lines = vec![
            "BUG: sleeping function called from invalid context".to_string(),
            format!("{what} {} {}", self.site(&site), reason),
        ];
        self.held_lines(e.task.0, &mut lines);
        self.finding(
            FindingKind::SleepInAtomic,
            "sleeping function called from invalid context",
            reason.to_string(),
            lines,
            e,
        );
    }

    /// IRQs turned on in a hard-IRQ handler (`held` None), or with the hardirq-safe
    /// lock `held` held.
    pub(super) fn report_irqs_on_in_hardirq(&mut self, e: &Event, held: Option<Held>) {
        let site = Site::of(e);
        let mut lines = Vec::new();
        let key;
        match held {
            None => {
                lines.push("WARNING: IRQs enabled inside a hard-IRQ handler".to_string());
                lines.push(format!(
                    "{} enables IRQs {}",
                    self.who(&site),
                    self.site(&site)
                ));
                // What just released a lock and turned IRQs on (spin_unlock_irq).
                let released = self
                    .cpus
                    .get(e.cpu.0 as usize)
                    .and_then(|c| c.last_release)
                    .filter(|(_, flavor, s)| s.task == e.task.0 && *flavor == LockFlavor::SpinIrq);
                match released {
                    Some((class, flavor, rel)) => {
                        lines.push(format!(
                            "after releasing ({}) ({}) {}",
                            self.name(class),
                            flavor.name(),
                            self.site(&rel)
                        ));
                        if let Some(acq) = self.classes[class as usize].in_hardirq {
                            lines.push(format!(
                                "({}) was taken in hard-IRQ context {}",
                                self.name(class),
                                self.site(&acq)
                            ));
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
                lines.push(format!(
                    "WARNING: IRQs enabled while holding hardirq-safe lock ({name})"
                ));
                lines.push(format!(
                    "{} enables IRQs {}",
                    self.who(&site),
                    self.site(&site)
                ));
                lines.push(format!("({name}) was taken {}", self.site(&h.site)));
                if let Some(acq) = self.classes[h.class as usize].in_hardirq {
                    lines.push(format!(
                        "({name}) is taken in hard-IRQ context {}",
                        self.site(&acq)
                    ));
                }
                lines.push(" Possible unsafe locking scenario:".into());
                lines.push("       CPU0".into());
                lines.push("       ----".into());
                lines.push(format!("  lock({name});"));
                lines.push("  <Interrupt>".into());
                lines.push(format!("    lock({name});"));
                lines.push("  *** DEADLOCK ***".into());
                key = format!("held {name}");
            }
        }
        self.held_lines(e.task.0, &mut lines);
        self.finding(
            FindingKind::IrqsEnabledInHardirq,
            "IRQs enabled in hard-IRQ context or with a hardirq-safe lock held",
            key,
            lines,
            e,
        );
    }

    /// `class` was used with IRQs on (`on`) and in hard-IRQ context (`safe`); `now_safe`
    /// says which came second.
    pub(super) fn report_inconsistent(
        &mut self,
        e: &Event,
        class: ClassId,
        on: Site,
        safe: Site,
        now_safe: bool,
    ) {
        let name = self.name(class).to_string();
        let (from, to) = if now_safe {
            ("{HARDIRQ-ON-W}", "{IN-HARDIRQ-W}")
        } else {
            ("{IN-HARDIRQ-W}", "{HARDIRQ-ON-W}")
        };
        let lines = vec![
            "WARNING: inconsistent lock state".to_string(),
            format!("inconsistent {from} -> {to} usage."),
            format!("({name}) taken with IRQs on {}", self.site(&on)),
            format!("({name}) taken in hard-IRQ context {}", self.site(&safe)),
            " Possible unsafe locking scenario:".into(),
            "       CPU0".into(),
            "       ----".into(),
            format!("  lock({name});"),
            "  <Interrupt>".into(),
            format!("    lock({name});"),
            "  *** DEADLOCK ***".into(),
        ];
        self.finding(
            FindingKind::InconsistentIrqState,
            "inconsistent lock state",
            name,
            lines,
            e,
        );
    }

    /// `path` = safe → … → unsafe along dependencies.
    pub(super) fn report_irq_inversion(&mut self, e: &Event, path: &[ClassId]) {
        self.flag_path(path);
        let (safe, unsafe_) = (path[0], path[path.len() - 1]);
        let (sn, un) = (self.name(safe).to_string(), self.name(unsafe_).to_string());
        let mut lines = vec![
            "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected".to_string(),
            format!("({sn}) is HARDIRQ-safe and ({un}) is HARDIRQ-unsafe"),
        ];
        if let Some(s) = self.classes[safe as usize].in_hardirq {
            lines.push(format!(
                "({sn}) taken in hard-IRQ context {}",
                self.site(&s)
            ));
        }
        if let Some(s) = self.classes[unsafe_ as usize].hardirq_on {
            lines.push(format!("({un}) taken with IRQs on {}", self.site(&s)));
        }
        let chain: Vec<&str> = path.iter().map(|&c| self.name(c)).collect();
        lines.push("Chain exists of:".into());
        lines.push(format!("  {}", chain.join(" --> ")));
        self.edge_lines(path, &mut lines);
        let middle = if path.len() > 2 {
            self.name(path[path.len() - 2]).to_string()
        } else {
            sn.clone()
        };
        lines.push(" Possible interrupt unsafe locking scenario:".into());
        lines.push(format!("       {:<28}{}", "CPU0", "CPU1"));
        lines.push(format!("       {:<28}{}", "----", "----"));
        lines.push(format!("  lock({un});"));
        lines.push(format!("       {:<28}local_irq_disable();", ""));
        lines.push(format!("       {:<28}lock({sn});", ""));
        lines.push(format!("       {:<28}lock({middle});", ""));
        lines.push("  <Interrupt>".into());
        lines.push(format!("    lock({sn});"));
        lines.push("  *** DEADLOCK ***".into());
        self.finding(
            FindingKind::IrqInversion,
            "possible irq lock inversion dependency (HARDIRQ-safe -> HARDIRQ-unsafe)",
            format!("{sn} -> {un}"),
            lines,
            e,
        );
    }

    /// `cycle`: each waiting task and what it waits for; the last one's lock is
    /// held by the first task.
    pub(super) fn report_deadlock(&mut self, e: &Event, cycle: &[(u32, Waiting)]) {
        self.deadlocked = true;
        let mut lines = vec!["DEADLOCK: tasks wait for each other's locks".to_string()];
        let mut names = Vec::new();
        for (i, (task, waiting)) in cycle.iter().enumerate() {
            let holder = cycle[(i + 1) % cycle.len()].0;
            let lock = self.name(waiting.class).to_string();
            names.push(lock.clone());
            lines.push(format!(
                "{} waits for ({lock}) @ {:#x}, held by task{holder}; waiting {}",
                self.who(&waiting.site),
                waiting.addr,
                self.site(&waiting.site)
            ));
            let _ = task;
        }
        let chain: Vec<String> = cycle
            .iter()
            .map(|(task, w)| format!("task{task} --({})-->", self.name(w.class)))
            .collect();
        lines.push("Wait-for cycle:".into());
        lines.push(format!("  {} task{}", chain.join(" "), cycle[0].0));
        for (task, _) in cycle {
            self.held_lines(*task, &mut lines);
        }
        lines.push("CPUs:".into());
        for (cpu, state) in self.cpus.iter().enumerate() {
            if let Some((task, pc)) = state.running {
                let name = self
                    .task_names
                    .get(&task)
                    .map_or(String::new(), |n| format!(" ({n})"));
                lines.push(format!(
                    "  cpu{cpu}: task{task}{name}, last event at {}",
                    self.code(pc, false)
                ));
            }
        }
        names.sort();
        self.finding(
            FindingKind::Deadlock,
            "deadlock: a cycle of tasks waiting for locks",
            names.join(" "),
            lines,
            e,
        );
    }
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
