//! `percpu-lab bench`: emulation speed. Host time is read here, outside the machine,
//! and never feeds back into a run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::bench_check::CheckCost;
use crate::report::ReportFormat;
use crate::{kernel, BadInput, Verdict};

/// Each remaining figure repeats its run until at least this much host CPU time has
/// passed.
const MIN_MEASURE: Duration = Duration::from_millis(400);
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Guest kernel ELF (default: the built-in guest).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// Measure schedule exploration instead (minutes): schedules per CPU second, and
    /// schedules to the first detection of each target, random against PCT.
    #[arg(long)]
    pub explore: bool,
}

/// An event count for people: "43 k events", "2.0 M events".
fn events_text(events: u64) -> String {
    if events >= 1_000_000 {
        format!("{:.1} M events", events as f64 / 1e6)
    } else {
        format!("{:.0} k events", events as f64 / 1e3)
    }
}

/// Wall time of one part of the bench, logged at debug level (`PERCPU_LAB_LOG=debug`)
/// so that the 30-second budget can be checked part by part.
struct Section(std::time::Instant);

impl Section {
    fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Logs the part that ends now and starts the next.
    fn done(self, part: &str) -> Self {
        tracing::debug!(
            part,
            seconds = self.0.elapsed().as_secs_f64(),
            "bench part done"
        );
        Self::start()
    }
}

