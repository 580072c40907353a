//! `percpu-lab bench --explore`: what schedule exploration costs and finds.
//!
//! - Throughput: `explore` of the clean variant on `fs-reclaim` (PCT, one job) as a
//!   child process, schedules per second of its CPU time (user + system, `wait4`),
//!   the counting of the base run's scheduling points included.
//! - Schedules to the first detection of each target, for `random` and `pct`,
//!   over [`SEEDS`] exploration seeds: `explore --until-bug KIND` with at most
//!   [`CAP`] schedules; a seed that finds nothing within the cap counts as more
//!   than the cap (so a median past it is printed as `> CAP`). These counts are
//!   deterministic; only the throughput reads host time.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::bench_check::run_child;
use crate::BadInput;

/// Exploration seeds per target and strategy.
pub const SEEDS: u64 = 30;
/// Schedules each exploration may take.
pub const CAP: u64 = 50;
/// Schedules in the throughput run.
const RATE_SCHEDULES: u64 = 40;

/// A bug exploration must find: a scenario, a variant (and inject) and the
/// finding kind that shows it.
pub struct Target {
    pub label: &'static str,
    pub args: &'static [&'static str],
    pub kind: &'static str,
}

pub const TARGETS: &[Target] = &[
    Target {
        label: "mutex: the seed's ABBA deadlock (fs-reclaim)",
        args: &["--scenario", "fs-reclaim", "--variant", "mutex"],
        kind: "deadlock",
    },
    Target {
        label: "irq-plain: a tick's free meets its own CPU's free (irq-race)",
        args: &["--scenario", "irq-race", "--variant", "irq-plain"],
        kind: "deadlock",
    },
    Target {
        label: "irq-plain (irq-race), with 4 timer arrivals per schedule",
        args: &[
            "--scenario",
            "irq-race",
            "--variant",
            "irq-plain",
            "--irq-arrivals",
            "4",
        ],
        kind: "deadlock",
    },
    Target {
        label: "fine: the seed's latent missing restart (map-race)",
        args: &["--scenario", "map-race", "--variant", "fine"],
        kind: "guest-fault",
    },
    Target {
        label: "fixed --inject extend-no-restart (map-race)",
        args: &[
            "--scenario",
            "map-race",
            "--variant",
            "fixed",
            "--inject",
            "extend-no-restart",
        ],
        kind: "guest-fault",
    },
    Target {
        label: "fixed --inject extend-no-restart (storm: no memory pressure)",
        args: &[
            "--scenario",
            "storm",
            "--variant",
            "fixed",
            "--inject",
            "extend-no-restart",
        ],
        kind: "guest-fault",
    },
    Target {
        label: "fixed --inject reclaim-one-lock (map-race)",
        args: &[
            "--scenario",
            "map-race",
            "--variant",
            "fixed",
            "--inject",
            "reclaim-one-lock",
        ],
        kind: "guest-fault",
    },
    Target {
        label: "fixed --inject free-unlocked (map-race)",
        args: &[
            "--scenario",
            "map-race",
            "--variant",
            "fixed",
            "--inject",
            "free-unlocked",
        ],
        kind: "guest-fault",
    },
];

pub struct Detection {
    pub label: &'static str,
    pub kind: &'static str,
    /// Per strategy (random, pct): schedules needed per seed (`None`: not within
    /// the cap).
    pub random: Vec<Option<u64>>,
    pub pct: Vec<Option<u64>>,
}

pub struct ExploreBench {
    pub schedules_per_cpu_second: f64,
    /// Mean guest instructions of a throughput schedule (deterministic).
    pub insns_per_schedule: u64,
    pub detections: Vec<Detection>,
}

fn explore_command(exe: &Path, kernel: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("explore").args(args).args(["--report", "json"]);
    if let Some(kernel) = kernel {
        cmd.arg("--kernel").arg(kernel);
    }
    cmd
}

fn summary_of(stdout: &[u8]) -> Result<Value, BadInput> {
    serde_json::from_slice(stdout)
        .map_err(|e| BadInput(format!("explore printed no summary under bench: {e}")))
}

/// Schedules the exploration took to find `kind` (`None`: not within the cap).
fn schedules_needed(summary: &Value, kind: &str) -> Option<u64> {
    summary["findings"]
        .as_array()?
        .iter()
        .filter(|f| f["kind"] == kind)
        .filter_map(|f| f["first_schedule"].as_u64())
        .min()
        .map(|first| first + 1)
}

/// Runs the commands, `parallel` at a time, and returns their summaries in order.
fn run_all(mut commands: Vec<Command>, parallel: usize) -> Result<Vec<Value>, BadInput> {
    let mut results = Vec::with_capacity(commands.len());
    while !commands.is_empty() {
        let batch: Vec<Command> = commands.drain(..parallel.min(commands.len())).collect();
        let handles: Vec<_> = batch
            .into_iter()
            .map(|mut cmd| std::thread::spawn(move || run_child(&mut cmd)))
            .collect();
        for handle in handles {
            let child = handle
                .join()
                .map_err(|_| BadInput("a bench thread panicked".into()))??;
            results.push(summary_of(&child.stdout)?);
        }
    }
    Ok(results)
}

