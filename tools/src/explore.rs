//! `percpu-lab explore`: runs many schedules of one scenario, de-duplicates what
//! they find by cause (a finding's kind and key; a guest fault by its panic
//! message), saves the first failing schedule of each cause as a replayable trace
//! with the exact command that repeats it, and prints a summary.
//!
//! Schedule `i` is fully determined by the strategy, the exploration seed and `i`:
//! `random` and `pct` use the scheduler seed [`emu::sched::schedule_seed`]`(E, i)`;
//! `delay` uses the `i`-th set of at most `--delay-bound` delay points. PCT draws
//! its change points from, and `delay` enumerates, the scheduling points of the
//! scenario's base run (`--sched delay` with no delay), counted once first; so every
//! schedule is a plain `percpu-lab run` command, which the summary prints.
//!
//! `--shard K/N` runs the indices `i ≡ K (mod N)` of `0..--schedules`, so shards
//! can run anywhere (Slurm array jobs: `tools/slurm/explore.sbatch`); `--merge`
//! combines their summaries into the one a single machine gives. `--jobs J` runs
//! the schedules in J worker processes. Results are taken in index order, so the
//! summary does not depend on J or on host speed, with `--until-bug` too (it stops
//! at the lowest failing index, or the lowest with the finding kind it names).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use clap::{Args, ValueEnum};
use emu::sched::{delay_set, delay_sets, schedule_seed, Pct, Xoshiro256};
use emu::{KernelImage, Machine, Snapshot};
use serde_json::{json, Value};

use crate::atomic_file::AtomicFile;
use crate::report::ReportFormat;
use crate::run::{self, Flush, Inject, RunArgs, Variant};
use crate::{kernel, tracefile, BadInput, Verdict};

/// Summary file format (`summary.json` in `--save-failures`).
const SUMMARY_FORMAT: &str = "percpu-lab-explore/1";
/// Tells the timer arrivals' random stream from the strategies' (PCT uses the
/// schedule seed and its complement).
const IRQ_STREAM: u64 = 0x1a2b_3c4d_5e6f_7081;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// A seeded random CPU and slice length each slice (`run --sched random`).
    Random,
    /// Probabilistic concurrency testing (`run --sched pct`).
    Pct,
    /// Systematic: every set of at most `--delay-bound` delays, fewest first.
    Delay,
}

#[derive(Args, Debug, Clone)]
pub struct ExploreArgs {
    /// Guest workload (see `percpu-lab scenarios`); not for a Linux `--kernel`.
    #[arg(long, required_unless_present_any = ["merge", "kernel"])]
    pub scenario: Option<String>,
    /// Allocator locking variant; not for a Linux `--kernel`.
    #[arg(long, value_enum, required_unless_present_any = ["merge", "kernel"])]
    pub variant: Option<Variant>,
    /// How many schedules (indices 0..N; with `--shard`, this shard's share of them).
    #[arg(long, required_unless_present = "merge")]
    pub schedules: Option<u64>,
    /// Exploration strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Random)]
    pub sched: Strategy,
    /// Exploration seed: with the schedule index, it fixes each schedule.
    #[arg(long, default_value_t = 0)]
    pub explore_seed: u64,
    /// Guest workload seed (the same for every schedule).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// PCT depth (d − 1 priority change points per schedule).
    #[arg(long, default_value_t = run::DEFAULT_PCT_DEPTH, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pct_depth: u32,
    /// Timer arrivals per schedule, at scheduling points drawn from the schedule's
    /// seed (each lands at the next lock acquisition: `run --irq-points`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub irq_arrivals: u32,
    /// `--sched delay`: at most this many delays per schedule.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub delay_bound: u32,
    /// Number of emulated CPUs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub cpus: u64,
    /// Instructions per scheduling slice.
    #[arg(long, default_value_t = run::DEFAULT_QUANTUM, value_parser = clap::value_parser!(u64).range(1..))]
    pub quantum: u64,
    /// A seeded bug for the guest to make.
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
    /// How the kernel's TLB flush reaches the other CPUs (as `run --flush`).
    #[arg(long, value_enum, default_value_t = Flush::Broadcast)]
    pub flush: Flush,
    /// Workload size (as `run --scale`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub scale: u64,
    /// Watchdog per schedule (as `run --max-insns`).
    #[arg(long, default_value_t = run::DEFAULT_MAX_INSNS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_insns: u64,
    /// Guest kernel ELF (default: the built-in guest), or a Linux kernel (as
    /// `run --kernel`): then every schedule boots it with `--cmdline` and `--initrd`.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The kernel command line of every schedule (as `run --cmdline`).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// An initial RAM disk for every schedule (as `run --initrd`).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Instruction set of the built-in guest (as `run --arch`).
    #[arg(long, value_enum)]
    pub arch: Option<crate::args::Arch>,
    /// Worker processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: u32,
    /// Run only the schedule indices i with i mod N = K (0 ≤ K < N).
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// Stop at the first failing schedule (the lowest failing index); with a finding
    /// kind (e.g. `deadlock`, `guest-fault`), at the first with that kind.
    #[arg(long, num_args = 0..=1, default_missing_value = "any", value_name = "KIND")]
    pub until_bug: Option<String>,
    /// Write `summary.json` here, and the first failing schedule of each cause as a
    /// trace (`percpu-lab replay` repeats it).
    #[arg(long, alias = "out", value_name = "DIR")]
    pub save_failures: Option<PathBuf>,
    /// Shrink each cause's first failing schedule (fewer change points or delays)
    /// while the same finding still appears; saves and prints the minimal one.
    #[arg(long, alias = "minimize")]
    pub minimise: bool,
    /// Combine the summaries of these explore directories (shards) instead.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["scenario", "variant", "schedules", "shard", "until_bug", "minimise"])]
    pub merge: Vec<PathBuf>,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// Internal: run as worker K of J, printing one JSON line per schedule.
    #[arg(long, hide = true, value_parser = parse_shard)]
    pub worker: Option<(u64, u64)>,
    /// Internal: the base run's scheduling points (workers get it from the parent).
    #[arg(long, hide = true)]
    pub steps: Option<u64>,
}

fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not K/N"))?;
    let k: u64 = k
        .trim()
        .parse()
        .map_err(|_| format!("`{k}` is not a number"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a number"))?;
    if n == 0 || k >= n {
        return Err(format!("shard {k}/{n}: need 0 ≤ K < N"));
    }
    Ok((k, n))
}

/// One schedule's result (a worker's output line).
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    index: u64,
    /// Guest instructions the schedule ran.
    insns: u64,
    /// Distinct causes: key → (kind, title).
    causes: BTreeMap<String, (String, String)>,
}

impl Outcome {
    fn to_json(&self) -> Value {
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|(key, (kind, title))| json!({"key": key, "kind": kind, "title": title}))
            .collect();
        json!({"index": self.index, "insns": self.insns, "causes": causes})
    }

    fn from_json(value: &Value) -> Option<Self> {
        let index = value.get("index")?.as_u64()?;
        let insns = value.get("insns")?.as_u64()?;
        let mut causes = BTreeMap::new();
        for c in value.get("causes")?.as_array()? {
            let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            causes.insert(field("key")?, (field("kind")?, field("title")?));
        }
        Some(Self {
            index,
            insns,
            causes,
        })
    }
}

/// What the exploration needs besides the arguments: the guest and the base run's
/// scheduling points.
struct Plan<'a> {
    args: &'a ExploreArgs,
    kernel: KernelImage,
    steps: u64,
    /// This process's machine, recording, and its power-on snapshot: each schedule
    /// after the first restores it instead of booting a machine, and finds the
    /// code translated (schedules differ only in their scheduler).
    reused: RefCell<Option<(Machine, Snapshot)>>,
}

