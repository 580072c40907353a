//! The `percpu-lab check FILE` part of `percpu-lab bench`: peak RSS and CPU time of
//! `check` run as a child process on a short trace and on one about fifty times
//! longer, to show that `check` streams (its memory does not grow with the trace).
//!
//! Both the recording (`percpu-lab run --trace`) and `check` run as child processes
//! of this executable, and bench does this before anything else. The reason is how
//! Linux counts a child's peak RSS (`ru_maxrss` from `wait4`): at `exec` the child
//! keeps the high-water mark of the image it leaves, which for `posix_spawn` (what
//! `std::process::Command` uses) is the parent's whole peak, and for `fork` the
//! parent's resident set at the time. So a child's figure is
//! max(its own peak, the parent's peak): it is `check`'s own only while this
//! process has stayed smaller than `check`, which [`check_cost`] verifies against
//! this process's own high-water mark (`VmHWM`) instead of trusting it.
//!
//! This file uses only std, libc and serde_json: the integration tests include it
//! (`#[path]`) to measure the real binary the same way.

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// The traces measured, as `percpu-lab run` arguments (seed 0, random scheduler,
/// 4 CPUs): smoke on the clean variant is about 43 k events, map-grow about 2.0 M,
/// 47 times as many, recorded in under 2 s. (A trace ten times map-grow's needs
/// 3-instruction slices and 15 s of recording, which bench cannot afford.)
pub const TRACES: [&[&str]; 2] = [
    &["--scenario", "smoke", "--variant", "fixed"],
    &["--scenario", "map-grow", "--variant", "fixed"],
];

/// How a finished child process went and what it used.
#[derive(Debug)]
pub struct ChildUsage {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `ru_maxrss`, in bytes (see the module docs for what it includes).
    pub peak_rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// `ru_maxrss` is in kibibytes on Linux and the BSDs, in bytes on macOS.
const MAXRSS_UNIT: u64 = if cfg!(target_os = "macos") { 1 } else { 1024 };

/// Runs `cmd` to the end (stdin empty, stdout and stderr collected) and reaps it
/// with `wait4`, which gives this one child's resource usage (`getrusage`'s
/// `RUSAGE_CHILDREN` would be the maximum over every child reaped so far).
pub fn run_child(cmd: &mut Command) -> io::Result<ChildUsage> {
    run_child_within(cmd, None)
}

/// [`run_child`], killing the child once its CPU time passes `cpu_cap` (its
/// status then says so, and its usage is what it had used by then).
pub fn run_child_within(cmd: &mut Command, cpu_cap: Option<Duration>) -> io::Result<ChildUsage> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // Each pipe is drained by a thread of its own and closed when that thread
    // ends, even if reading failed, so the child never blocks on it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).map(|_| bytes)
        })
    };
    let stdout_reader = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr_reader = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    if let Some(cap) = cpu_cap {
        kill_past(pid, cap)?;
    }
    // `child` is never waited for through std: wait4 reaps it here.
    let (status, usage) = wait4(pid)?;
    let joined = |reader: std::thread::JoinHandle<io::Result<Vec<u8>>>| {
        reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a pipe reader panicked")))
    };
    let (stdout, stderr) = (joined(stdout_reader), joined(stderr_reader));
    Ok(ChildUsage {
        status,
        stdout: stdout?,
        stderr: stderr?,
        peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * MAXRSS_UNIT,
        cpu: duration(usage.ru_utime) + duration(usage.ru_stime),
    })
}

