//! Same inputs and seed ⇒ the same bytes, whatever the host does: the text report,
//! the JSON report and the trace file do not depend on the build profile (debug or
//! release), on host load, or on the working directory and environment.
//!
//! Why these can differ at all: Unicorn sizes its soft TLB by host wall-clock time
//! (DESIGN.md), so how often the simulated MMU is asked for a translation changes with
//! host speed. A slower host (a loaded one, or a debug build of the host crates) sees
//! other refills; nothing of that may reach an event, a finding or a report.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Jobs whose reports carry MMU statistics and findings, lock findings, a host-stopped
/// deadlock and a clean run, and a RISC-V run with its lock findings.
const JOBS: &[&[&str]] = &[
    &["--scenario", "storm", "--seed", "3"],
    &[
        "--scenario",
        "reclaim",
        "--inject",
        "skip-tlb-flush",
        "--seed",
        "1",
    ],
    &[
        "--variant",
        "mutex",
        "--scenario",
        "fs-reclaim",
        "--seed",
        "0",
    ],
    &["--variant", "irq", "--scenario", "irq-free", "--seed", "2"],
    &[
        "--arch",
        "riscv64",
        "--variant",
        "mutex",
        "--scenario",
        "fs-reclaim",
        "--seed",
        "1",
    ],
];

/// Everything a job leaves that must not depend on the host.
#[derive(Debug, PartialEq, Eq)]
struct JobOutput {
    code: Option<i32>,
    text_report: String,
    json_report: String,
    trace: Vec<u8>,
}

/// Runs `job` with `binary` twice (text report, then JSON report with a trace) in
/// `workdir`, with `extra_env` added to the environment.
fn run_job(binary: &Path, job: &[&str], workdir: &Path, extra_env: &[(&str, &str)]) -> JobOutput {
    let trace = workdir.join("job.trace");
    let run = |extra: &[&str]| {
        let out = Command::new(binary)
            .arg("run")
            .args(job)
            .args(extra)
            .current_dir(workdir)
            .envs(extra_env.iter().copied())
            .output()
            .expect("percpu-lab runs");
        (
            out.status.code(),
            String::from_utf8(out.stdout).expect("UTF-8"),
        )
    };
    let (code, text_report) = run(&[]);
    let trace_arg = trace.to_str().expect("UTF-8 path");
    let (json_code, json_report) = run(&["--report", "json", "--trace", trace_arg]);
    assert_eq!(
        code, json_code,
        "text and JSON runs of {job:?} ended differently"
    );
    let trace = std::fs::read(&trace).expect("the run wrote its trace");
    JobOutput {
        code,
        text_report,
        json_report,
        trace,
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "percpu-lab-determinism-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn this_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_percpu-lab"))
}

fn assert_same(job: &[&str], what: &str, a: &JobOutput, b: &JobOutput) {
    assert_eq!(a.code, b.code, "{job:?}: exit code differs {what}");
    for (name, x, y) in [
        (
            "text report",
            a.text_report.as_bytes(),
            b.text_report.as_bytes(),
        ),
        (
            "JSON report",
            a.json_report.as_bytes(),
            b.json_report.as_bytes(),
        ),
        ("trace", &a.trace[..], &b.trace[..]),
    ] {
        if let Some(at) = first_difference(x, y) {
            let around = |s: &[u8]| {
                String::from_utf8_lossy(&s[at.saturating_sub(60)..(at + 60).min(s.len())])
                    .into_owned()
            };
            panic!(
                "{job:?}: {name} differs {what} at byte {at} (lengths {} and {}):\n  {}\n  {}",
                x.len(),
                y.len(),
                around(x),
                around(y)
            );
        }
    }
}