impl Plan<'_> {
    /// `percpu-lab run` arguments (without the program name) common to every
    /// schedule.
    fn base_argv(&self) -> Vec<String> {
        let a = self.args;
        let mut argv: Vec<String> = Vec::new();
        if let (Some(scenario), Some(variant)) = (&a.scenario, a.variant) {
            let variant = variant.to_possible_value().expect("named");
            argv.extend([
                "--scenario".into(),
                scenario.clone(),
                "--variant".into(),
                variant.get_name().into(),
            ]);
        }
        argv.extend(
            [
                "--seed",
                &a.seed.to_string(),
                "--cpus",
                &a.cpus.to_string(),
                "--quantum",
                &a.quantum.to_string(),
                "--max-insns",
                &a.max_insns.to_string(),
            ]
            .into_iter()
            .map(String::from),
        );
        if let Some(inject) = a.inject {
            argv.push("--inject".into());
            argv.push(inject.to_possible_value().expect("named").get_name().into());
        }
        if a.flush != Flush::Broadcast {
            let name = a.flush.to_possible_value().expect("named");
            argv.extend(["--flush".into(), name.get_name().into()]);
        }
        if a.scale != 1 {
            argv.extend(["--scale".into(), a.scale.to_string()]);
        }
        if let Some(path) = &a.kernel {
            argv.extend(["--kernel".into(), path.display().to_string()]);
        }
        if let Some(cmdline) = &a.cmdline {
            argv.extend(["--cmdline".into(), cmdline.clone()]);
        }
        if let Some(path) = &a.initrd {
            argv.extend(["--initrd".into(), path.display().to_string()]);
        }
        if self.kernel.isa() == emu::Isa::Riscv64 && a.arch.is_some() {
            argv.extend(["--arch".into(), "riscv64".into()]);
        }
        argv
    }

    /// The scheduler arguments of schedule `index` (`None`: past the enumeration),
    /// with `change_points` instead of the schedule's own when given.
    fn sched_argv(&self, index: u64, change_points: Option<&[u64]>) -> Option<Vec<String>> {
        let a = self.args;
        let seed = schedule_seed(a.explore_seed, index).to_string();
        let mut argv: Vec<String> = match a.sched {
            Strategy::Random => vec![
                "--sched".into(),
                "random".into(),
                "--sched-seed".into(),
                seed,
            ],
            Strategy::Pct => vec![
                "--sched".into(),
                "pct".into(),
                "--sched-seed".into(),
                seed,
                "--pct-depth".into(),
                a.pct_depth.to_string(),
                "--pct-steps".into(),
                self.steps.to_string(),
            ],
            Strategy::Delay => {
                let delays = delay_set(index, self.steps, a.delay_bound)?;
                let mut argv = vec!["--sched".into(), "delay".into()];
                if change_points.is_none() && !delays.is_empty() {
                    argv.push("--change-points".into());
                    argv.push(join(&delays));
                }
                argv
            }
        };
        let arrivals = self.irq_points(index);
        if !arrivals.is_empty() {
            argv.push("--irq-points".into());
            argv.push(join(&arrivals));
        }
        if let Some(points) = change_points.filter(|p| !p.is_empty()) {
            argv.push("--change-points".into());
            argv.push(join(points));
        } else if change_points.is_some() && a.sched == Strategy::Pct {
            // No change point left: depth 1 draws none (the priorities do not
            // depend on the depth).
            let at = argv.iter().position(|f| f == "--pct-depth").expect("pct") + 1;
            argv[at] = "1".into();
        }
        Some(argv)
    }

    /// The timer arrivals of schedule `index`: `--irq-arrivals` points drawn from
    /// a stream of its seed of their own (so they do not move the strategy's).
    fn irq_points(&self, index: u64) -> Vec<u64> {
        let mut rng =
            Xoshiro256::seed_from(!schedule_seed(self.args.explore_seed, index) ^ IRQ_STREAM);
        let mut points: Vec<u64> = (0..self.args.irq_arrivals)
            .map(|_| 1 + rng.below(self.steps))
            .collect();
        points.sort_unstable();
        points
    }

    /// The change points (PCT) or delays of schedule `index`.
    fn change_points(&self, index: u64) -> Vec<u64> {
        let a = self.args;
        match a.sched {
            Strategy::Random => Vec::new(),
            Strategy::Pct => Pct::new(
                schedule_seed(a.explore_seed, index),
                a.quantum,
                a.pct_depth,
                self.steps,
            )
            .change_points()
            .to_vec(),
            Strategy::Delay => delay_set(index, self.steps, a.delay_bound).unwrap_or_default(),
        }
    }

    fn run_args(&self, sched: &[String], trace: Option<&Path>) -> Result<RunArgs, BadInput> {
        let mut argv = vec!["run".to_string()];
        argv.extend(self.base_argv());
        argv.extend(sched.iter().cloned());
        if let Some(path) = trace {
            argv.extend(["--trace".into(), path.display().to_string()]);
        }
        tracefile::parse_run_args(&argv)
    }

    /// Runs one schedule; with `trace`, records it there (on a machine of its own).
    fn run(&self, index: u64, sched: &[String], trace: Option<&Path>) -> Result<Outcome, BadInput> {
        let args = self.run_args(sched, trace)?;
        let mut reused = self.reused.borrow_mut();
        let mut own = None;
        let (analyses, recording, progress) = match reused.as_mut().filter(|_| trace.is_none()) {
            Some((machine, power_on)) => {
                let (analyses, sink, progress) = run::analysed(&args, &self.kernel, machine);
                machine.restore_recording(power_on, sink)?;
                let config = args.machine_config()?;
                machine.set_scheduler(emu::sched::make_scheduler(
                    &config.sched,
                    config.seed,
                    config.quantum,
                    &config.irq_points,
                ));
                (analyses, None, progress)
            }
            None => {
                let watched = run::watched(&args, &self.kernel)?;
                if trace.is_none() {
                    let power_on = watched.machine.snapshot()?;
                    *reused = Some((watched.machine, power_on));
                } else {
                    own = Some(watched.machine);
                }
                (watched.analyses, watched.recording, watched.progress)
            }
        };
        let machine = match own.as_mut() {
            Some(machine) => machine,
            None => &mut reused.as_mut().expect("kept above").0,
        };
        let mut panic_line = None;
        let outcome = machine.run(&mut |cpu, line| {
            if let Some(recording) = &recording {
                recording.console_line(cpu, line);
            }
            if panic_line.is_none() && line.starts_with("PANIC") {
                panic_line = Some(line.to_string());
            }
        });
        progress.finish_and_clear();
        analyses.finish();
        if let Some(recording) = recording {
            recording.finish(&outcome)?;
        }
        let mmu = crate::mmu_report::MmuRun::of(machine, &analyses);
        let locks = crate::analysis::LockRun::of(&analyses);
        let mut causes = BTreeMap::new();
        for f in mmu.findings.iter().chain(&locks.findings) {
            let kind = f.kind.as_str();
            causes.insert(
                format!("{kind}: {}", f.key),
                (kind.to_string(), f.title.clone()),
            );
        }
        if crate::report::verdict(&outcome) == Verdict::GuestFault {
            // Keyed with its numbers masked (chunk and slot numbers differ
            // between schedules of one cause); titled with the line itself.
            let what = panic_line.unwrap_or_else(|| crate::report::describe_end(&outcome.end));
            causes.insert(
                format!("guest-fault: {}", without_numbers(&what)),
                ("guest-fault".into(), what),
            );
        }
        Ok(Outcome {
            index,
            insns: outcome.total_insns,
            causes,
        })
    }

    /// The schedule indices this process explores, in order.
    fn indices(&self) -> Vec<u64> {
        let a = self.args;
        let mut count = a.schedules.unwrap_or(0);
        if a.sched == Strategy::Delay {
            count = count.min(delay_sets(self.steps, a.delay_bound));
        }
        let (k, n) = a.shard.unwrap_or((0, 1));
        let mut indices: Vec<u64> = (0..count).filter(|i| i % n == k).collect();
        if let Some((j, jobs)) = a.worker {
            indices = indices
                .into_iter()
                .enumerate()
                .filter(|(p, _)| *p as u64 % jobs == j)
                .map(|(_, i)| i)
                .collect();
        }
        indices
    }
}

