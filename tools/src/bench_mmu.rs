//! The simulated MMU's part of `percpu-lab bench`: the same runs with Unicorn's
//! built-in MMU (QEMU's walker and soft TLB, no checks) and with ours (walker, per-CPU
//! TLB model, page-table write tracking, barrier hooks, checks), timed alternately.
//! Machine set-up is not timed. Both modes run the same guest instructions on the
//! round-robin scheduler, so the ratio of host CPU times (the thread's) is the MMU's cost.

use std::time::Duration;

use emu::{KernelImage, Machine, MmuMode};

use crate::bench_machine::{median, thread_cpu};
use crate::BadInput;

/// The scenarios measured: one that barely touches page tables, one that maps,
/// unmaps and flushes all the time.
pub const SCENARIOS: [&str; 2] = ["smoke", "reclaim"];

#[derive(Debug, Default, Clone)]
pub struct MmuCost {
    pub scenario: &'static str,
    pub runs: u32,
    pub builtin: Duration,
    pub checked: Duration,
    pub builtin_insns: u64,
    pub checked_insns: u64,
    /// Each pair's host time per guest instruction, ours over Unicorn's.
    pub pair_ratios: Vec<f64>,
}

impl MmuCost {
    /// Host time per guest instruction with our MMU over the same with Unicorn's:
    /// the median of the interleaved pairs' ratios.
    pub fn ratio(&self) -> f64 {
        median(self.pair_ratios.clone())
    }
}

fn timed(kernel: &KernelImage, scenario: &str, mmu: MmuMode) -> Result<(Duration, u64), BadInput> {
    let mut config = crate::bench_run::run_config(&["--scenario", scenario])?;
    config.mmu = mmu;
    let mut machine = Machine::new(config, kernel)?;
    let start = thread_cpu();
    let outcome = machine.run(&mut |_, _| {});
    let elapsed = thread_cpu() - start;
    crate::bench_run::require_clean(&outcome.end, &format!("{scenario} with the {mmu:?} MMU"))?;
    Ok((elapsed, outcome.total_insns))
}

/// Alternates the two modes on each scenario until each has run `min_time`.
pub fn measure(kernel: &KernelImage, min_time: Duration) -> Result<Vec<MmuCost>, BadInput> {
    let mut costs = Vec::new();
    for scenario in SCENARIOS {
        let mut cost = MmuCost {
            scenario,
            ..MmuCost::default()
        };
        while cost.builtin < min_time || cost.runs < 2 {
            let (builtin, builtin_insns) = timed(kernel, scenario, MmuMode::Builtin)?;
            cost.builtin += builtin;
            cost.builtin_insns += builtin_insns;
            let (checked, checked_insns) = timed(kernel, scenario, MmuMode::Checked)?;
            cost.checked += checked;
            cost.checked_insns += checked_insns;
            let per_insn = |time: Duration, insns: u64| time.as_secs_f64() / insns.max(1) as f64;
            cost.pair_ratios
                .push(per_insn(checked, checked_insns) / per_insn(builtin, builtin_insns));
            cost.runs += 1;
        }
        costs.push(cost);
    }
    Ok(costs)
}
