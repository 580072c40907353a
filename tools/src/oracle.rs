//! `run --oracle lockdep-selftest`: boots a Linux kernel built with lockdep and its
//! locking self-test, judges every self-test case with our validator
//! (`traces::lockdep::oracle`) and prints the per-case table against the kernel's
//! own lockdep, ending in `oracle: N/M locking self-test cases agree`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use emu::{KernelImage, Machine, RunEnd};
use serde_json::json;
use traces::lockdep::oracle::{tally, CaseResult, CaseVerdict, SelftestOracle};

use crate::args::{ReportFormat, RunArgs};
use crate::{interrupt, report, BadInput, Verdict};

/// The symbol a kernel with the locking self-test has (one call per case).
const SELFTEST_CASE_SYMBOL: &str = "dotest";

/// The kernel command line unless `--cmdline` says otherwise: the run stops when
/// the self-test is over, before Linux has its console driver, so it prints through
/// the early console (kept when the dummy console registers).
pub const DEFAULT_CMDLINE: &str = "earlycon keep_bootcon";

/// Why the machine is stopped once the self-test is over.
const DONE_REASON: &str = "the locking self-test finished";

pub fn run(args: &RunArgs, kernel: &KernelImage) -> Result<Verdict, BadInput> {
    if !kernel.is_boot_protocol_image() || kernel.symbol_address(SELFTEST_CASE_SYMBOL).is_none() {
        return Err(BadInput(format!(
            "--oracle lockdep-selftest needs a Linux vmlinux built with lockdep and \
             DEBUG_LOCKING_API_SELFTESTS (it has no `{SELFTEST_CASE_SYMBOL}`); \
             tools/linux/build-lockdep-kernel.sh builds one"
        )));
    }
    if kernel.debug_elf().is_none() {
        return Err(BadInput(
            "--oracle lockdep-selftest reads lockdep's structures through the kernel's DWARF: \
             give the Image's vmlinux as --symbols (a System.map has no DWARF)"
                .into(),
        ));
    }
    let mut machine = Machine::new(args.machine_config()?, kernel)?;
    let oracle = Rc::new(RefCell::new(SelftestOracle::new()));
    let stop = machine.stop_request();
    let sink_oracle = oracle.clone();
    let sink = Box::new(
        move |events: &[traces::Event], strings: &traces::StringTable| {
            let mut oracle = sink_oracle.borrow_mut();
            oracle.feed(events, strings);
            if oracle.done() {
                stop.stop(DONE_REASON);
            }
        },
    );
    let sink = interrupt::stop_on_signal(machine.stop_request(), sink);
    machine.record(args.record_options(), sink)?;
    let outcome = machine.run(&mut |cpu, line| report::print_console_line(args.report, cpu, line));
    crate::end_quietly_on_closed_stdout();
    let oracle = oracle.borrow();
    let finished = oracle.done();
    let end = report::describe_end(&outcome.end);
    match args.report {
        ReportFormat::Text => print_text(oracle.cases(), &end),
        ReportFormat::Json => println!("{}", json_report(oracle.cases(), finished, &end)),
    }
    let (_, disagree, _) = oracle.tally();
    Ok(match outcome.end {
        _ if interrupt::ended(&outcome.end) => Verdict::Interrupted,
        RunEnd::Stopped { .. } if finished && disagree == 0 => Verdict::Clean,
        RunEnd::Stopped { .. } if finished => Verdict::Findings,
        // The self-test never finished: the machine or the kernel failed.
        _ => Verdict::GuestFault,
    })
}

fn yes_no(report: bool) -> &'static str {
    if report {
        "report"
    } else {
        "clean"
    }
}

fn verdict_name(case: &CaseResult) -> String {
    match case.verdict() {
        CaseVerdict::Agree => "agree".into(),
        CaseVerdict::Disagree => "DISAGREE".into(),
        CaseVerdict::Unmodelled => format!("unmodelled ({})", case.unmodelled.join(", ")),
    }
}

fn host_column(case: &CaseResult) -> String {
    if case.host_reports.is_empty() {
        return "clean".into();
    }
    let mut kinds: Vec<&str> = case.host_reports.iter().map(|k| k.as_str()).collect();
    kinds.dedup();
    kinds.join(",")
}

/// `oracle: N/M …`, with what kept the others out.
fn summary(cases: &[CaseResult]) -> String {
    let (agree, disagree, unmodelled_cases) = tally(cases);
    let mut unmodelled: BTreeMap<&str, usize> = BTreeMap::new();
    for case in cases
        .iter()
        .filter(|c| c.verdict() == CaseVerdict::Unmodelled)
    {
        for why in &case.unmodelled {
            *unmodelled.entry(why.as_str()).or_default() += 1;
        }
    }
    let reasons: Vec<String> = unmodelled
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    format!(
        "oracle: {}/{} locking self-test cases agree ({} disagree, {} unmodelled{})",
        agree,
        cases.len(),
        disagree,
        unmodelled_cases,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join(", "))
        }
    )
}

fn print_text(cases: &[CaseResult], end: &str) {
    println!("== {end}");
    println!("== lockdep self-test, case by case (expected / kernel's lockdep / ours)");
    for case in cases {
        println!(
            "{:<40} {:<7} {:<7} {:<30} {}",
            case.name,
            yes_no(case.expected_report),
            yes_no(case.kernel_reported),
            host_column(case),
            verdict_name(case)
        );
    }
    println!("{}", summary(cases));
}

fn json_report(cases: &[CaseResult], finished: bool, end: &str) -> serde_json::Value {
    let (agree, disagree, unmodelled) = tally(cases);
    json!({
        "oracle": "lockdep-selftest",
        "end": end,
        "finished": finished,
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "mask": c.mask,
            "expected_report": c.expected_report,
            "kernel_reported": c.kernel_reported,
            "host_reports": c.host_reports.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "unmodelled": c.unmodelled,
            "verdict": match c.verdict() {
                CaseVerdict::Agree => "agree",
                CaseVerdict::Disagree => "disagree",
                CaseVerdict::Unmodelled => "unmodelled",
            },
        })).collect::<Vec<_>>(),
        "agree": agree,
        "disagree": disagree,
        "unmodelled": unmodelled,
        "summary": summary(cases),
    })
}
