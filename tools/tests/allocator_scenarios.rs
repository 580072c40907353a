//! The per-CPU allocator scenarios of the guest (`storm`, `irq-free`,
//! `fs-reclaim`, `reclaim`) with the final patch's locking (`fine`): the seeds
//! 0..=9 on 4 CPUs run to the end with every integrity check passing, their one
//! finding the seed's own latent hazard (`freed-page-in-tlb`: its reclaim frees
//! pages before their TLB flush; `fixed`, clean, is in seed_variants.rs), and
//! end with the allocator's counts on the boot CPU. The seed's other latent
//! hazard, the search that does not restart after dropping `pcpu_lock`, walks
//! off a slot list on a few interleavings (which ones moves with every guest
//! change): such a seed is set aside, and at most [`MAX_WALK_OFFS`] may be.
//!
//! The counts the scenarios fix by construction are asserted exactly: they
//! depend on the seed and the CPU count only, never on the interleaving.

mod common;

use common::Run;

const SEEDS: std::ops::RangeInclusive<u64> = 0..=9;
/// Seeds of [`SEEDS`] that may end in the seed's latent walk-off.
const MAX_WALK_OFFS: usize = 2;

/// The guest's panic for the 2009 search that went on after `pcpu_lock` was
/// dropped (allocator/src/percpu.rs).
fn walked_off_after_lock_drop(run: &Run) -> bool {
    run.code == 3
        && run.console_contains("pcpu_alloc's walk of slot")
        && run.console_contains("while pcpu_lock was dropped and the search did not restart")
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counts {
    allocs: u64,
    frees: u64,
    chunks_created: u64,
    chunks_reclaimed: u64,
}

fn run(scenario: &str, seed: u64, extra: &[&str]) -> Run {
    let seed = seed.to_string();
    let mut args = vec![
        "run",
        "--scenario",
        scenario,
        "--variant",
        "fine",
        "--seed",
        &seed,
        "--cpus",
        "4",
        "--report",
        "json",
    ];
    args.extend_from_slice(extra);
    common::percpu_lab(&args)
}

/// The one `NAME: allocs=… frees=… chunks_created=… chunks_reclaimed=…` line
/// the boot CPU prints at the end.
fn counts(run: &Run, scenario: &str) -> Counts {
    let prefix = format!("cpu0: {scenario}: allocs=");
    let lines: Vec<String> = run
        .console_lines(0)
        .into_iter()
        .filter(|line| line.starts_with(&prefix))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one counts line expected\n{}",
        run.describe()
    );
    let mut fields = std::collections::HashMap::new();
    for word in lines[0].split_whitespace().skip(2) {
        let (key, value) = word
            .split_once('=')
            .unwrap_or_else(|| panic!("bad counts line: {}", lines[0]));
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad count in: {}", lines[0]));
        fields.insert(key.to_string(), value);
    }
    let field = |name: &str| {
        *fields
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in: {}", lines[0]))
    };
    Counts {
        allocs: field("allocs"),
        frees: field("frees"),
        chunks_created: field("chunks_created"),
        chunks_reclaimed: field("chunks_reclaimed"),
    }
}

/// Asserts that `run` ended normally with no finding but the seed's
/// `freed-page-in-tlb` (exit 1 with it, 0 without).
fn assert_only_the_seeds_hazard(run: &Run, what: &str) {
    let kinds = common::kinds(run);
    let expected = if kinds.is_empty() { 0 } else { 1 };
    assert!(
        run.code == expected && kinds.iter().all(|k| k == "freed-page-in-tlb"),
        "{what}: {kinds:?}\n{}",
        run.describe()
    );
}

/// Runs `scenario` for every seed (two at a time) and checks what holds for
/// all of them but the seed's walk-offs; returns the counts of the others.
fn runs_through_on_every_seed(scenario: &str) -> Vec<Counts> {
    let seeds: Vec<u64> = SEEDS.collect();
    let mut results = Vec::new();
    for pair in seeds.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|&seed| {
                let scenario = scenario.to_string();
                std::thread::spawn(move || (seed, run(&scenario, seed, &[])))
            })
            .collect();
        for handle in handles {
            results.push(handle.join().expect("runner thread"));
        }
    }
    let walk_offs: Vec<u64> = results
        .iter()
        .filter(|(_, run)| walked_off_after_lock_drop(run))
        .map(|&(seed, _)| seed)
        .collect();
    assert!(
        walk_offs.len() <= MAX_WALK_OFFS,
        "{scenario}: seeds {walk_offs:?} walked off a slot list"
    );
    results
        .iter()
        .filter(|(seed, _)| !walk_offs.contains(seed))
        .map(|(seed, run)| {
            assert_only_the_seeds_hazard(run, &format!("{scenario} seed {seed}"));
            let console = run.all_console_lines();
            assert!(
                !console
                    .iter()
                    .any(|l| l.contains("BUG:") || l.contains("PANIC")),
                "{scenario} seed {seed}: kernel BUG/PANIC line\n{}",
                run.describe()
            );
            let counts = counts(run, scenario);
            assert!(
                counts.allocs > 0 && counts.allocs == counts.frees,
                "{scenario} seed {seed}: {counts:?}"
            );
            assert!(
                counts.chunks_reclaimed <= counts.chunks_created,
                "{scenario} seed {seed}: {counts:?}"
            );
            counts
        })
        .collect()
}

