//! The TLB-flush strategies' part of `percpu-lab bench` (a porting experiment):
//! the same `reclaim` run of the clean variant with each `--flush` strategy, on
//! arm64 and on RISC-V, and what its flushes cost. Guest figures are deterministic: calls to the guest's
//! `flush_tlb_kernel_range` and guest instructions per call (inclusive of callees,
//! so of the IPI sender's wait for every handler: see `emu::probe`), cross-CPU calls
//! run (`csd_unlock`), TLBIs by kind (arm64: the simulated MMU counts them) and
//! remote fences asked of the SBI firmware (RISC-V: its `broadcast`). Host time is CPU time per run, the median
//! of interleaved runs (machine set-up not timed).

use std::collections::BTreeMap;
use std::time::Duration;

use emu::{CallStats, KernelImage, Machine};

use crate::BadInput;

/// The strategies compared, in `--flush` order.
pub const STRATEGIES: [&str; 4] = ["broadcast", "ipi", "full", "batched"];
/// The measured run: unmaps, flushes and reuses chunks all the time.
pub const ARGS: [&str; 4] = ["--scenario", "reclaim", "--variant", "fixed"];
/// Interleaved timed runs of each strategy (the median is printed).
const RUNS: usize = 3;

pub struct FlushCost {
    /// `aarch64` or `riscv64`.
    pub isa: &'static str,
    pub strategy: &'static str,
    pub flushes: CallStats,
    /// Cross-CPU calls run by their targets (one per IPI the flushes sent).
    pub cross_cpu_calls: u64,
    pub tlbis: BTreeMap<String, u64>,
    /// RISC-V: remote fences the SBI RFENCE calls asked for (one per hart).
    pub remote_fences: u64,
    pub total_insns: u64,
    /// Host CPU time of each timed run.
    pub cpu_times: Vec<Duration>,
}

impl FlushCost {
    /// The median host CPU time of a run.
    pub fn median_cpu(&self) -> Duration {
        let mut times = self.cpu_times.clone();
        times.sort();
        times[times.len() / 2]
    }
}

/// One run of `strategy`; the host CPU time of `Machine::run` alone.
fn one_run(
    kernel: &KernelImage,
    strategy: &'static str,
) -> Result<(FlushCost, Duration), BadInput> {
    let isa = kernel.isa();
    let args: Vec<&str> = ARGS.iter().copied().chain(["--flush", strategy]).collect();
    let mut machine = Machine::new(crate::bench_run::run_config(&args)?, kernel)?;
    let flushes = machine.probe_calls("flush_tlb_kernel_range")?;
    let calls = machine.probe_calls("csd_unlock")?;
    let started = crate::bench_machine::thread_cpu();
    let outcome = machine.run(&mut |_, _| {});
    let cpu = crate::bench_machine::thread_cpu().saturating_sub(started);
    crate::bench_run::require_clean(
        &outcome.end,
        &format!("`run {}` with --flush {strategy}", ARGS.join(" ")),
    )?;
    let stats = machine.mmu_stats().unwrap_or_default();
    Ok((
        FlushCost {
            isa: isa.name(),
            strategy,
            flushes: machine.call_stats(flushes),
            cross_cpu_calls: machine.call_stats(calls).calls,
            tlbis: stats.tlbi_by_kind,
            remote_fences: machine.sbi_remote_fences(),
            total_insns: outcome.total_insns,
            cpu_times: Vec::new(),
        },
        cpu,
    ))
}

