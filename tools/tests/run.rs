//! `percpu-lab run` end to end on the built-in guest: boot, determinism, exits.

mod common;
use common::percpu_lab;

#[test]
fn smoke_boots_and_powers_off_on_1_2_4_8_cpus() {
    for cpus in [1, 2, 4, 8] {
        let run = percpu_lab(&["run", "--scenario", "smoke", "--cpus", &cpus.to_string()]);
        assert_eq!(run.code, 0, "{cpus} cpus: {}", run.describe());
        for cpu in 0..cpus {
            assert!(
                !run.console_lines(cpu).is_empty(),
                "cpu{cpu} of {cpus} printed nothing: {}",
                run.describe()
            );
        }
        assert!(
            run.console_lines(cpus).is_empty(),
            "a CPU beyond {cpus} printed: {}",
            run.describe()
        );
        assert!(
            run.stdout.contains("powered off by cpu0"),
            "{}",
            run.describe()
        );
    }
}

#[test]
fn default_job_is_storm_on_four_cpus_with_the_fine_allocator() {
    let run = percpu_lab(&["run"]);
    // The 2009 seed's reclaim frees pages a TLB still holds: its one finding.
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        run.stdout.contains("[freed-page-in-tlb]") && !run.stdout.contains("lock validator"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("scenario=storm") && run.stdout.contains("variant=fine"),
        "{}",
        run.describe()
    );
    assert!(
        run.all_console_lines()
            .iter()
            .any(|l| l.contains("storm: allocs=")),
        "{}",
        run.describe()
    );
    for cpu in 0..4 {
        assert!(
            !run.console_lines(cpu).is_empty(),
            "cpu{cpu} printed nothing: {}",
            run.describe()
        );
    }
}

fn json_run(seed: &str) -> common::Run {
    percpu_lab(&[
        "run",
        "--scenario",
        "smoke",
        "--sched",
        "random",
        "--seed",
        seed,
        "--report",
        "json",
    ])
}

fn per_cpu_insns(run: &common::Run) -> Vec<u64> {
    let report = run.json();
    report["stats"]["cpus"]
        .as_array()
        .expect("stats.cpus is an array")
        .iter()
        .map(|cpu| cpu["insns"].as_u64().expect("insns is a number"))
        .collect()
}

#[test]
fn same_seed_gives_identical_output_and_instruction_counts() {
    let first = json_run("7");
    let second = json_run("7");
    assert_eq!(first.code, 0, "{}", first.describe());
    assert_eq!(first.stdout, second.stdout, "reports differ");
    assert_eq!(first.stderr, second.stderr, "console output differs");
    let insns = per_cpu_insns(&first);
    assert_eq!(insns.len(), 4);
    assert!(
        insns.iter().all(|&n| n > 0),
        "a CPU ran no instruction: {insns:?}"
    );
}

#[test]
fn different_seeds_give_different_interleavings() {
    let a = json_run("1");
    let b = json_run("2");
    assert_eq!(a.code, 0, "{}", a.describe());
    assert_eq!(b.code, 0, "{}", b.describe());
    let interleaving_differs =
        per_cpu_insns(&a) != per_cpu_insns(&b) || a.all_console_lines() != b.all_console_lines();
    assert!(
        interleaving_differs,
        "seeds 1 and 2 ran the same interleaving"
    );
}

#[test]
fn timer_irq_is_taken_only_while_unmasked() {
    // The guest masks IRQs, lets the timer deadline pass, checks nothing was taken,
    // then unmasks and checks the pending IRQ arrives; it panics otherwise.
    for sched in ["rr", "random"] {
        let run = percpu_lab(&["run", "--scenario", "irqmask", "--sched", sched]);
        assert_eq!(run.code, 0, "{}", run.describe());
        assert!(run.console_contains("irqmask: ok"), "{}", run.describe());
    }
}

