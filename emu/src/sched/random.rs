//! `--sched random`: a seeded random CPU and slice length each time.

use super::{SchedView, Scheduler, Slice, Xoshiro256};

/// A uniformly chosen runnable CPU for a slice of between half and one and a half
/// quanta, both drawn from a seeded xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    quantum: u64,
    rng: Xoshiro256,
}

impl SeededRandom {
    /// Choices drawn from `seed`, slices around `quantum` instructions.
    pub fn new(seed: u64, quantum: u64) -> Self {
        Self {
            quantum: quantum.max(1),
            rng: Xoshiro256::seed_from(seed),
        }
    }
}

impl Scheduler for SeededRandom {
    fn next(&mut self, view: &SchedView<'_>) -> Slice {
        let cpu = view.runnable[self.rng.below(view.runnable.len() as u64) as usize];
        let low = (self.quantum / 2).max(1);
        let insns = low + self.rng.below(self.quantum + 1);
        Slice { cpu, insns }
    }
}
