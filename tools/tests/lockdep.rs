//! The lock validator through the CLI: the three allocator variants told apart,
//! real deadlocks stopped and reported, `check FILE` equal to the run.

mod common;

use std::thread;

use common::{finding_text as text, findings, kinds, percpu_lab, Run};
use serde_json::Value;

const SEEDS: u64 = 20;

fn run_json(args: &[&str]) -> Run {
    let mut all = vec!["run", "--report", "json"];
    all.extend_from_slice(args);
    percpu_lab(&all)
}

/// `run --variant V --scenario S --seed N --report json`.
fn variant_run(variant: &str, scenario: &str, seed: &str) -> Run {
    run_json(&["--variant", variant, "--scenario", scenario, "--seed", seed])
}

/// Runs `f` on every seed in `0..SEEDS`, on two threads (the machine has 2 cores).
fn each_seed(f: impl Fn(u64) + Sync) {
    thread::scope(|s| {
        for lane in 0..2 {
            let f = &f;
            s.spawn(move || {
                for seed in (lane..SEEDS).step_by(2) {
                    f(seed);
                }
            });
        }
    });
}

#[test]
fn mutex_fs_reclaim_has_the_circular_dependency_on_every_seed() {
    each_seed(|seed| {
        let seed = seed.to_string();
        let run = variant_run("mutex", "fs-reclaim", &seed);
        assert_eq!(run.code, 1, "seed {seed}: {}", run.describe());
        let found = findings(&run);
        let circular: Vec<&Value> = found
            .iter()
            .filter(|f| f["kind"] == "circular-dependency")
            .collect();
        assert_eq!(circular.len(), 1, "seed {seed}: {found:#?}");
        let all = text(circular[0]);
        for class in ["pcpu_mutex", "fs_reclaim", "FS_LOCK"] {
            assert!(all.contains(class), "seed {seed}: no {class} in {all}");
        }
        assert!(all.contains("Chain exists of:"), "{all}");
        assert!(all.contains("<free_percpu+0x"), "symbolised: {all}");
        // A real deadlock is stopped by the host, never by the guest's watchdog.
        assert!(
            !run.console_contains("PANIC"),
            "seed {seed}: {}",
            run.describe()
        );
    });
}

#[test]
fn mutex_fs_reclaim_real_deadlock_is_reported_with_each_cpu() {
    let mut deadlocked = 0;
    for seed in 0..100u64 {
        let seed = seed.to_string();
        let run = variant_run("mutex", "fs-reclaim", &seed);
        if !kinds(&run).contains(&"deadlock".to_string()) {
            continue;
        }
        deadlocked += 1;
        assert_eq!(run.code, 1, "{}", run.describe());
        let report = run.json();
        let end = report["end"]["summary"].as_str().unwrap();
        assert!(end.starts_with("stopped: deadlock"), "{end}");
        // The host stopped a healthy guest: not a guest fault (the finding is exit 1).
        assert_eq!(report["end"]["guest_fault"], false);
        assert!(!run.console_contains("PANIC"), "{}", run.describe());
        let deadlock = findings(&run)
            .into_iter()
            .find(|f| f["kind"] == "deadlock")
            .unwrap();
        let all = text(&deadlock);
        assert!(all.contains("Wait-for cycle:"), "{all}");
        assert!(
            all.contains("pcpu_mutex") && all.contains("FS_LOCK"),
            "{all}"
        );
        // Each CPU with its PC and a symbolised backtrace.
        let cpus = report["stats"]["cpus"].as_array().unwrap();
        assert_eq!(cpus.len(), 4);
        for cpu in cpus {
            assert!(cpu["pc"].as_str().unwrap().starts_with("0x"));
            let backtrace = cpu["backtrace"].as_array().unwrap();
            assert!(!backtrace.is_empty());
            assert!(backtrace.iter().all(|f| f["symbol"].is_string()));
        }
        // The text report shows the same.
        let text_run = percpu_lab(&[
            "run",
            "--variant",
            "mutex",
            "--scenario",
            "fs-reclaim",
            "--seed",
            &seed,
        ]);
        assert_eq!(text_run.code, 1);
        assert!(text_run.stdout.contains("[deadlock]"));
        assert!(text_run
            .stdout
            .contains("Possible unsafe locking scenario:"));
        assert!(text_run.shows_symbolised_pc());
        if deadlocked == 2 {
            break;
        }
    }
    assert!(deadlocked > 0, "no seed of 0..100 deadlocked");
}

#[test]
fn irq_irq_free_reports_irqs_enabled_in_hardirq_on_every_seed() {
    each_seed(|seed| {
        let seed = seed.to_string();
        let run = variant_run("irq", "irq-free", &seed);
        assert_eq!(run.code, 1, "seed {seed}: {}", run.describe());
        let irq_state: Vec<Value> = findings(&run)
            .into_iter()
            .filter(|f| {
                matches!(
                    f["kind"].as_str(),
                    Some("irqs-enabled-in-hardirq" | "inconsistent-irq-state" | "irq-inversion")
                )
            })
            .collect();
        assert!(
            irq_state.iter().any(|f| {
                let all = text(f);
                all.contains("pcpu_lock") && all.contains("free_percpu")
            }),
            "seed {seed}: {irq_state:#?}"
        );
    });
}

