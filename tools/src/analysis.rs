//! The analyses of a run's events on the CLI side — the lock validator and, when the
//! MMU was checked, the TLB check — fed online during `run` (through the machine's
//! event recording) and offline by `percpu-lab check FILE`, with the same findings
//! both ways; their part of the text and JSON reports.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use emu::{EventSink, KernelImage, Machine, SourceLines, StopRequest};
use serde_json::{json, Value};
use traces::lockdep::{Stats, Symbolizer};
use traces::riscv64::PageTableFormat;
use traces::tlb::TlbCheck;
use traces::{Analysis, Event, Finding, StringTable, TraceConfig, Validator};

/// Names code addresses of one kernel from its symbols and DWARF line tables.
#[derive(Clone)]
pub struct CodeNamer {
    kernel: KernelImage,
    /// Read on first use (shared by clones): most runs name no code at all, and an
    /// exploration makes a namer for every schedule.
    lines: Rc<OnceCell<Option<SourceLines>>>,
}

impl CodeNamer {
    pub fn new(kernel: &KernelImage) -> Self {
        Self {
            kernel: kernel.clone(),
            lines: Rc::default(),
        }
    }

    fn lines(&self) -> Option<&SourceLines> {
        self.lines
            .get_or_init(|| {
                // File names relative to the repository the guest was built from.
                let elf = self.kernel.debug_elf()?;
                SourceLines::parse(elf, Some(emu::GUEST_SOURCE_ROOT))
            })
            .as_ref()
    }

    /// `func+0x14` and `file:line` of `addr`; a return address (`ret`) by the call
    /// that made it.
    pub fn name(&self, addr: u64, ret: bool) -> Option<(String, Option<String>)> {
        let (symbol, call) = if ret {
            (self.kernel.symbolize_return(addr)?, addr.wrapping_sub(4))
        } else {
            (self.kernel.symbolize(addr)?, addr)
        };
        let line = self.lines().and_then(|l| l.lookup(call));
        Some((symbol, line))
    }

    /// A frame for the JSON report: `{pc, symbol, file, line}` (`pc` in hex; the
    /// others null when unknown).
    pub fn frame_json(&self, addr: u64, ret: bool) -> Value {
        let (symbol, line) = self.name(addr, ret).unzip();
        let (file, line) = match line.flatten().as_deref().and_then(|l| l.rsplit_once(':')) {
            Some((file, line)) => (Some(file.to_string()), line.parse::<u64>().ok()),
            None => (None, None),
        };
        json!({ "pc": format!("{addr:#x}"), "symbol": symbol, "file": file, "line": line })
    }
}

/// Names code addresses from `kernel`'s symbols and line tables:
/// `spin_lock+0x8 (guest/src/sync.rs:120)`; a return address by its call.
pub fn symbolizer(namer: CodeNamer) -> Symbolizer {
    Box::new(move |addr, ret| {
        let (symbol, line) = namer.name(addr, ret)?;
        Some(match line {
            Some(line) => format!("{symbol} ({line})"),
            None => symbol,
        })
    })
}

/// Every analysis of one run's events: the lock validator always, the TLB check when
/// the machine checked its MMU (its events are recorded then).
pub struct Analyses {
    pub locks: Validator,
    pub tlb: Option<TlbCheck>,
}

impl Analyses {
    /// Analyses naming code addresses of `kernel` (if given), with the TLB check of
    /// tables in `tlb_check`'s format if given.
    pub fn new(kernel: Option<&KernelImage>, tlb_check: Option<PageTableFormat>) -> Self {
        let namer = kernel.map(CodeNamer::new);
        let tlb = tlb_check.map(|format| {
            match &namer {
                Some(namer) => TlbCheck::with_symbolizer(symbolizer(namer.clone())),
                None => TlbCheck::new(),
            }
            .for_format(format)
        });
        let locks = match namer {
            Some(namer) => Validator::with_symbolizer(symbolizer(namer)),
            None => Validator::new(),
        };
        Self { locks, tlb }
    }

    pub fn feed(&mut self, events: &[Event], strings: &StringTable) {
        self.locks.feed(events, strings);
        if let Some(tlb) = &mut self.tlb {
            tlb.feed(events, strings);
        }
    }

    /// The events ended: what only the end shows (TLB windows still open).
    pub fn finish(&mut self) {
        Analysis::finish(&mut self.locks);
        if let Some(tlb) = &mut self.tlb {
            tlb.finish();
        }
    }

    /// The TLB check's findings (none without it).
    pub fn tlb_findings(&self) -> &[Finding] {
        self.tlb.as_ref().map_or(&[], |t| t.findings())
    }
}

