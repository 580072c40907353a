//! How `bench` measures `check` (tools/src/bench_check.rs, included as it is): the
//! peak RSS it reports is the child's own, in bytes; `check` counts every event of
//! the trace; its memory does not grow with the trace; and a parent bigger than
//! `check` gets an error instead of its own peak passed off as `check`'s; a run's
//! peak stays below its guest RAM size (RAM is touched lazily). No timing
//! is asserted, and the traces are short (bench alone records 10 M events).

#[path = "../src/bench_check.rs"]
#[allow(dead_code)] // what only bench uses
mod bench_check;

use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1024 * 1024;
/// With this set, [`hog_child`] holds that many MiB (see there).
const HOG_ENV: &str = "PERCPU_LAB_TEST_HOG_MIB";
const HOG_MIB: u64 = 64;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_percpu-lab"))
}

/// Not a test of its own: the child process of the RSS test (this test binary run
/// again, with [`HOG_ENV`] set) fills that many MiB, so its peak RSS is known.
#[test]
fn hog_child() {
    if let Ok(mib) = std::env::var(HOG_ENV) {
        let mib: usize = mib.parse().expect("a number of MiB");
        let hog = vec![1u8; mib << 20];
        std::hint::black_box(&hog);
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One test, in order: its last part makes this process big for good, which would
/// spoil any measurement running beside it.
#[test]
fn check_child_peak_rss_is_its_own_and_check_counts_every_event() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("percpu-lab-check-rss-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    // A short trace: check reports every event in it.
    let short = dir.0.join("storm.trace");
    bench_check::record(
        bin(),
        None,
        &["--scenario", "storm", "--variant", "fixed"],
        &short,
    )
    .unwrap();
    let events = traces::read_trace(&std::fs::read(&short).unwrap())
        .unwrap()
        .events
        .len() as u64;
    assert!(events > 10_000, "{events} events");
    let cost = bench_check::check_cost(bin(), None, &short).unwrap();
    assert_eq!(cost.events, events, "{cost:?}");
    assert!(
        (2 * MIB..512 * MIB).contains(&cost.peak_rss_bytes),
        "implausible peak RSS: {cost:?}"
    );

    // The figure is the child's own and in bytes: a child that fills 64 MiB.
    let hog = bench_check::run_child(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hog_child", "--test-threads", "1"])
            .env(HOG_ENV, HOG_MIB.to_string()),
    )
    .unwrap();
    assert!(hog.status.success(), "{hog:?}");
    assert!(
        (HOG_MIB * MIB..2 * HOG_MIB * MIB).contains(&hog.peak_rss_bytes),
        "the 64 MiB child measured {} bytes",
        hog.peak_rss_bytes
    );
    assert!(cost.peak_rss_bytes < hog.peak_rss_bytes, "{cost:?}");

    // Streaming: about thirty times the events (5-instruction slices, each running
    // to the end of its block, and four times the rounds), about the same memory
    // (were the events kept, even at 8 bytes each, this would be 20 MiB more).
    let long = dir.0.join("storm-q5.trace");
    bench_check::record(
        bin(),
        None,
        &[
            "--scenario",
            "storm",
            "--variant",
            "fixed",
            "--quantum",
            "5",
            "--scale",
            "4",
        ],
        &long,
    )
    .unwrap();
    let long_cost = bench_check::check_cost(bin(), None, &long).unwrap();
    assert!(long_cost.events > 20 * events, "{long_cost:?}");
    assert!(
        long_cost.peak_rss_bytes < cost.peak_rss_bytes + 8 * MIB,
        "{events} events: {cost:?}, {} events: {long_cost:?}",
        long_cost.events
    );

    // Guest RAM is paid for as the guest touches it: a 1-CPU smoke run stays far
    // below its 128 MiB of RAM (it was above, when the RAM was zeroed by hand).
    let smoke = bench_check::run_child(Command::new(bin()).args([
        "run",
        "--scenario",
        "smoke",
        "--cpus",
        "1",
    ]))
    .unwrap();
    assert!(smoke.status.success(), "{smoke:?}");
    assert!(
        smoke.peak_rss_bytes < 96 * MIB,
        "a 1-CPU smoke run peaked at {} MiB",
        smoke.peak_rss_bytes / MIB
    );

    // A parent bigger than check: a child's peak includes its parent's, so the
    // figure cannot be check's own and is refused.
    let ballast = vec![1u8; (256 * MIB) as usize];
    std::hint::black_box(&ballast);
    let refused = bench_check::check_cost(bin(), None, &short).unwrap_err();
    assert!(refused.contains("not measurable"), "{refused}");
    assert_eq!(refused.lines().count(), 1, "{refused}");
    drop(ballast);
}

#[test]
fn a_check_that_fails_is_one_line_naming_the_trace() {
    let missing = std::env::temp_dir().join(format!(
        "percpu-lab-check-rss-missing-{}.trace",
        std::process::id()
    ));
    let err = bench_check::check_cost(bin(), None, &missing).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exit status: 2"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let err = bench_check::record(bin(), None, &["--scenario", "no-such"], &missing).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown scenario 'no-such'"), "{err}");
    assert!(!missing.exists());
}
