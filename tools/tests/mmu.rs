//! The simulated MMU's checks, end to end: each guest `selftest-*` MMU case makes
//! exactly its finding, the seeded bug (`--inject skip-tlb-flush`) is found, the
//! corrected allocator (`fixed`) is clean, the seed's reclaim shows its window, and
//! the report carries the MMU's counts.

mod common;

use common::percpu_lab;
use serde_json::Value;

fn kinds(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| f["kind"].as_str().expect("kind").to_string())
        .collect()
}

/// Runs `scenario` with a JSON report; returns the exit code and the report.
fn run_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["run", "--report", "json"];
    all.extend_from_slice(args);
    let run = percpu_lab(&all);
    (run.code, run.json())
}

/// The finding's details name the guest code that made it (CPU and PC, symbolised).
fn assert_details_name(scenario: &str, functions: &[&str]) {
    let (_, report) = run_json(&["--scenario", scenario]);
    let details = report["findings"][0]["details"].to_string();
    for function in functions {
        assert!(
            details.contains(function),
            "{scenario}: no {function} in {details}"
        );
    }
    assert!(details.contains("cpu0"), "{details}");
}

fn assert_exactly(scenario: &str, kind: &str) {
    for sched in ["random", "rr"] {
        let (code, report) = run_json(&["--scenario", scenario, "--sched", sched]);
        assert_eq!(
            kinds(&report),
            vec![kind.to_string()],
            "{scenario} ({sched}): {report:#}"
        );
        assert_eq!(code, 1, "a finding exits with 1");
        assert_eq!(report["end"]["guest_fault"], false, "{report:#}");
        let finding = &report["findings"][0];
        assert!(finding["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(finding["cpu"], 0, "the self-tests run on CPU 0");
        assert!(finding["details"].as_array().is_some_and(|d| !d.is_empty()));
    }
}

#[test]
fn the_correct_sequence_makes_no_finding() {
    let (code, report) = run_json(&["--scenario", "selftest-tlb-ok"]);
    assert_eq!((code, kinds(&report)), (0, vec![]), "{report:#}");
    let mmu = &report["stats"]["mmu"];
    // Unmap with flush, then a remap replacing a live entry (break-before-make).
    assert!(
        mmu["tlbi_by_kind"]["vaae1is"].as_u64().unwrap() >= 2,
        "{mmu:#}"
    );
    assert!(mmu["pt_writes"]["valid_to_invalid"].as_u64().unwrap() >= 2);
    assert_eq!(mmu["pt_writes"]["valid_to_valid"], 0);
}

#[test]
fn stale_tlb_self_test() {
    assert_exactly("selftest-stale-tlb", "stale-tlb");
}

#[test]
fn missing_tlb_flush_self_test() {
    assert_exactly("selftest-missing-tlb-flush", "missing-tlb-flush");
}

#[test]
fn break_before_make_self_test() {
    assert_exactly("selftest-bbm", "break-before-make");
}

#[test]
fn findings_name_the_code_that_made_them() {
    // The store that made the entry stale, and the access through it.
    assert_details_name(
        "selftest-stale-tlb",
        &[
            "<vunmap_page_noflush+",
            "<percpu_guest::mmu_selftest::stale_tlb+",
        ],
    );
    assert_details_name("selftest-bbm", &["<percpu_guest::mmu_selftest::bbm+"]);
    assert_details_name(
        "selftest-missing-tlb-flush",
        &["<percpu_guest::mmu::map_page+"],
    );
    // The descriptor store and the TLBI, both in the case's own function.
    assert_details_name(
        "selftest-missing-dsb-ishst",
        &[
            "page-table store at",
            "then TLBI at",
            "mmu_selftest::missing_dsb_ishst+",
        ],
    );
    assert_details_name(
        "selftest-missing-barrier",
        &["reached an `isb`", "mmu_selftest::missing_barrier+"],
    );
}

#[test]
fn missing_barrier_self_tests() {
    assert_exactly("selftest-missing-barrier", "missing-barrier");
    assert_exactly("selftest-missing-dsb-ishst", "missing-barrier");
}

#[test]
fn the_stale_translation_reads_the_old_page() {
    // As hardware would: the access goes through the cached entry to page A.
    let run = percpu_lab(&["run", "--scenario", "selftest-stale-tlb"]);
    assert!(
        run.console_lines(0)
            .iter()
            .any(|l| l.ends_with("selftest-stale-tlb: read 0xaaaa after unmap")),
        "{}",
        run.describe()
    );
    assert!(run
        .stdout
        .contains("[stale-tlb] access through a stale TLB entry"));
    assert_eq!(run.code, 1);
}

#[test]
fn the_seeded_skip_tlb_flush_is_found() {
    let found = (0..10).find(|seed| {
        let seed = seed.to_string();
        let (code, report) = run_json(&[
            "--scenario",
            "reclaim",
            "--seed",
            &seed,
            "--inject",
            "skip-tlb-flush",
        ]);
        let kinds = kinds(&report);
        let hit = kinds
            .iter()
            .any(|k| k == "stale-tlb" || k == "missing-tlb-flush");
        hit && code == 1
    });
    assert!(
        found.is_some(),
        "no seed in 0..10 exposed the missing flush"
    );
}

/// The porting bug of an ISA without broadcast invalidation: the kernel's flush
/// invalidates only the flushing CPU's TLB. On `fixed` (clean with the broadcast
/// flush, below) the other CPUs keep translations of the unmapped chunk pages,
/// which the TLB check reports; the same runs with the right flush are clean.
#[test]
fn a_flush_that_forgets_the_other_cpus_is_found() {
    let found = (0..10).find(|seed| {
        let seed = seed.to_string();
        let args = [
            "--scenario",
            "reclaim",
            "--variant",
            "fixed",
            "--seed",
            &seed,
        ];
        let (code, report) = run_json(&[&args[..], &["--inject", "local-flush-only"]].concat());
        let mmu = &report["stats"]["mmu"];
        // Only local invalidations, every one of them completed by a local DSB.
        assert_eq!(mmu["tlbi_by_kind"]["vaae1is"].as_u64(), None, "{mmu}");
        assert!(mmu["tlbi_by_kind"]["vaae1"].as_u64().unwrap() > 0, "{mmu}");
        let kinds = kinds(&report);
        assert!(
            !kinds.iter().any(|k| k == "missing-barrier"),
            "seed {seed}: {kinds:?}"
        );
        let remote = kinds
            .iter()
            .any(|k| ["stale-tlb", "missing-tlb-flush", "freed-page-in-tlb"].contains(&k.as_str()));
        remote && code == 1
    });
    assert!(
        found.is_some(),
        "no seed in 0..10 exposed the local-only flush"
    );
}

/// The flush strategies a porter can choose (`--flush`): each is clean with the
/// clean variant on the scenarios that unmap and reuse chunks, and each shows
/// up in the TLB maintenance as what it is. `ipi` invalidates locally on every
/// CPU, so on `reclaim` (whose pages do not depend on the schedule) it issues
/// exactly one local TLBI per CPU for each broadcast one.
#[test]
fn every_flush_strategy_is_clean_with_the_clean_variant() {
    for scenario in ["reclaim", "reclaim-reuse"] {
        let mut tlbis = std::collections::BTreeMap::new();
        for flush in ["broadcast", "ipi", "full", "batched"] {
            let (code, report) = run_json(&[
                "--scenario",
                scenario,
                "--variant",
                "fixed",
                "--seed",
                "1",
                "--flush",
                flush,
            ]);
            assert_eq!(
                (code, kinds(&report)),
                (0, vec![]),
                "{scenario} --flush {flush}"
            );
            let bootargs = report["config"]["bootargs"].as_str().unwrap();
            assert_eq!(
                bootargs.contains("flush="),
                flush != "broadcast",
                "{bootargs}"
            );
            let mut by_kind = report["stats"]["mmu"]["tlbi_by_kind"].clone();
            // Each CPU's own invalidation at MMU start-up.
            by_kind.as_object_mut().unwrap().remove("vmalle1");
            tlbis.insert(flush, by_kind);
        }
        let count = |flush: &str, kind: &str| tlbis[flush][kind].as_u64().unwrap_or(0);
        let kinds = |flush: &str| tlbis[flush].as_object().unwrap().len();
        assert!(count("broadcast", "vaae1is") > 0, "{tlbis:?}");
        assert_eq!(kinds("broadcast"), 1, "{tlbis:?}");
        assert_eq!(
            count("ipi", "vaae1"),
            4 * count("broadcast", "vaae1is"),
            "{tlbis:?}"
        );
        assert_eq!(kinds("ipi"), 1, "{tlbis:?}");
        assert!(count("full", "vmalle1is") > 0, "{tlbis:?}");
        assert_eq!(kinds("full"), 1, "{tlbis:?}");
        // Batched flushes broadcast, each reclaim's union at once.
        assert!(count("batched", "vaae1is") + count("batched", "vmalle1is") > 0);
        assert_eq!(
            count("batched", "vaae1is") + count("batched", "vmalle1is"),
            tlbis["batched"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>(),
            "{tlbis:?}"
        );
    }
}

/// The seed's reclaim frees a chunk's pages before it unmaps them and leaves the
/// flush to later: `fine` reports that window (and only that), `fixed`, which flushes
/// before freeing, is clean; both really unmap, flush and reuse the chunks' areas.
#[test]
fn reclaim_frees_pages_a_tlb_holds_on_fine_and_none_on_fixed_seeds_0_to_24() {
    for seed in 0..25 {
        let seed = seed.to_string();
        let args = |variant| {
            [
                "--scenario",
                "reclaim",
                "--seed",
                &seed,
                "--variant",
                variant,
            ]
        };
        let (code, fine) = run_json(&args("fine"));
        assert_eq!(
            (code, kinds(&fine)),
            (1, vec!["freed-page-in-tlb".to_string()]),
            "seed {seed}: {fine:#}"
        );
        let details = fine["findings"][0]["details"].to_string();
        assert!(details.contains("reachable for"), "{details}");
        let (code, report) = run_json(&args("fixed"));
        assert_eq!(
            (code, kinds(&report)),
            (0, vec![]),
            "seed {seed}: {report:#}"
        );
        // The chunks' areas were really flushed and reused.
        let mmu = &report["stats"]["mmu"];
        assert!(mmu["tlbi_by_kind"]["vaae1is"].as_u64().unwrap() > 0);
        assert!(mmu["pt_writes"]["invalid_to_valid"].as_u64().unwrap() > 0);
    }
}

#[test]
fn stats_count_fills_per_cpu_and_builtin_mmu_has_none() {
    let (code, report) = run_json(&["--scenario", "smoke", "--cpus", "2"]);
    assert_eq!(code, 0, "{report:#}");
    let fills = report["stats"]["mmu"]["tlb_fills"].as_array().unwrap();
    assert_eq!(fills.len(), 2);
    assert!(fills.iter().all(|f| f.as_u64().unwrap() > 0));
    let (code, builtin) = run_json(&["--scenario", "smoke", "--cpus", "2", "--mmu", "builtin"]);
    assert_eq!(code, 0);
    assert!(builtin["stats"]["mmu"].is_null());
}

#[test]
fn a_fault_through_the_simulated_mmu_has_the_architectural_syndrome() {
    // Level 1 translation fault on a load at EL1: EC 0x25, DFSC 0b000101.
    let run = percpu_lab(&["run", "--scenario", "fault"]);
    assert_eq!(run.code, 3);
    assert!(
        run.console_lines(1)
            .iter()
            .any(|l| l.contains("ESR=0x96000005 FAR=0x1000000000")),
        "{}",
        run.describe()
    );
}

#[test]
fn the_self_tests_run_the_same_under_qemu() {
    // The cases are ordinary kernel code: on a real (QEMU) MMU they complete, and the
    // stale read sees the old page, as on ours.
    for case in [
        "selftest-tlb-ok",
        "selftest-stale-tlb",
        "selftest-missing-tlb-flush",
        "selftest-bbm",
        "selftest-missing-barrier",
        "selftest-missing-dsb-ishst",
    ] {
        let qemu = common::qemu_console(4, &format!("scenario={case}")).join("\n");
        assert!(
            qemu.contains(&format!("cpu0: {case}: done")),
            "{case} under QEMU:\n{qemu}"
        );
        assert!(!qemu.contains("PANIC"), "{case} under QEMU:\n{qemu}");
        let ours = percpu_lab(&["run", "--scenario", case]);
        let stale_line = "selftest-stale-tlb: read 0xaaaa after unmap";
        assert_eq!(
            qemu.contains(stale_line),
            ours.stdout.contains(stale_line),
            "{case}: QEMU and we disagree on the stale read"
        );
    }
}

/// `--inject ipi-flush-irqs-off` issues the allocator's IPI flushes under
/// `pcpu_lock` with IRQs off: a CPU spinning on `pcpu_lock` with IRQs masked
/// never takes the IPI its holder waits for. The run stops at the cycle with a
/// `deadlock` naming both waits, each with its stack; `check` finds the same in
/// the trace and the trace replays. Without the inject the seed runs clean, and
/// the inject without `--flush ipi` (which sends no IPI) is refused.
#[test]
fn an_ipi_flush_under_pcpu_lock_with_irqs_off_is_a_reported_deadlock() {
    let refused = percpu_lab(&[
        "run",
        "--scenario",
        "map-race",
        "--inject",
        "ipi-flush-irqs-off",
    ]);
    assert_eq!(refused.code, 2, "{}", refused.describe());
    assert!(
        refused.stderr.contains("needs --flush ipi"),
        "{}",
        refused.stderr
    );

    let trace = common::scratch("ipi.trace");
    let trace_arg = trace.to_str().unwrap();
    let map_race = |seed: &str, inject: Option<&str>, trace: Option<&str>| {
        let mut args = vec![
            "--scenario",
            "map-race",
            "--variant",
            "fixed",
            "--flush",
            "ipi",
            "--seed",
            seed,
        ];
        args.extend(inject.map(|i| ["--inject", i]).into_iter().flatten());
        args.extend(trace.map(|t| ["--trace", t]).into_iter().flatten());
        run_json(&args)
    };
    // Most seeds deadlock; which ones moves with the guest, so search a few.
    let (seed, report) = (0..10)
        .map(|seed| seed.to_string())
        .find_map(|seed| {
            let (code, report) = map_race(&seed, Some("ipi-flush-irqs-off"), Some(trace_arg));
            (code == 1).then_some((seed, report))
        })
        .expect("no seed of 0..10 deadlocked");
    assert_eq!(kinds(&report), ["deadlock"], "{report}");
    assert!(
        report["end"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("stopped: deadlock"),
        "{}",
        report["end"]
    );
    let finding = &report["findings"][0];
    assert_eq!(finding["key"], "ipi pcpu_lock", "{finding}");
    let details: Vec<&str> = finding["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let has = |text: &str| details.iter().any(|l| l.contains(text));
    assert!(has("to run its cross-CPU call"), "{details:#?}");
    assert!(has("which waits with IRQs masked"), "{details:#?}");
    assert!(has("(pcpu_lock)") && has("held by"), "{details:#?}");
    // Both stacks: the IPI waiter's and the lock waiter's.
    assert!(has("<csd_lock_wait+0x0"), "{details:#?}");
    assert!(has("<spin_lock_irq"), "{details:#?}");

    let check = percpu_lab(&["check", "--report", "json", trace_arg]);
    assert_eq!(check.code, 1, "{}", check.describe());
    assert_eq!(check.json()["findings"][0]["key"], "ipi pcpu_lock");
    let replay = percpu_lab(&["replay", trace_arg]);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    assert!(replay.stdout.contains("identical"), "{}", replay.describe());
    let _ = std::fs::remove_file(&trace);

    let (code, report) = map_race(&seed, None, None);
    assert_eq!(
        (code, kinds(&report)),
        (0, vec![]),
        "seed {seed} without the inject"
    );
}
