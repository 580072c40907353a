//! Host scheduling of the emulated cores: which CPU runs next, for how many
//! instructions, and whether to end a slice early at a synchronisation event.
//! Everything is decided from the scheduler's own state, never from host time, so
//! the same configuration gives the same interleaving.
//!
//! # The contract (what a [`Scheduler`] may rely on and must do)
//! - The machine calls [`Scheduler::next`] between slices with the CPUs that can run
//!   now (never none: with every CPU waiting the machine skips virtual time to the
//!   next timer deadline itself). The returned CPU must be one of them.
//! - A slice ends at the first translation-block boundary at or past its budget, or
//!   earlier: at an exception, a WFI or a WFE that waits, an IRQ to take, or a
//!   *scheduling point* the scheduler asks to end it at.
//! - While a machine records events, [`Scheduler::at_point`] sees each of the
//!   running CPU's synchronisation events ([`is_point`]: lock attempts, acquisitions
//!   and releases, IRQ mask changes, context switches, sleeps and wake-ups, per-CPU
//!   allocations and frees, page-table writes, TLB invalidations) in the order they
//!   happen. Returning `true` ends the slice at the end of the translation block that
//!   produced the event (the event has happened; nothing after that block has), so
//!   every hook of that block has run and none runs twice. Without recording there
//!   are no points: slices end by budget only.
//! - Interrupt arrival is part of the schedule: which CPU runs when decides where
//!   its timer tick lands relative to the other CPUs' events, and a slice ended at a
//!   point takes a pending IRQ at the next slice start. A scheduler may also make the
//!   running CPU's timer fire at a point: it ends the slice there and returns that
//!   CPU from [`Scheduler::take_timer_request`], which the machine asks after every
//!   slice; virtual time then moves forward to that timer's deadline (if it is
//!   armed and still ahead), so the CPU takes the tick before its next instruction
//!   when its IRQs are unmasked ([`IrqArrivals`] does this at chosen points).
//! - The scheduler is `Clone` (a machine snapshot copies it with its state), owns
//!   all its randomness ([`Xoshiro256`], seeded) and must not read host time.
//!
//! One strategy per file: [`RoundRobin`], [`SeededRandom`], [`Pct`],
//! [`DelayBounded`], and [`IrqArrivals`] on top of any of them.

mod delay_bounded;
mod irq_arrival;
mod pct;
mod random;
mod rng;
mod round_robin;

pub use delay_bounded::{delay_set, delay_sets, DelayBounded};
pub use irq_arrival::IrqArrivals;
pub use pct::Pct;
pub use random::SeededRandom;
pub use rng::Xoshiro256;
pub use round_robin::RoundRobin;

use traces::EventKind;

/// The next slice: run `cpu` for about `insns` instructions (see the module doc
/// for where it may end earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The CPU to run.
    pub cpu: usize,
    /// Its budget in instructions.
    pub insns: u64,
}

/// What a scheduler sees when it decides.
#[derive(Debug, Clone, Copy)]
pub struct SchedView<'a> {
    /// CPUs that can run now, in increasing order; never empty.
    pub runnable: &'a [usize],
    /// The machine's CPU count.
    pub cpus: usize,
    /// Instructions executed so far by all CPUs together.
    pub total_insns: u64,
    /// Slices run so far.
    pub slices: u64,
}

/// A synchronisation event of the running CPU (see [`is_point`]).
#[derive(Debug, Clone, Copy)]
pub struct SchedPoint<'a> {
    /// The CPU that made the event.
    pub cpu: usize,
    /// The event.
    pub kind: &'a EventKind,
}

/// A scheduling strategy (see the [module](self) for the contract).
pub trait Scheduler: BoxedClone {
    /// Picks the next slice among `view.runnable`.
    fn next(&mut self, view: &SchedView<'_>) -> Slice;

    /// A scheduling point on the running CPU; `true` ends its slice there.
    fn at_point(&mut self, _point: &SchedPoint<'_>) -> bool {
        false
    }

    /// Scheduling points seen so far.
    fn points(&self) -> u64 {
        0
    }

    /// The CPU whose timer is to fire now (asked after each slice; see the module
    /// doc), once.
    fn take_timer_request(&mut self) -> Option<usize> {
        None
    }
}

/// A copy of a scheduler with its state (for machine snapshots); every `Clone`
/// scheduler has it.
pub trait BoxedClone {
    /// A boxed copy.
    fn boxed_clone(&self) -> Box<dyn Scheduler>;
}

impl<T: Scheduler + Clone + 'static> BoxedClone for T {
    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}

