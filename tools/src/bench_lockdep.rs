//! The lock validator's part of `percpu-lab bench`: offline analysis throughput
//! (events per second through [`Validator::feed`], symbolising nothing) over the
//! events of the default `storm` run, and the online cost: that run with the
//! validator fed (as `percpu-lab run` does) against the bare machine, alternated.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use emu::{KernelImage, Machine, RecordOptions};
use traces::{Event, StringTable, Validator};

use crate::bench_machine::{median, thread_cpu};
use crate::BadInput;

/// The run measured: `percpu-lab run --scenario storm` (seed 0, random scheduler).
pub const ARGS: [&str; 3] = ["run", "--scenario", "storm"];

#[derive(Debug, Default)]
pub struct LockdepBench {
    /// Events analysed offline and the time it took.
    pub events: u64,
    pub analysis: Duration,
    /// Host time of the run with the validator fed online / without recording.
    pub online: Duration,
    pub bare: Duration,
    /// Each pair's online over bare.
    pub pair_ratios: Vec<f64>,
    pub runs: u32,
}

impl LockdepBench {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.analysis.as_secs_f64()
    }

    /// The run with the validator fed over the bare run: the median of the
    /// interleaved pairs' ratios.
    pub fn online_overhead(&self) -> f64 {
        median(self.pair_ratios.clone())
    }
}

/// The events of one recorded run of [`ARGS`], for the offline figure (kept in a
/// run of their own: keeping them costs what no `percpu-lab run` pays).
fn recorded_events(
    kernel: &KernelImage,
    args: &crate::args::RunArgs,
) -> Result<(Vec<Event>, StringTable), BadInput> {
    let mut machine = Machine::new(args.machine_config()?, kernel)?;
    let kept: Rc<RefCell<(Vec<Event>, StringTable)>> = Rc::default();
    let keep = kept.clone();
    machine.record(
        RecordOptions::default(),
        Box::new(move |events: &[Event], strings: &StringTable| {
            let mut keep = keep.borrow_mut();
            keep.0.extend_from_slice(events);
            keep.1 = strings.clone();
        }),
    )?;
    let outcome = machine.run(&mut |_, _| {});
    crate::bench_run::require_clean(&outcome.end, "storm")?;
    drop(machine);
    Ok(Rc::try_unwrap(kept).map_or_else(|rc| rc.borrow().clone(), |c| c.into_inner()))
}

pub fn measure(kernel: &KernelImage, min_time: Duration) -> Result<LockdepBench, BadInput> {
    let args = crate::tracefile::parse_run_args(&ARGS)?;
    let mut bench = LockdepBench::default();
    while bench.bare < min_time || bench.runs < 2 {
        let mut machine = Machine::new(args.machine_config()?, kernel)?;
        let start = thread_cpu();
        let outcome = machine.run(&mut |_, _| {});
        let bare = thread_cpu() - start;
        bench.bare += bare;
        crate::bench_run::require_clean(&outcome.end, "storm")?;

        let mut machine = Machine::new(args.machine_config()?, kernel)?;
        let (online, sink) = crate::analysis::Online::new(kernel, &machine, args.checks_mmu());
        machine.record(RecordOptions::default(), sink)?;
        let start = thread_cpu();
        let outcome = machine.run(&mut |_, _| {});
        let fed = thread_cpu() - start;
        bench.online += fed;
        bench
            .pair_ratios
            .push(fed.as_secs_f64() / bare.as_secs_f64());
        crate::bench_run::require_clean(&outcome.end, "storm")?;
        if !online.findings().is_empty() {
            return Err(BadInput("storm has lock findings under bench".into()));
        }
        bench.runs += 1;
    }
    let (events, strings) = recorded_events(kernel, &args)?;
    while bench.analysis < min_time || bench.events == 0 {
        let mut validator = Validator::new();
        let start = thread_cpu();
        validator.feed(&events, &strings);
        bench.analysis += thread_cpu() - start;
        bench.events += events.len() as u64;
        std::hint::black_box(validator.findings());
    }
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_analysis_throughput_and_online_cost() {
        let kernel = crate::kernel::load(None, None).unwrap();
        let bench = measure(&kernel, Duration::ZERO).unwrap();
        assert_eq!(bench.runs, 2);
        assert!(bench.events > 20_000, "{bench:?}");
        assert!(bench.events_per_second() > 0.0 && bench.online_overhead() > 0.0);
    }
}