pub fn bench(args: &BenchArgs) -> Result<Verdict, BadInput> {
    if args.explore {
        return bench_explore(args);
    }
    let started = std::time::Instant::now();
    let section = Section::start();
    // `check`'s peak RSS first, while this process is still smaller than `check`
    // (a child's peak includes its parent's: see bench_check).
    if let Some(path) = &args.kernel {
        crate::input_file::require_regular(path)?;
    }
    let progress = crate::progress::spinner(
        "bench: recording traces for check, calibrating storm to 100 M instructions per CPU count",
    );
    let exe = std::env::current_exe()
        .map_err(|e| BadInput(format!("cannot find this executable to run check: {e}")))?;
    let kernel_path = args.kernel.as_deref();
    // Neither gives a host-dependent figure: they share the host's cores.
    let (traces, works) = std::thread::scope(|scope| {
        let calibration = scope.spawn(|| crate::bench_machine::calibrate(&exe, kernel_path));
        let traces = crate::bench_check::record_traces(&exe, kernel_path).map_err(BadInput);
        let works = calibration
            .join()
            .unwrap_or_else(|_| Err(BadInput("the calibration thread panicked".into())));
        (traces, works)
    });
    let section = section.done("calibration, and traces for check");
    progress.set_message("bench: check's peak RSS");
    let check = crate::bench_check::measure(&exe, kernel_path, &traces?)?;
    let section = section.done("check's peak RSS");
    let works = works?;
    let kernel = kernel::load(kernel_path, None)?;
    // QEMU boots the flat Image of the built-in guest (a --kernel ELF has none).
    let image = args
        .kernel
        .is_none()
        .then(|| Path::new(env!("PERCPU_GUEST_IMAGE")));
    let machine =
        crate::bench_machine::measure(&exe, kernel_path, &kernel, image, &works, &|message| {
            progress.set_message(message)
        })?;
    let section = section.done("machine, QEMU peer and snapshots");
    progress.set_message("bench: recording");
    let tracing = crate::bench_trace::measure(&kernel, MIN_MEASURE)?;
    let section = section.done("recording");
    progress.set_message("bench: simulated MMU");
    let mmu = crate::bench_mmu::measure(&kernel, MIN_MEASURE)?;
    let section = section.done("simulated MMU");
    progress.set_message("bench: allocator");
    let allocator = crate::bench_alloc::measure(&kernel)?;
    let section = section.done("allocator");
    progress.set_message("bench: lock validator");
    let lockdep = crate::bench_lockdep::measure(&kernel, MIN_MEASURE)?;
    let section = section.done("lock validator");
    progress.set_message("bench: TLB flush strategies");
    let flush = crate::bench_flush::measure(&kernel)?;
    section.done("TLB flush strategies");
    progress.finish_and_clear();

    match args.report {
        ReportFormat::Text => {
            machine.print();
            println!(
                "recording (`{}`, {} runs each way):",
                crate::bench_trace::ARGS.join(" "),
                tracing.runs
            );
            println!(
                "  {:.0} events/s recorded, {:.2} bytes/event (goal <= 8), overhead {:.2}x (goal <= 1.3; median of the pairs)",
                tracing.events_per_second(),
                tracing.bytes_per_event(),
                tracing.overhead()
            );
            println!("simulated MMU (walker, TLB model, checks) vs built-in, 4 cpus:");
            for cost in &mmu {
                println!(
                    "  {}: {:.2}x host CPU time per guest instruction (goal <= 1.3; median of {} interleaved pairs)",
                    cost.scenario,
                    cost.ratio(),
                    cost.runs
                );
            }
            println!(
                "lock validator (`{}`, {} runs each way):",
                crate::bench_lockdep::ARGS.join(" "),
                lockdep.runs
            );
            println!(
                "  offline analysis {:.1} M events/s (goal >= 10), online cost {:.2}x the bare run (median of the pairs)",
                lockdep.events_per_second() / 1e6,
                lockdep.online_overhead()
            );
            let per_trace = |figure: &dyn Fn(&CheckCost) -> String| {
                check
                    .iter()
                    .map(|c| format!("{}: {}", events_text(c.cost.events), figure(&c.cost)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "  check peak RSS: {} (`check FILE` as a child process, wait4)",
                per_trace(&|c| format!("{:.1} MiB", c.peak_rss_bytes as f64 / MIB))
            );
            println!(
                "  check speed: {} (over the child's CPU time, start-up included)",
                per_trace(&|c| format!("{:.1} M events/s", c.events_per_second() / 1e6))
            );
            for c in &check {
                println!(
                    "    {}: `run {}`",
                    events_text(c.cost.events),
                    c.run_args.join(" ")
                );
            }
            println!("allocator on `storm` (4 cpus, round-robin, seed 0; deterministic):");
            for cost in &allocator {
                println!(
                    "  {:5} alloc: {}",
                    cost.variant,
                    crate::bench_alloc::describe(&cost.alloc)
                );
                println!(
                    "  {:5} free:  {}",
                    cost.variant,
                    crate::bench_alloc::describe(&cost.free)
                );
                if let Some(failure) = &cost.failure {
                    println!("  {:5} (the run did not complete: {failure})", cost.variant);
                }
            }
            crate::bench_flush::print(&flush);
            println!(
                "bench took {:.1} s wall (goal <= 30)",
                started.elapsed().as_secs_f64()
            );
        }
        ReportFormat::Json => {
            println!(
                "{}",
                json!({"machine": machine.json(), "wall_seconds": started.elapsed().as_secs_f64(),
                       "trace": {"events_per_second": tracing.events_per_second(),
                                 "bytes_per_event": tracing.bytes_per_event(),
                                 "overhead": tracing.overhead(), "runs": tracing.runs},
                       "allocator": allocator.iter().map(|c| json!({"variant": c.variant,
                                 "alloc": {"calls": c.alloc.calls, "insns": c.alloc.insns},
                                 "free": {"calls": c.free.calls, "insns": c.free.insns},
                                 "completed": c.failure.is_none()})).collect::<Vec<_>>(),
                       "lockdep": {"events_per_second": lockdep.events_per_second(),
                                   "online_overhead": lockdep.online_overhead(), "runs": lockdep.runs,
                                   "check": check.iter().map(|c| json!({"run_args": c.run_args.join(" "),
                                       "trace_events": c.cost.events,
                                       "check_peak_rss_bytes": c.cost.peak_rss_bytes,
                                       "check_cpu_seconds": c.cost.cpu.as_secs_f64(),
                                       "check_events_per_second": c.cost.events_per_second()}))
                                       .collect::<Vec<_>>()},
                       "mmu": mmu.iter().map(|c| json!({"scenario": c.scenario, "ratio": c.ratio(), "runs": c.runs}))
                                 .collect::<Vec<_>>(),
                       "flush": crate::bench_flush::json(&flush)})
            );
        }
    }
    Ok(Verdict::Clean)
}

fn bench_explore(args: &BenchArgs) -> Result<Verdict, BadInput> {
    if let Some(path) = &args.kernel {
        crate::input_file::require_regular(path)?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| BadInput(format!("cannot find this executable to run explore: {e}")))?;
    let progress = crate::progress::spinner("bench: exploring");
    let figures = crate::bench_explore::measure(&exe, args.kernel.as_deref())?;
    progress.finish_and_clear();
    match args.report {
        ReportFormat::Text => figures.print(),
        ReportFormat::Json => println!("{}", json!({"explore": figures.json()})),
    }
    Ok(Verdict::Clean)
}
