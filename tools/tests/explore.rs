//! `percpu-lab explore`: finding the seed's deadlock, staying clean on the clean
//! variant, replayable failures, minimisation, shards and their merge.

mod common;

use common::{percpu_lab, replay, scratch, Run};
use serde_json::Value;

fn explore(args: &[&str]) -> Run {
    let mut argv = vec!["explore"];
    argv.extend_from_slice(args);
    percpu_lab(&argv)
}

fn summary(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn kinds(summary: &Value) -> Vec<String> {
    summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pct_finds_the_mutex_deadlock_and_its_trace_replays() {
    let dir = scratch("mutex-deadlock");
    let run = explore(&[
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
        "--schedules",
        "50",
        "--sched",
        "pct",
        "--until-bug",
        "deadlock",
        "--save-failures",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let s = summary(&dir);
    assert!(kinds(&s).contains(&"deadlock".to_string()), "{s}");
    // --until-bug deadlock stops at the first schedule that deadlocks (earlier
    // ones may have other findings: the seed's freed-page-in-tlb, the
    // possible cycle without the deadlock).
    let run_count = s["schedules_run"].as_u64().unwrap();
    assert!(s["failing_schedules"].as_u64().unwrap() >= 1, "{s}");
    let deadlock = s["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .unwrap();
    assert_eq!(deadlock["first_schedule"].as_u64().unwrap(), run_count - 1);
    let trace = dir.join(deadlock["schedule"]["trace"].as_str().unwrap());
    let replayed = replay(&trace);
    assert_eq!(replayed.code, 0, "{}", replayed.describe());
    assert!(replayed.stdout.contains("identical"), "{}", replayed.stdout);
    // The printed command is the schedule: run again, it deadlocks the same way.
    let command = deadlock["schedule"]["run"].as_str().unwrap();
    let words: Vec<&str> = command
        .split(' ')
        .skip(1)
        .chain(["--report", "json"])
        .collect();
    let again = percpu_lab(&words);
    assert_eq!(again.code, 1, "{}", again.describe());
    assert!(common::kinds(&again).contains(&"deadlock".to_string()));
}

/// Schedules per scenario in the suite: as many as about five seconds of one core
/// buys (each process restores one machine for all its schedules; map-grow and
/// map-race run 60 to 95 million instructions a schedule, the others 2 to 35
/// million). [`the_clean_variant_is_clean_on_200_pct_schedules_of_every_scenario`]
/// runs 200 of each.
const CLEAN_SCHEDULES: [(&str, u32); 9] = [
    ("smoke", 100),
    ("irq-race", 100),
    ("storm", 40),
    ("irq-free", 30),
    ("fs-reclaim", 100),
    ("reclaim", 40),
    ("reclaim-reuse", 40),
    ("map-grow", 6),
    ("map-race", 6),
];

/// Explores `schedules` PCT schedules of each scenario with the clean variant and
/// asserts that none finds anything.
fn clean_on(scenarios: impl IntoIterator<Item = (&'static str, u32)>) {
    for (scenario, schedules) in scenarios {
        let schedules = schedules.to_string();
        let run = explore(&[
            "--scenario",
            scenario,
            "--variant",
            "fixed",
            "--schedules",
            &schedules,
            "--sched",
            "pct",
            "--jobs",
            "2",
            "--report",
            "json",
        ]);
        assert_eq!(run.code, 0, "{scenario}: {}", run.describe());
        let s = run.json();
        assert_eq!(s["schedules_run"].to_string(), schedules, "{scenario}");
        assert_eq!(s["findings"], Value::Array(vec![]), "{scenario}");
    }
}

#[test]
fn the_clean_variant_is_clean_on_pct_schedules_of_each_scenario() {
    clean_on(CLEAN_SCHEDULES);
}

/// What the exploration issue asks: 200 schedules of every scenario, about 9
/// minutes on two cores (map-grow and map-race take 3.5 each), so not in the
/// default suite: `cargo test --release -p percpu-lab --test explore --
/// --ignored`.
#[test]
#[ignore = "about 9 minutes; run with --ignored"]
fn the_clean_variant_is_clean_on_200_pct_schedules_of_every_scenario() {
    clean_on(CLEAN_SCHEDULES.map(|(scenario, _)| (scenario, 200)));
}

#[test]
fn minimising_keeps_the_finding_with_no_more_change_points() {
    let dir = scratch("minimise");
    let run = explore(&[
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
        "--schedules",
        "6",
        "--sched",
        "pct",
        "--pct-depth",
        "4",
        "--minimise",
        "--save-failures",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let s = summary(&dir);
    let deadlock = s["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .unwrap();
    let schedule = &deadlock["schedule"];
    let original = schedule["change_points"].as_array().unwrap().len();
    let minimal = schedule["minimised_change_points"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(original, 3, "depth 4 draws three change points");
    assert!(minimal <= original);
    // The saved trace is the minimised schedule, and it still deadlocks.
    let trace = dir.join(schedule["trace"].as_str().unwrap());
    let header = common::load(&trace).header.config;
    let points = header
        .extra
        .get("change-points")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        points.split(',').filter(|p| !p.is_empty()).count(),
        minimal,
        "{header:?}"
    );
    let words: Vec<&str> = schedule["run"]
        .as_str()
        .unwrap()
        .split(' ')
        .skip(1)
        .collect();
    let again = percpu_lab(&[&words[..], &["--report", "json"]].concat());
    assert!(
        common::kinds(&again).contains(&"deadlock".to_string()),
        "{}",
        again.describe()
    );
}

#[test]
fn shards_merge_into_the_single_machine_summary_whatever_the_jobs() {
    let base = [
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
        "--schedules",
        "8",
        "--sched",
        "pct",
    ];
    let whole = scratch("whole");
    let run = explore(&[&base[..], &["--save-failures", whole.to_str().unwrap()]].concat());
    assert_eq!(run.code, 1, "{}", run.describe());
    let two_jobs = explore(&[&base[..], &["--jobs", "2", "--report", "json"]].concat());
    let mut dirs = Vec::new();
    for k in 0..4 {
        let dir = scratch(&format!("shard-{k}"));
        let shard = format!("{k}/4");
        let run = explore(
            &[
                &base[..],
                &["--shard", &shard, "--save-failures", dir.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(run.code == 0 || run.code == 1, "{}", run.describe());
        assert_eq!(summary(&dir)["schedules_run"], 2);
        dirs.push(dir);
    }
    let merged_dir = scratch("merged");
    let mut argv = vec!["--merge"];
    argv.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    argv.extend(["--save-failures", merged_dir.to_str().unwrap()]);
    let merged = explore(&argv);
    assert_eq!(merged.code, 1, "{}", merged.describe());
    // Equal but for where the traces are.
    let comparable = |mut s: Value| {
        for f in s["findings"].as_array_mut().unwrap() {
            f["schedule"].as_object_mut().unwrap().remove("replay");
        }
        s
    };
    let whole = comparable(summary(&whole));
    assert_eq!(comparable(summary(&merged_dir)), whole);
    assert_eq!(
        two_jobs.json()["findings"].as_array().unwrap().len(),
        whole["findings"].as_array().unwrap().len()
    );
    assert_eq!(
        two_jobs.json()["failing_schedules"],
        whole["failing_schedules"]
    );
    // Different configurations do not merge.
    let other = scratch("other");
    explore(&[
        "--scenario",
        "smoke",
        "--variant",
        "fixed",
        "--schedules",
        "1",
        "--save-failures",
        other.to_str().unwrap(),
    ]);
    let refused = explore(&[
        "--merge",
        dirs[0].to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert_eq!(refused.code, 2, "{}", refused.describe());
}

#[test]
fn delay_bounded_exploration_enumerates_from_the_base_schedule() {
    let run = explore(&[
        "--scenario",
        "smoke",
        "--variant",
        "fixed",
        "--schedules",
        "5",
        "--sched",
        "delay",
        "--report",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let s = run.json();
    assert_eq!(s["schedules_run"], 5);
    assert!(s["config"]["steps"].as_u64().unwrap() > 100, "{s}");
    // With no delays allowed there is one schedule, however many are asked for.
    let run = explore(&[
        "--scenario",
        "smoke",
        "--variant",
        "fixed",
        "--schedules",
        "3",
        "--sched",
        "delay",
        "--delay-bound",
        "0",
        "--report",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(run.json()["schedules_run"], 1);
}

#[test]
fn bad_explore_input_is_one_line_and_exit_2() {
    for args in [
        &[
            "--scenario",
            "nope",
            "--variant",
            "fixed",
            "--schedules",
            "1",
        ][..],
        &[
            "--scenario",
            "smoke",
            "--variant",
            "fixed",
            "--schedules",
            "1",
            "--shard",
            "4/4",
        ],
        &[
            "--scenario",
            "smoke",
            "--variant",
            "fixed",
            "--schedules",
            "1",
            "--minimise",
        ],
        &["--merge", "/nonexistent-dir"],
    ] {
        let run = explore(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
        // One line says what is wrong (clap adds its usual hint after a blank line).
        let said = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error") || l.starts_with("percpu-lab"));
        assert_eq!(said.count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// Timer arrivals as scheduling decisions: with `--irq-arrivals`, PCT lands a
/// tick inside a thread's `irq-plain` free (plain `spin_lock`, IRQs on) whose
/// handler frees too: the handler waits for the code it interrupted (a real
/// deadlock). The schedule's command carries its arrivals and
/// deadlocks again.
#[test]
fn irq_arrivals_find_the_irq_plain_self_deadlock() {
    let run = explore(&[
        "--scenario",
        "irq-race",
        "--variant",
        "irq-plain",
        "--sched",
        "pct",
        "--irq-arrivals",
        "4",
        "--schedules",
        "10",
        "--until-bug",
        "deadlock",
        "--report",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let s = run.json();
    let deadlock = s["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .unwrap_or_else(|| panic!("no deadlock: {s}"));
    // On pcpu_lock alone: the handler waits for its own CPU (the interrupted
    // free holds the lock, or is queued for it first).
    assert_eq!(deadlock["key"], "deadlock: pcpu_lock", "{deadlock}");
    let command = deadlock["schedule"]["run"].as_str().unwrap();
    assert!(command.contains("--irq-points "), "{command}");
    let words: Vec<&str> = command
        .split_whitespace()
        .skip(1)
        .chain(["--report", "json"])
        .collect();
    let again = percpu_lab(&words);
    assert_eq!(again.code, 1, "{}", again.describe());
    assert!(common::kinds(&again).contains(&"deadlock".to_string()));
}

/// A process runs its schedules on one machine, restored to its power-on snapshot
/// for each (code already translated); one process per schedule boots a fresh
/// machine each time. Both give the same schedules: the same instructions in all,
/// the same findings, each with the same count and first schedule.
#[test]
fn schedules_on_a_restored_machine_are_the_schedules_of_fresh_machines() {
    for (scenario, variant, sched) in [("storm", "fine", "random"), ("fs-reclaim", "mutex", "pct")]
    {
        let base = [
            "--scenario",
            scenario,
            "--variant",
            variant,
            "--schedules",
            "4",
            "--sched",
            sched,
            "--report",
            "json",
        ];
        let reused = explore(&[&base[..], &["--jobs", "1"]].concat());
        let fresh = explore(&[&base[..], &["--jobs", "4"]].concat());
        assert_eq!(reused.code, fresh.code, "{}", reused.describe());
        let (reused, fresh) = (reused.json(), fresh.json());
        assert!(reused["guest_insns"].as_u64() > Some(0), "{reused}");
        assert!(
            !reused["findings"].as_array().unwrap().is_empty(),
            "{reused}"
        );
        assert_eq!(reused, fresh);
    }
}