fn join(points: &[u64]) -> String {
    points
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A message with its numbers (counts, addresses, times) masked, so that the same
/// failure on two schedules has one key.
fn without_numbers(text: &str) -> String {
    // Each piece is a run of letters and digits and the separator after it.
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
        let (body, sep) = word.split_at(
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .len(),
        );
        let numeric = !body.is_empty()
            && (body.bytes().all(|b| b.is_ascii_digit())
                || body
                    .strip_prefix("0x")
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
        out.push_str(if numeric { "N" } else { body });
        out.push_str(sep);
    }
    out
}

/// The scheduling points of the scenario's base run (`--sched delay`, no delays).
fn count_points(plan: &Plan<'_>) -> Result<u64, BadInput> {
    let sched = ["--sched".to_string(), "delay".to_string()];
    let args = plan.run_args(&sched, None)?;
    let mut watched = run::watched(&args, &plan.kernel)?;
    watched.machine.run(&mut |_, _| {});
    watched.progress.finish_and_clear();
    Ok(watched.machine.sched_points().max(1))
}

pub fn explore(args: &ExploreArgs) -> Result<Verdict, BadInput> {
    if !args.merge.is_empty() {
        return merge(args);
    }
    let kernel = kernel::load_for(args.kernel.as_deref(), None, args.arch)?;
    if kernel.is_boot_protocol_image() {
        if args.scenario.is_some() || args.variant.is_some() || args.inject.is_some() {
            return Err(BadInput(
                "--scenario, --variant and --inject are for the percpu-lab guest: a Linux \
                 kernel is explored with --cmdline (and --initrd)"
                    .into(),
            ));
        }
    } else {
        let (Some(scenario), Some(_)) = (args.scenario.as_deref(), args.variant) else {
            return Err(BadInput(
                "exploring the percpu-lab guest needs --scenario and --variant".into(),
            ));
        };
        kernel::check_scenario(&kernel, scenario)?;
    }
    crate::run::check_inject_with_flush(args.inject, args.flush)?;
    if let Some(kind) = args.until_bug.as_deref() {
        if !matches!(kind, "any" | "guest-fault") && traces::FindingKind::from_name(kind).is_none()
        {
            return Err(BadInput(format!(
                "--until-bug {kind}: not a finding kind (see docs/report.schema.json), `guest-fault` or `any`"
            )));
        }
    }
    if args.minimise && args.sched == Strategy::Random {
        return Err(BadInput(
            "--minimise shrinks change points or delays: use --sched pct or --sched delay".into(),
        ));
    }
    let mut plan = Plan {
        args,
        kernel,
        steps: 1,
        reused: RefCell::new(None),
    };
    plan.steps = match args.steps {
        Some(steps) => steps,
        None if args.sched == Strategy::Random && args.irq_arrivals == 0 => 1,
        None => count_points(&plan)?,
    };
    if args.worker.is_some() {
        return worker(&plan);
    }
    let outcomes = collect(&plan)?;
    let summary = summarise(&plan, &outcomes)?;
    finish(args, summary)
}

/// Worker mode: one JSON line per schedule on stdout.
fn worker(plan: &Plan<'_>) -> Result<Verdict, BadInput> {
    let mut stdout = std::io::stdout().lock();
    for index in plan.indices() {
        let sched = plan
            .sched_argv(index, None)
            .expect("within the enumeration");
        let outcome = plan.run(index, &sched, None)?;
        if writeln!(stdout, "{}", outcome.to_json())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the parent has what it needs
        }
    }
    Ok(Verdict::Clean)
}

