//! The machine's part of `percpu-lab bench`: what a guest instruction costs the host,
//! measured so that no figure flatters.
//!
//! - The workload is `storm` (every CPU allocates, frees and checks per-CPU areas),
//!   scaled (`--scale`) so that each CPU count runs at least [`STEADY_INSNS`] guest
//!   instructions: steady state, not set-up. The share of instructions spent inside
//!   `spin_lock` is printed beside it, because spinning is cheap to emulate and
//!   would make a machine look fast.
//! - Only CPU time is measured (user + system), never wall time: `wait4` for a
//!   child process, the thread's CPU clock in this process. Each figure is the
//!   median of [`REPEATS`] runs, the compared sides interleaved run by run.
//! - Set-up (a new machine, its first instruction, its end) is measured apart.
//! - Comparisons are made only like for like: the raw Unicorn instance runs the
//!   same guest code path (storm on one CPU, to power-off, which takes within a few
//!   tenths of a percent of our instruction count); QEMU runs the same Image with
//!   the same bootargs, so the same guest work, and is compared by whole-process
//!   CPU time. What each side includes is printed with it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use emu::{KernelImage, Machine, RunEnd};
use serde_json::{json, Value};

use crate::bench_check::{own_peak_rss_bytes, run_child_within, side_by_side};
use crate::BadInput;

/// Guest instructions each measured `storm` run reaches at least.
pub const STEADY_INSNS: u64 = 100_000_000;
/// Runs per figure (the median is printed).
pub const REPEATS: usize = 3;
pub const CPU_COUNTS: [usize; 4] = [1, 2, 4, 8];
/// CPU counts compared with QEMU.
pub const QEMU_CPUS: [usize; 2] = [1, 4];
const MIB: f64 = 1024.0 * 1024.0;

/// CPU time of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux
    // knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The median of `values` (sorted here; NaN-free figures).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `storm` at one CPU count, scaled to steady state.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub cpus: usize,
    pub scale: u64,
}

impl Workload {
    /// The `percpu-lab run` arguments of this workload.
    pub fn run_args(&self) -> Vec<String> {
        [
            "--scenario",
            "storm",
            "--variant",
            "fixed",
            "--sched",
            "rr",
            "--seed",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--cpus".into(),
            self.cpus.to_string(),
            "--scale".into(),
            self.scale.to_string(),
        ])
        .collect()
    }

    /// The guest's own bootargs for it (what QEMU gets).
    pub fn bootargs(&self) -> String {
        format!("scenario=storm seed=0 variant=fixed scale={}", self.scale)
    }

    fn machine(&self, kernel: &KernelImage, extra: &[&str]) -> Result<Machine, BadInput> {
        let mut argv: Vec<String> = vec!["run".into()];
        argv.extend(self.run_args());
        argv.extend(extra.iter().map(|s| s.to_string()));
        let config = crate::tracefile::parse_run_args(&argv)?.machine_config()?;
        Ok(Machine::new(config, kernel)?)
    }

    /// The scale at which `cpus` CPUs run at least [`STEADY_INSNS`], fitted to the
    /// deterministic instruction counts of a run at scale 1 and one at about a
    /// quarter of the target (bare child processes, so that this process stays
    /// small for the peak RSS figures): a fixed part (boot, set-up, power-off)
    /// plus a part per unit of scale. A multiple of the scale-1 count undershot
    /// (91 M at 4 CPUs); storm does not grow quite linearly, so the figures say
    /// whether the target was reached.
    pub fn steady(exe: &Path, kernel: Option<&Path>, cpus: usize) -> Result<Self, BadInput> {
        let insns_at = |scale| {
            ours(exe, kernel, Workload { cpus, scale }, true)?
                .insns
                .ok_or_else(|| BadInput("percpu-lab run reported no instruction count".into()))
        };
        let one = insns_at(1)?;
        let probe = (STEADY_INSNS / 4 / one.max(1)).max(2);
        let at_probe = insns_at(probe)?;
        // 5% over the target: at 1 CPU the fit falls about 3% short.
        let aim = STEADY_INSNS + STEADY_INSNS / 20;
        Ok(Workload {
            cpus,
            scale: scale_for(aim, (1, one), (probe, at_probe)),
        })
    }
}

/// The smallest scale whose run reaches `target` instructions, on the line through
/// two (scale, instructions) points.
fn scale_for(target: u64, (s1, i1): (u64, u64), (s2, i2): (u64, u64)) -> u64 {
    let per_scale = (i2.saturating_sub(i1) / s2.saturating_sub(s1).max(1)).max(1);
    let fixed = i1.saturating_sub(per_scale * s1);
    target.saturating_sub(fixed).div_ceil(per_scale).max(1)
}

/// One run's guest instructions and the host CPU time they took.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub insns: u64,
    pub cpu: Duration,
}

impl Cost {
    pub fn ns_per_insn(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e9 / self.insns.max(1) as f64
    }
}

