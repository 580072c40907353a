//! `run --arch riscv64`: the same guest built for RISC-V, on the emulated riscv64
//! `virt` board with the host as SBI firmware. The machine alone for now (no
//! recording, hence no analyses): what is checked is that the guest behaves as
//! it does on arm64 and under QEMU, deterministically, and that whatever needs
//! recording is refused in one line.

mod common;

use common::percpu_lab;

/// The allocator scenarios' summary line: `cpu0: <scenario>: allocs=A frees=F …`.
fn allocs_and_frees(run: &common::Run, scenario: &str) -> Option<(u64, u64)> {
    let prefix = format!("cpu0: {scenario}: allocs=");
    let line = run
        .all_console_lines()
        .into_iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))?;
    let (allocs, rest) = line.split_once(" frees=")?;
    let frees = rest.split(' ').next()?;
    Some((allocs.parse().ok()?, frees.parse().ok()?))
}

#[test]
fn smoke_prints_the_arm64_lines() {
    for cpus in ["1", "4", "8"] {
        let args = ["run", "--scenario", "smoke", "--cpus", cpus];
        let arm64 = percpu_lab(&args);
        let riscv64 = percpu_lab(&[&args[..], &["--arch", "riscv64"]].concat());
        assert_eq!(riscv64.code, 0, "{}", riscv64.describe());
        let sorted = |run: &common::Run| {
            let mut lines = run.all_console_lines();
            lines.sort();
            lines
        };
        assert!(
            riscv64.console_contains("smoke: done"),
            "{}",
            riscv64.describe()
        );
        assert_eq!(sorted(&riscv64), sorted(&arm64), "{cpus} CPUs");
        assert!(
            riscv64.stderr.contains("no lock, IRQ or TLB analysis runs"),
            "a riscv64 run must say that nothing was analysed: {}",
            riscv64.stderr
        );
    }
}

#[test]
fn every_allocator_scenario_and_flush_strategy_runs_to_its_summary() {
    for scenario in ["storm", "irq-free", "fs-reclaim", "reclaim"] {
        for variant in ["fine", "fixed", "irq"] {
            for seed in ["0", "1"] {
                let run = percpu_lab(&[
                    "run",
                    "--arch",
                    "riscv64",
                    "--scenario",
                    scenario,
                    "--variant",
                    variant,
                    "--seed",
                    seed,
                    "--sched",
                    "random",
                ]);
                let what = format!("{scenario} {variant} seed {seed}");
                assert_eq!(run.code, 0, "{what}: {}", run.describe());
                let (allocs, frees) = allocs_and_frees(&run, scenario)
                    .unwrap_or_else(|| panic!("{what}: no summary: {}", run.describe()));
                assert!(allocs > 0 && allocs == frees, "{what}: {allocs} vs {frees}");
            }
        }
    }
    for flush in ["broadcast", "ipi", "full", "batched"] {
        let run = percpu_lab(&[
            "run",
            "--arch",
            "riscv64",
            "--scenario",
            "reclaim",
            "--variant",
            "fixed",
            "--flush",
            flush,
        ]);
        assert_eq!(run.code, 0, "flush {flush}: {}", run.describe());
        assert!(run.console_contains(&format!("flush={flush}")) || flush == "broadcast");
        assert!(
            allocs_and_frees(&run, "reclaim").is_some(),
            "{}",
            run.describe()
        );
    }
}

/// The seed's `mutex` variant deadlocks on fs-reclaim; with no recording on
/// riscv64 the guest's own progress watchdog reports it (a guest fault, exit 3),
/// naming the lock holders.
#[test]
fn the_mutex_variant_deadlocks_on_fs_reclaim() {
    let run = percpu_lab(&[
        "run",
        "--arch",
        "riscv64",
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
    ]);
    assert_eq!(run.code, 3, "{}", run.describe());
    assert!(
        run.console_contains("PANIC: watchdog:"),
        "{}",
        run.describe()
    );
    assert!(
        run.console_contains("pcpu_mutex held by"),
        "{}",
        run.describe()
    );
}

#[test]
fn runs_are_deterministic_and_follow_the_seed() {
    let args = |seed: &'static str| {
        [
            "run",
            "--arch",
            "riscv64",
            "--scenario",
            "storm",
            "--sched",
            "random",
            "--seed",
            seed,
            "--report",
            "json",
        ]
    };
    let first = percpu_lab(&args("5"));
    let again = percpu_lab(&args("5"));
    let other = percpu_lab(&args("6"));
    assert_eq!(first.code, 0, "{}", first.describe());
    assert_eq!(first.stdout, again.stdout, "same seed, different reports");
    assert_eq!(first.stderr, again.stderr, "same seed, different consoles");
    let insns = |run: &common::Run| run.json()["stats"]["total_insns"].clone();
    assert_ne!(insns(&first), insns(&other), "the seed changes nothing");
}

#[test]
fn a_guest_fault_is_reported_with_symbolised_pcs() {
    let fault = percpu_lab(&["run", "--arch", "riscv64", "--scenario", "fault"]);
    assert_eq!(fault.code, 3, "{}", fault.describe());
    assert!(
        fault.console_contains(
            "unexpected exception: load page fault scause=0xd stval=0x1000000000"
        ),
        "{}",
        fault.describe()
    );
    assert!(fault.shows_symbolised_pc(), "{}", fault.describe());
    let panic = percpu_lab(&["run", "--arch", "riscv64", "--scenario", "panic"]);
    assert_eq!(panic.code, 3, "{}", panic.describe());
    assert!(
        panic.stdout.contains("panic_fmt+0x"),
        "{}",
        panic.describe()
    );
}

#[test]
fn what_needs_recording_is_refused_in_one_line() {
    let trace = common::scratch("riscv64.trace");
    let trace = trace.to_str().expect("UTF-8 path");
    let riscv_elf = env!("PERCPU_GUEST_RISCV64_ELF");
    let arm_elf = env!("PERCPU_GUEST_ELF");
    for args in [
        vec!["--trace", trace],
        vec!["--mmu", "checked"],
        vec!["--sched", "pct"],
        vec!["--graph", "out.dot"],
        vec!["--kernel", arm_elf],
    ] {
        let run = percpu_lab(&[&["run", "--arch", "riscv64"][..], &args].concat());
        assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
    }
    let mismatch = percpu_lab(&["run", "--arch", "aarch64", "--kernel", riscv_elf]);
    assert_eq!(mismatch.code, 2, "{}", mismatch.describe());
    assert!(
        mismatch.stderr.contains("does not match"),
        "{}",
        mismatch.stderr
    );
    // The RISC-V ELF given as --kernel runs as riscv64 by itself.
    let by_kernel = percpu_lab(&["run", "--kernel", riscv_elf, "--scenario", "smoke"]);
    assert_eq!(by_kernel.code, 0, "{}", by_kernel.describe());
    assert!(
        !std::path::Path::new(trace).exists(),
        "a refused run wrote its trace"
    );
}