/// Whether an event is a scheduling point: where another CPU running first can
/// change what happens (synchronisation, memory-map changes, sleeping and waking).
pub fn is_point(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::LockAttempt { .. }
            | EventKind::LockAcquired { .. }
            | EventKind::LockRelease { .. }
            | EventKind::Trylock { .. }
            | EventKind::ReadLock { .. }
            | EventKind::IrqMask { .. }
            | EventKind::ContextSwitch { .. }
            | EventKind::Sleep
            | EventKind::Wake { .. }
            | EventKind::PercpuAlloc { .. }
            | EventKind::PercpuFree { .. }
            | EventKind::PageTableWrite { .. }
            | EventKind::Tlbi { .. }
    )
}

/// Which strategy a run uses (the CLI's `--sched` and its parameters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SchedulerKind {
    /// CPUs take turns in order ([`RoundRobin`]).
    #[default]
    RoundRobin,
    /// A seeded random CPU and slice length each time ([`SeededRandom`]).
    Random,
    /// Probabilistic concurrency testing (see [`Pct`]).
    Pct {
        /// d: the bugs of depth d it aims at (d − 1 priority change points).
        depth: u32,
        /// How many scheduling points the change points are drawn from.
        steps: u64,
        /// Explicit change points (1-based point numbers) instead of drawn ones.
        change_points: Option<Vec<u64>>,
    },
    /// Run each CPU until it stops, skipping it at these points (see
    /// [`DelayBounded`]).
    DelayBounded {
        /// The scheduling points (1-based) at which the running CPU is passed over.
        delays: Vec<u64>,
    },
}

/// Slices a runnable CPU may be passed over in a row under the strategies that
/// otherwise keep one CPU running (PCT, delay-bounded): a CPU spinning on a
/// condition another CPU must change would otherwise never let it run. The CPU that
/// kept it off then yields (PCT: its priority drops below all; delay-bounded: the
/// starving CPU runs); forced yields are not change points or delays.
pub const MAX_SLICES_PASSED_OVER: u32 = 64;

/// The scheduler of `kind`, with timer arrivals at `irq_points` (point numbers;
/// none: the clock alone decides).
pub fn make_scheduler(
    kind: &SchedulerKind,
    seed: u64,
    quantum: u64,
    irq_points: &[u64],
) -> Box<dyn Scheduler> {
    let strategy = strategy(kind, seed, quantum);
    if irq_points.is_empty() {
        strategy
    } else {
        Box::new(IrqArrivals::new(strategy, irq_points.to_vec()))
    }
}

fn strategy(kind: &SchedulerKind, seed: u64, quantum: u64) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::RoundRobin => Box::new(RoundRobin::new(quantum)),
        SchedulerKind::Random => Box::new(SeededRandom::new(seed, quantum)),
        SchedulerKind::Pct {
            depth,
            steps,
            change_points,
        } => Box::new(match change_points {
            Some(points) => Pct::with_change_points(seed, quantum, *depth, *steps, points.clone()),
            None => Pct::new(seed, quantum, *depth, *steps),
        }),
        SchedulerKind::DelayBounded { delays } => {
            Box::new(DelayBounded::new(quantum, delays.clone()))
        }
    }
}

/// The scheduler seed of schedule `index` of an exploration seeded with
/// `exploration_seed` (explore prints it; `run --sched-seed` takes it).
pub fn schedule_seed(exploration_seed: u64, index: u64) -> u64 {
    let mut rng =
        Xoshiro256::seed_from(exploration_seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.next_u64() >> 1
}

/// Keeps a strategy that prefers one CPU (PCT, delay-bounded) from starving the
/// others forever when the preferred one spins on a condition only another CPU can
/// change: counts, per CPU, the slices it could have run and did not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Starvation {
    passed_over: Vec<u32>,
}