/// The machine's run loop in this process, set-up excluded: the scheduler, the
/// timer and GIC model and the system-register hooks, Unicorn's built-in MMU, no
/// recording.
pub fn emulation(kernel: &KernelImage, work: Workload) -> Result<Cost, BadInput> {
    let mut machine = work.machine(kernel, &["--mmu", "builtin"])?;
    let start = thread_cpu();
    let outcome = machine.run(&mut |_, _| {});
    let cpu = thread_cpu() - start;
    crate::bench_run::require_clean(&outcome.end, &format!("storm on {} cpus", work.cpus))?;
    Ok(Cost {
        insns: outcome.total_insns,
        cpu,
    })
}

/// Raw Unicorn on the same guest path: storm on one bare instance to power-off.
pub fn raw(kernel: &KernelImage, scale: u64) -> Result<Cost, BadInput> {
    Ok(raw_run(kernel, scale, Engine::Counted)?.0)
}

/// How much of our machine a raw run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// The raw instance: block counting, the exception stop, the devices.
    Counted,
    /// Unicorn's floor: not even the block hook.
    Uncounted,
}

/// A raw run of storm at `scale` to power-off: its cost (no instructions when
/// uncounted) and the guest's console, which tells whether two runs took one path.
fn raw_run(kernel: &KernelImage, scale: u64, engine: Engine) -> Result<(Cost, String), BadInput> {
    let bootargs = Workload { cpus: 1, scale }.bootargs();
    let mut instance = match engine {
        Engine::Counted => emu::bench::RawInstance::new(kernel, &bootargs)?,
        Engine::Uncounted => emu::bench::RawInstance::uncounted(kernel, &bootargs)?,
    };
    let start = thread_cpu();
    let run = instance.run(u64::MAX / 4);
    let cpu = thread_cpu() - start;
    crate::bench_run::require_clean(&run.end, "storm on the raw instance")?;
    let insns = match engine {
        Engine::Counted => run.insns,
        Engine::Uncounted => 0,
    };
    Ok((Cost { insns, cpu }, run.console))
}

/// Unicorn's floor on the path of the counted raw run `counted` (with its console
/// `path`): the median CPU time of `floors` over `counted`'s instructions, or `None`
/// if any floor run printed another console (another path: no like-for-like figure).
fn floor_cost(counted: &Cost, path: &str, floors: Vec<(Cost, String)>) -> Option<Cost> {
    if floors.is_empty() || floors.iter().any(|(_, console)| console != path) {
        return None;
    }
    let mut cpus: Vec<Duration> = floors.into_iter().map(|(c, _)| c.cpu).collect();
    cpus.sort();
    Some(Cost {
        insns: counted.insns,
        cpu: cpus[cpus.len() / 2],
    })
}

/// The share of guest instructions executed inside `spin_lock` (acquiring, which
/// under contention is mostly waiting): a deterministic count.
pub fn spin_share(kernel: &KernelImage, work: Workload) -> Result<f64, BadInput> {
    let mut machine = work.machine(kernel, &["--mmu", "builtin"])?;
    let probe = machine.probe_calls("spin_lock")?;
    let outcome = machine.run(&mut |_, _| {});
    crate::bench_run::require_clean(&outcome.end, "storm with a spin_lock probe")?;
    Ok(machine.call_stats(probe).insns as f64 / outcome.total_insns.max(1) as f64)
}

/// A whole process run to the end: its CPU time, peak RSS, and the guest work it
/// did (allocations plus frees, from the guest's summary line).
#[derive(Debug, Clone, Copy)]
pub struct ProcessCost {
    pub cpu: Duration,
    /// Its peak RSS, when that is its own (see [`own_rss`]).
    pub peak_rss_bytes: Option<u64>,
    pub ops: u64,
    /// Guest instructions, when the process reports them (ours does, QEMU not).
    pub insns: Option<u64>,
    /// Killed once its CPU time passed its cap (QEMU's costlier mode, see
    /// [`qemu`]): `cpu` and the peak RSS are what it had used by then, and it did
    /// no countable work.
    pub stopped: bool,
}

/// `allocs=A frees=F` of the guest's `storm:` summary line in `console`.
fn storm_ops(console: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains("storm: allocs="))?;
    let field = |name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(field("allocs=")? + field("frees=")?)
}

fn finished(what: &str, cmd: &mut Command) -> Result<crate::bench_check::ChildUsage, BadInput> {
    finished_within(what, cmd, None)
}

/// [`finished`], the child killed once its CPU time passes `cpu_cap`; a child so
/// stopped is no failure (see [`stopped`]).
fn finished_within(
    what: &str,
    cmd: &mut Command,
    cpu_cap: Option<Duration>,
) -> Result<crate::bench_check::ChildUsage, BadInput> {
    let child = run_child_within(cmd, cpu_cap).map_err(|e| BadInput(format!("{what}: {e}")))?;
    if !child.status.success() && !stopped(&child, cpu_cap) {
        // A JSON report's findings say more than the console's last line.
        let findings: Option<Vec<String>> = serde_json::from_slice::<Value>(&child.stdout)
            .ok()
            .and_then(|report| {
                let list = report["findings"].as_array()?;
                Some(
                    list.iter()
                        .map(|f| format!("{} {}", f["kind"], f["key"]))
                        .collect(),
                )
            });
        let stderr = String::from_utf8_lossy(&child.stderr);
        let why = match findings {
            Some(findings) if !findings.is_empty() => format!("found {}", findings.join(", ")),
            _ => stderr.lines().last().unwrap_or("").to_string(),
        };
        return Err(BadInput(format!("{what} failed ({}): {why}", child.status)));
    }
    Ok(child)
}

