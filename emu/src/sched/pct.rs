//! `--sched pct`: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi
//! and Nagarakatte, ASPLOS 2010), with the emulated CPUs as its threads.
//!
//! Each CPU gets a random distinct priority of at least `depth`, and `depth - 1`
//! change points are drawn uniformly from the run's first `steps` scheduling points.
//! The runnable CPU with the highest priority always runs; at the `i`-th change point
//! drawn (point number `k_i`), the running CPU's priority drops to `depth - 1 - i`,
//! below every initial one, and its slice ends. A bug that needs `d` ordering
//! constraints is then found with probability at least `1 / (n * k^(d-1))` per run
//! (`n` CPUs, `k` points). CPUs that wait (WFI, or WFE in a spin lock) are not
//! runnable, so a waiter does not keep the CPU it waits for off; a CPU that spins
//! otherwise yields once another runnable CPU has waited [`MAX_SLICES_PASSED_OVER`](super::MAX_SLICES_PASSED_OVER).
//!
//! The change points can also be given explicitly (a minimised schedule): the
//! priorities come from a stream of the seed of their own, so they are the same
//! whatever the depth and the change points.

use super::{SchedPoint, SchedView, Scheduler, Slice, Starvation, Xoshiro256};

/// Probabilistic concurrency testing (see the module doc).
#[derive(Debug, Clone)]
pub struct Pct {
    quantum: u64,
    /// Draws the priorities: a stream of its own, so that they do not depend on
    /// the depth or on explicit change points.
    priority_rng: Xoshiro256,
    depth: u32,
    /// Per CPU; empty until the first slice (the CPU count comes with it).
    priorities: Vec<i64>,
    /// Change points in draw order: the `i`-th sets priority `depth - 1 - i`.
    change_points: Vec<u64>,
    points: u64,
    starvation: Starvation,
    /// The priority the next forced yield gives (below everything else).
    yielded: i64,
}

impl Pct {
    /// A PCT schedule of depth `depth` over about `steps` scheduling points.
    pub fn new(seed: u64, quantum: u64, depth: u32, steps: u64) -> Self {
        let mut rng = Xoshiro256::seed_from(seed);
        let depth = depth.max(1);
        let change_points = (1..depth).map(|_| 1 + rng.below(steps.max(1))).collect();
        Self {
            quantum: quantum.max(1),
            priority_rng: Xoshiro256::seed_from(!seed),
            depth,
            priorities: Vec::new(),
            change_points,
            points: 0,
            starvation: Starvation::default(),
            yielded: -1,
        }
    }

    /// As [`Pct::new`], with these change points (point numbers, in priority order)
    /// instead of the drawn ones.
    pub fn with_change_points(
        seed: u64,
        quantum: u64,
        depth: u32,
        steps: u64,
        change_points: Vec<u64>,
    ) -> Self {
        let depth = depth.max(change_points.len() as u32 + 1);
        Self {
            change_points,
            ..Self::new(seed, quantum, depth, steps)
        }
    }

    /// The change points in force, in draw order.
    pub fn change_points(&self) -> &[u64] {
        &self.change_points
    }

    fn assign_priorities(&mut self, cpus: usize) {
        // A random permutation of depth .. depth + cpus (Fisher-Yates).
        let mut order: Vec<i64> = (0..cpus as i64)
            .map(|i| i64::from(self.depth) + i)
            .collect();
        for i in (1..cpus).rev() {
            let j = self.priority_rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        self.priorities = order;
    }

    fn highest(&self, runnable: &[usize]) -> usize {
        *runnable
            .iter()
            .max_by_key(|&&cpu| self.priorities[cpu])
            .expect("a runnable CPU")
    }
}

impl Scheduler for Pct {
    fn next(&mut self, view: &SchedView<'_>) -> Slice {
        if self.priorities.len() != view.cpus {
            self.assign_priorities(view.cpus);
        }
        let mut cpu = self.highest(view.runnable);
        if self.starvation.starving(view.runnable, cpu).is_some() {
            self.priorities[cpu] = self.yielded;
            self.yielded -= 1;
            cpu = self.highest(view.runnable);
        }
        self.starvation.ran(view.runnable, cpu);
        Slice {
            cpu,
            insns: self.quantum,
        }
    }

    fn at_point(&mut self, point: &SchedPoint<'_>) -> bool {
        self.points += 1;
        let mut changed = false;
        for (i, &at) in self.change_points.iter().enumerate() {
            if at == self.points && point.cpu < self.priorities.len() {
                self.priorities[point.cpu] = i64::from(self.depth) - 1 - i as i64;
                changed = true;
            }
        }
        changed
    }

    fn points(&self) -> u64 {
        self.points
    }
}