#[test]
fn guest_panic_exits_3_with_symbolised_pc() {
    let run = percpu_lab(&["run", "--scenario", "panic"]);
    assert_eq!(run.code, 3, "{}", run.describe());
    assert!(run.console_contains("PANIC: "), "{}", run.describe());
    // Some CPU's PC or backtrace names the panic path as `0x… <symbol+0x…>`.
    assert!(run.stdout.contains("panic"), "{}", run.describe());
    assert!(
        run.shows_symbolised_pc(),
        "no symbolised PC: {}",
        run.describe()
    );
}

#[test]
fn unexpected_exception_exits_3() {
    let run = percpu_lab(&["run", "--scenario", "fault"]);
    assert_eq!(run.code, 3, "{}", run.describe());
    // The guest names the abort from the syndrome the host filled in.
    assert!(
        run.console_contains("data abort ESR=0x96"),
        "{}",
        run.describe()
    );
    assert!(
        run.shows_symbolised_pc(),
        "no symbolised PC: {}",
        run.describe()
    );
}

#[test]
fn watchdog_ends_a_hung_guest_with_exit_3() {
    let run = percpu_lab(&["run", "--scenario", "hang", "--max-insns", "5000000"]);
    assert_eq!(run.code, 3, "{}", run.describe());
    assert!(run.stdout.contains("watchdog"), "{}", run.describe());
    let report = percpu_lab(&[
        "run",
        "--scenario",
        "hang",
        "--max-insns",
        "5000000",
        "--report",
        "json",
    ])
    .json();
    assert_eq!(report["end"]["guest_fault"], true);
    assert!(report["stats"]["total_insns"].as_u64().unwrap() >= 5_000_000);
}

#[test]
fn scenarios_lists_the_kernels_table() {
    let run = percpu_lab(&["scenarios"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    for name in ["smoke", "panic", "fault", "hang", "irqmask"] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing: {}",
            run.describe()
        );
    }
}

#[test]
fn a_closed_stdout_neither_panics_nor_loses_the_trace() {
    let trace = common::scratch("closed-stdout.trace");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_percpu-lab"))
        .args([
            "run",
            "--scenario",
            "smoke",
            "--trace",
            trace.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once, like `| head -0`
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let replay = percpu_lab(&["replay", trace.to_str().unwrap()]);
    assert_eq!(replay.code, 0, "the trace is whole: {}", replay.describe());
    std::fs::remove_file(&trace).ok();
}

/// The guest's summary line of `scenario` (`reclaim: allocs=… chunks_created=…`).
fn summary(run: &common::Run, scenario: &str) -> String {
    let head = format!("cpu0: {scenario}: allocs=");
    run.console_lines(0)
        .into_iter()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no summary: {}", run.describe()))
}

#[test]
fn scale_multiplies_the_rounds_and_a_scaled_run_replays() {
    let run = |scale: &str| {
        let trace = common::scratch(&format!("scale-{scale}.trace"));
        let args = [
            "--scenario",
            "reclaim",
            "--variant",
            "fixed",
            "--cpus",
            "2",
            "--scale",
            scale,
        ];
        let run = common::record(&trace, &args);
        assert_eq!(run.code, 0, "{}", run.describe());
        (run, trace)
    };
    // reclaim creates 3 chunks, then 2 more per further round: 2 rounds a unit.
    let (one, _) = run("1");
    assert!(
        summary(&one, "reclaim").contains("chunks_created=5 "),
        "{}",
        one.describe()
    );
    let (three, trace) = run("3");
    assert!(
        summary(&three, "reclaim").contains("chunks_created=13 "),
        "{}",
        three.describe()
    );
    assert!(three.console_contains("scale=3"));
    // The scale is part of the recorded configuration: the replay repeats it.
    let replay = common::replay(&trace);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    // Out of range: a one-line usage error.
    let zero = percpu_lab(&["run", "--scale", "0"]);
    assert_eq!(zero.code, 2, "{}", zero.describe());
}