pub fn measure(exe: &Path, kernel: Option<&Path>) -> Result<ExploreBench, BadInput> {
    let schedules = RATE_SCHEDULES.to_string();
    let rate_args = [
        "--scenario",
        "fs-reclaim",
        "--variant",
        "fixed",
        "--sched",
        "pct",
        "--schedules",
        &schedules,
    ];
    let rate = run_child(&mut explore_command(exe, kernel, &rate_args))?;
    let summary = summary_of(&rate.stdout)?;
    if summary["schedules_run"].as_u64() != Some(RATE_SCHEDULES) {
        return Err(BadInput(
            "the throughput exploration did not run every schedule".into(),
        ));
    }
    let schedules_per_cpu_second = RATE_SCHEDULES as f64 / rate.cpu.as_secs_f64();
    let insns_per_schedule = summary["guest_insns"].as_u64().unwrap_or(0) / RATE_SCHEDULES;

    let parallel = std::thread::available_parallelism().map_or(1, usize::from);
    let cap = CAP.to_string();
    let mut detections = Vec::new();
    for target in TARGETS {
        let mut per_strategy = Vec::new();
        for strategy in ["random", "pct"] {
            let commands = (0..SEEDS)
                .map(|seed| {
                    let seed = seed.to_string();
                    let mut args: Vec<&str> = target.args.to_vec();
                    args.extend([
                        "--sched",
                        strategy,
                        "--schedules",
                        &cap,
                        "--explore-seed",
                        &seed,
                        "--until-bug",
                        target.kind,
                    ]);
                    explore_command(exe, kernel, &args)
                })
                .collect();
            let summaries = run_all(commands, parallel)?;
            per_strategy.push(
                summaries
                    .iter()
                    .map(|s| schedules_needed(s, target.kind))
                    .collect(),
            );
        }
        let pct = per_strategy.pop().expect("two strategies");
        let random = per_strategy.pop().expect("two strategies");
        detections.push(Detection {
            label: target.label,
            kind: target.kind,
            random,
            pct,
        });
    }
    Ok(ExploreBench {
        schedules_per_cpu_second,
        insns_per_schedule,
        detections,
    })
}

/// The median of the counts, a miss counting as more than the cap (`None`: the
/// median is a miss).
pub fn median(counts: &[Option<u64>]) -> Option<u64> {
    let mut sorted: Vec<u64> = counts.iter().map(|c| c.unwrap_or(u64::MAX)).collect();
    sorted.sort_unstable();
    let middle = *sorted.get(sorted.len().saturating_sub(1) / 2)?;
    (middle != u64::MAX).then_some(middle)
}

fn show(median: Option<u64>) -> String {
    median.map_or(format!("> {CAP}"), |m| m.to_string())
}

impl ExploreBench {
    pub fn print(&self) {
        println!("schedule exploration:");
        println!(
            "  {:.1} schedules per host CPU second on `explore --scenario fs-reclaim --variant fixed --sched pct` \
             ({RATE_SCHEDULES} schedules, one job, counting the base run's points included; goal >= 20)",
            self.schedules_per_cpu_second
        );
        // What the goal asks of the emulator: every schedule runs the whole
        // scenario, so the rate is bounded by guest instructions per CPU second.
        let millions = self.insns_per_schedule as f64 / 1e6;
        println!(
            "  each schedule runs {millions:.1} M guest instructions: {:.0} M per CPU second now, \
             {:.0} M per CPU second for 20 schedules per second",
            millions * self.schedules_per_cpu_second,
            millions * 20.0
        );
        println!(
            "  schedules to the first detection (median over {SEEDS} exploration seeds, at most {CAP} each):"
        );
        for d in &self.detections {
            let (random, pct) = (median(&d.random), median(&d.pct));
            let missed = |c: &[Option<u64>]| c.iter().filter(|c| c.is_none()).count();
            let verdict = match (random, pct) {
                (Some(r), Some(p)) if p * 10 <= r => "PCT within 1/10 of random".to_string(),
                (Some(r), Some(p)) if r < 10 && p <= r => {
                    format!("both find it within {r} schedules: no room for a 10x gain")
                }
                (None, Some(_)) => "random misses where PCT finds".to_string(),
                _ => "PCT is NOT within 1/10 of random here".to_string(),
            };
            println!(
                "    {} [{}]: random {}, pct {} (missed by {} / {} seeds); {verdict}",
                d.label,
                d.kind,
                show(random),
                show(pct),
                missed(&d.random),
                missed(&d.pct)
            );
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "schedules_per_cpu_second": self.schedules_per_cpu_second,
            "insns_per_schedule": self.insns_per_schedule,
            "seeds": SEEDS, "cap": CAP,
            "detections": self.detections.iter().map(|d| json!({
                "target": d.label, "kind": d.kind,
                "random": d.random, "pct": d.pct,
                "random_median": median(&d.random), "pct_median": median(&d.pct),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_median_of_misses_is_a_miss() {
        assert_eq!(median(&[Some(3), Some(1), Some(2)]), Some(2));
        assert_eq!(median(&[Some(3), None, None]), None);
        assert_eq!(median(&[Some(3), Some(4), None, None]), Some(4));
        assert_eq!(median(&[]), None);
    }
}