/// Runs every schedule of this process (in `--jobs` workers) and returns the
/// outcomes in index order, up to the first failure with `--until-bug`.
fn collect(plan: &Plan<'_>) -> Result<Vec<Outcome>, BadInput> {
    let indices = plan.indices();
    let bar = crate::progress::counter(indices.len() as u64, "schedules");
    let mut done: BTreeMap<u64, Outcome> = BTreeMap::new();
    let mut causes: std::collections::BTreeSet<String> = Default::default();
    // Outcomes are taken in index order: `next` is the position of the first
    // index not yet taken.
    let mut next = 0;
    let mut taken = Vec::new();
    let mut take = |outcome: Outcome, done: &mut BTreeMap<u64, Outcome>| -> bool {
        done.insert(outcome.index, outcome);
        while next < indices.len() {
            let Some(outcome) = done.remove(&indices[next]) else {
                break;
            };
            next += 1;
            causes.extend(outcome.causes.keys().cloned());
            let stop = plan.args.until_bug.as_deref().is_some_and(|kind| {
                outcome
                    .causes
                    .values()
                    .any(|(found, _)| kind == "any" || found == kind)
            });
            taken.push(outcome);
            bar.set_position(taken.len() as u64);
            bar.set_message(format!("distinct findings: {}", causes.len()));
            if stop {
                return true;
            }
        }
        false
    };
    if plan.args.jobs <= 1 {
        for &index in &indices {
            let sched = plan
                .sched_argv(index, None)
                .expect("within the enumeration");
            if take(plan.run(index, &sched, None)?, &mut done) {
                break;
            }
        }
    } else {
        let mut workers = spawn_workers(plan)?;
        let (tx, rx) = mpsc::channel();
        for (j, child) in workers.iter_mut().enumerate() {
            let out = child.stdout.take().expect("piped");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let parsed = serde_json::from_str(&line)
                        .ok()
                        .and_then(|v| Outcome::from_json(&v));
                    if tx.send(parsed.ok_or(j)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut stopped = false;
        for message in &rx {
            match message {
                Ok(outcome) => {
                    if take(outcome, &mut done) {
                        stopped = true;
                        break;
                    }
                }
                Err(j) => {
                    return Err(BadInput(format!(
                        "explore worker {j} printed a line it should not"
                    )))
                }
            }
        }
        for child in &mut workers {
            if stopped {
                let _ = child.kill();
            }
            let status = child.wait()?;
            if !stopped && !status.success() {
                return Err(BadInput(format!("an explore worker failed ({status})")));
            }
        }
        let _ = next; // every index was taken unless stopped
    }
    bar.finish_and_clear();
    Ok(taken)
}

fn spawn_workers(plan: &Plan<'_>) -> Result<Vec<Child>, BadInput> {
    let exe = std::env::current_exe()?;
    let a = plan.args;
    let jobs = u64::from(a.jobs);
    (0..jobs)
        .map(|j| {
            let mut cmd = Command::new(&exe);
            cmd.arg("explore").args(plan.base_argv());
            cmd.args(["--schedules", &a.schedules.unwrap_or(0).to_string()]);
            let strategy = a.sched.to_possible_value().expect("named");
            cmd.args(["--sched", strategy.get_name()]);
            cmd.args(["--explore-seed", &a.explore_seed.to_string()]);
            cmd.args(["--pct-depth", &a.pct_depth.to_string()]);
            cmd.args(["--delay-bound", &a.delay_bound.to_string()]);
            cmd.args(["--irq-arrivals", &a.irq_arrivals.to_string()]);
            cmd.args(["--steps", &plan.steps.to_string()]);
            if let Some((k, n)) = a.shard {
                cmd.args(["--shard", &format!("{k}/{n}")]);
            }
            cmd.args(["--worker", &format!("{j}/{jobs}")]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
            cmd.spawn().map_err(BadInput::from)
        })
        .collect()
}

/// One cause over the schedules run.
struct Cause {
    kind: String,
    title: String,
    first: u64,
    count: u64,
}

fn summarise(plan: &Plan<'_>, outcomes: &[Outcome]) -> Result<Value, BadInput> {
    let mut causes: BTreeMap<String, Cause> = BTreeMap::new();
    for outcome in outcomes {
        for (key, (kind, title)) in &outcome.causes {
            let cause = causes.entry(key.clone()).or_insert_with(|| Cause {
                kind: kind.clone(),
                title: title.clone(),
                first: outcome.index,
                count: 0,
            });
            cause.count += 1;
            cause.first = cause.first.min(outcome.index);
        }
    }
    let dir = plan.args.save_failures.as_deref();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("{}: {e}", dir.display())))?;
    }
    // One saved schedule per failing index, or, minimised, per cause.
    let mut saved: HashMap<(u64, Option<&str>), Value> = HashMap::new();
    let mut findings = Vec::new();
    for (key, cause) in &causes {
        let index = cause.first;
        let id = (index, plan.args.minimise.then_some(key.as_str()));
        if !saved.contains_key(&id) {
            let name = match id.1 {
                None => format!("schedule-{index}.trace"),
                Some(_) => format!("schedule-{index}-minimal-{}.trace", saved.len()),
            };
            saved.insert(
                id,
                save_schedule(plan, index, key, dir.map(|d| d.join(&name)))?,
            );
        }
        let schedule = saved[&id].clone();
        findings.push(json!({
            "key": key, "kind": cause.kind, "title": cause.title,
            "first_schedule": index, "count": cause.count, "schedule": schedule,
        }));
    }
    let failing = outcomes.iter().filter(|o| !o.causes.is_empty()).count();
    Ok(json!({
        "format": SUMMARY_FORMAT,
        "config": config_json(plan),
        "schedules_run": outcomes.len(),
        "guest_insns": outcomes.iter().map(|o| o.insns).sum::<u64>(),
        "failing_schedules": failing,
        "findings": findings,
    }))
}

