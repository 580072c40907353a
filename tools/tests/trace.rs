//! `run --trace`, `replay` and `export --perfetto` through the real CLI.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{load, percpu_lab, record, rewrite, scratch};
use serde_json::Value;
use traces::{read_trace, ElfHash, EventKind, LockFlavor};

/// `export TRACE --perfetto OUT` (OUT a scratch file named `out`): the run, which
/// must succeed, and the JSON it wrote.
fn export_perfetto(trace: &Path, out: &str) -> (common::Run, Value) {
    let out = scratch(out);
    let export = percpu_lab(&[
        "export",
        trace.to_str().unwrap(),
        "--perfetto",
        out.to_str().unwrap(),
    ]);
    assert_eq!(export.code, 0, "{}", export.describe());
    let json = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (export, json)
}

fn assert_one_line_error(run: &common::Run, what: &str) {
    assert_eq!(run.code, 2, "{}", run.describe());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.describe());
    assert!(
        run.stderr.starts_with("percpu-lab: error:") && run.stderr.contains(what),
        "{}",
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
}

#[test]
fn storm_replays_identically_on_4_cpus_for_seeds_0_to_4() {
    for seed in 0..5 {
        let path = scratch(&format!("storm-{seed}.trace"));
        let seed = seed.to_string();
        let run = record(
            &path,
            &[
                "--scenario",
                "storm",
                "--cpus",
                "4",
                "--seed",
                &seed,
                "--variant",
                "fixed",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.describe());
        assert!(run.stderr.contains("events"), "{}", run.describe());
        let trace = load(&path);
        assert!(trace.damage.is_none() && trace.trailer.is_some());
        assert_eq!(trace.header.config.scenario, "storm");
        assert_eq!(trace.header.config.seed.to_string(), seed);
        assert!(trace.events.len() > 10_000, "{} events", trace.events.len());
        let bytes = std::fs::metadata(&path).unwrap().len() as f64;
        let per_event = bytes / trace.events.len() as f64;
        assert!(per_event <= 8.0, "{per_event:.2} bytes per event");

        let replay = percpu_lab(&["replay", path.to_str().unwrap()]);
        assert_eq!(replay.code, 0, "seed {seed}: {}", replay.describe());
        assert!(
            replay
                .stdout
                .contains(&format!("identical, {} events", trace.events.len())),
            "{}",
            replay.describe()
        );
    }
}

#[test]
fn the_same_run_writes_a_byte_identical_trace() {
    let (a, b) = (scratch("same-a.trace"), scratch("same-b.trace"));
    for path in [&a, &b] {
        let run = record(path, &["--scenario", "smoke", "--seed", "7"]);
        assert_eq!(run.code, 0, "{}", run.describe());
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

#[test]
fn an_edited_trace_diverges_at_the_edited_event() {
    let path = scratch("edit.trace");
    let run = record(&path, &["--scenario", "smoke", "--seed", "1"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let mut trace = load(&path);
    let index = (trace.events.len() / 2..trace.events.len())
        .find(|&i| matches!(trace.events[i].kind, EventKind::LockAcquired { .. }))
        .unwrap();
    let original = trace.events[index];
    if let EventKind::LockAcquired { lock, flavor } = &mut trace.events[index].kind {
        lock.addr += 0x40;
        *flavor = LockFlavor::Mutex;
    }
    let edited = scratch("edited.trace");
    rewrite(&trace, &edited);

    let replay = percpu_lab(&["replay", edited.to_str().unwrap()]);
    assert_eq!(replay.code, 1, "{}", replay.describe());
    let out = &replay.stdout;
    eprintln!("{out}");
    assert!(
        out.contains(&format!("diverges at event #{index}:")),
        "{}",
        replay.describe()
    );
    assert!(
        out.contains(&format!("cpu{} pc {:#x} <", original.cpu.0, original.pc)),
        "{}",
        replay.describe()
    );
    assert!(
        out.contains("(mutex)") && out.contains("  got:"),
        "{}",
        replay.describe()
    );

    // Events missing at the end are a divergence too.
    let mut short = load(&path);
    short.events.truncate(short.events.len() - 5);
    rewrite(&short, &edited);
    let replay = percpu_lab(&["replay", edited.to_str().unwrap()]);
    assert_eq!(replay.code, 1, "{}", replay.describe());
    assert!(
        replay.stdout.contains("expected: end of the trace"),
        "{}",
        replay.describe()
    );
}

#[test]
fn replay_refuses_a_trace_of_another_guest_or_an_unknown_config() {
    let path = scratch("other.trace");
    let run = record(&path, &["--scenario", "smoke", "--cpus", "2"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let mut trace = load(&path);
    trace.header.config.guest_elf = ElfHash([7; 32]);
    let other = scratch("other-elf.trace");
    rewrite(&trace, &other);
    let replay = percpu_lab(&["replay", other.to_str().unwrap()]);
    assert_one_line_error(&replay, "another guest kernel");

    let mut trace = load(&path);
    trace.header.config.variant = "bogus".into();
    rewrite(&trace, &other);
    let replay = percpu_lab(&["replay", other.to_str().unwrap()]);
    assert_one_line_error(&replay, "not one this build can run");
}

#[test]
fn truncated_and_bad_traces_through_the_cli() {
    let path = scratch("whole.trace");
    let run = record(
        &path,
        &["--scenario", "storm", "--seed", "2", "--variant", "fixed"],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let bytes = std::fs::read(&path).unwrap();

    // Cut in the middle: whole chunks before the cut are recovered, with a warning.
    let cut = scratch("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let replay = percpu_lab(&["replay", cut.to_str().unwrap()]);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    assert!(replay.stderr.contains("warning"), "{}", replay.describe());
    let kept = read_trace(&bytes[..bytes.len() * 6 / 10])
        .unwrap()
        .events
        .len();
    assert!(kept > 0 && kept < load(&path).events.len());
    assert!(
        replay.stdout.contains(&format!(
            "identical, {kept} events (as far as the damaged trace goes)"
        )),
        "{}",
        replay.describe()
    );
    let (export, _) = export_perfetto(&cut, "cut.json");
    assert!(export.stderr.contains("warning"), "{}", export.describe());
    let json = scratch("cut.json");

    // A corrupt chunk in the middle: the same.
    let mut corrupt = bytes.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0x55;
    std::fs::write(&cut, &corrupt).unwrap();
    let replay = percpu_lab(&["replay", cut.to_str().unwrap()]);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    assert!(replay.stderr.contains("warning"), "{}", replay.describe());

    // Nothing usable: one line, exit 2.
    std::fs::write(&cut, &bytes[..10]).unwrap();
    for args in [
        vec!["replay", cut.to_str().unwrap()],
        vec![
            "export",
            cut.to_str().unwrap(),
            "--perfetto",
            json.to_str().unwrap(),
        ],
    ] {
        assert_one_line_error(&percpu_lab(&args), "truncated");
    }
    std::fs::write(&cut, b"this is not a trace at all").unwrap();
    assert_one_line_error(
        &percpu_lab(&["replay", cut.to_str().unwrap()]),
        "not a percpu-lab trace",
    );
    assert_one_line_error(
        &percpu_lab(&["replay", "/nonexistent/x.trace"]),
        "cannot open",
    );
    let run = percpu_lab(&["run", "--trace", "/nonexistent/dir/x.trace"]);
    assert_one_line_error(&run, "cannot create");
    let export = percpu_lab(&["export", path.to_str().unwrap()]);
    assert_eq!(export.code, 2, "{}", export.describe());
}

#[test]
fn a_guest_fault_or_the_watchdog_still_finishes_the_trace() {
    for (name, args) in [
        ("fault", vec!["--scenario", "fault"]),
        (
            "watchdog",
            vec!["--scenario", "hang", "--max-insns", "3000000"],
        ),
    ] {
        let path = scratch(&format!("{name}.trace"));
        let run = record(&path, &args);
        assert_eq!(run.code, 3, "{}", run.describe());
        let trace = load(&path);
        assert!(trace.damage.is_none(), "{name}: {:?}", trace.damage);
        assert!(trace.trailer.is_some() && !trace.events.is_empty());
        let replay = percpu_lab(&["replay", path.to_str().unwrap()]);
        assert_eq!(replay.code, 0, "{name}: {}", replay.describe());
    }
}

#[test]
fn fs_reclaim_records_reclaim_and_the_pseudo_lock() {
    let path = scratch("fs.trace");
    let run = record(&path, &["--scenario", "fs-reclaim", "--variant", "fixed"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let trace = load(&path);
    let count = |f: &dyn Fn(&EventKind) -> bool| trace.events.iter().filter(|e| f(&e.kind)).count();
    let enters = count(&|k| matches!(k, EventKind::ReclaimEnter));
    let exits = count(&|k| matches!(k, EventKind::ReclaimExit));
    assert!(
        enters > 0 && enters == exits,
        "{enters} reclaim entries, {exits} exits"
    );
    let pseudo = |k: &EventKind| match k {
        EventKind::LockAcquired {
            lock,
            flavor: LockFlavor::Pseudo,
        } => Some((1, lock.class)),
        EventKind::LockRelease {
            lock,
            flavor: LockFlavor::Pseudo,
        } => Some((-1, lock.class)),
        _ => None,
    };
    let mut depth = 0;
    for e in &trace.events {
        if let Some((step, class)) = pseudo(&e.kind) {
            assert_eq!(trace.strings.get(class), Some("fs_reclaim"));
            depth += step;
            assert!((0..=1).contains(&depth));
        }
    }
    assert_eq!(depth, 0);
    assert!(
        count(&|k| matches!(
            k,
            EventKind::LockAcquired {
                flavor: LockFlavor::Pseudo,
                ..
            }
        )) >= enters
    );
}

#[test]
fn perfetto_export_marks_the_lock_validators_findings() {
    let path = scratch("export-findings.trace");
    let args = [
        "--variant",
        "mutex",
        "--scenario",
        "fs-reclaim",
        "--seed",
        "0",
    ];
    let run = record(&path, &args);
    assert_eq!(run.code, 1, "a run with findings: {}", run.describe());
    let (_, json) = export_perfetto(&path, "export-findings.json");
    let marked: Vec<&str> = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "i" && e["cat"] == "finding")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(marked.contains(&"circular-dependency"), "{marked:?}");
}

#[test]
fn perfetto_export_has_a_track_per_cpu_and_balanced_spans() {
    let path = scratch("export.trace");
    let run = record(
        &path,
        &[
            "--scenario",
            "storm",
            "--cpus",
            "4",
            "--seed",
            "3",
            "--variant",
            "fixed",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let (export, json) = export_perfetto(&path, "export.json");
    assert!(export.stderr.is_empty(), "{}", export.describe());
    let events = json["traceEvents"].as_array().expect("traceEvents");

    let mut processes = BTreeMap::new();
    let mut threads = BTreeMap::new();
    // (pid, tid) -> open B spans; lock id -> open async spans.
    let mut open: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut locks: BTreeMap<String, i64> = BTreeMap::new();
    let mut lock_names = BTreeMap::new();
    let mut last_ts: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut slices: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    let mut flows: BTreeMap<u64, u32> = BTreeMap::new();
    for e in events {
        let ph = e["ph"].as_str().expect("every event has a phase");
        let pid = e["pid"].as_u64().expect("pid");
        let tid = e["tid"].as_u64().expect("tid");
        if ph == "M" {
            let name = e["args"]["name"].as_str().map(str::to_string);
            match e["name"].as_str().unwrap() {
                "process_name" => {
                    processes.insert(pid, name.unwrap());
                }
                "thread_name" => {
                    threads.insert((pid, tid), name.unwrap());
                }
                _ => {}
            }
            continue;
        }
        let ts = e["ts"].as_f64().expect("ts");
        if ph == "B" || ph == "E" {
            let last = last_ts.entry((pid, tid)).or_insert(0.0);
            assert!(ts >= *last, "time goes back on track {pid}/{tid}: {e}");
            *last = ts;
        }
        match ph {
            "B" => {
                *open.entry((pid, tid)).or_default() += 1;
                if threads[&(pid, tid)] == "tasks" {
                    let name = e["name"].as_str().unwrap();
                    assert!(name.contains(" ["), "task span without a name: {e}");
                }
                *names.entry(threads[&(pid, tid)].clone()).or_insert(0) += 1;
            }
            "E" => {
                let depth = open.entry((pid, tid)).or_default();
                *depth -= 1;
                assert!(*depth >= 0, "E without B on {pid}/{tid}");
            }
            "b" | "e" => {
                assert_eq!(e["cat"], "lock");
                let id = e["id"].as_str().expect("async id").to_string();
                let depth = locks.entry(id).or_default();
                *depth += if ph == "b" { 1 } else { -1 };
                assert!(*depth >= 0 && *depth <= 4, "lock span {e}");
                *lock_names
                    .entry(e["name"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            "X" => slices
                .entry((pid, tid))
                .or_default()
                .push((ts, ts + e["dur"].as_f64().expect("dur"))),
            "s" | "f" => *flows.entry(e["id"].as_u64().unwrap()).or_default() += 1,
            "i" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    // Complete slices on one track nest or follow each other, never cross.
    for (track, mut spans) in slices {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<f64> = Vec::new();
        for (start, end) in spans {
            while stack.last().is_some_and(|&outer| outer <= start) {
                stack.pop();
            }
            if let Some(&outer) = stack.last() {
                assert!(end <= outer, "slices cross on {track:?}");
            }
            stack.push(end);
        }
    }
    assert!(flows.values().all(|&n| n == 2), "a flow without both ends");
    // Storm sends IPIs: some arrive as arrows from sender to handler.
    let ipi_arrows = events.iter().filter(|e| e["cat"] == "ipi").count();
    assert!(ipi_arrows > 0, "no IPI arrows");
    let cpus: Vec<&str> = processes
        .range(..10_000)
        .map(|(_, name)| name.as_str())
        .collect();
    assert_eq!(cpus, ["cpu0", "cpu1", "cpu2", "cpu3"]);
    assert!(
        processes
            .range(10_000..)
            .any(|(_, name)| name.starts_with("task storm")),
        "{processes:?}"
    );
    assert!(open.values().all(|&d| d == 0), "unbalanced spans: {open:?}");
    assert!(locks.values().all(|&d| d == 0), "unbalanced lock spans");
    for track in ["tasks", "hardirq", "irqs off"] {
        assert!(
            names.get(track).copied().unwrap_or(0) >= 4,
            "{track}: {names:?}"
        );
    }
    assert!(lock_names.contains_key("pcpu_lock"), "{lock_names:?}");
    let instants = events.iter().filter(|e| e["ph"] == "i").count();
    assert!(instants > 0, "no alloc/free instants");
}

#[test]
fn injected_bugs_and_the_mmu_mode_are_part_of_the_replayed_config() {
    let path = scratch("inject.trace");
    let run = record(
        &path,
        &[
            "--scenario",
            "reclaim",
            "--inject",
            "skip-tlb-flush",
            "--mmu",
            "simulated",
        ],
    );
    assert!(run.code == 0 || run.code == 1, "{}", run.describe());
    let trace = load(&path);
    let extra = &trace.header.config.extra;
    assert_eq!(
        extra.get("inject").map(String::as_str),
        Some("skip-tlb-flush")
    );
    assert_eq!(extra.get("mmu").map(String::as_str), Some("simulated"));
    let replay = percpu_lab(&["replay", path.to_str().unwrap()]);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    assert!(replay.stdout.contains("identical"), "{}", replay.describe());
}

/// The TLB check is re-derived from the trace: a run with the seeded missing flush
/// exits 1 with its findings, `check` of its trace says the same (exit 1, text and
/// JSON), and the Perfetto export shows each finding and the maintenance around it.
#[test]
fn mmu_findings_are_rederived_by_check_and_shown_by_export() {
    let trace = scratch("skip-flush.trace");
    let args = ["--scenario", "reclaim", "--inject", "skip-tlb-flush"];
    let mut json_args = args.to_vec();
    json_args.extend(["--report", "json"]);
    let run = record(&trace, &json_args);
    assert_eq!(run.code, 1, "{}", run.describe());
    let run_kinds = common::kinds(&run);
    assert!(
        run_kinds
            .iter()
            .any(|k| k == "stale-tlb" || k == "missing-tlb-flush"),
        "{run_kinds:?}"
    );
    let path = trace.to_str().unwrap();
    let check = percpu_lab(&["check", path]);
    assert_eq!(check.code, 1, "{}", check.describe());
    assert!(
        check.stdout.contains("TLB check finding(s)"),
        "{}",
        check.describe()
    );
    let check_json = percpu_lab(&["check", "--report", "json", path]);
    assert_eq!(common::kinds(&check_json), run_kinds);

    let trace_events = load(&trace);
    let fills = trace_events
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TlbFill(_)))
        .count();
    assert!(fills > 0, "the TLB model's fills are in the trace");
    let (_, json) = export_perfetto(&trace, "skip-flush.json");
    let names: Vec<&str> = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for kind in &run_kinds {
        assert!(
            names.contains(&kind.as_str()),
            "export lacks finding {kind}"
        );
    }
    for instant in ["pt write", "tlbi vmalle1", "stale tlb use"] {
        assert!(names.contains(&instant), "export lacks {instant} instants");
    }
}

/// `export --text`: an ftrace-like log with one line per event (task, CPU, time,
/// event, its code address named), then the findings `check` makes, as comment
/// lines; `--perfetto` may be given with it.
#[test]
fn text_export_has_a_line_per_event_and_the_findings() {
    let trace = scratch("text.trace");
    let run = record(&trace, &["--variant", "mutex", "--scenario", "fs-reclaim"]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let (text, json) = (scratch("text.txt"), scratch("text.json"));
    let export = percpu_lab(&[
        "export",
        trace.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--perfetto",
        json.to_str().unwrap(),
    ]);
    assert_eq!(export.code, 0, "{}", export.describe());
    assert!(json.exists());
    let log = std::fs::read_to_string(&text).unwrap();
    let events = load(&trace).events;
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), events.len());
    for (line, event) in lines.iter().zip(&events) {
        let (who, rest) = line.trim_start().split_once(" [").unwrap();
        assert!(who.ends_with(&format!("-{}", event.task.0)), "{line}");
        assert!(rest.starts_with(&format!("{:03}] ", event.cpu.0)), "{line}");
        let (time, kind) = rest[5..].trim_start().split_once(": ").unwrap();
        assert_eq!(time.parse::<u64>().unwrap(), event.time, "{line}");
        assert!(kind.starts_with(event.kind.name()), "{line}");
    }
    assert!(log.contains("fs-alloc-"), "task names come from the trace");
    // Code addresses are named from the built-in guest, the trace's kernel.
    let unnamed: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" at 0x") && !l.ends_with('>'))
        .collect();
    assert!(unnamed.is_empty(), "{:?}", &unnamed[..unnamed.len().min(3)]);
    assert!(
        log.contains(" <mutex_lock+0x0>"),
        "no mutex_lock in the log"
    );
    let check = percpu_lab(&["check", "--report", "json", trace.to_str().unwrap()]);
    let kinds = common::kinds(&check);
    assert!(log.contains(&format!("# {} finding(s)", kinds.len())));
    for kind in kinds {
        assert!(log.contains(&format!("# [{kind}]")), "{kind}");
    }
}

#[test]
fn perfetto_export_shows_the_fs_reclaim_deadlock_as_a_cycle_of_waits_for_arrows() {
    let seed = common::deadlocking_fs_reclaim_seed();
    let path = scratch("deadlock.trace");
    let run = record(
        &path,
        &[
            "--variant",
            "mutex",
            "--scenario",
            "fs-reclaim",
            "--seed",
            &seed,
        ],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    let (_, json) = export_perfetto(&path, "deadlock.json");
    let events = json["traceEvents"].as_array().unwrap();
    // Each flow: waiter process -> holder process, named by the lock; the last
    // wait of each task is the one it is stuck in.
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for e in events.iter().filter(|e| e["cat"] == "waits-for") {
        let id = e["id"].as_u64();
        match e["ph"].as_str() {
            Some("s") => {
                starts.insert(id.unwrap(), e);
            }
            Some("f") => {
                ends.insert(id.unwrap(), e);
            }
            _ => {}
        }
    }
    let mut stuck: BTreeMap<u64, (u64, String, f64)> = BTreeMap::new();
    for (id, s) in &starts {
        let f = ends[id];
        let ts = s["ts"].as_f64().unwrap();
        let waiter = s["pid"].as_u64().unwrap();
        if stuck.get(&waiter).is_none_or(|&(_, _, at)| at <= ts) {
            let lock = s["name"].as_str().unwrap().to_string();
            stuck.insert(waiter, (f["pid"].as_u64().unwrap(), lock, ts));
        }
    }
    // Follow the arrows from any stuck task: they come back to it.
    let start = *stuck.keys().next().expect("some task waits for another");
    let (mut at, mut path, mut locks) = (start, vec![start], Vec::new());
    loop {
        let (holder, lock, _) = stuck.get(&at).cloned().expect("the holder waits too");
        locks.push(lock);
        if holder == path[0] || path.contains(&holder) {
            break;
        }
        path.push(holder);
        at = holder;
    }
    assert!(path.len() >= 2, "{stuck:?}");
    assert!(locks.iter().any(|l| l.contains("pcpu_mutex")), "{locks:?}");
    assert!(locks.iter().any(|l| l.contains("FS_LOCK")), "{locks:?}");
}
