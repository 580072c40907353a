//! The recording part of `percpu-lab bench`: the same `storm` run with and without
//! `--trace` (into a temporary file), timed alternately; machine set-up is not timed,
//! finishing the trace is.

use std::time::Duration;

use emu::{KernelImage, Machine};

use crate::bench_machine::{median, thread_cpu};
use crate::tracefile::{self, Recording};
use crate::BadInput;

/// The run measured: what `percpu-lab run --scenario storm` does by default.
pub const ARGS: [&str; 3] = ["run", "--scenario", "storm"];

#[derive(Debug, Default)]
pub struct TraceBench {
    pub runs: u32,
    pub events: u64,
    pub bytes: u64,
    pub with_trace: Duration,
    pub without: Duration,
    /// Each pair's with over without.
    pub pair_ratios: Vec<f64>,
}

impl TraceBench {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.with_trace.as_secs_f64()
    }

    pub fn bytes_per_event(&self) -> f64 {
        self.bytes as f64 / self.events.max(1) as f64
    }

    /// Host CPU time with `--trace` over host CPU time without: the median of the
    /// interleaved pairs' ratios.
    pub fn overhead(&self) -> f64 {
        median(self.pair_ratios.clone())
    }
}

pub fn measure(kernel: &KernelImage, min_time: Duration) -> Result<TraceBench, BadInput> {
    let args = tracefile::parse_run_args(&ARGS)?;
    let config = tracefile::trace_config(&args, kernel)?;
    let path = std::env::temp_dir().join(format!("percpu-lab-bench-{}.trace", std::process::id()));
    let mut bench = TraceBench::default();
    while bench.without < min_time || bench.runs < 2 {
        let mut machine = Machine::new(args.machine_config()?, kernel)?;
        let start = thread_cpu();
        let outcome = machine.run(&mut |_, _| {});
        let without = thread_cpu() - start;
        bench.without += without;
        crate::bench_run::require_clean(&outcome.end, "storm")?;

        let mut machine = Machine::new(args.machine_config()?, kernel)?;
        let file = tracefile::create(&path)?;
        let recording = Recording::start(&mut machine, file, &config)?;
        let start = thread_cpu();
        let outcome = machine.run(&mut |_, _| {});
        let (_, summary) = recording.finish(&outcome)?;
        let with_trace = thread_cpu() - start;
        bench.with_trace += with_trace;
        bench
            .pair_ratios
            .push(with_trace.as_secs_f64() / without.as_secs_f64());
        crate::bench_run::require_clean(&outcome.end, "storm")?;
        bench.events += summary.events;
        bench.bytes += summary.bytes;
        bench.runs += 1;
    }
    let _ = std::fs::remove_file(&path);
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_events_bytes_and_overhead_of_the_same_run() {
        let kernel = crate::kernel::load(None, None).unwrap();
        let bench = measure(&kernel, Duration::ZERO).unwrap();
        assert_eq!(bench.runs, 2);
        // The same deterministic run twice: twice its events.
        assert!(
            bench.events > 20_000 && bench.events.is_multiple_of(2),
            "{bench:?}"
        );
        let per_event = bench.bytes_per_event();
        assert!((1.0..=8.0).contains(&per_event), "{per_event} bytes/event");
        assert!(bench.events_per_second() > 0.0 && bench.overhead() > 0.0);
    }
}