impl Starvation {
    /// The runnable CPU other than `chosen` passed over more than
    /// [`MAX_SLICES_PASSED_OVER`] slices in a row, if any (the longest waiting).
    pub(crate) fn starving(&self, runnable: &[usize], chosen: usize) -> Option<usize> {
        runnable
            .iter()
            .copied()
            .filter(|&c| c != chosen)
            .filter(|&c| self.passed_over.get(c).copied().unwrap_or(0) >= MAX_SLICES_PASSED_OVER)
            .max_by_key(|&c| (self.passed_over[c], std::cmp::Reverse(c)))
    }

    /// `cpu` runs the next slice; the other runnable CPUs wait one more.
    pub(crate) fn ran(&mut self, runnable: &[usize], cpu: usize) {
        let needed = runnable.iter().copied().max().unwrap_or(0).max(cpu) + 1;
        if self.passed_over.len() < needed {
            self.passed_over.resize(needed, 0);
        }
        for (c, waited) in self.passed_over.iter_mut().enumerate() {
            *waited = if c != cpu && runnable.contains(&c) {
                *waited + 1
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(runnable: &[usize]) -> SchedView<'_> {
        SchedView {
            runnable,
            cpus: 4,
            total_insns: 0,
            slices: 0,
        }
    }

    #[test]
    fn round_robin_visits_runnable_cpus_in_turn() {
        let mut rr = RoundRobin::new(100);
        let picks: Vec<usize> = (0..5).map(|_| rr.next(&view(&[0, 2, 3])).cpu).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2]);
        assert_eq!(rr.next(&view(&[1])).cpu, 1);
        assert_eq!(rr.next(&view(&[0, 1])).cpu, 0);
    }

    #[test]
    fn random_is_reproducible_per_seed_and_differs_across_seeds() {
        let picks = |seed| {
            let mut s = SeededRandom::new(seed, 1000);
            (0..64)
                .map(|_| s.next(&view(&[0, 1, 2, 3])))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        assert!(picks(7).iter().all(|s| (500..=1500).contains(&s.insns)));
    }

    /// The (cpu, slice) decisions of the scheduler `make_scheduler` builds.
    fn decisions(kind: SchedulerKind, seed: u64, runnable: &[usize]) -> Vec<Slice> {
        let mut s = make_scheduler(&kind, seed, 1000, &[]);
        (0..32).map(|_| s.next(&view(runnable))).collect()
    }

    #[test]
    fn eight_seeds_give_eight_distinct_schedules() {
        // Seeds 2k and 2k+1 are both here, so a seed that loses its low bit (or any
        // bit below 8) makes two schedules equal.
        let schedules: Vec<_> = (0..8)
            .map(|seed| decisions(SchedulerKind::Random, seed, &[0, 1, 2, 3]))
            .collect();
        for (i, a) in schedules.iter().enumerate() {
            for (j, b) in schedules.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "seeds {i} and {j} give the same schedule");
            }
        }
        // Far-apart seeds too (a seed truncated to 32 bits would merge these).
        assert_ne!(
            decisions(SchedulerKind::Random, 1, &[0, 1, 2, 3]),
            decisions(SchedulerKind::Random, 1 | 1 << 40, &[0, 1, 2, 3])
        );
    }

    #[test]
    fn each_seed_varies_both_the_cpu_and_the_slice() {
        for seed in 0..8 {
            let d = decisions(SchedulerKind::Random, seed, &[0, 1, 2, 3]);
            let cpus: std::collections::BTreeSet<_> = d.iter().map(|s| s.cpu).collect();
            let slices: std::collections::BTreeSet<_> = d.iter().map(|s| s.insns).collect();
            assert_eq!(cpus.len(), 4, "seed {seed}: every CPU gets picked");
            assert!(slices.len() > 16, "seed {seed}: slices vary");
            assert!(d.iter().all(|s| (500..=1500).contains(&s.insns)));
        }
        // Only runnable CPUs are picked.
        let d = decisions(SchedulerKind::Random, 3, &[1, 3]);
        assert!(d.iter().all(|s| s.cpu == 1 || s.cpu == 3));
        assert!(d.iter().any(|s| s.cpu == 1) && d.iter().any(|s| s.cpu == 3));
    }

    #[test]
    fn round_robin_ignores_the_seed_and_uses_whole_quanta() {
        let a = decisions(SchedulerKind::RoundRobin, 0, &[0, 1, 2]);
        assert_eq!(a, decisions(SchedulerKind::RoundRobin, 1, &[0, 1, 2]));
        assert!(a.iter().all(|s| s.insns == 1000));
        assert_eq!(RoundRobin::new(0).next(&view(&[0])).insns, 1);
        // A zero quantum counts as 1: slices of 1 or 2 instructions.
        let mut tiny = SeededRandom::new(0, 0);
        assert!((0..16).all(|_| (1..=2).contains(&tiny.next(&view(&[0])).insns)));
    }

    #[test]
    fn slices_cover_half_to_one_and_a_half_quanta_inclusive() {
        let mut s = SeededRandom::new(5, 4);
        let mut seen = [0u32; 8];
        for _ in 0..4000 {
            seen[s.next(&view(&[0])).insns as usize] += 1;
        }
        assert_eq!(seen[..2], [0, 0]);
        assert!(seen[2..=6].iter().all(|&n| n > 500), "{seen:?}");
        assert_eq!(seen[7], 0);
    }
}

