//! `percpu-lab check FILE`: the analyses of `crate::analysis` over a recorded
//! trace, streamed, with the same findings `run` gives online.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use traces::{ElfHash, Ending, Finding, RunTail};

use crate::analysis::{
    print_findings, print_text, stats_json, trace_has_tlb_events, Analyses, CodeNamer,
};
use crate::report::ReportFormat;
use crate::{kernel, mmu_report, tracefile, BadInput, Verdict};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A trace written by `percpu-lab run --trace FILE`.
    pub file: PathBuf,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// The guest kernel ELF the trace was recorded from, to name code addresses
    /// (default: the built-in guest; used only if it is the trace's kernel).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Write the lock validator's dependency graph here: Graphviz DOT, or SVG
    /// (rendered by `dot`) if the name ends in `.svg`; reported cycles are red.
    #[arg(long, value_name = "OUT")]
    pub graph: Option<PathBuf>,
}

/// `percpu-lab check FILE`: the run's analyses over its recorded trace.
///
/// The trace is streamed: memory holds the analyses' state (lock classes,
/// dependencies, chains, what is held now, what each TLB holds), never the events.
pub fn check(args: &CheckArgs) -> Result<Verdict, BadInput> {
    let mut reader = tracefile::open(&args.file)?;
    let header = reader.header().clone();
    let config = header.config.clone();
    let kernel = recorded_kernel(&args.file, &config, args.kernel.as_deref())?;
    let tlb_check = trace_has_tlb_events(&config, header.minor);
    if config.extra.get("mmu").map(String::as_str) == Some("checked") && !tlb_check {
        eprintln!(
            "percpu-lab: warning: {}: format {}.{} predates the TLB model's events; \
             the TLB check is not re-derived",
            args.file.display(),
            header.major,
            header.minor
        );
    }
    let format = crate::analysis::trace_tlb_check(&config, header.minor);
    let mut analyses = Analyses::new(kernel.as_ref(), format);
    let namer = kernel.as_ref().map(CodeNamer::new);
    let mut events: u64 = 0;
    // The last events, where a finished trace says how its run ended.
    let mut last = std::collections::VecDeque::with_capacity(RunTail::EVENTS + 1);
    while let Some(event) = reader.next() {
        analyses.feed(std::slice::from_ref(&event), reader.strings());
        events += 1;
        if last.len() == RunTail::EVENTS {
            last.pop_front();
        }
        last.push_back(event);
    }
    analyses.finish();
    let ending = RunTail::parse(last.make_contiguous(), reader.strings()).map(|t| t.ending);
    if let Some(out) = &args.graph {
        crate::graph::write(out, &analyses.locks.dot())?;
    }
    let damaged = reader.damage().is_some();
    tracefile::warn_damage(&args.file, reader.damage());
    let validator = &analyses.locks;
    let tlb_findings = analyses.tlb_findings();
    let findings: Vec<Finding> = tlb_findings
        .iter()
        .chain(validator.findings())
        .cloned()
        .collect();
    match args.report {
        ReportFormat::Text => {
            println!(
                "== {}: {} events, variant {}, scenario {}, seed {}, {} cpus",
                args.file.display(),
                events,
                config.variant,
                config.scenario,
                config.seed,
                config.cpus
            );
            if let Some(coverage) = validator.coverage() {
                println!("== locking seen through {coverage}");
            }
            print_findings("TLB check", tlb_findings);
            print_text(validator.findings());
            if findings.is_empty() {
                println!("== no findings");
            }
        }
        ReportFormat::Json => {
            let end = match &ending {
                Some(ending) => json!({
                    "summary": ending.to_string(),
                    "guest_fault": matches!(ending, Ending::Fault | Ending::Watchdog { .. } | Ending::Hang),
                    "held_locks": validator.held_locks_report(),
                }),
                None => json!({
                    "summary": "the trace ends before its run did (cut short or damaged)",
                    "guest_fault": false,
                    "held_locks": validator.held_locks_report(),
                }),
            };
            let report = json!({
                "schema_version": crate::report::SCHEMA_VERSION,
                "end": end,
                "findings": findings.iter().map(|f| mmu_report::finding_json(f, namer.as_ref())).collect::<Vec<_>>(),
                "config": { "cpus": config.cpus, "scenario": config.scenario, "seed": config.seed,
                            "sched": config.scheduler, "quantum": config.quantum,
                            "variant": config.variant },
                "stats": {
                    "trace_events": events,
                    "damaged": damaged,
                    "lockdep": stats_json(&validator.stats(), validator.coverage()),
                },
            });
            println!("{report}");
        }
    }
    Ok(if findings.is_empty() {
        Verdict::Clean
    } else {
        Verdict::Findings
    })
}

/// The kernel `trace` (its configuration `config`) was recorded from, to name its
/// code addresses: `kernel` if given, else the built-in guest of the trace's ISA, or
/// the symbols a bare Image was run with; `None`, with a warning, when that is not
/// the recorded kernel (or its symbols changed since). A `kernel` that cannot be
/// read as one is bad input.
pub fn recorded_kernel(
    trace: &std::path::Path,
    config: &traces::TraceConfig,
    kernel: Option<&std::path::Path>,
) -> Result<Option<emu::KernelImage>, BadInput> {
    // A bare Image is named by the symbols it was run with, if they are unchanged.
    let symbols = config.extra.get("symbols").map(std::path::Path::new);
    let recorded_symbols = config.extra.get(tracefile::SYMBOLS_SHA256_KEY);
    // A riscv64 run of the built-in guest says so (`arch`); arm64 is the default.
    let arch = match config.extra.get("arch").map(String::as_str) {
        Some("riscv64") => Some(crate::args::Arch::Riscv64),
        _ => None,
    };
    Ok(match kernel::load_for(kernel, symbols, arch) {
        Err(e) if kernel.is_some() => return Err(e),
        Ok(_)
            if symbols
                .zip(recorded_symbols)
                .is_some_and(|(path, recorded)| {
                    kernel::symbols_digest(path).ok().as_ref() != Some(recorded)
                }) =>
        {
            eprintln!(
                "percpu-lab: warning: {}: its symbols file changed since it was recorded; \
                 code addresses are not named",
                trace.display()
            );
            None
        }
        Ok(kernel) if ElfHash::of(kernel.file_bytes()) == config.guest_elf => Some(kernel),
        _ => {
            eprintln!(
                "percpu-lab: warning: {}: recorded from another guest kernel than the one \
                 given (--kernel); code addresses are not named",
                trace.display()
            );
            None
        }
    })
}
