//! Every JSON report — `run` and `check`, clean, with findings of each analysis,
//! deadlocked, faulted, cut short, with and without the simulated MMU — validates
//! against `docs/report.schema.json`, and the schema's finding kinds are exactly the
//! ones the analyses report.

mod common;

use common::{
    percpu_lab, record, schema, schema_errors as errors, schema_validator as validator, scratch,
};
use serde_json::Value;

#[test]
fn every_report_validates_against_the_schema() {
    let validator = validator();
    let runs: [(&[&str], i32); 6] = [
        (&["--scenario", "smoke"], 0),
        (&["--scenario", "reclaim"], 1),
        (&["--scenario", "selftest-bbm"], 1),
        (&["--variant", "mutex", "--scenario", "fs-reclaim"], 1),
        (&["--scenario", "panic"], 3),
        (&["--scenario", "smoke", "--mmu", "builtin"], 0),
    ];
    for (i, (args, code)) in runs.into_iter().enumerate() {
        let trace = scratch(&format!("schema-{i}.trace"));
        let mut all = vec!["--report", "json"];
        all.extend_from_slice(args);
        let run = record(&trace, &all);
        assert_eq!(run.code, code, "{args:?}: {}", run.describe());
        let report = run.json();
        assert_eq!(
            errors(&validator, &report),
            Vec::<String>::new(),
            "run {args:?}"
        );
        let check = percpu_lab(&["check", "--report", "json", trace.to_str().unwrap()]);
        let checked = check.json();
        assert_eq!(
            errors(&validator, &checked),
            Vec::<String>::new(),
            "check {args:?}"
        );
        // The same top-level keys from both.
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&report), keys(&checked), "{args:?}");
    }
    // A trace cut short: its end says so.
    let trace = scratch("schema-0.trace");
    let bytes = std::fs::read(&trace).unwrap();
    let cut = scratch("schema-cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let check = percpu_lab(&["check", "--report", "json", cut.to_str().unwrap()]);
    let report = check.json();
    assert_eq!(errors(&validator, &report), Vec::<String>::new());
    assert!(report["end"]["summary"]
        .as_str()
        .unwrap()
        .contains("cut short"));
}

#[test]
fn the_schema_names_exactly_the_finding_kinds_and_refuses_others() {
    let schema = schema();
    let kinds: Vec<&str> = schema["$defs"]["finding"]["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let reported: Vec<&str> = traces::FindingKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, reported);
    // The validator really looks: a report with an unknown kind or without a
    // schema version is refused.
    let validator = validator();
    let run = percpu_lab(&["run", "--report", "json", "--scenario", "selftest-bbm"]);
    let mut report = run.json();
    report["findings"][0]["kind"] = "made-up".into();
    assert!(!errors(&validator, &report).is_empty());
    let mut report = run.json();
    report.as_object_mut().unwrap().remove("schema_version");
    assert!(!errors(&validator, &report).is_empty());
}
