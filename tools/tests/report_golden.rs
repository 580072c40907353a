//! Golden reports: for every finding kind, one run of the guest that makes it, its
//! text block (as `run` prints it) and its JSON object compared with the files in
//! `tests/golden/`. A report that changes on purpose is re-blessed with
//! `PERCPU_LAB_BLESS=1 cargo test --release -p percpu-lab --test report_golden`,
//! and the diff reviewed like code.
//!
//! Each JSON report validates against the schema, and every finding names code
//! with `file:line` frames.

mod common;

use std::path::PathBuf;

use common::{findings, percpu_lab, schema_errors, schema_validator};
use serde_json::Value;

/// A finding kind and a run that makes it.
const CASES: &[(&str, &[&str])] = &[
    (
        "circular-dependency",
        &["--scenario", "selftest-lock-abba-mutex"],
    ),
    (
        "irq-inversion",
        &["--scenario", "selftest-lock-safe-then-unsafe"],
    ),
    (
        "inconsistent-irq-state",
        &["--scenario", "selftest-lock-in-irq-then-irq-on"],
    ),
    (
        "irqs-enabled-in-hardirq",
        &["--scenario", "selftest-lock-unlock-irq-in-irq"],
    ),
    (
        "sleep-in-atomic",
        &["--scenario", "selftest-lock-mutex-under-spin"],
    ),
    (
        "recursive-locking",
        &["--scenario", "selftest-lock-aa-spin"],
    ),
    ("bad-unlock", &["--scenario", "selftest-lock-bad-unlock"]),
    (
        "context-violation",
        &["--scenario", "selftest-lock-assert-unheld"],
    ),
    ("deadlock", &["--scenario", "selftest-lock-abba-deadlock"]),
    (
        "held-lock-freed",
        &["--scenario", "selftest-lock-free-held"],
    ),
    ("stale-tlb", &["--scenario", "selftest-stale-tlb"]),
    (
        "missing-tlb-flush",
        &["--scenario", "selftest-missing-tlb-flush"],
    ),
    ("break-before-make", &["--scenario", "selftest-bbm"]),
    (
        "missing-barrier",
        &["--scenario", "selftest-missing-barrier"],
    ),
    (
        "freed-page-in-tlb",
        &["--scenario", "reclaim", "--cpus", "2"],
    ),
];

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or writes it when blessing.
fn assert_golden(name: &str, actual: &str) -> Result<(), String> {
    let path = golden(name);
    if std::env::var_os("PERCPU_LAB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (bless with PERCPU_LAB_BLESS=1)", path.display()))?;
    if expected == actual {
        return Ok(());
    }
    let first = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    Err(format!(
        "{name} differs from line {}:\n  golden: {:?}\n  now:    {:?}",
        first + 1,
        expected.lines().nth(first),
        actual.lines().nth(first)
    ))
}

/// The block `run` prints for the first finding of `kind`: its headline and its
/// indented lines.
fn text_block(stdout: &str, kind: &str) -> Option<String> {
    let head = format!("[{kind}] ");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next()?;
    let mut block = vec![first];
    block.extend(lines.take_while(|l| l.starts_with("    ")));
    Some(block.join("\n") + "\n")
}

/// Whether some frame of some site of `finding` has a source file and line.
fn has_source_lines(finding: &Value) -> bool {
    finding["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|site| site["frames"].as_array().into_iter().flatten())
        .any(|frame| frame["file"].is_string() && frame["line"].as_u64().is_some())
}

#[test]
fn each_finding_kind_has_its_golden_text_and_json_report() {
    let validator = schema_validator();
    let mut failures = Vec::new();
    let mut covered = Vec::new();
    for &(kind, args) in CASES {
        let mut json_args = vec!["run", "--report", "json"];
        json_args.extend_from_slice(args);
        let run = percpu_lab(&json_args);
        assert_eq!(run.code, 1, "{kind}: {}", run.describe());
        let report = run.json();
        assert_eq!(
            schema_errors(&validator, &report),
            Vec::<String>::new(),
            "{kind}"
        );
        let Some(finding) = findings(&run).into_iter().find(|f| f["kind"] == kind) else {
            panic!("{kind}: no such finding from {args:?}: {}", run.describe());
        };
        assert!(has_source_lines(&finding), "{kind}: no file:line frame");
        let mut text_args = vec!["run"];
        text_args.extend_from_slice(args);
        let text_run = percpu_lab(&text_args);
        let block = text_block(&text_run.stdout, kind)
            .unwrap_or_else(|| panic!("{kind}: no text block: {}", text_run.describe()));
        let json = serde_json::to_string_pretty(&finding).unwrap() + "\n";
        for (name, actual) in [
            (format!("{kind}.txt"), block),
            (format!("{kind}.json"), json),
        ] {
            if let Err(why) = assert_golden(&name, &actual) {
                failures.push(why);
            }
        }
        covered.push(kind);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kind the schema knows has its golden case.
    let schema = common::schema();
    let mut kinds: Vec<&str> = schema["$defs"]["finding"]["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    covered.sort_unstable();
    assert_eq!(covered, kinds);
}