#[test]
fn storm_runs_through_on_every_seed() {
    let counts = runs_through_on_every_seed("storm");
    // 4 threads × 120 operations, frees included: the allocs vary by seed.
    assert!(counts.iter().all(|c| c.allocs < 4 * 120));
    // Sizes up to 64 KiB need more than the first chunk on every seed.
    assert!(counts.iter().all(|c| c.chunks_created > 0), "{counts:?}");
}

#[test]
fn irq_free_frees_everything_in_irq_context_on_every_seed() {
    for counts in runs_through_on_every_seed("irq-free") {
        // 4 threads × 100 areas, all freed by IRQ handlers.
        assert_eq!(counts.allocs, 400, "{counts:?}");
    }
}

#[test]
fn irq_free_waits_for_frees_still_running_in_other_cpus_handlers() {
    // 8 CPUs, seed 5 once ended with the last area popped from its queue but not
    // yet freed by another CPU's handler when the main thread took the count.
    let run = common::percpu_lab(&[
        "run",
        "--scenario",
        "irq-free",
        "--cpus",
        "8",
        "--seed",
        "5",
        "--variant",
        "fixed",
    ]);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(counts(&run, "irq-free").allocs, 800);
}

#[test]
fn fs_reclaim_runs_through_on_every_seed() {
    for counts in runs_through_on_every_seed("fs-reclaim") {
        // 2 allocating threads × 24 areas, plus the chunk grown under pressure
        // before the FS path starts.
        assert_eq!(counts.allocs, 49, "{counts:?}");
        assert!(counts.chunks_created > 0, "{counts:?}");
    }
}

#[test]
fn reclaim_releases_chunks_and_reuses_their_addresses_on_every_seed() {
    for counts in runs_through_on_every_seed("reclaim") {
        // 2 rounds of 3 whole-unit areas (one chunk each, the spare chunk kept
        // by reclaim serves the first of round 2) and 3 users × 4 small areas.
        assert_eq!(
            counts,
            Counts {
                allocs: 18,
                frees: 18,
                chunks_created: 5,
                chunks_reclaimed: 4,
            }
        );
    }
}

#[test]
fn storm_workload_depends_on_the_seed_not_the_schedule() {
    for seed in [1, 7] {
        let random = run("storm", seed, &["--sched", "random"]);
        let rr = run("storm", seed, &["--sched", "rr"]);
        assert_only_the_seeds_hazard(&random, "random");
        assert_only_the_seeds_hazard(&rr, "rr");
        let (a, b) = (counts(&random, "storm"), counts(&rr, "storm"));
        assert_eq!((a.allocs, a.frees), (b.allocs, b.frees));
        // Same inputs, same run.
        let again = run("storm", seed, &["--sched", "random"]);
        assert_eq!(random.stdout, again.stdout);
    }
    let other = run("storm", 2, &[]);
    assert_only_the_seeds_hazard(&other, "seed 2");
    let seed1 = counts(&run("storm", 1, &[]), "storm");
    assert_ne!(
        counts(&other, "storm").allocs,
        seed1.allocs,
        "seeds 1 and 2 should differ in workload"
    );
}

/// The chunk reclaim of the seed does not flush the TLB when it depopulates;
/// releasing the chunk's virtual area does. Without that flush
/// (`inject=skip-tlb-flush`) a CPU that used a reclaimed chunk still reaches
/// its old pages through the reused address, and its integrity check fails.
#[test]
fn reclaim_needs_the_flush_on_release_under_qemu() {
    // One host thread per vCPU: under round-robin TCG a vCPU spinning on a ticket lock
    // whose holder is descheduled burns its whole turn, and the seed's reclaim hands
    // locks between CPUs so often that the guest's progress watchdog (host-timed
    // ticks under QEMU) fires on every seed. Even so a loaded host can starve a
    // vCPU thread long enough: such a run is repeated.
    let qemu_console =
        |cpus, bootargs: &str| common::qemu_console_patient(cpus, bootargs, "tcg,thread=multi");
    for seed in 0..=2 {
        let clean = qemu_console(4, &format!("scenario=reclaim seed={seed} variant=fine"));
        assert!(
            clean
                .iter()
                .any(|l| l
                    == "cpu0: reclaim: allocs=18 frees=18 chunks_created=5 chunks_reclaimed=4"),
            "seed {seed}: {clean:#?}"
        );
        // Whether a CPU reads through its stale entry before the lazy purge depends on
        // how QEMU's host threads interleave: a few tries, not one.
        let corrupted = |lines: &[String]| {
            lines
                .iter()
                .any(|l| l.starts_with("PANIC: reclaim: cpu") && l.contains("is corrupted"))
        };
        let bootargs = format!("scenario=reclaim seed={seed} variant=fine inject=skip-tlb-flush");
        let tries: Vec<Vec<String>> = (0..3).map(|_| qemu_console(4, &bootargs)).collect();
        assert!(
            tries.iter().any(|t| corrupted(t)),
            "seed {seed}: no stale-TLB corruption found without the flush in 3 runs: {tries:#?}"
        );
    }
}