/// Waits until child `pid` exits (left unreaped) or its CPU time passes `cap`,
/// in which case it is killed. Polled every few milliseconds, from /proc.
fn kill_past(pid: libc::pid_t, cap: Duration) -> io::Result<()> {
    const POLL: Duration = Duration::from_millis(5);
    loop {
        // SAFETY: `siginfo_t` is plain data, for which all zeroes is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is a child of this process not yet reaped (WNOWAIT leaves
        // it so); `info` is valid for writes for the duration of the call.
        let polled = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if polled != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` (or left it zeroed: no child changed state).
        if unsafe { info.si_pid() } == pid {
            return Ok(());
        }
        if cpu_time(pid).is_some_and(|cpu| cpu > cap) {
            // SAFETY: plain syscall; `pid` is our unreaped child, so it names no
            // other process (a zombie ignores the signal).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// User plus system CPU time of process `pid` so far (`/proc/PID/stat`).
fn cpu_time(pid: libc::pid_t) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // the state is field 3, utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: plain libc query.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / per_second.max(1) as f64,
    ))
}

fn wait4(pid: libc::pid_t) -> io::Result<(ExitStatus, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain integers and timevals, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is a child of this process not yet reaped; `status` and
        // `usage` are valid for writes for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn duration(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::new(secs, micros * 1000)
}

/// This process's own peak resident set (`VmHWM`: the current image's high-water
/// mark, not inherited at exec), or None where there is no /proc.
pub fn own_peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// What `check` used on one trace.
#[derive(Debug, Clone)]
pub struct CheckCost {
    /// Events `check` read (its JSON report's `stats.trace_events`).
    pub events: u64,
    pub peak_rss_bytes: u64,
    /// CPU time of the whole `check` process (start-up, kernel symbols, reading,
    /// the validator).
    pub cpu: Duration,
}

impl CheckCost {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64()
    }
}

/// The last non-empty line a child printed on stderr (its error, by the CLI's
/// conventions), without the `percpu-lab: error: ` prefix.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line = line.strip_prefix("percpu-lab: error: ").unwrap_or(line);
    if line.is_empty() {
        "nothing on stderr".to_string()
    } else {
        line.to_string()
    }
}

fn with_kernel(cmd: &mut Command, kernel: Option<&Path>) {
    if let Some(kernel) = kernel {
        cmd.arg("--kernel").arg(kernel);
    }
}

/// Records `exe run ARGS --trace TRACE` (the guest `kernel`, or the built-in one);
/// the run must power off cleanly.
pub fn record(
    exe: &Path,
    kernel: Option<&Path>,
    run_args: &[&str],
    trace: &Path,
) -> Result<(), String> {
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .args(run_args)
        .arg("--trace")
        .arg(trace)
        .args(["--report", "json"]);
    with_kernel(&mut cmd, kernel);
    let what = format!("`run {}`", run_args.join(" "));
    let run = run_child(&mut cmd).map_err(|e| format!("cannot start {what}: {e}"))?;
    if run.status.code() != Some(0) {
        return Err(format!(
            "{what} did not pass under bench ({}): {}",
            run.status,
            last_line(&run.stderr)
        ));
    }
    Ok(())
}

/// Runs `exe check TRACE --report json` as a child process and measures it.
///
/// Fails when the figure could be this process's own peak rather than `check`'s
/// (see the module docs), when `check` fails (exit 0 or 1 are both a finished
/// analysis) and when it reports the trace as damaged.
pub fn check_cost(exe: &Path, kernel: Option<&Path>, trace: &Path) -> Result<CheckCost, String> {
    let mut cmd = Command::new(exe);
    cmd.arg("check").arg(trace).args(["--report", "json"]);
    with_kernel(&mut cmd, kernel);
    let what = format!("`check {}`", trace.display());
    let run = run_child(&mut cmd).map_err(|e| format!("cannot start {what}: {e}"))?;
    if !matches!(run.status.code(), Some(0 | 1)) {
        return Err(format!(
            "{what} failed ({}): {}",
            run.status,
            last_line(&run.stderr)
        ));
    }
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)
        .map_err(|e| format!("{what} printed no JSON report: {e}"))?;
    let stats = &report["stats"];
    let events = stats["trace_events"]
        .as_u64()
        .ok_or_else(|| format!("{what}: no stats.trace_events in its report"))?;
    if stats["damaged"] != serde_json::Value::Bool(false) {
        return Err(format!("{what}: the trace is damaged"));
    }
    // Read after the wait: whatever this process used until then is the floor.
    if let Some(own) = own_peak_rss_bytes() {
        if run.peak_rss_bytes <= own {
            return Err(format!(
                "{what}: its peak RSS ({} MiB) is not above this process's own ({} MiB), \
                 which Linux gives a child as its floor at exec: check's own is not measurable",
                mib(run.peak_rss_bytes),
                mib(own)
            ));
        }
    }
    Ok(CheckCost {
        events,
        peak_rss_bytes: run.peak_rss_bytes,
        cpu: run.cpu,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// A temporary file, removed when dropped (on errors too).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One measured trace: the `run` arguments that recorded it and what `check` used.
#[derive(Debug, Clone)]
pub struct CheckBench {
    pub run_args: &'static [&'static str],
    pub cost: CheckCost,
}

/// [`TRACES`], recorded into temporary files (removed when this is dropped).
pub struct RecordedTraces(Vec<TempFile>);

/// Records [`TRACES`] side by side (only the traces are kept, so the host's two
/// cores may share the work).
pub fn record_traces(exe: &Path, kernel: Option<&Path>) -> Result<RecordedTraces, String> {
    let traces: Vec<TempFile> = (0..TRACES.len())
        .map(|i| {
            TempFile(std::env::temp_dir().join(format!(
                "percpu-lab-bench-check-{}-{i}.trace",
                std::process::id()
            )))
        })
        .collect();
    side_by_side(
        &TRACES.iter().zip(&traces).collect::<Vec<_>>(),
        |(run_args, trace)| record(exe, kernel, run_args, &trace.0),
    )
    .map_err(|e| e.unwrap_or_else(|| "a recording thread panicked".into()))?;
    Ok(RecordedTraces(traces))
}

/// Measures `check` on each of the `recorded` traces, one at a time.
pub fn measure(
    exe: &Path,
    kernel: Option<&Path>,
    recorded: &RecordedTraces,
) -> Result<Vec<CheckBench>, String> {
    TRACES
        .into_iter()
        .zip(&recorded.0)
        .map(|(run_args, trace)| {
            let cost = check_cost(exe, kernel, &trace.0)?;
            Ok(CheckBench { run_args, cost })
        })
        .collect()
}

/// `f` of each of `items`, each on a thread of its own, in the order of `items`:
/// for work whose results do not depend on the host (guest instruction counts,
/// recorded traces), never for anything timed. The first error, or `None` if a
/// thread panicked.
pub fn side_by_side<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, Option<E>> {
    std::thread::scope(|scope| {
        let f = &f;
        let threads: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| None)?.map_err(Some))
            .collect()
    })
}