#[cfg(test)]
mod strategy_tests {
    use super::*;

    fn view(runnable: &[usize]) -> SchedView<'_> {
        SchedView {
            runnable,
            cpus: 4,
            total_insns: 0,
            slices: 0,
        }
    }

    fn view_of(runnable: &[usize], cpus: usize) -> SchedView<'_> {
        SchedView {
            cpus,
            ..view(runnable)
        }
    }

    fn point(cpu: usize, scheduler: &mut dyn Scheduler) -> bool {
        scheduler.at_point(&SchedPoint {
            cpu,
            kind: &EventKind::Sleep,
        })
    }

    #[test]
    fn pct_runs_the_highest_priority_cpu_until_a_change_point_demotes_it() {
        let mut pct = Pct::with_change_points(7, 100, 3, 1000, vec![3, 5]);
        let first = pct.next(&view(&[0, 1, 2, 3])).cpu;
        // No change point yet: the same CPU keeps running.
        assert_eq!(pct.next(&view(&[0, 1, 2, 3])).cpu, first);
        assert!(!point(first, &mut pct) && !point(first, &mut pct));
        // The third point is a change point: its CPU drops below every other one.
        assert!(point(first, &mut pct));
        let second = pct.next(&view(&[0, 1, 2, 3])).cpu;
        assert_ne!(second, first);
        assert!(!point(second, &mut pct));
        assert!(point(second, &mut pct), "point 5");
        let third = pct.next(&view(&[0, 1, 2, 3])).cpu;
        assert!(third != first && third != second);
        // The first change point's CPU got priority 2, the second's 1.
        assert_eq!(pct.next(&view(&[first, second])).cpu, first);
        assert_eq!(pct.points(), 5);
        // A CPU that cannot run is skipped whatever its priority.
        let others: Vec<usize> = (0..4).filter(|&c| c != third).collect();
        assert_ne!(pct.next(&view(&others)).cpu, third);
    }

    #[test]
    fn pct_priorities_do_not_depend_on_depth_or_change_points() {
        let order = |mut pct: Pct| -> Vec<usize> {
            let mut runnable = vec![0, 1, 2, 3];
            let mut order = Vec::new();
            while !runnable.is_empty() {
                let cpu = pct.next(&view(&runnable)).cpu;
                order.push(cpu);
                runnable.retain(|&c| c != cpu);
            }
            order
        };
        let drawn = order(Pct::new(11, 100, 4, 500));
        assert_eq!(drawn, order(Pct::new(11, 100, 1, 500)));
        assert_eq!(
            drawn,
            order(Pct::with_change_points(11, 100, 4, 500, vec![9]))
        );
        let seeds: std::collections::BTreeSet<_> =
            (0..16).map(|s| order(Pct::new(s, 100, 3, 500))).collect();
        assert!(seeds.len() > 4, "seeds give different priority orders");
        let drawn = Pct::new(3, 100, 4, 500);
        assert_eq!(drawn.change_points().len(), 3);
        assert!(drawn
            .change_points()
            .iter()
            .all(|&p| (1..=500).contains(&p)));
    }

    /// Change points are scheduling point numbers, and points are counted from
    /// 1: every drawn one is in `1..=steps` (with one step, all are point 1).
    #[test]
    fn pct_draws_change_points_among_the_points_that_come() {
        for seed in 0..64 {
            assert_eq!(Pct::new(seed, 100, 4, 1).change_points(), [1, 1, 1]);
            let drawn = Pct::new(seed, 100, 6, 2);
            assert!(drawn.change_points().iter().all(|p| [1, 2].contains(p)));
        }
    }

    /// A change point puts its CPU below every initial priority: every other
    /// CPU runs before it again, whatever the seed (no tie with the lowest).
    #[test]
    fn pct_a_demoted_cpu_runs_after_every_other() {
        for cpus in 2..=4 {
            let all: Vec<usize> = (0..cpus).collect();
            for seed in 0..32 {
                let mut pct = Pct::with_change_points(seed, 100, 2, 100, vec![1]);
                let demoted = pct.next(&view_of(&all, cpus)).cpu;
                assert!(point(demoted, &mut pct));
                let mut runnable = all.clone();
                let mut order = Vec::new();
                while !runnable.is_empty() {
                    let cpu = pct.next(&view_of(&runnable, cpus)).cpu;
                    order.push(cpu);
                    runnable.retain(|&c| c != cpu);
                }
                assert_eq!(order.last(), Some(&demoted), "{cpus} cpus, seed {seed}");
            }
        }
    }

    /// A schedule minimised to no change points keeps the drawn priorities and
    /// never changes them; a point before the first slice (no priorities yet)
    /// changes nothing either.
    #[test]
    fn pct_without_change_points_keeps_its_order() {
        let all = [0, 1, 2];
        let mut pct = Pct::with_change_points(9, 100, 1, 100, vec![]);
        let first = pct.next(&view_of(&all, 3)).cpu;
        assert!((0..20).all(|_| !point(first, &mut pct)));
        assert_eq!(pct.next(&view_of(&all, 3)).cpu, first);
        let mut early = Pct::with_change_points(9, 100, 2, 100, vec![1]);
        assert!(!point(0, &mut early));
        assert_eq!(
            early.next(&view_of(&all, 3)).cpu,
            first,
            "same seed, same order"
        );
    }

    /// However long every CPU stays runnable, none waits more than the bound
    /// for its turn (a CPU made to yield goes below every earlier yielder).
    #[test]
    fn no_cpu_starves_under_any_strategy() {
        let all = [0, 1, 2, 3];
        let strategies: Vec<Box<dyn Scheduler>> = vec![
            Box::new(Pct::new(5, 100, 1, 10)),
            Box::new(DelayBounded::new(100, vec![])),
            Box::new(SeededRandom::new(5, 100)),
            Box::new(RoundRobin::new(100)),
        ];
        for mut strategy in strategies {
            let mut last_ran = [0usize; 4];
            for slice in 1..=20 * MAX_SLICES_PASSED_OVER as usize {
                last_ran[strategy.next(&view(&all)).cpu] = slice;
                for (cpu, &ran) in last_ran.iter().enumerate() {
                    assert!(
                        slice - ran <= 4 * MAX_SLICES_PASSED_OVER as usize,
                        "CPU {cpu} waited from slice {ran} to {slice}"
                    );
                }
            }
        }
    }

    /// Synchronisation, sleeping and mapping changes are scheduling points;
    /// barriers and TLB fills are not (another CPU running first changes nothing).
    #[test]
    fn scheduling_points_are_where_another_cpu_can_change_the_outcome() {
        let lock = traces::LockRef {
            addr: 0x1000,
            class: traces::StrId(1),
        };
        let flavor = traces::LockFlavor::Spin;
        for point in [
            EventKind::LockAttempt { lock, flavor },
            EventKind::LockAcquired { lock, flavor },
            EventKind::LockRelease { lock, flavor },
            EventKind::Sleep,
        ] {
            assert!(is_point(&point), "{point:?}");
        }
        for other in [
            EventKind::Isb,
            EventKind::Dsb {
                option: traces::BarrierOption::ISH,
            },
        ] {
            assert!(!is_point(&other), "{other:?}");
        }
    }

    /// The delay-bounded strategy counts every point it is shown (explore
    /// enumerates delays among the base run's count).
    #[test]
    fn delay_bounded_counts_its_points() {
        let mut delay = DelayBounded::new(100, vec![2]);
        delay.next(&view(&[0, 1]));
        let fired: Vec<bool> = (0..5).map(|_| point(0, &mut delay)).collect();
        assert_eq!(fired, [false, true, false, false, false]);
        assert_eq!(delay.points(), 5);
    }

    /// Delays given twice are one delay; the later ones still come.
    #[test]
    fn a_repeated_delay_does_not_hide_the_next() {
        let mut delay = DelayBounded::new(100, vec![3, 1, 3, 5]);
        let fired: Vec<u64> = (1..=6)
            .filter(|_| {
                delay.next(&view(&[0, 1]));
                point(0, &mut delay)
            })
            .collect();
        assert_eq!(fired, [1, 3, 5]);
    }

    #[test]
    fn a_cpu_passed_over_too_long_gets_to_run() {
        let mut pct = Pct::new(1, 100, 1, 10);
        let top = pct.next(&view(&[0, 1])).cpu;
        let other = 1 - top;
        let picks: Vec<usize> = (0..MAX_SLICES_PASSED_OVER + 2)
            .map(|_| pct.next(&view(&[0, 1])).cpu)
            .collect();
        assert!(picks.contains(&other), "{picks:?}");
        let mut delay = DelayBounded::new(100, vec![]);
        let picks: Vec<usize> = (0..MAX_SLICES_PASSED_OVER + 2)
            .map(|_| delay.next(&view(&[0, 1])).cpu)
            .collect();
        assert_eq!(picks[0], 0);
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn delays_skip_the_running_cpu_at_their_points() {
        let mut delay = DelayBounded::new(100, vec![2]);
        assert_eq!(delay.next(&view(&[0, 1, 2])).cpu, 0);
        assert!(!point(0, &mut delay));
        assert_eq!(delay.next(&view(&[0, 1, 2])).cpu, 0);
        assert!(point(0, &mut delay), "the delay at point 2");
        assert_eq!(delay.next(&view(&[0, 1, 2])).cpu, 1);
        assert_eq!(delay.next(&view(&[0, 1, 2])).cpu, 1);
        // A CPU that stops being runnable hands over to the next one.
        assert_eq!(delay.next(&view(&[0, 2])).cpu, 2);
    }

    #[test]
    fn delay_sets_enumerate_fewest_delays_first_without_repeats() {
        assert_eq!(delay_sets(4, 2), 1 + 4 + 6);
        let sets: Vec<Vec<u64>> = (0..delay_sets(4, 2))
            .map(|i| delay_set(i, 4, 2).unwrap())
            .collect();
        assert_eq!(sets[0], Vec::<u64>::new());
        assert_eq!(sets[1..5], [vec![1], vec![2], vec![3], vec![4]]);
        assert_eq!(sets[5], vec![1, 2]);
        assert_eq!(sets[10], vec![3, 4]);
        let distinct: std::collections::BTreeSet<_> = sets.iter().collect();
        assert_eq!(distinct.len(), sets.len());
        assert_eq!(delay_set(11, 4, 2), None);
        assert_eq!(
            delay_sets(100_000, 3),
            1 + 100_000 + 4_999_950_000 + 166_661_666_700_000
        );
        // Past u64 the count saturates.
        assert_eq!(delay_sets(70, 35), u64::MAX);
    }

    #[test]
    fn schedule_seeds_differ_by_index_and_exploration_seed() {
        let seeds: std::collections::BTreeSet<_> = (0..1000).map(|i| schedule_seed(0, i)).collect();
        assert_eq!(seeds.len(), 1000);
        // 63 bits: a seed survives any tool that reads `--sched-seed` as signed.
        assert!(seeds.iter().all(|&s| s < 1 << 63));
        assert!(seeds.iter().any(|&s| s >= 1 << 62), "all 63 bits used");
        assert_ne!(schedule_seed(0, 5), schedule_seed(1, 5));
        assert_eq!(schedule_seed(3, 9), schedule_seed(3, 9));
    }
}
