//! How a run is reported: text for people, one JSON object for tools (DESIGN.md).

use std::io::Write;

use clap::ValueEnum;
use emu::{CpuReport, KernelImage, RunEnd, RunOutcome};
use serde_json::{json, Value};

use crate::analysis::{self, LockRun};
pub use crate::args::ReportFormat;
use crate::args::RunArgs;
use crate::mmu_report::{self, MmuRun};
use crate::Verdict;

/// A run that powered off with status 0 is clean, and so, as far as the guest goes,
/// is one the host stopped (a deadlock it found: its findings make the exit code);
/// every other end is the guest's fault (panic, failed check, unhandled exception,
/// watchdog, hang).
pub fn verdict(outcome: &RunOutcome) -> Verdict {
    match outcome.end {
        RunEnd::PoweredOff { status: 0, .. } | RunEnd::Stopped { .. } => Verdict::Clean,
        _ => Verdict::GuestFault,
    }
}

/// Whether the CPUs' backtraces belong in the report: whenever the run did not
/// end by itself with success (a fault, or a stop where the CPUs' state explains it).
fn shows_backtraces(end: &RunEnd) -> bool {
    !matches!(end, RunEnd::PoweredOff { status: 0, .. })
}

pub fn print(
    args: &RunArgs,
    kernel: &KernelImage,
    outcome: &RunOutcome,
    mmu: &MmuRun,
    locks: &LockRun,
) {
    match args.report {
        ReportFormat::Text => {
            print_text(kernel, outcome);
            print_held_locks(outcome, locks);
            if let Some(coverage) = &locks.coverage {
                println!("== locking seen through {coverage}");
            }
            mmu_report::print_text(mmu);
            analysis::print_text(&locks.findings);
        }
        ReportFormat::Json => println!("{}", json_report(args, kernel, outcome, mmu, locks)),
    }
}

pub fn describe_end(end: &RunEnd) -> String {
    match end {
        RunEnd::PoweredOff { cpu, status: 0 } => format!("powered off by cpu{cpu}"),
        RunEnd::PoweredOff { cpu, status } => {
            format!("guest failure: cpu{cpu} powered off with status {status}")
        }
        RunEnd::Reset { cpu, status } => format!("guest reset by cpu{cpu} (status {status})"),
        RunEnd::Fault { cpu, pc, what } => format!("guest fault on cpu{cpu} at pc {pc:#x}: {what}"),
        RunEnd::Watchdog { limit } => format!("watchdog: no power-off within {limit} instructions"),
        RunEnd::Hang => "hang: every CPU waits for an interrupt that can never come".to_string(),
        RunEnd::Stopped { reason } => format!("stopped: {reason}"),
    }
}

/// `0x40081234 <func+0x14 (file:line)>` (a return address named by its call, as
/// Linux's `%pB`), or the bare address.
fn symbolized(namer: &analysis::CodeNamer, addr: u64, ret: bool) -> String {
    match namer.name(addr, ret) {
        Some((symbol, Some(line))) => format!("{addr:#x} <{symbol} ({line})>"),
        Some((symbol, None)) => format!("{addr:#x} <{symbol}>"),
        None => format!("{addr:#x}"),
    }
}

/// A run that ended without finishing (watchdog, hang, guest failure) is explained
/// by who held what, as lockdep's "show all locks held" does.
fn held_locks_at_end<'a>(outcome: &RunOutcome, locks: &'a LockRun) -> &'a [String] {
    match outcome.end {
        RunEnd::PoweredOff { status: 0, .. } => &[],
        _ => &locks.held_at_end,
    }
}

fn print_held_locks(outcome: &RunOutcome, locks: &LockRun) {
    let held = held_locks_at_end(outcome, locks);
    if !held.is_empty() {
        println!("== locks held when the run ended:");
        for line in held {
            println!("    {line}");
        }
    }
}

fn print_text(kernel: &KernelImage, outcome: &RunOutcome) {
    println!("== {}", describe_end(&outcome.end));
    println!(
        "== {} instructions in {} slices",
        outcome.total_insns, outcome.slices
    );
    let with_backtraces = shows_backtraces(&outcome.end);
    let namer = analysis::CodeNamer::new(kernel);
    for cpu in &outcome.cpus {
        println!(
            "cpu{}: {:?}, {} instructions, {} irqs, pc {}",
            cpu.cpu,
            cpu.state,
            cpu.insns,
            cpu.irqs,
            symbolized(&namer, cpu.pc, false)
        );
        // Backtraces are what a failure report is for; a clean run does not need them.
        if with_backtraces {
            for (depth, &ret) in cpu.backtrace.iter().enumerate() {
                println!("    #{depth} {}", symbolized(&namer, ret, true));
            }
        }
    }
}

/// The version of the JSON reports' layout (`run` and `check --report json`), as
/// `docs/report.schema.json` describes it. Raise it when a key changes meaning or
/// goes away; adding keys keeps it.
pub const SCHEMA_VERSION: u32 = 2;

fn cpu_json(namer: &analysis::CodeNamer, cpu: &CpuReport) -> Value {
    let (symbol, _) = namer.name(cpu.pc, false).unzip();
    json!({
        "cpu": cpu.cpu,
        "state": format!("{:?}", cpu.state),
        "insns": cpu.insns,
        "irqs": cpu.irqs,
        "pc": format!("{:#x}", cpu.pc),
        "symbol": symbol,
        "backtrace": cpu.backtrace.iter().map(|&ret| namer.frame_json(ret, true)).collect::<Vec<_>>(),
    })
}

fn json_report(
    args: &RunArgs,
    kernel: &KernelImage,
    outcome: &RunOutcome,
    mmu: &MmuRun,
    locks: &LockRun,
) -> Value {
    let namer = analysis::CodeNamer::new(kernel);
    json!({
        "schema_version": SCHEMA_VERSION,
        "findings": mmu.findings.iter().chain(&locks.findings).map(|f| mmu_report::finding_json(f, Some(&namer))).collect::<Vec<_>>(),
        "end": { "summary": describe_end(&outcome.end), "guest_fault": verdict(outcome) == Verdict::GuestFault,
                 "held_locks": held_locks_at_end(outcome, locks) },
        "config": { "cpus": args.cpus, "scenario": args.scenario, "seed": args.seed,
                    "sched": format!("{:?}", args.sched).to_lowercase(), "quantum": args.quantum,
                    "variant": args.variant.to_possible_value().map(|v| v.get_name().to_string()),
                    "bootargs": args.bootargs(),
                    "sched_settings": args.sched_flags().into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect::<serde_json::Map<_, _>>() },
        "stats": {
            "total_insns": outcome.total_insns,
            "slices": outcome.slices,
            "cpus": outcome.cpus.iter().map(|cpu| cpu_json(&namer, cpu)).collect::<Vec<_>>(),
            "mmu": mmu.stats.as_ref().map(mmu_report::stats_json),
            "lockdep": analysis::stats_json(&locks.stats, locks.coverage.as_deref()),
        },
    })
}

/// Prints a guest console line as `[cpuN] line`: on stdout, or on stderr when
/// stdout carries a JSON report. A reader that went away (`| head`) is ignored:
/// the run goes on.
pub fn print_console_line(format: ReportFormat, cpu: usize, line: &str) {
    let _ = match format {
        ReportFormat::Json => writeln!(std::io::stderr(), "[cpu{cpu}] {line}"),
        ReportFormat::Text => writeln!(std::io::stdout(), "[cpu{cpu}] {line}"),
    };
}