/// Whether `child` was killed for passing `cpu_cap`.
fn stopped(child: &crate::bench_check::ChildUsage, cpu_cap: Option<Duration>) -> bool {
    use std::os::unix::process::ExitStatusExt;
    cpu_cap.is_some_and(|cap| child.cpu > cap) && child.status.signal() == Some(libc::SIGKILL)
}

/// `percpu-lab run` on `work` as a child process: everything on (the checked MMU,
/// recording, the lock validator and the TLB check), or `bare` (Unicorn's built-in
/// MMU, no recording, no analyses).
pub fn ours(
    exe: &Path,
    kernel: Option<&Path>,
    work: Workload,
    bare: bool,
) -> Result<ProcessCost, BadInput> {
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .args(work.run_args())
        .args(["--report", "json"]);
    if bare {
        cmd.args(["--mmu", "builtin", "--bare"]);
    }
    if let Some(kernel) = kernel {
        cmd.arg("--kernel").arg(kernel);
    }
    let child = finished("percpu-lab run", &mut cmd)?;
    let report: Value = serde_json::from_slice(&child.stdout)
        .map_err(|e| BadInput(format!("percpu-lab run gave no JSON report: {e}")))?;
    let console = String::from_utf8_lossy(&child.stderr);
    Ok(ProcessCost {
        cpu: child.cpu,
        peak_rss_bytes: own_rss(child.peak_rss_bytes),
        ops: storm_ops(&console).unwrap_or(0),
        insns: report["stats"]["total_insns"].as_u64(),
        stopped: false,
    })
}

/// How QEMU runs the guest: single-threaded TCG (one host thread for all vCPUs,
/// what our test suite uses), or its default multi-threaded TCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuTcg {
    Single,
    Multi,
}

impl QemuTcg {
    pub const BOTH: [QemuTcg; 2] = [QemuTcg::Single, QemuTcg::Multi];

    pub fn accel(self) -> &'static str {
        match self {
            QemuTcg::Single => "tcg,thread=single",
            QemuTcg::Multi => "tcg,thread=multi",
        }
    }
}

/// `qemu-system-aarch64 -M virt` booting `image` with the workload's bootargs.
/// QEMU on `work` in `tcg`'s mode, killed once its CPU time passes `cpu_cap`.
pub fn qemu(
    image: &Path,
    work: Workload,
    tcg: QemuTcg,
    cpu_cap: Option<Duration>,
) -> Result<ProcessCost, BadInput> {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-M",
        "virt,gic-version=2",
        "-cpu",
        "cortex-a72",
        "-m",
        "128M",
    ])
    .args(["-smp", &work.cpus.to_string()])
    .args(["-nographic", "-monitor", "none", "-no-reboot"])
    .args(["-accel", tcg.accel()])
    .arg("-kernel")
    .arg(image)
    .args(["-append", &work.bootargs()]);
    let child = finished_within("qemu-system-aarch64", &mut cmd, cpu_cap)?;
    if stopped(&child, cpu_cap) {
        return Ok(ProcessCost {
            cpu: child.cpu,
            peak_rss_bytes: own_rss(child.peak_rss_bytes),
            ops: 0,
            insns: None,
            stopped: true,
        });
    }
    let console = String::from_utf8_lossy(&child.stdout);
    let ops = storm_ops(&console).ok_or_else(|| {
        let last: Vec<&str> = console.lines().rev().take(3).collect();
        BadInput(format!(
            "QEMU ({}, {} cpus, {}) printed no storm summary; its last lines: {:?}",
            tcg.accel(),
            work.cpus,
            work.bootargs(),
            last
        ))
    })?;
    Ok(ProcessCost {
        cpu: child.cpu,
        peak_rss_bytes: own_rss(child.peak_rss_bytes),
        ops,
        insns: None,
        stopped: false,
    })
}

/// [`qemu`], run again once if it fails: its guest timer follows host time, so
/// a loaded host can trip the guest's own watchdogs (guest/test-qemu.sh says
/// more). A second failure is the answer.
fn qemu_twice(
    image: &Path,
    work: Workload,
    tcg: QemuTcg,
    cpu_cap: Option<Duration>,
) -> Result<ProcessCost, BadInput> {
    qemu(image, work, tcg, cpu_cap).or_else(|_| qemu(image, work, tcg, cpu_cap))
}

