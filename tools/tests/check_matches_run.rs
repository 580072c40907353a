//! `check FILE` re-derives a run's findings from its trace alone — the lock
//! validator's and the TLB check's: its JSON findings are the run's, byte for byte,
//! for every scenario × variant × seeds 0–2 (0–1 for the long map-race; with the
//! seeded missing TLB flush too).
//! The self-test scenarios do not use the allocator, so they run with one variant.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::percpu_lab;
use serde_json::Value;

/// The TLB check's kinds.
const MMU_KINDS: [&str; 4] = [
    "stale-tlb",
    "missing-tlb-flush",
    "break-before-make",
    "missing-barrier",
];

fn scenarios() -> Vec<String> {
    let run = percpu_lab(&["scenarios"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    run.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every run of the matrix: the arguments after `run`.
fn matrix() -> Vec<Vec<String>> {
    let mut runs = Vec::new();
    for scenario in scenarios() {
        let variants: &[&str] = if scenario.starts_with("selftest-") {
            &["fine"]
        } else {
            &["mutex", "irq", "irq-plain", "fine", "fixed"]
        };
        for &variant in variants {
            // map-race runs ~40 M instructions, twenty times the others: two
            // seeds of it exercise the same analyses.
            let seeds = if scenario == "map-race" { 0..2 } else { 0..3 };
            for seed in seeds {
                let mut args: Vec<String> = ["--scenario", &scenario, "--variant", variant]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(["--seed".to_string(), seed.to_string()])
                    .collect();
                if scenario == "hang" {
                    // Only the watchdog ends it: a short one.
                    args.extend(["--max-insns".to_string(), "20000000".to_string()]);
                }
                runs.push(args.clone());
                if scenario == "reclaim" {
                    args.extend(["--inject".to_string(), "skip-tlb-flush".to_string()]);
                    runs.push(args);
                }
            }
        }
    }
    runs
}

/// The `findings` of a JSON report, as text.
fn findings(report: &str) -> String {
    let report: Value = serde_json::from_str(report).expect("a JSON report");
    serde_json::to_string_pretty(&report["findings"]).unwrap()
}

/// Runs one case with a trace, checks the trace; returns (run's, check's) findings.
fn run_and_check(args: &[String], trace: &Path) -> (String, String) {
    let trace_arg = trace.to_str().expect("UTF-8 path");
    let mut all: Vec<&str> = vec!["run", "--report", "json", "--trace", trace_arg];
    all.extend(args.iter().map(String::as_str));
    let run = percpu_lab(&all);
    assert!(run.code <= 3, "{args:?}: {}", run.describe());
    let check = percpu_lab(&["check", "--report", "json", trace_arg]);
    assert!(check.code <= 1, "{args:?}: check: {}", check.describe());
    (findings(&run.stdout), findings(&check.stdout))
}

/// The whole matrix on two threads taking cases from one queue (so that neither
/// idles while the other runs the long map-grow and map-race cases): every case
/// whose findings differ, and how many cases had a finding of the TLB check.
fn mismatches() -> (Vec<String>, usize) {
    let dir = std::env::temp_dir().join(format!("percpu-lab-check-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runs = matrix();
    // The longest cases first, so that the two threads end together.
    runs.sort_by_key(|args| !matches!(args[1].as_str(), "map-race" | "map-grow"));
    let next = AtomicUsize::new(0);
    let result = std::thread::scope(|s| {
        let workers = [0, 1].map(|worker| {
            let (dir, runs, next) = (&dir, &runs, &next);
            s.spawn(move || {
                let trace = dir.join(format!("{worker}.trc"));
                let mut out = Vec::new();
                let mut with_mmu_findings = 0;
                while let Some(args) = runs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (run, check) = run_and_check(args, &trace);
                    with_mmu_findings += MMU_KINDS
                        .iter()
                        .any(|kind| run.contains(&format!("\"{kind}\"")))
                        as usize;
                    if run != check {
                        out.push(format!("{args:?}:\nrun {run}\ncheck {check}"));
                    }
                }
                (out, with_mmu_findings)
            })
        });
        let mut differing = Vec::new();
        let mut with_mmu_findings = 0;
        for worker in workers {
            let (out, n) = worker.join().expect("no panic");
            differing.extend(out);
            with_mmu_findings += n;
        }
        (differing, with_mmu_findings)
    });
    std::fs::remove_dir_all(&dir).ok();
    result
}

#[test]
fn check_gives_the_findings_of_the_run() {
    let (differing, with_mmu_findings) = mismatches();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
    // Not vacuous for the TLB check: the seeded missing flush and the MMU self-tests
    // give its findings.
    assert!(
        with_mmu_findings >= 5,
        "{with_mmu_findings} cases with TLB findings"
    );
}