fn config_json(plan: &Plan<'_>) -> Value {
    let a = plan.args;
    let name = |v: Option<clap::builder::PossibleValue>| v.map(|v| v.get_name().to_string());
    json!({
        "scenario": a.scenario, "variant": name(a.variant.and_then(|v| v.to_possible_value())),
        "seed": a.seed, "sched": name(a.sched.to_possible_value()), "explore_seed": a.explore_seed,
        "pct_depth": (a.sched == Strategy::Pct).then_some(a.pct_depth),
        "delay_bound": (a.sched == Strategy::Delay).then_some(a.delay_bound),
        "steps": plan.steps, "cpus": a.cpus, "quantum": a.quantum, "max_insns": a.max_insns,
        "inject": name(a.inject.and_then(|i| i.to_possible_value())), "scale": a.scale,
        "flush": name(a.flush.to_possible_value()),
        "schedules": a.schedules, "irq_arrivals": a.irq_arrivals,
        "kernel": a.kernel.as_ref().map(|p| p.display().to_string()), "cmdline": a.cmdline,
    })
}

/// The command (and, with a directory, the trace) of the failing schedule `index`,
/// minimised for the cause `key` if asked.
fn save_schedule(
    plan: &Plan<'_>,
    index: u64,
    key: &str,
    trace: Option<PathBuf>,
) -> Result<Value, BadInput> {
    let original = plan.change_points(index);
    let points = if plan.args.minimise {
        Some(minimise(plan, index, key, &original)?)
    } else {
        None
    };
    let sched = plan
        .sched_argv(index, points.as_deref())
        .expect("a schedule that ran");
    let command = |extra: &[String]| {
        let mut words = vec!["percpu-lab".to_string(), "run".to_string()];
        words.extend(plan.base_argv());
        words.extend(sched.iter().cloned());
        words.extend(extra.iter().cloned());
        let words: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
        words.join(" ")
    };
    let mut schedule = json!({
        "index": index, "change_points": original, "run": command(&[]),
    });
    if let Some(points) = &points {
        schedule["minimised_change_points"] = json!(points);
    }
    if let Some(path) = trace {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        if !path.exists() {
            let outcome = plan.run(index, &sched, Some(&path))?;
            if !outcome.causes.contains_key(key) {
                return Err(BadInput(format!(
                    "schedule {index} did not fail the same way when recorded (not deterministic?)"
                )));
            }
        }
        schedule["trace"] = json!(name);
        schedule["replay"] = json!(replay_command(plan.args.kernel.as_deref(), &path));
    }
    Ok(schedule)
}