#[test]
fn check_gives_the_findings_of_the_run_that_wrote_the_trace() {
    let dir = common::scratch("traces");
    std::fs::create_dir_all(&dir).unwrap();
    for (variant, scenario, seed) in [
        ("mutex", "fs-reclaim", "0"),
        ("mutex", "fs-reclaim", "7"),
        ("irq", "irq-free", "1"),
        ("fine", "storm", "2"),
    ] {
        let file = dir.join(format!("{variant}-{scenario}-{seed}.trace"));
        let path = file.to_str().unwrap();
        let run = run_json(&[
            "--variant",
            variant,
            "--scenario",
            scenario,
            "--seed",
            seed,
            "--trace",
            path,
        ]);
        let check = percpu_lab(&["check", path, "--report", "json"]);
        assert_eq!(check.code, run.code, "{}", check.describe());
        assert_eq!(check.json()["findings"], run.json()["findings"]);
        let text = percpu_lab(&["check", path]);
        assert_eq!(text.code, run.code);
        for f in findings(&run) {
            assert!(text
                .stdout
                .contains(&format!("[{}]", f["kind"].as_str().unwrap())));
        }
    }
    // A truncated trace: what was recovered is analysed, with a warning.
    let whole = dir.join("mutex-fs-reclaim-0.trace");
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let check = percpu_lab(&["check", cut.to_str().unwrap(), "--report", "json"]);
    assert!(check.stderr.contains("warning"), "{}", check.describe());
    assert!(matches!(check.code, 0 | 1), "{}", check.describe());
    // Not a trace: one line, exit 2.
    let junk = dir.join("junk.trace");
    std::fs::write(&junk, b"not a trace at all").unwrap();
    let check = percpu_lab(&["check", junk.to_str().unwrap()]);
    assert_eq!(check.code, 2, "{}", check.describe());
    assert_eq!(check.stderr.lines().count(), 1, "{}", check.describe());
    let missing = percpu_lab(&["check", dir.join("missing").to_str().unwrap()]);
    assert_eq!(missing.code, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lock self-test scenarios and the findings each declares (the parenthesised
/// end of its summary).
fn lock_selftests() -> Vec<(String, Vec<String>)> {
    let list = percpu_lab(&["scenarios"]);
    assert_eq!(list.code, 0, "{}", list.describe());
    list.stdout
        .lines()
        .filter(|line| line.starts_with("selftest-lock-"))
        .map(|line| {
            let name = line.split_whitespace().next().unwrap().to_string();
            let declared = line
                .rsplit_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name} declares no finding: {line}"));
            let mut kinds: Vec<String> = if declared == "no finding" {
                vec![]
            } else {
                declared.split(", ").map(str::to_string).collect()
            };
            kinds.sort();
            (name, kinds)
        })
        .collect()
}

#[test]
fn every_lock_selftest_gives_exactly_its_declared_findings() {
    let cases = lock_selftests();
    assert!(cases.len() >= 20, "{cases:?}");
    for kind in [
        "recursive-locking",
        "circular-dependency",
        "irq-inversion",
        "inconsistent-irq-state",
        "irqs-enabled-in-hardirq",
        "sleep-in-atomic",
        "bad-unlock",
        "deadlock",
    ] {
        assert!(
            cases
                .iter()
                .any(|(_, kinds)| kinds.iter().any(|k| k == kind)),
            "no case declares {kind}"
        );
    }
    assert!(cases.iter().filter(|(_, kinds)| kinds.is_empty()).count() >= 4);
    let failures = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        for lane in cases.chunks(cases.len().div_ceil(2)) {
            let failures = &failures;
            s.spawn(move || {
                for ((name, declared), seed) in lane.iter().flat_map(|c| [(c, "0"), (c, "3")]) {
                    let run = run_json(&["--scenario", name, "--seed", seed]);
                    let mut got = kinds(&run);
                    got.sort();
                    let expected_code = if declared.is_empty() { 0 } else { 1 };
                    if got != *declared
                        || run.code != expected_code
                        || run.console_contains("PANIC")
                    {
                        failures.lock().unwrap().push(format!(
                            "{name} seed {seed}: declared {declared:?}, got {got:?}, exit {}",
                            run.code
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_run_that_did_not_finish_reports_the_locks_each_task_held() {
    // The mutex variant sleeps in an IRQ handler (free_percpu takes pcpu_mutex):
    // the guest panics, or (when the IRQ lands while its own task holds the mutex)
    // the host stops the self-deadlock. Either way the run did not finish, and the
    // report says who held what at the end.
    let failed = run_json(&[
        "--variant",
        "mutex",
        "--scenario",
        "irq-free",
        "--seed",
        "0",
    ]);
    let end = &failed.json()["end"];
    let summary = end["summary"].as_str().unwrap();
    assert!(
        end["guest_fault"] == true || summary.starts_with("stopped: deadlock"),
        "{}",
        failed.describe()
    );
    let held: Vec<String> = failed.json()["end"]["held_locks"]
        .as_array()
        .expect("held_locks")
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(
        held.iter().any(|l| l.contains("lock(s) held by irq-free/")),
        "{held:?}"
    );
    assert!(
        held.iter()
            .any(|l| l.contains(" (pcpu_mutex){") && l.contains("} (mutex), at: ")),
        "{held:?}"
    );

    let clean = run_json(&["--scenario", "storm", "--variant", "fixed"]);
    assert_eq!(clean.code, 0, "{}", clean.describe());
    assert_eq!(clean.json()["end"]["held_locks"], serde_json::json!([]));
}

/// `--graph`: the dependency graph of the fs-reclaim deadlock (`mutex`), the same from
/// `run` and `check`, has exactly the reported cycle's edges in red, and they close a
/// cycle through the classes the finding names. An `.svg` name renders it with
/// Graphviz, or, without Graphviz, is refused with one line saying how.
#[test]
fn the_dependency_graph_shows_the_fs_reclaim_cycle_in_red() {
    let trace = common::scratch("graph.trace");
    let run_dot = common::scratch("graph-run.dot");
    let check_dot = common::scratch("graph-check.dot");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let args = [
        "--variant",
        "mutex",
        "--scenario",
        "fs-reclaim",
        "--seed",
        "0",
    ];
    let mut run_args = vec![
        "--graph".to_string(),
        path(&run_dot),
        "--report".into(),
        "json".into(),
    ];
    run_args.extend(args.iter().map(|s| s.to_string()));
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let run = common::record(&trace, &run_args);
    assert_eq!(run.code, 1, "{}", run.describe());
    let check = percpu_lab(&["check", &path(&trace), "--graph", &path(&check_dot)]);
    assert_eq!(check.code, 1, "{}", check.describe());
    let dot = std::fs::read_to_string(&run_dot).unwrap();
    assert_eq!(dot, std::fs::read_to_string(&check_dot).unwrap());

    // Node ids → class names, and the red edges.
    let name_of: std::collections::HashMap<&str, &str> = dot
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.trim().split_once(" [label=\"")?;
            (!id.contains("->")).then(|| (id, rest.split(['"', '\\']).next().unwrap()))
        })
        .collect();
    let red: Vec<(&str, &str)> = dot
        .lines()
        .filter(|l| l.contains("->") && l.contains("color=red"))
        .map(|l| {
            let (a, rest) = l.trim().split_once(" -> ").unwrap();
            (a, rest.split_whitespace().next().unwrap())
        })
        .collect();
    assert!(red.len() >= 2, "{dot}");
    // Each red edge leaves where another one arrives: a cycle.
    for &(a, _) in &red {
        assert!(
            red.iter().any(|&(_, b)| b == a),
            "{a} on no red cycle: {dot}"
        );
    }
    let circular = findings(&run)
        .into_iter()
        .find(|f| f["kind"] == "circular-dependency")
        .expect("the deadlock's cycle is reported");
    let finding = text(&circular);
    for &(a, _) in &red {
        assert!(
            finding.contains(name_of[a]),
            "{} not in the finding",
            name_of[a]
        );
    }
    assert!(
        red.iter().any(|&(a, _)| name_of[a] == "fs_reclaim"),
        "{dot}"
    );

    let svg = common::scratch("graph.svg");
    let render = percpu_lab(&["check", &path(&trace), "--graph", &path(&svg)]);
    let has_graphviz = std::process::Command::new("dot").arg("-V").output().is_ok();
    if has_graphviz {
        assert_eq!(render.code, 1, "{}", render.describe());
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("fs_reclaim"), "{svg}");
    } else {
        assert_eq!(render.code, 2, "{}", render.describe());
        assert!(
            render.stderr.contains("apt install graphviz"),
            "{}",
            render.describe()
        );
        assert!(!svg.exists());
    }
}

/// Code addresses in findings carry their source line from the guest's DWARF, with
/// file names relative to the checkout (the same wherever it was built).
#[test]
fn findings_name_the_source_line_of_each_site() {
    let run = run_json(&["--variant", "mutex", "--scenario", "fs-reclaim"]);
    let circular = findings(&run)
        .into_iter()
        .find(|f| f["kind"] == "circular-dependency")
        .expect("the fs-reclaim cycle");
    let all = text(&circular);
    assert!(
        all.contains("<mutex_lock+0x0 (guest/src/mutex.rs:"),
        "{all}"
    );
    assert!(all.contains("<free_percpu+0x"), "{all}");
    assert!(
        !all.contains(env!("CARGO_MANIFEST_DIR")),
        "absolute paths: {all}"
    );
}
