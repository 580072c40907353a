//! `--sched rr`: the CPUs in turn.

use super::{SchedView, Scheduler, Slice};

/// Each runnable CPU in turn, a full quantum each.
#[derive(Debug, Clone)]
pub struct RoundRobin {
    quantum: u64,
    last: Option<usize>,
}

impl RoundRobin {
    /// Turns of `quantum` instructions.
    pub fn new(quantum: u64) -> Self {
        Self {
            quantum: quantum.max(1),
            last: None,
        }
    }
}

impl Scheduler for RoundRobin {
    fn next(&mut self, view: &SchedView<'_>) -> Slice {
        let cpu = match self.last {
            Some(last) => view
                .runnable
                .iter()
                .copied()
                .find(|&c| c > last)
                .unwrap_or(view.runnable[0]),
            None => view.runnable[0],
        };
        self.last = Some(cpu);
        Slice {
            cpu,
            insns: self.quantum,
        }
    }
}