/// Whether a trace recorded with `config` holds what the TLB check needs: the MMU
/// was checked (`mmu` = `checked`) and the format has the TLB model's events (1.2).
pub fn trace_has_tlb_events(config: &TraceConfig, minor: u16) -> bool {
    config.extra.get("mmu").map(String::as_str) == Some("checked") && minor >= 2
}

/// The TLB check a trace's events allow: its run's tables' format (RISC-V's when
/// the trace says `arch=riscv64`), or `None` without the TLB model's events.
pub fn trace_tlb_check(config: &TraceConfig, minor: u16) -> Option<PageTableFormat> {
    trace_has_tlb_events(config, minor).then(|| {
        match config.extra.get("arch").map(String::as_str) {
            Some("riscv64") => PageTableFormat::Sv39,
            _ => PageTableFormat::Vmsa,
        }
    })
}

/// The format of `kernel`'s page tables.
pub fn page_table_format(kernel: &KernelImage) -> PageTableFormat {
    match kernel.isa() {
        emu::Isa::Aarch64 => PageTableFormat::Vmsa,
        emu::Isa::Riscv64 => PageTableFormat::Sv39,
    }
}

/// The analyses fed by a running machine.
pub struct Online {
    analyses: Rc<RefCell<Analyses>>,
}

impl Online {
    /// Analyses of `kernel`'s events (the TLB check if `tlb_check`), and the sink that
    /// feeds them (stopping the machine at the first real deadlock).
    pub fn new(kernel: &KernelImage, machine: &Machine, tlb_check: bool) -> (Self, EventSink) {
        let format = tlb_check.then(|| page_table_format(kernel));
        let analyses = Rc::new(RefCell::new(Analyses::new(Some(kernel), format)));
        let stop: StopRequest = machine.stop_request();
        let fed = analyses.clone();
        let sink: EventSink = Box::new(move |events: &[Event], strings: &StringTable| {
            let mut a = fed.borrow_mut();
            let was = a.locks.deadlocked();
            a.feed(events, strings);
            if !was && a.locks.deadlocked() {
                stop.stop("deadlock: tasks wait for each other (locks or IPIs)");
            }
        });
        (Self { analyses }, sink)
    }

    /// The run ended: see [`Analyses::finish`].
    pub fn finish(&self) {
        self.analyses.borrow_mut().finish();
    }

    pub fn findings(&self) -> Vec<Finding> {
        self.analyses.borrow().locks.findings().to_vec()
    }

    pub fn tlb_findings(&self) -> Vec<Finding> {
        self.analyses.borrow().tlb_findings().to_vec()
    }

    pub fn stats(&self) -> Stats {
        self.analyses.borrow().locks.stats()
    }

    pub fn coverage(&self) -> Option<String> {
        self.analyses.borrow().locks.coverage().map(str::to_string)
    }

    /// The lock validator's dependency graph (DOT).
    pub fn dot(&self) -> String {
        self.analyses.borrow().locks.dot()
    }

    /// Every lock each task holds now.
    pub fn held_locks(&self) -> Vec<String> {
        self.analyses.borrow().locks.held_locks_report()
    }
}

/// Findings in the lockdep-like text form, under `== N {what} finding(s)`.
pub fn print_findings(what: &str, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    println!("== {} {what} finding(s)", findings.len());
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

/// The validator's findings in the lockdep-like text form.
pub fn print_text(findings: &[Finding]) {
    print_findings("lock validator", findings);
}

/// The validator's figures, and what the recorder saw of a Linux kernel's
/// locking (`coverage`) when it said.
pub fn stats_json(s: &Stats, coverage: Option<&str>) -> Value {
    let mut stats = json!({
        "events": s.events,
        "lock_events": s.lock_events,
        "classes": s.classes,
        "dependencies": s.dependencies,
        "chains": s.chains,
        "chain_cache_hits": s.chain_cache_hits,
    });
    if let Some(coverage) = coverage {
        stats["coverage"] = json!(coverage);
    }
    stats
}

/// What the lock validator reported for one run.
#[derive(Debug, Default, Clone)]
pub struct LockRun {
    pub findings: Vec<Finding>,
    pub stats: Stats,
    /// The locks each task held when the run ended (lockdep's "all locks held").
    pub held_at_end: Vec<String>,
    /// What the recorder saw of a Linux kernel's locking.
    pub coverage: Option<String>,
}

impl LockRun {
    pub fn of(online: &Online) -> Self {
        Self {
            findings: online.findings(),
            stats: online.stats(),
            held_at_end: online.held_locks(),
            coverage: online.coverage(),
        }
    }
}