/// Drops change points (or delays) one at a time, keeping each drop after which
/// the schedule still shows `key`, until none can go.
fn minimise(
    plan: &Plan<'_>,
    index: u64,
    key: &str,
    original: &[u64],
) -> Result<Vec<u64>, BadInput> {
    let mut points = original.to_vec();
    let mut i = 0;
    while i < points.len() {
        let mut fewer = points.clone();
        fewer.remove(i);
        let sched = plan
            .sched_argv(index, Some(&fewer))
            .expect("a schedule that ran");
        if plan.run(index, &sched, None)?.causes.contains_key(key) {
            points = fewer;
        } else {
            i += 1;
        }
    }
    Ok(points)
}

/// Prints the summary, writes it to the directory, and says how it ended.
fn finish(args: &ExploreArgs, summary: Value) -> Result<Verdict, BadInput> {
    if let Some(dir) = &args.save_failures {
        std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("{}: {e}", dir.display())))?;
        let mut file = AtomicFile::create(&dir.join("summary.json"))?;
        writeln!(file, "{}", serde_json::to_string_pretty(&summary)?)?;
        file.commit()?;
    }
    crate::end_quietly_on_closed_stdout();
    match args.report {
        ReportFormat::Json => println!("{summary}"),
        ReportFormat::Text => print_text(&summary),
    }
    let failing = summary["failing_schedules"].as_u64().unwrap_or(0);
    Ok(if failing > 0 {
        Verdict::Findings
    } else {
        Verdict::Clean
    })
}

/// The command that replays the saved `trace` (with the kernel it ran, when that
/// is not the built-in guest).
fn replay_command(kernel: Option<&Path>, trace: &Path) -> String {
    let mut words = vec!["percpu-lab".to_string(), "replay".to_string()];
    if let Some(kernel) = kernel {
        words.extend(["--kernel".into(), kernel.display().to_string()]);
    }
    words.push(trace.display().to_string());
    let words: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
    words.join(" ")
}

