//! The seed exactly (`fine`), its later corrections (`fixed`) and the literal
//! reading of its note (`irq-plain`), through the CLI: each variant's hazards
//! are reported where a scenario reaches them, and `fixed` is clean on every
//! scenario and seed.

mod common;

use std::thread;

use common::{finding_text as text, findings, kinds, percpu_lab, Run};
use serde_json::Value;

/// Every allocator scenario (`percpu-lab scenarios` lists them).
const SCENARIOS: [&str; 8] = [
    "smoke",
    "storm",
    "irq-free",
    "fs-reclaim",
    "reclaim",
    "map-grow",
    "reclaim-reuse",
    "map-race",
];

/// `run --variant V --scenario S --seed N --report json`.
fn variant_run(variant: &str, scenario: &str, seed: u64) -> Run {
    let seed = seed.to_string();
    percpu_lab(&[
        "run",
        "--report",
        "json",
        "--variant",
        variant,
        "--scenario",
        scenario,
        "--seed",
        &seed,
    ])
}

/// Runs `f` on every seed of `seeds`, on two threads (the machine has 2 cores).
fn each_seed(seeds: std::ops::Range<u64>, f: impl Fn(u64) + Sync) {
    thread::scope(|s| {
        for lane in 0..2 {
            let (f, seeds) = (&f, seeds.clone());
            s.spawn(move || {
                for seed in seeds.skip(lane).step_by(2) {
                    f(seed);
                }
            });
        }
    });
}

/// The one finding of `kind` in `run`, or a failure showing the run.
fn only_finding(run: &Run, kind: &str, what: &str) -> Value {
    let of_kind: Vec<Value> = findings(run)
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .collect();
    assert_eq!(of_kind.len(), 1, "{what}: {}", run.describe());
    of_kind.into_iter().next().unwrap()
}

/// The seed frees a replaced area map larger than a page with `vfree` under
/// the hard-IRQ-safe `pcpu_lock`: `vfree` takes `vmap_area_lock`, which vmalloc
/// takes with IRQs on. Lockdep's "HARDIRQ-safe -> HARDIRQ-unsafe lock order".
#[test]
fn fine_map_grow_has_the_hardirq_safe_to_unsafe_order_through_vfree() {
    each_seed(0..4, |seed| {
        let run = variant_run("fine", "map-grow", seed);
        assert_eq!(run.code, 1, "seed {seed}: {}", run.describe());
        assert_eq!(kinds(&run), ["irq-inversion"], "seed {seed}");
        let finding = only_finding(&run, "irq-inversion", &format!("seed {seed}"));
        let all = text(&finding);
        for needle in [
            "HARDIRQ-safe -> HARDIRQ-unsafe",
            "pcpu_lock --> vmap_area_lock",
            "<free_percpu+0x",
            "mem_free",
        ] {
            assert!(all.contains(needle), "seed {seed}: no {needle:?} in {all}");
        }
        assert!(!run.console_contains("PANIC"), "seed {seed}");
    });
}

/// The literal reading of the seed's note: `free_percpu` with plain
/// `spin_lock` takes `pcpu_lock` with IRQs on in process context and in
/// hard-IRQ context: lockdep's inconsistent lock state.
#[test]
fn irq_plain_has_inconsistent_hardirq_usage_of_pcpu_lock() {
    each_seed(0..4, |seed| {
        let run = variant_run("irq-plain", "map-grow", seed);
        assert_eq!(run.code, 1, "seed {seed}: {}", run.describe());
        let finding = only_finding(&run, "inconsistent-irq-state", &format!("seed {seed}"));
        let all = text(&finding);
        for needle in [
            "pcpu_lock",
            "HARDIRQ-ON-W",
            "IN-HARDIRQ-W",
            "<spin_lock+0x0 (guest/src/sync.rs:",
            "<free_percpu+0x",
        ] {
            assert!(all.contains(needle), "seed {seed}: no {needle:?} in {all}");
        }
    });
}

