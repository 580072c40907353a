//! `check FILE` re-derives a run's lock findings from its trace alone: its JSON findings
//! are the run's, byte for byte, for every scenario × variant × seeds 0–4 (with the
//! seeded missing TLB flush too). The self-test scenarios do not use the allocator, so
//! they run with one variant.

mod common;

use std::path::Path;

use common::percpu_lab;
use serde_json::Value;

/// The findings the simulated MMU makes today (the TLB checker is not yet an analysis
/// of the trace: `check` cannot re-derive these until it is, issue 9).
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
            for seed in 0..5 {
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

/// The `findings` of a JSON report, without the kinds `keep` refuses, as text.
fn findings(report: &str, keep: &dyn Fn(&str) -> bool) -> String {
    let report: Value = serde_json::from_str(report).expect("a JSON report");
    let kept: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .filter(|f| keep(f["kind"].as_str().expect("a kind")))
        .collect();
    serde_json::to_string_pretty(&kept).unwrap()
}

/// Runs one case with a trace, checks the trace; returns (run's, check's) findings.
fn run_and_check(args: &[String], trace: &Path, keep: &dyn Fn(&str) -> bool) -> (String, String) {
    let trace_arg = trace.to_str().expect("UTF-8 path");
    let mut all: Vec<&str> = vec!["run", "--report", "json", "--trace", trace_arg];
    all.extend(args.iter().map(String::as_str));
    let run = percpu_lab(&all);
    assert!(run.code <= 3, "{args:?}: {}", run.describe());
    let check = percpu_lab(&["check", "--report", "json", trace_arg]);
    assert!(check.code <= 1, "{args:?}: check: {}", check.describe());
    (findings(&run.stdout, keep), findings(&check.stdout, keep))
}

/// The whole matrix on two threads; every case whose findings differ.
fn mismatches(keep: &(dyn Fn(&str) -> bool + Sync)) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("percpu-lab-check-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runs = matrix();
    let (first, second) = runs.split_at(runs.len() / 2);
    let differing: Vec<String> = std::thread::scope(|s| {
        let halves = [first, second].map(|half| {
            let dir = &dir;
            s.spawn(move || {
                let trace = dir.join(format!("{}.trc", half.as_ptr() as usize));
                let mut out = Vec::new();
                for args in half {
                    let (run, check) = run_and_check(args, &trace, keep);
                    if run != check {
                        out.push(format!("{args:?}:\nrun {run}\ncheck {check}"));
                    }
                }
                out
            })
        });
        halves
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    std::fs::remove_dir_all(&dir).ok();
    differing
}

/// The lock validator's findings: the same online and offline today.
#[test]
fn check_gives_the_lock_findings_of_the_run() {
    let differing = mismatches(&|kind| !MMU_KINDS.contains(&kind));
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}
