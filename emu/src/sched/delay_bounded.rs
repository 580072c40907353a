//! `--sched delay`: a systematic, delay-bounded strategy (after Emmi, Qadeer and
//! Rakamarić, POPL 2011). The deterministic base schedule runs the current CPU until
//! it cannot run, then the next runnable CPU in numbering order (wrapping). A
//! *delay* at scheduling point `p` skips the running CPU there: its slice ends and
//! the next runnable CPU after it runs. A schedule is the set of its delay points;
//! `explore --sched delay` enumerates every set of at most `--delay-bound` points
//! among the base run's points, fewest delays first. A runnable CPU passed over
//! [`MAX_SLICES_PASSED_OVER`](super::MAX_SLICES_PASSED_OVER) slices runs next (not
//! counted as a delay), so a CPU that spins does not starve the others.

use super::{SchedPoint, SchedView, Scheduler, Slice, Starvation};

/// Delay-bounded scheduling (see the module doc).
#[derive(Debug, Clone)]
pub struct DelayBounded {
    quantum: u64,
    /// Delay points, increasing.
    delays: Vec<u64>,
    next_delay: usize,
    points: u64,
    current: Option<usize>,
    skip: bool,
    starvation: Starvation,
}

impl DelayBounded {
    /// Slices of `quantum` instructions, passing over the running CPU at the
    /// scheduling points `delays` (1-based).
    pub fn new(quantum: u64, mut delays: Vec<u64>) -> Self {
        delays.sort_unstable();
        delays.dedup();
        Self {
            quantum: quantum.max(1),
            delays,
            next_delay: 0,
            points: 0,
            current: None,
            skip: false,
            starvation: Starvation::default(),
        }
    }
}

impl Scheduler for DelayBounded {
    fn next(&mut self, view: &SchedView<'_>) -> Slice {
        let after = |cpu: usize| {
            view.runnable
                .iter()
                .copied()
                .find(|&c| c > cpu)
                .unwrap_or(view.runnable[0])
        };
        let mut cpu = match self.current {
            Some(current) if self.skip => after(current),
            Some(current) if view.runnable.contains(&current) => current,
            Some(current) => after(current),
            None => view.runnable[0],
        };
        self.skip = false;
        if let Some(starving) = self.starvation.starving(view.runnable, cpu) {
            cpu = starving;
        }
        self.starvation.ran(view.runnable, cpu);
        self.current = Some(cpu);
        Slice {
            cpu,
            insns: self.quantum,
        }
    }

    fn at_point(&mut self, _point: &SchedPoint<'_>) -> bool {
        self.points += 1;
        if self.delays.get(self.next_delay) != Some(&self.points) {
            return false;
        }
        self.next_delay += 1;
        self.skip = true;
        true
    }

    fn points(&self) -> u64 {
        self.points
    }
}

/// The `index`-th set of at most `bound` delay points among points `1..=steps`:
/// index 0 is no delay, then every single point in order, then every pair, …
/// (`None` past the last set).
pub fn delay_set(index: u64, steps: u64, bound: u32) -> Option<Vec<u64>> {
    let mut rest = index;
    for size in 0..=bound {
        let count = binomial(steps, u64::from(size));
        if rest < count {
            return Some(unrank(rest, steps, size));
        }
        rest -= count;
    }
    None
}

/// How many sets [`delay_set`] enumerates.
pub fn delay_sets(steps: u64, bound: u32) -> u64 {
    (0..=bound).fold(0u64, |sum, k| {
        sum.saturating_add(binomial(steps, u64::from(k)))
    })
}

fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let mut result: u128 = 1;
    for i in 0..k {
        result = result * u128::from(n - i) / u128::from(i + 1);
        if result > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    result as u64
}

/// The `rank`-th `size`-subset of `1..=n` in lexicographic order.
fn unrank(mut rank: u64, n: u64, size: u32) -> Vec<u64> {
    let mut set = Vec::with_capacity(size as usize);
    let mut first = 1;
    for left in (1..=u64::from(size)).rev() {
        let mut candidate = first;
        loop {
            // Sets that start with `candidate`: choose the rest from above it.
            let with = binomial(n - candidate, left - 1);
            if rank < with {
                break;
            }
            rank -= with;
            candidate += 1;
        }
        set.push(candidate);
        first = candidate + 1;
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomials_are_exact_until_they_saturate() {
        assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
        assert_eq!(binomial(70, 35), u64::MAX, "C(70, 35) is about 1.1e20");
        assert_eq!((binomial(5, 6), binomial(5, 0)), (0, 1));
    }
}