/// The seed's reclaim frees every page of a chunk before unmapping it and
/// leaves the TLB flush to the lazy purge; the corrected reclaim flushes, then
/// frees. The guest counts frames freed while a chunk still maps them, and the TLB
/// check reports the first such free with its window.
#[test]
fn fine_reclaim_frees_pages_still_mapped_and_fixed_does_not() {
    let line = "pages freed while still mapped";
    for seed in 0..2 {
        let fine = variant_run("fine", "reclaim", seed);
        assert_eq!(
            (fine.code, kinds(&fine)),
            (1, vec!["freed-page-in-tlb".to_string()]),
            "{}",
            fine.describe()
        );
        let freed: Vec<String> = fine
            .console_lines(0)
            .into_iter()
            .filter(|l| l.contains(line))
            .collect();
        // 2 rounds x 2 released chunks x 4 CPUs x 16 pages.
        assert_eq!(
            freed,
            [format!(
                "cpu0: reclaim: 256 {line}, their TLB flush left to the lazy purge"
            )],
            "seed {seed}"
        );
        let fixed = variant_run("fixed", "reclaim", seed);
        assert_eq!(fixed.code, 0, "{}", fixed.describe());
        assert!(!fixed.console_contains(line), "{}", fixed.describe());
        // Fixed flushes in reclaim and again at the purge: twice the TLBIs.
        let tlbis = |run: &Run| run.json()["stats"]["mmu"]["tlbi_by_kind"]["vaae1is"].as_u64();
        assert_eq!(
            tlbis(&fixed).unwrap(),
            2 * tlbis(&fine).unwrap(),
            "seed {seed}"
        );
    }
}

/// Under memory reuse (the page freed last handed out first), other kernel users take
/// the pages the seed's reclaim freed while a TLB still maps them at the chunk's
/// address: a second, worse `freed-page-in-tlb` (allocated again). `fixed` flushes
/// before it frees: clean.
#[test]
fn reclaim_under_memory_reuse_hands_out_pages_a_tlb_still_maps_on_fine_only() {
    for seed in 0..3 {
        let fine = variant_run("fine", "reclaim-reuse", seed);
        assert_eq!(fine.code, 1, "{}", fine.describe());
        let reused: Vec<_> = findings(&fine)
            .into_iter()
            .filter(|f| f["key"].as_str().unwrap().ends_with(" reused"))
            .collect();
        assert_eq!(reused.len(), 1, "seed {seed}: {}", fine.describe());
        assert_eq!(reused[0]["kind"], "freed-page-in-tlb");
        assert!(text(&reused[0]).contains("allocated the page again"));
        let fixed = variant_run("fixed", "reclaim-reuse", seed);
        assert_eq!(
            (fixed.code, kinds(&fixed)),
            (0, vec![]),
            "{}",
            fixed.describe()
        );
    }
}

/// `fixed` carries the corrections: no finding, no fault, on any scenario.
#[test]
fn fixed_is_clean_on_every_scenario_and_seed() {
    for scenario in SCENARIOS {
        each_seed(0..10, |seed| {
            let run = variant_run("fixed", scenario, seed);
            assert_eq!(
                (run.code, kinds(&run)),
                (0, vec![]),
                "{scenario} seed {seed}: {}",
                run.describe()
            );
        });
    }
}

/// `map-grow` reaches the paths it is for: the first chunk's map is extended
/// past a page (2048 entries and more) and some areas are freed from IRQ
/// handlers on every seed; some of those frees run while the grower has
/// `pcpu_lock` dropped to allocate a new map. That takes an IRQ inside a short
/// window, which depends on the interleaving: some of the first seeds must
/// reach it, not each one.
#[test]
fn map_grow_extends_past_a_page_with_irq_frees_in_the_window() {
    for variant in ["fine", "fixed"] {
        let mut in_window_per_seed = Vec::new();
        for seed in 0..4 {
            let run = variant_run(variant, "map-grow", seed);
            let line = run
                .console_lines(0)
                .into_iter()
                .find(|l| l.starts_with("cpu0: map-grow: ") && l.contains("map extensions"))
                .unwrap_or_else(|| panic!("{}", run.describe()));
            let numbers: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            // cpu0, freed in IRQ context, of those in the window, extensions.
            let [_, irq_frees, in_window, extensions] = numbers[..] else {
                panic!("{line}");
            };
            assert!(irq_frees > 0, "no free from IRQ context: {line}");
            // 2 -> 16 -> 32 -> ... -> 2048 -> 4096 entries: at least 9 extensions.
            assert!(extensions >= 9, "{line}");
            in_window_per_seed.push(in_window);
        }
        assert!(
            in_window_per_seed.iter().any(|&n| n > 0),
            "{variant}: no IRQ free in an extension window on seeds 0-3: {in_window_per_seed:?}"
        );
    }
}