/// The index of the first byte where `a` and `b` differ (the shorter one's length when
/// one is a prefix of the other), or `None` when they are equal.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let common = a.iter().zip(b).position(|(x, y)| x != y);
    match common {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Unicorn's soft TLB flushed every few translation blocks (a hidden test aid of
/// `run`) refills at other moments, as a loaded host's would; the reports and traces of
/// the jobs and of the MMU self-tests stay the same bytes. This reproduces, on any
/// host, what host load does only sometimes.
#[test]
fn soft_tlb_refills_at_other_moments_do_not_change_reports_or_traces() {
    let binary = this_binary();
    let dir = fresh_dir("churn");
    let self_tests: Vec<[&str; 2]> = [
        "selftest-tlb-ok",
        "selftest-stale-tlb",
        "selftest-missing-tlb-flush",
        "selftest-bbm",
        "selftest-missing-barrier",
        "selftest-missing-dsb-ishst",
    ]
    .iter()
    .map(|s| ["--scenario", *s])
    .collect();
    // Stale entries used on two CPUs: the reports count each first use, which
    // must reach the model however long Unicorn keeps the entry.
    let stale_uses: [&str; 10] = [
        "--scenario",
        "reclaim",
        "--variant",
        "fine",
        "--cpus",
        "2",
        "--seed",
        "3",
        "--inject",
        "skip-tlb-flush",
    ];
    let jobs = JOBS
        .iter()
        .copied()
        .chain(self_tests.iter().map(|j| &j[..]))
        .chain([&stale_uses[..]]);
    for job in jobs {
        let plain = run_job(&binary, job, &dir, &[]);
        for every in ["5", "61"] {
            let churned: Vec<&str> = job
                .iter()
                .copied()
                .chain(["--churn-soft-tlb", every])
                .collect();
            let other = run_job(&binary, &churned, &dir, &[]);
            assert_same(
                job,
                &format!("with the soft TLB flushed every {every} blocks"),
                &plain,
                &other,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The jobs under heavy host contention (busy threads on every core and then some)
/// give the bytes of an idle run.
#[test]
fn host_load_does_not_change_reports_or_traces() {
    let binary = this_binary();
    let dir = fresh_dir("load");
    let idle: Vec<JobOutput> = JOBS
        .iter()
        .map(|job| run_job(&binary, job, &dir, &[]))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let hogs = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let burners: Vec<_> = (0..hogs)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let loaded: Vec<JobOutput> = JOBS
        .iter()
        .map(|job| run_job(&binary, job, &dir, &[]))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().expect("burner thread");
    }
    for ((job, a), b) in JOBS.iter().zip(&idle).zip(&loaded) {
        assert_same(job, "under host load", a, b);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another working directory and another environment (logging turned up, other
/// locale and temp dir) give the same bytes.
#[test]
fn working_directory_and_environment_do_not_change_reports_or_traces() {
    let binary = this_binary();
    let (here, there) = (fresh_dir("cwd-a"), fresh_dir("cwd-b"));
    for job in JOBS {
        let a = run_job(&binary, job, &here, &[]);
        let b = run_job(
            &binary,
            job,
            &there,
            &[("PERCPU_LAB_LOG", "debug"), ("LANG", "C"), ("TMPDIR", "/")],
        );
        assert_same(job, "in another directory and environment", &a, &b);
    }
    let _ = std::fs::remove_dir_all(&here);
    let _ = std::fs::remove_dir_all(&there);
}

/// The same jobs with the host crates built in the other profile (debug when this test
/// runs in release, release in debug) give the same bytes. The other binary is built
/// here when it is missing; the guest kernel is the same file for both.
///
/// From release, "debug" is the `determinism` profile: our crates exactly as `dev`
/// builds them, dependencies unoptimised, and Unicorn's C core the very library the
/// release build made (through pkg-config), instead of a second cmake build of it.
#[test]
fn debug_and_release_builds_give_identical_reports_and_traces() {
    let binary = this_binary();
    let profile_dir = binary.parent().expect("target/<profile>");
    let from_release = profile_dir.file_name().and_then(|n| n.to_str()) == Some("release");
    let (other_profile, cargo_flags) = if from_release {
        ("determinism", ["--profile", "determinism"])
    } else {
        ("release", ["--profile", "release"])
    };
    let other = profile_dir
        .parent()
        .expect("target/")
        .join(other_profile)
        .join(binary.file_name().expect("binary name"));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // Always ask cargo: it rebuilds a stale binary and does nothing for a fresh one.
    build
        .args(["build", "--bin", "percpu-lab"])
        .args(cargo_flags)
        .current_dir(workspace);
    if let Some(pkgconfig) = from_release
        .then(|| unicorn_pkgconfig(profile_dir))
        .flatten()
    {
        build.env("PKG_CONFIG_PATH", pkgconfig);
    }
    let status = build.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the {other_profile} percpu-lab failed"
    );
    assert!(other.exists(), "{} was not built", other.display());

    let dir = fresh_dir("profiles");
    for job in JOBS {
        let ours = run_job(&binary, job, &dir, &[]);
        let theirs = run_job(&other, job, &dir, &[]);
        assert_same(
            job,
            &format!("between this build and the {other_profile} build"),
            &ours,
            &theirs,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pkg-config directory of the Unicorn core the build in `profile_dir` installed
/// (the newest, if stale builds lie beside it).
fn unicorn_pkgconfig(profile_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(profile_dir.join("build"))
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("unicorn-engine-sys-")
        })
        .map(|e| e.path().join("out/lib"))
        .filter(|lib| lib.join("pkgconfig/unicorn.pc").is_file())
        .filter_map(|lib| {
            let built = lib.join("libunicorn.a").metadata().ok()?.modified().ok()?;
            Some((built, lib.join("pkgconfig")))
        })
        .max()
        .map(|(_, dir)| dir)
}

/// Copies the directory tree `from` to `to`, links as links, leaving out `target/`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the source tree") {
        let entry = entry.expect("directory entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).expect("read link");
            std::os::unix::fs::symlink(target, &dst).expect("copy link");
        } else if kind.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&src, &dst);
            }
        } else {
            std::fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// The guest's instruction counts, hence every schedule and report, follow from its
/// bytes: a copy of its sources at another path (of another length) builds the very
/// ELF and Image this binary embeds. Cargo would otherwise hash the allocator's
/// absolute path into the guest's symbol names and layout (guest/build.sh).
#[test]
fn the_guest_is_the_same_bytes_wherever_the_repository_is_cloned() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let dir = fresh_dir("clone");
    let clone = dir.join("another").join("clone-of-percpu-lab");
    for part in ["guest", "allocator"] {
        copy_tree(&workspace.join(part), &clone.join(part));
    }
    let out = clone.join("out");
    let status = Command::new(clone.join("guest/build.sh"))
        .arg(&out)
        .env("CARGO_TARGET_DIR", clone.join("target"))
        .status()
        .expect("guest/build.sh runs");
    assert!(status.success(), "building the copied guest failed");
    for (name, ours) in [
        ("percpu-guest.elf", env!("PERCPU_GUEST_ELF")),
        ("Image", env!("PERCPU_GUEST_IMAGE")),
    ] {
        let theirs = std::fs::read(out.join(name)).expect("the copy's build output");
        let ours = std::fs::read(ours).expect("this build's guest");
        assert!(
            ours == theirs,
            "{name} built at {} differs from this build's from byte {:?} (sizes {} and {})",
            clone.display(),
            first_difference(&ours, &theirs),
            ours.len(),
            theirs.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