/// Every strategy on `kernel` (arm64) and on the built-in RISC-V guest.
pub fn measure(kernel: &KernelImage) -> Result<Vec<FlushCost>, BadInput> {
    let riscv = crate::kernel::load_for(None, None, Some(crate::args::Arch::Riscv64))?;
    let runs: Vec<(&KernelImage, &'static str)> = [kernel, &riscv]
        .into_iter()
        .flat_map(|k| STRATEGIES.into_iter().map(move |s| (k, s)))
        .collect();
    let mut costs: Vec<FlushCost> = Vec::new();
    for round in 0..RUNS {
        for (i, &(kernel, strategy)) in runs.iter().enumerate() {
            let (cost, cpu) = one_run(kernel, strategy)?;
            if round == 0 {
                costs.push(cost);
            }
            costs[i].cpu_times.push(cpu);
        }
    }
    Ok(costs)
}

/// The strategy cost table, for `bench`'s text report.
pub fn print(costs: &[FlushCost]) {
    println!(
        "TLB flush strategies (`run {} --flush S`, round-robin, seed 0; guest figures deterministic, host CPU the median of {RUNS} interleaved runs):",
        ARGS.join(" ")
    );
    println!(
        "  {:8} {:9} {:>7} {:>13} {:>11} {:>24} {:>11} {:>12} {:>11}",
        "ISA",
        "strategy",
        "flushes",
        "insns/flush",
        "IPI calls",
        "TLBIs",
        "SBI fences",
        "run insns",
        "host CPU ms"
    );
    for c in costs {
        // Each CPU's flush of everything at MMU start-up is left out.
        let tlbis: Vec<String> = c
            .tlbis
            .iter()
            .filter(|(kind, _)| !["vmalle1", "sfence.vma"].contains(&kind.as_str()))
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let tlbis = tlbis.join(", ");
        println!(
            "  {:8} {:9} {:>7} {:>13} {:>11} {:>24} {:>11} {:>12} {:>11.1}",
            c.isa,
            c.strategy,
            c.flushes.calls,
            c.flushes
                .insns_per_call()
                .map_or("-".to_string(), |n| format!("{n:.0}")),
            c.cross_cpu_calls,
            tlbis,
            c.remote_fences,
            c.total_insns,
            c.median_cpu().as_secs_f64() * 1e3
        );
    }
    println!(
        "  (TLBIs leave out each CPU's vmalle1 or sfence.vma of everything at MMU start-up; \
         RISC-V's are `sfence.vma va` and the firmware's remote fences; insns/flush include \
         the IPI sender's wait; RISC-V's broadcast is the firmware's: one SBI remote fence \
         per hart)"
    );
}

/// The strategy cost table, for `bench --report json`.
pub fn json(costs: &[FlushCost]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = costs
        .iter()
        .map(|c| {
            serde_json::json!({
                "isa": c.isa,
                "strategy": c.strategy,
                "flushes": c.flushes.calls,
                "insns_per_flush": c.flushes.insns_per_call(),
                "cross_cpu_calls": c.cross_cpu_calls,
                "tlbis": c.tlbis,
                "sbi_remote_fences": c.remote_fences,
                "run_insns": c.total_insns,
                "host_cpu_seconds_median": c.median_cpu().as_secs_f64(),
            })
        })
        .collect();
    serde_json::json!({"run": format!("run {} --sched rr", ARGS.join(" ")), "strategies": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_flushes_the_same_ranges_and_only_ipi_sends_calls() {
        let kernel = crate::kernel::load(None, None).unwrap();
        let costs = measure(&kernel).unwrap();
        let by = |s: &str| {
            costs
                .iter()
                .find(|c| c.isa == "aarch64" && c.strategy == s)
                .unwrap()
        };
        let (broadcast, ipi, full) = (by("broadcast"), by("ipi"), by("full"));
        let batched = by("batched");
        for c in [broadcast, ipi, full] {
            assert_eq!(c.cpu_times.len(), RUNS);
            assert!(c.flushes.calls > 0, "{}", c.strategy);
            assert_eq!(c.flushes.calls, broadcast.flushes.calls, "{}", c.strategy);
        }
        // One flush per reclaim run at most, never more than one per chunk.
        assert!(batched.flushes.calls > 0 && batched.flushes.calls <= broadcast.flushes.calls);
        assert_eq!(batched.cross_cpu_calls, 0);
        // Each of the other three CPUs runs one call per flush.
        assert_eq!(ipi.cross_cpu_calls, 3 * ipi.flushes.calls);
        assert_eq!((broadcast.cross_cpu_calls, full.cross_cpu_calls), (0, 0));
        let per_flush = |c: &FlushCost| c.flushes.insns_per_call().unwrap();
        assert!(per_flush(ipi) > per_flush(broadcast));
        assert!(full.tlbis.contains_key("vmalle1is") && !full.tlbis.contains_key("vaae1is"));
        assert!(ipi.tlbis.contains_key("vaae1") && !ipi.tlbis.contains_key("vaae1is"));
        assert_eq!(broadcast.remote_fences, 0);

        // RISC-V: the same flushes; `ipi` sends the calls, `broadcast` and `full`
        // ask the firmware for one remote fence per hart and flush instead.
        let rv = |s: &str| {
            costs
                .iter()
                .find(|c| c.isa == "riscv64" && c.strategy == s)
                .unwrap()
        };
        let (broadcast, ipi, full, batched) =
            (rv("broadcast"), rv("ipi"), rv("full"), rv("batched"));
        assert!(broadcast.flushes.calls > 0);
        assert_eq!(ipi.flushes.calls, broadcast.flushes.calls);
        assert_eq!(full.flushes.calls, broadcast.flushes.calls);
        assert!(batched.flushes.calls > 0 && batched.flushes.calls <= broadcast.flushes.calls);
        assert_eq!(ipi.cross_cpu_calls, 3 * ipi.flushes.calls);
        assert_eq!(ipi.remote_fences, 0);
        assert_eq!(broadcast.remote_fences, 4 * broadcast.flushes.calls);
        assert_eq!(full.remote_fences, 4 * full.flushes.calls);
        assert_eq!(broadcast.cross_cpu_calls, 0);
        // The model sees each remote fence, and `ipi`'s local ones instead.
        let remote = |c: &FlushCost| c.tlbis.get("sbi remote sfence.vma").copied();
        assert_eq!(remote(broadcast), Some(broadcast.remote_fences));
        assert_eq!(remote(ipi), None);
        assert!(ipi.tlbis.get("sfence.vma va").is_some_and(|&n| n > 0));
    }
}
