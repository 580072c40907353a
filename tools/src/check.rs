//! The lock validator on the CLI side: fed online during `run` (through the
//! machine's event recording) and offline by `percpu-lab check FILE`, with the same
//! findings both ways; its part of the text and JSON reports.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::Args;
use emu::{EventSink, KernelImage, Machine, StopRequest};
use serde_json::{json, Value};
use traces::lockdep::{Stats, Symbolizer};
use traces::{ElfHash, Event, Finding, StringTable, Validator};

use crate::report::ReportFormat;
use crate::{kernel, mmu_report, BadInput, Verdict};

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
}

/// Names code addresses from `kernel`'s symbols.
pub fn symbolizer(kernel: &KernelImage) -> Symbolizer {
    let kernel = kernel.clone();
    Box::new(move |addr, ret| {
        if ret {
            kernel.symbolize_return(addr)
        } else {
            kernel.symbolize(addr)
        }
    })
}

/// The validator fed by a running machine.
pub struct Online {
    validator: Rc<RefCell<Validator>>,
}

impl Online {
    /// A validator for `kernel`'s events, and the sink that feeds it (stopping the
    /// machine at the first real deadlock).
    pub fn new(kernel: &KernelImage, machine: &Machine) -> (Self, EventSink) {
        let validator = Rc::new(RefCell::new(Validator::with_symbolizer(symbolizer(kernel))));
        let stop: StopRequest = machine.stop_request();
        let fed = validator.clone();
        let sink: EventSink = Box::new(move |events: &[Event], strings: &StringTable| {
            let mut v = fed.borrow_mut();
            let was = v.deadlocked();
            v.feed(events, strings);
            if !was && v.deadlocked() {
                stop.stop("deadlock: tasks wait for each other's locks");
            }
        });
        (Self { validator }, sink)
    }

    pub fn findings(&self) -> Vec<Finding> {
        self.validator.borrow().findings().to_vec()
    }

    pub fn stats(&self) -> Stats {
        self.validator.borrow().stats()
    }

    /// Every lock each task holds now.
    pub fn held_locks(&self) -> Vec<String> {
        self.validator.borrow().held_locks_report()
    }
}

/// The validator's findings in the lockdep-like text form.
pub fn print_text(findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    println!("== {} lock validator finding(s)", findings.len());
    for f in findings {
        let cpu = f.cpu.map_or(String::new(), |c| format!(" cpu{c}"));
        let time = f.time.map_or(String::new(), |t| format!(" at {t}"));
        println!();
        println!("[{}] {}{cpu}{time}", f.kind, f.title);
        for line in &f.details {
            println!("    {line}");
        }
    }
}

pub fn stats_json(s: &Stats) -> Value {
    json!({
        "events": s.events,
        "lock_events": s.lock_events,
        "classes": s.classes,
        "dependencies": s.dependencies,
        "chains": s.chains,
        "chain_cache_hits": s.chain_cache_hits,
    })
}

fn read(path: &Path) -> Result<traces::Trace, BadInput> {
    crate::input_file::require_regular(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("cannot open {}: {e}", path.display())))?;
    let trace =
        traces::read_trace(&bytes).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    crate::tracefile::warn_damage(path, trace.damage.as_ref());
    Ok(trace)
}

/// `percpu-lab check FILE`: the lock validator over a recorded trace.
pub fn check(args: &CheckArgs) -> Result<Verdict, BadInput> {
    let trace = read(&args.file)?;
    let config = &trace.header.config;
    let mut validator = match kernel::load(args.kernel.as_deref()) {
        Ok(kernel) if ElfHash::of(kernel.elf_bytes()) == config.guest_elf => {
            Validator::with_symbolizer(symbolizer(&kernel))
        }
        _ => {
            eprintln!(
                "percpu-lab: warning: {}: recorded from another guest kernel than the one \
                 given (--kernel); code addresses are not named",
                args.file.display()
            );
            Validator::new()
        }
    };
    validator.feed(&trace.events, &trace.strings);
    let findings = validator.findings();
    match args.report {
        ReportFormat::Text => {
            println!(
                "== {}: {} events, variant {}, scenario {}, seed {}, {} cpus",
                args.file.display(),
                trace.events.len(),
                config.variant,
                config.scenario,
                config.seed,
                config.cpus
            );
            print_text(findings);
            if findings.is_empty() {
                println!("== no lock validator findings");
            }
        }
        ReportFormat::Json => {
            let report = json!({
                "findings": findings.iter().map(mmu_report::finding_json).collect::<Vec<_>>(),
                "config": { "cpus": config.cpus, "scenario": config.scenario, "seed": config.seed,
                            "sched": config.scheduler, "quantum": config.quantum,
                            "variant": config.variant },
                "stats": {
                    "trace_events": trace.events.len(),
                    "damaged": trace.damage.is_some(),
                    "lockdep": stats_json(&validator.stats()),
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

/// What the lock validator reported for one run.
#[derive(Debug, Default, Clone)]
pub struct LockRun {
    pub findings: Vec<Finding>,
    pub stats: Stats,
    /// The locks each task held when the run ended (lockdep's "all locks held").
    pub held_at_end: Vec<String>,
}

impl LockRun {
    pub fn of(online: &Online) -> Self {
        Self {
            findings: online.findings(),
            stats: online.stats(),
            held_at_end: online.held_locks(),
        }
    }
}