/// Whether QEMU can be run here.
pub fn qemu_available() -> bool {
    Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A child's peak RSS (`ru_maxrss`) is its own only while this process has stayed
/// smaller (see `bench_check`): otherwise there is no figure.
fn own_rss(child_peak: u64) -> Option<u64> {
    (child_peak > own_peak_rss_bytes()?).then_some(child_peak)
}

/// What a machine costs outside its run: building it (RAM, device tree, one
/// Unicorn instance per CPU), its first instruction (the first slice: the first
/// translations), and dropping it. Medians over [`REPEATS`] machines.
#[derive(Debug, Clone, Copy)]
pub struct SetUp {
    pub cpus: usize,
    pub new: Duration,
    pub first_insn: Duration,
    pub drop: Duration,
    /// Restoring a power-on snapshot after a whole storm run.
    pub restore: Duration,
    /// That storm run from a fresh machine, and again from the restored one (its
    /// code already translated).
    pub cold_run: Duration,
    pub warm_run: Duration,
}

pub fn set_up(kernel: &KernelImage, cpus: usize) -> Result<SetUp, BadInput> {
    let work = Workload { cpus, scale: 1 };
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..REPEATS {
        let start = thread_cpu();
        let mut machine = work.machine(kernel, &["--mmu", "builtin", "--max-insns", "1"])?;
        let built = thread_cpu();
        let outcome = machine.run(&mut |_, _| {});
        let first = thread_cpu();
        if !matches!(outcome.end, RunEnd::Watchdog { .. }) {
            return Err(BadInput(format!(
                "a one-instruction run ended otherwise: {:?}",
                outcome.end
            )));
        }
        drop(machine);
        let dropped = thread_cpu();
        for (sample, (from, to)) in
            samples
                .iter_mut()
                .zip([(start, built), (built, first), (first, dropped)])
        {
            sample.push((to - from).as_secs_f64());
        }
    }
    let [new, first_insn, drop] = samples.map(|s| Duration::from_secs_f64(median(s)));
    let (mut restores, mut colds, mut warms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let mut machine = work.machine(kernel, &["--mmu", "builtin"])?;
        let snapshot = machine.snapshot()?;
        let start = thread_cpu();
        let cold = machine.run(&mut |_, _| {});
        let ran = thread_cpu();
        machine.restore(&snapshot)?;
        let restored = thread_cpu();
        let warm = machine.run(&mut |_, _| {});
        let ran_again = thread_cpu();
        if cold != warm {
            return Err(BadInput(
                "a restored run differed from the fresh one".into(),
            ));
        }
        colds.push((ran - start).as_secs_f64());
        restores.push((restored - ran).as_secs_f64());
        warms.push((ran_again - restored).as_secs_f64());
    }
    let secs = |v| Duration::from_secs_f64(median(v));
    Ok(SetUp {
        cpus,
        new,
        first_insn,
        drop,
        restore: secs(restores),
        cold_run: secs(colds),
        warm_run: secs(warms),
    })
}

/// Everything this part measured.
pub struct MachineFigures {
    pub rows: Vec<Row>,
    /// Raw Unicorn and ours on the same path at 1 CPU.
    pub raw: Cost,
    /// The whole run's speed against raw Unicorn at 1 CPU: the median of the
    /// ratios of runs made back to back.
    pub whole_vs_raw: f64,
    /// The run loop's speed against raw Unicorn at 1 CPU, from pairs likewise.
    pub loop_vs_raw: f64,
    /// Unicorn's floor on the raw run's path (see [`floor_cost`]).
    pub floor: Option<Cost>,
    pub raw_scale: u64,
    pub set_up: SetUp,
    /// Per QEMU CPU count: ours everything on, ours bare, QEMU per TCG mode.
    pub qemu: Option<Vec<QemuRow>>,
}

/// One CPU count.
pub struct Row {
    pub work: Workload,
    pub insns: u64,
    pub spin_share: f64,
    /// Whole `percpu-lab run` process, everything on (median).
    pub whole: ProcessCost,
    /// The run loop alone (median).
    pub emulation: Cost,
}

pub struct QemuRow {
    pub cpus: usize,
    pub ours: ProcessCost,
    pub bare: ProcessCost,
    /// Each mode, how many runs its median is of, and that median.
    pub qemu: Vec<(QemuTcg, usize, ProcessCost)>,
}

/// Whether QEMU mode `t`'s first run took more than twice the CPU of another
/// mode's first run: it is not the cheaper mode, so its further runs are skipped
/// (multi-threaded TCG at 4 CPUs, whose idle threads spin, costs several times
/// single-threaded TCG and was the bench's longest single item).
/// The CPU time of the cheapest first run among `modes`, if any has run.
fn cheapest_first_run(modes: &[Vec<ProcessCost>]) -> Option<Duration> {
    modes
        .iter()
        .filter_map(|runs| runs.first())
        .map(|c| c.cpu)
        .min()
}

fn far_costlier(modes: &[Vec<ProcessCost>], t: usize) -> bool {
    let first = |runs: &Vec<ProcessCost>| runs.first().map(|c| c.cpu);
    let Some(this) = first(&modes[t]) else {
        return false;
    };
    modes
        .iter()
        .enumerate()
        .filter(|&(other, _)| other != t)
        .filter_map(|(_, runs)| first(runs))
        .any(|other| this > 2 * other)
}

/// The median by CPU time of `costs` (each a whole run, so the median run).
fn median_run(mut costs: Vec<ProcessCost>) -> ProcessCost {
    costs.sort_by_key(|c| c.cpu);
    costs[costs.len() / 2]
}

fn median_cost(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by(|a, b| a.ns_per_insn().total_cmp(&b.ns_per_insn()));
    costs[costs.len() / 2]
}

/// Storm scaled to [`STEADY_INSNS`] for each of [`CPU_COUNTS`] ([`Workload::steady`]).
/// Only instruction counts come of it: the CPU counts' children may share the host.
pub fn calibrate(exe: &Path, kernel_path: Option<&Path>) -> Result<Vec<Workload>, BadInput> {
    side_by_side(&CPU_COUNTS, |&cpus| {
        Workload::steady(exe, kernel_path, cpus)
    })
    .map_err(|e| e.unwrap_or_else(|| BadInput("a calibration thread panicked".into())))
}

/// Measures it all on `works` (from [`calibrate`]); `progress` hears what runs
/// now. Child processes first, while this process is still small (their peak RSS
/// figures depend on it).
pub fn measure(
    exe: &Path,
    kernel_path: Option<&Path>,
    kernel: &KernelImage,
    image: Option<&Path>,
    works: &[Workload],
    progress: &dyn Fn(String),
) -> Result<MachineFigures, BadInput> {
    let image = image.filter(|_| qemu_available());
    let mut whole: Vec<Vec<ProcessCost>> = vec![Vec::new(); works.len()];
    // Per QEMU CPU count: ours bare, and QEMU in each TCG mode.
    let mut bare: Vec<Vec<ProcessCost>> = vec![Vec::new(); QEMU_CPUS.len()];
    let mut peer: Vec<Vec<Vec<ProcessCost>>> =
        vec![vec![Vec::new(); QemuTcg::BOTH.len()]; QEMU_CPUS.len()];
    // The whole run against raw Unicorn: each 1-CPU whole run paired with a raw
    // run right after it, so that the host's drift between phases stays out.
    let mut whole_vs_raw = Vec::new();
    // Unicorn's floor, run after each paired raw run, in turn with QEMU's runs.
    let (mut floors, mut counted_path) = (Vec::new(), None);
    for round in 1..=REPEATS {
        for (i, work) in works.iter().enumerate() {
            progress(format!(
                "bench: whole runs, round {round}/{REPEATS}, {} cpus",
                work.cpus
            ));
            let run = ours(exe, kernel_path, *work, false)?;
            if work.cpus == 1 {
                let (raw, path) = raw_run(kernel, work.scale, Engine::Counted)?;
                whole_vs_raw.push(raw.ns_per_insn() / ns_per_insn(&run).unwrap_or(f64::NAN));
                floors.push(raw_run(kernel, work.scale, Engine::Uncounted)?);
                counted_path.get_or_insert((raw, path));
            }
            whole[i].push(run);
            let (Some(image), Some(q)) = (image, QEMU_CPUS.iter().position(|&c| c == work.cpus))
            else {
                continue;
            };
            bare[q].push(ours(exe, kernel_path, *work, true)?);
            for (t, tcg) in QemuTcg::BOTH.iter().enumerate() {
                if round > 1 && far_costlier(&peer[q], t) {
                    continue;
                }
                // Twice a mode already measured is all the comparison needs.
                let cap = peer[q][t]
                    .is_empty()
                    .then(|| cheapest_first_run(&peer[q]).map(|cpu| 2 * cpu))
                    .flatten();
                peer[q][t].push(qemu_twice(image, *work, *tcg, cap)?);
            }
        }
    }
    let qemu = image.map(|_| {
        QEMU_CPUS
            .iter()
            .zip(bare.into_iter().zip(peer))
            .map(|(&cpus, (bare, peer))| {
                let at = CPU_COUNTS
                    .iter()
                    .position(|&c| c == cpus)
                    .expect("measured");
                QemuRow {
                    cpus,
                    ours: median_run(whole[at].clone()),
                    bare: median_run(bare),
                    qemu: QemuTcg::BOTH
                        .iter()
                        .copied()
                        .zip(peer)
                        .map(|(tcg, runs)| (tcg, runs.len(), median_run(runs)))
                        .collect(),
                }
            })
            .collect()
    });
    progress("bench: the run loop in process, and raw Unicorn".into());
    let raw_scale = works[0].scale;
    let mut emulations: Vec<Vec<Cost>> = vec![Vec::new(); works.len()];
    let (mut raws, mut loop_vs_raw) = (Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        for (i, work) in works.iter().enumerate() {
            let run_loop = emulation(kernel, *work)?;
            if work.cpus == 1 {
                // Paired like the whole runs: the raw run right after.
                let raw = raw(kernel, raw_scale)?;
                loop_vs_raw.push(raw.ns_per_insn() / run_loop.ns_per_insn());
                raws.push(raw);
            }
            emulations[i].push(run_loop);
        }
    }
    progress("bench: spinning and set-up".into());
    // Guest instruction counts only: the CPU counts' runs may share the host, as
    // long as nothing timed runs beside them.
    let spin_shares = side_by_side(works, |&work| spin_share(kernel, work))
        .map_err(|e| e.unwrap_or_else(|| BadInput("a spin-share thread panicked".into())))?;
    let mut rows = Vec::new();
    for (((work, whole), emulations), spin_share) in
        works.iter().zip(whole).zip(emulations).zip(spin_shares)
    {
        let emulation = median_cost(emulations);
        rows.push(Row {
            work: *work,
            insns: emulation.insns,
            spin_share,
            whole: median_run(whole),
            emulation,
        });
    }
    let floor = counted_path.and_then(|(counted, path)| floor_cost(&counted, &path, floors));
    Ok(MachineFigures {
        rows,
        raw: median_cost(raws),
        loop_vs_raw: median(loop_vs_raw),
        floor,
        whole_vs_raw: median(whole_vs_raw),
        raw_scale,
        set_up: set_up(kernel, 4)?,
        qemu,
    })
}

fn ns_per_insn(cost: &ProcessCost) -> Option<f64> {
    cost.insns
        .map(|insns| cost.cpu.as_secs_f64() * 1e9 / insns.max(1) as f64)
}

fn ops_per_cpu_second(cost: &ProcessCost) -> f64 {
    cost.ops as f64 / cost.cpu.as_secs_f64()
}

fn rss_text(cost: &ProcessCost) -> String {
    cost.peak_rss_bytes
        .map_or("peak RSS not measurable".into(), |bytes| {
            format!("peak RSS {:.0} MiB", bytes as f64 / MIB)
        })
}

impl MachineFigures {
    pub fn print(&self) {
        // The scale comes from a linear fit: claim the target only where it held.
        let reached = self.rows.iter().all(|row| row.insns >= STEADY_INSNS);
        println!(
            "machine on `storm --variant fixed` (round-robin, seed 0), each CPU count scaled to \
             {} {} M guest instructions; host CPU time, median of {REPEATS} interleaved runs:",
            if reached { ">=" } else { "about" },
            STEADY_INSNS / 1_000_000
        );
        println!(
            "  cpus  scale  guest insns  in spin_lock  whole run ns/insn  allocs+frees per CPU-s  run loop ns/insn"
        );
        for row in &self.rows {
            println!(
                "  {:4}  {:5}  {:9.1} M  {:11.1}%  {:17.2}  {:22.0}  {:16.2}",
                row.work.cpus,
                row.work.scale,
                row.insns as f64 / 1e6,
                row.spin_share * 100.0,
                ns_per_insn(&row.whole).unwrap_or(f64::NAN),
                ops_per_cpu_second(&row.whole),
                row.emulation.ns_per_insn()
            );
        }
        println!(
            "  whole run: `percpu-lab run` as a child process (start-up, set-up, the checked MMU, \
             recording into the lock validator and the TLB check, the report), CPU time from wait4"
        );
        println!(
            "  run loop: the machine's run in this process (scheduler, timer and GIC model, \
             system-register hooks; Unicorn's built-in MMU, no recording), thread CPU time, set-up excluded"
        );
        println!(
            "  in spin_lock: guest instructions inside spin_lock (acquiring; under contention mostly waiting)"
        );
        let one = &self.rows[0];
        println!(
            "raw Unicorn on the same guest path (storm on 1 cpu, scale {}, to power-off: {:.1} M insns; ours {:.1} M):",
            self.raw_scale,
            self.raw.insns as f64 / 1e6,
            one.insns as f64 / 1e6
        );
        println!(
            "  one bare instance: block counting, the exception stop and the MMIO devices only \
             (no scheduler, timer model, system-register hooks or recording), thread CPU time"
        );
        let raw = self.raw.ns_per_insn();
        println!(
            "  raw {raw:.2} ns/insn; our run loop {:.2} ns/insn: {:.2}x raw speed; our whole run \
             {:.2} ns/insn: {:.2}x raw speed (goal >= 0.5) (speeds: medians of {REPEATS} runs \
             each paired with a raw run right after it)",
            one.emulation.ns_per_insn(),
            self.loop_vs_raw,
            ns_per_insn(&one.whole).unwrap_or(f64::NAN),
            self.whole_vs_raw
        );
        if let Some(four) = self.rows.iter().find(|r| r.work.cpus == 4) {
            println!(
                "  the run loop at 4 cpus, where the goal is set: {:.2} ns/insn, {:.2}x raw's \
                 speed (goal >= 0.8; four instances taking turns, not raw's path)",
                four.emulation.ns_per_insn(),
                raw / four.emulation.ns_per_insn()
            );
        }
        match &self.floor {
            Some(floor) => println!(
                "  Unicorn's floor: that instance without even its block hook (nothing counted or \
                 stopped; the same console, so the same instructions) {:.2} ns/insn: counting \
                 blocks is {:.0}% of raw's time (median of {REPEATS})",
                floor.ns_per_insn(),
                100.0 * (1.0 - floor.ns_per_insn() / raw)
            ),
            None => println!(
                "  Unicorn's floor: no figure (without its block hook the guest printed another \
                 console: not the same path)"
            ),
        }
        let s = &self.set_up;
        println!(
            "set-up on {} cpus (median of {REPEATS}): new machine {:.0} us, first instruction {:.0} us, \
             drop {:.0} us (thread CPU time)",
            s.cpus,
            s.new.as_secs_f64() * 1e6,
            s.first_insn.as_secs_f64() * 1e6,
            s.drop.as_secs_f64() * 1e6
        );
        println!(
            "snapshots: restoring a power-on snapshot {:.0} us = {:.1}% of the storm run it precedes \
             (goal <= 5); that run {:.1} ms from a fresh machine, {:.1} ms restored (code translated)",
            s.restore.as_secs_f64() * 1e6,
            100.0 * s.restore.as_secs_f64() / s.warm_run.as_secs_f64(),
            s.cold_run.as_secs_f64() * 1e3,
            s.warm_run.as_secs_f64() * 1e3
        );
        match &self.qemu {
            None => println!(
                "QEMU peer: not measured (needs qemu-system-aarch64 and the built-in guest's Image)"
            ),
            Some(rows) => {
                println!(
                    "QEMU TCG peer (qemu-system-aarch64 -M virt, the same Image and bootargs, so the \
                     same guest work): whole-process CPU time and peak RSS, median of {REPEATS} interleaved runs:"
                );
                for row in rows {
                    let best = row
                        .qemu
                        .iter()
                        .min_by_key(|(_, _, c)| c.cpu)
                        .expect("both modes measured");
                    let qemu: Vec<String> = row
                        .qemu
                        .iter()
                        .map(|(tcg, runs, c)| {
                            if c.stopped {
                                return format!(
                                    "{} stopped past {:.2} s (twice the other mode's CPU; not repeated), {} by then",
                                    tcg.accel(),
                                    c.cpu.as_secs_f64(),
                                    rss_text(c)
                                );
                            }
                            let once = match *runs {
                                REPEATS => String::new(),
                                runs => format!(
                                    " ({runs} run: over twice the other mode's CPU, not repeated)"
                                ),
                            };
                            format!(
                                "{} {:.2} s{once}, {}",
                                tcg.accel(),
                                c.cpu.as_secs_f64(),
                                rss_text(c)
                            )
                        })
                        .collect();
                    println!(
                        "  {} cpu(s): ours everything on {:.2} s, {}; ours --mmu builtin, no recording {:.2} s, {}; QEMU {}",
                        row.cpus,
                        row.ours.cpu.as_secs_f64(),
                        rss_text(&row.ours),
                        row.bare.cpu.as_secs_f64(),
                        rss_text(&row.bare),
                        qemu.join("; ")
                    );
                    println!(
                        "    ours / QEMU's cheaper mode ({}): {:.2}x CPU everything on, {:.2}x bare (goal <= 1.0)",
                        best.0.accel(),
                        row.ours.cpu.as_secs_f64() / best.2.cpu.as_secs_f64(),
                        row.bare.cpu.as_secs_f64() / best.2.cpu.as_secs_f64()
                    );
                    if let Some(floor) = self.floor.filter(|_| row.cpus == 1) {
                        let ratio = floor.cpu.as_secs_f64() / best.2.cpu.as_secs_f64();
                        println!(
                            "    Unicorn's floor on this work: {:.2} s, emulation alone without \
                             process start-up = {ratio:.2}x QEMU's whole process{}",
                            floor.cpu.as_secs_f64(),
                            if ratio > 1.0 {
                                ": at 1 cpu the goal is below what the engine itself can do"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
    }

    pub fn json(&self) -> Value {
        let process = |c: &ProcessCost| {
            json!({"cpu_seconds": c.cpu.as_secs_f64(), "peak_rss_bytes": c.peak_rss_bytes,
                   "allocs_and_frees": c.ops, "guest_insns": c.insns, "stopped": c.stopped})
        };
        json!({
            "workload": "storm --variant fixed --sched rr --seed 0",
            "repeats": REPEATS,
            "rows": self.rows.iter().map(|r| json!({
                "cpus": r.work.cpus, "scale": r.work.scale, "guest_insns": r.insns,
                "spin_lock_share": r.spin_share,
                "whole_run": process(&r.whole),
                "whole_run_ns_per_insn": ns_per_insn(&r.whole),
                "allocs_and_frees_per_cpu_second": ops_per_cpu_second(&r.whole),
                "run_loop_ns_per_insn": r.emulation.ns_per_insn(),
            })).collect::<Vec<_>>(),
            "raw": {"scale": self.raw_scale, "guest_insns": self.raw.insns, "ns_per_insn": self.raw.ns_per_insn(),
                    "run_loop_speed_vs_raw": self.loop_vs_raw,
                    "whole_run_speed_vs_raw": self.whole_vs_raw,
                    "floor_ns_per_insn": self.floor.map(|f| f.ns_per_insn()),
                    "floor_cpu_seconds": self.floor.map(|f| f.cpu.as_secs_f64())},
            "set_up": {"cpus": self.set_up.cpus, "new_seconds": self.set_up.new.as_secs_f64(),
                       "first_insn_seconds": self.set_up.first_insn.as_secs_f64(),
                       "drop_seconds": self.set_up.drop.as_secs_f64(),
                       "restore_seconds": self.set_up.restore.as_secs_f64(),
                       "cold_run_seconds": self.set_up.cold_run.as_secs_f64(),
                       "warm_run_seconds": self.set_up.warm_run.as_secs_f64()},
            "qemu": self.qemu.as_ref().map(|rows| rows.iter().map(|r| json!({
                "cpus": r.cpus, "ours": process(&r.ours), "ours_bare": process(&r.bare),
                "qemu": r.qemu.iter().map(|(tcg, runs, c)| json!({"accel": tcg.accel(), "runs": runs, "run": process(c)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_past_its_cpu_cap_is_killed_and_counts_as_stopped() {
        let cap = Duration::from_millis(50);
        // Seconds of CPU if it is not stopped: a broken cap fails here, not hangs.
        let mut spin = Command::new("sh");
        spin.args(["-c", "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done"]);
        let child = finished_within("a spinning shell", &mut spin, Some(cap)).unwrap();
        assert!(stopped(&child, Some(cap)), "{:?}", child.status);
        assert!(child.cpu > cap);
        // Within its cap a child runs to its end, its output whole.
        let mut quick = Command::new("sh");
        quick.args(["-c", "echo done"]);
        let child =
            finished_within("a quick shell", &mut quick, Some(Duration::from_secs(5))).unwrap();
        assert!(child.status.success() && !stopped(&child, Some(Duration::from_secs(5))));
        assert_eq!(child.stdout, b"done\n");
        // A failure stays one.
        let mut failing = Command::new("sh");
        failing.args(["-c", "exit 3"]);
        assert!(finished_within("a failing shell", &mut failing, Some(cap)).is_err());
    }

    #[test]
    fn work_side_by_side_keeps_its_order_and_its_errors() {
        let squares = side_by_side(&[1u64, 2, 3], |&n| Ok::<_, String>(n * n));
        assert_eq!(squares.unwrap(), vec![1, 4, 9]);
        let failed = side_by_side(&[1u64, 2, 3], |&n| {
            if n == 2 {
                Err(format!("{n}"))
            } else {
                Ok(n)
            }
        });
        assert_eq!(failed.unwrap_err(), Some("2".to_string()));
    }

    #[test]
    fn medians_and_the_guest_summary() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let console = "cpu0: storm: 4 cpus\ncpu0: storm: allocs=120 frees=118 chunks_created=3\n";
        assert_eq!(storm_ops(console), Some(238));
        assert_eq!(storm_ops("cpu0: smoke: done"), None);
    }

    #[test]
    fn the_floor_is_a_median_over_the_counted_path_or_nothing() {
        let cost = |insns, ms| Cost {
            insns,
            cpu: Duration::from_millis(ms),
        };
        let counted = cost(1000, 9);
        let floors = |consoles: [&str; 3]| -> Vec<(Cost, String)> {
            [5, 1, 3]
                .into_iter()
                .zip(consoles)
                .map(|(ms, console)| (cost(0, ms), console.to_string()))
                .collect()
        };
        let same = floor_cost(&counted, "done\n", floors(["done\n"; 3])).unwrap();
        assert_eq!((same.insns, same.cpu), (1000, Duration::from_millis(3)));
        assert!(floor_cost(&counted, "done\n", floors(["done\n", "done\n", "other\n"])).is_none());
        assert!(floor_cost(&counted, "done\n", Vec::new()).is_none());
    }

    #[test]
    fn a_qemu_mode_over_twice_the_other_is_not_repeated() {
        let run = |ms| ProcessCost {
            cpu: Duration::from_millis(ms),
            peak_rss_bytes: None,
            ops: 0,
            insns: None,
            stopped: false,
        };
        let modes = vec![vec![run(690)], vec![run(2500)]];
        assert!(!far_costlier(&modes, 0));
        assert!(far_costlier(&modes, 1));
        // Within twice: both repeated, whichever is cheaper.
        let close = vec![vec![run(170)], vec![run(130)]];
        assert!(!far_costlier(&close, 0) && !far_costlier(&close, 1));
        // Only the first run counts, and a mode not yet run is not judged.
        let later = vec![vec![run(100), run(1000)], vec![run(150)]];
        assert!(!far_costlier(&later, 0));
        assert!(!far_costlier(&[vec![], vec![run(1)]], 0));
    }

    #[test]
    fn the_scale_fit_counts_the_fixed_part_once() {
        // 2 M fixed + 15 M per scale: 100 M needs scale 7 (107 M), where a multiple
        // of the scale-1 run (17 M) would stop at 6 (92 M).
        assert_eq!(scale_for(100_000_000, (1, 17_000_000), (2, 32_000_000)), 7);
        assert_eq!(scale_for(100_000_000, (1, 17_000_000), (3, 47_000_000)), 7);
        assert_eq!(scale_for(100_000_000, (1, 10_000_000), (5, 50_000_000)), 10);
        // A run that does not grow, or shrinks, still gives a scale (of one).
        assert_eq!(scale_for(100, (1, 200), (2, 200)), 1);
        assert_eq!(scale_for(100, (1, 200), (2, 150)), 1);
    }
}
