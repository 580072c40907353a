//! The simulated MMU's part of a run report: its findings (TLB-shootdown checks) and
//! its counts, as text and as JSON.

use emu::tlb::MmuStats;
use serde_json::{json, Value};
use traces::finding::Finding;

use crate::analysis::CodeNamer;

/// What the simulated MMU reported for one run.
#[derive(Debug, Default, Clone)]
pub struct MmuRun {
    pub findings: Vec<Finding>,
    /// `None` with Unicorn's built-in MMU.
    pub stats: Option<MmuStats>,
}

impl MmuRun {
    /// The machine's counts and what the online TLB check found.
    pub fn of(machine: &emu::Machine, analyses: &crate::analysis::Online) -> Self {
        Self {
            findings: analyses.tlb_findings(),
            stats: machine.mmu_stats(),
        }
    }
}

/// A finding in the JSON report: its text lines and its structured parts, every
/// address a hex string, code frames named by `namer` when the kernel is known.
pub fn finding_json(f: &Finding, namer: Option<&CodeNamer>) -> Value {
    let frame = |i: usize, &addr: &u64| match namer {
        Some(namer) => namer.frame_json(addr, i > 0),
        None => json!({ "pc": format!("{addr:#x}"), "symbol": null, "file": null, "line": null }),
    };
    let sites: Vec<Value> = f
        .sites
        .iter()
        .map(|s| {
            json!({
                "role": s.role,
                "lock": s.lock,
                "cpu": s.cpu,
                "task": s.task,
                "time": s.time,
                "irq": s.irq,
                "frames": s.frames.iter().enumerate().map(|(i, a)| frame(i, a)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "kind": f.kind.as_str(),
        "title": f.title,
        "key": f.key,
        "details": f.details,
        "cpu": f.cpu,
        "time": f.time,
        "cpus": f.cpus(),
        "locks": f.locks.iter().map(|l| json!({
            "class": l.class,
            "addr": l.addr.map(|a| format!("{a:#x}")),
            "usage": l.usage,
        })).collect::<Vec<_>>(),
        "sites": sites,
        "tasks": f.tasks.iter().map(|t| json!({ "id": t.id, "name": t.name })).collect::<Vec<_>>(),
    })
}

pub fn stats_json(s: &MmuStats) -> Value {
    json!({
        "tlb_fills": s.tlb_fills,
        "tlbi_by_kind": s.tlbi_by_kind,
        "broadcast_invalidations": s.broadcast_invalidations,
        "pt_writes": {
            "valid_to_invalid": s.pt_writes_valid_to_invalid,
            "invalid_to_valid": s.pt_writes_invalid_to_valid,
            "valid_to_valid": s.pt_writes_valid_to_valid,
            "other": s.pt_writes_other,
        },
        "pt_pages": s.pt_pages,
        "pt_pages_retired": s.pt_pages_retired,
        "stale_accesses": s.stale_accesses,
        "faults": s.faults,
        "freed_while_reachable": {
            "pages": s.freed_while_reachable,
            "longest_window_insns": s.longest_reachable_window,
        },
    })
}

pub fn print_text(mmu: &MmuRun) {
    if let Some(s) = &mmu.stats {
        let tlbis: Vec<String> = s
            .tlbi_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        println!(
            "mmu: tlb fills per cpu {:?}, tlbi [{}], broadcast {}, page-table writes \
             v->i {} i->v {} v->v {}, stale accesses {}",
            s.tlb_fills,
            tlbis.join(", "),
            s.broadcast_invalidations,
            s.pt_writes_valid_to_invalid,
            s.pt_writes_invalid_to_valid,
            s.pt_writes_valid_to_valid,
            s.stale_accesses,
        );
        if s.freed_while_reachable > 0 {
            println!(
                "mmu: {} freed pages still reachable through a cached translation \
                 (longest {} instructions)",
                s.freed_while_reachable, s.longest_reachable_window
            );
        }
    }
    crate::analysis::print_findings("TLB check", &mmu.findings);
}