/// `word` as one word of a POSIX shell command line.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn print_text(summary: &Value) {
    let c = &summary["config"];
    let what = match (c["scenario"].as_str(), c["variant"].as_str()) {
        (Some(scenario), Some(variant)) => format!("{scenario} / {variant}"),
        _ => c["kernel"].as_str().unwrap_or("?").to_string(),
    };
    println!(
        "explored {} schedules of {what} ({} scheduler, exploration seed {}): {} failing, {} distinct findings",
        summary["schedules_run"],
        c["sched"].as_str().unwrap_or("?"), c["explore_seed"], summary["failing_schedules"],
        summary["findings"].as_array().map_or(0, Vec::len),
    );
    for f in summary["findings"].as_array().into_iter().flatten() {
        let s = &f["schedule"];
        println!(
            "- {}: first at schedule {}, in {} schedules",
            f["key"].as_str().unwrap_or("?"),
            f["first_schedule"],
            f["count"]
        );
        println!("    first:  {}", f["title"].as_str().unwrap_or("?"));
        println!("    run:    {}", s["run"].as_str().unwrap_or("?"));
        if let Some(replay) = s["replay"].as_str() {
            println!("    replay: {replay}");
        }
    }
}

/// `--merge DIR...`: the summary of the union of the shards' schedules.
fn merge(args: &ExploreArgs) -> Result<Verdict, BadInput> {
    let mut config: Option<Value> = None;
    let mut run = 0;
    let mut failing = 0;
    let mut insns = 0;
    let mut findings: BTreeMap<String, Value> = BTreeMap::new();
    for dir in &args.merge {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
        let summary: Value = serde_json::from_str(&text)
            .map_err(|e| BadInput(format!("{}: not an explore summary: {e}", path.display())))?;
        if summary["format"] != SUMMARY_FORMAT {
            return Err(BadInput(format!(
                "{}: not an explore summary ({SUMMARY_FORMAT})",
                path.display()
            )));
        }
        if config.as_ref().is_some_and(|c| *c != summary["config"]) {
            return Err(BadInput(format!(
                "{}: explored another configuration than the first directory",
                path.display()
            )));
        }
        config = Some(summary["config"].clone());
        run += summary["schedules_run"].as_u64().unwrap_or(0);
        insns += summary["guest_insns"].as_u64().unwrap_or(0);
        failing += summary["failing_schedules"].as_u64().unwrap_or(0);
        for f in summary["findings"].as_array().into_iter().flatten() {
            let key = f["key"].as_str().unwrap_or_default().to_string();
            let mut f = f.clone();
            if let Some(trace) = f["schedule"]["trace"].as_str() {
                let path = dir.join(trace);
                let kernel = summary["config"]["kernel"].as_str().map(Path::new);
                f["schedule"]["replay"] = json!(replay_command(kernel, &path));
            }
            match findings.get_mut(&key) {
                Some(seen) => {
                    let count =
                        seen["count"].as_u64().unwrap_or(0) + f["count"].as_u64().unwrap_or(0);
                    if f["first_schedule"].as_u64() < seen["first_schedule"].as_u64() {
                        *seen = f;
                    }
                    seen["count"] = json!(count);
                }
                None => {
                    findings.insert(key, f);
                }
            }
        }
    }
    let summary = json!({
        "format": SUMMARY_FORMAT,
        "config": config.unwrap_or(Value::Null),
        "schedules_run": run,
        "guest_insns": insns,
        "failing_schedules": failing,
        "findings": findings.into_values().collect::<Vec<_>>(),
    });
    finish(args, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_masked_but_words_kept() {
        assert_eq!(
            without_numbers("PANIC: no alloc for 200 ticks; 68 done at 0x4008a29c, cpu2"),
            "PANIC: no alloc for N ticks; N done at N, cpu2"
        );
        assert_eq!(without_numbers("x 12 34"), "x N N");
        assert_eq!(without_numbers("1.25 at t=7, 0x1f:3"), "N.N at t=N, N:N");
    }

    #[test]
    fn shards_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("1/0").is_err());
        assert!(parse_shard("x/2").is_err());
        assert!(parse_shard("3").is_err());
    }

    #[test]
    fn outcomes_survive_the_worker_line_format() {
        let mut causes = BTreeMap::new();
        causes.insert(
            "deadlock: a b".to_string(),
            ("deadlock".to_string(), "t".to_string()),
        );
        let outcome = Outcome {
            index: 7,
            insns: 1234,
            causes,
        };
        assert_eq!(Outcome::from_json(&outcome.to_json()), Some(outcome));
    }
}
