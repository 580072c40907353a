//! The simulated MMU's part of `percpu-lab bench`: the same runs with Unicorn's
//! built-in MMU (QEMU's walker and soft TLB, no checks) and with ours (walker, per-CPU
//! TLB model, page-table write tracking, barrier hooks, checks), timed alternately.
//! Machine set-up is not timed. Both modes run the same guest instructions on the
//! round-robin scheduler, so the ratio of host CPU times (the thread's) is the MMU's cost.

use std::time::Duration;

use emu::{KernelImage, Machine, MmuMode};

use crate::bench_machine::thread_cpu;
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
}

impl MmuCost {
    /// Host time per guest instruction with our MMU over the same with Unicorn's.
    pub fn ratio(&self) -> f64 {
        let per_insn = |time: Duration, insns: u64| time.as_secs_f64() / insns.max(1) as f64;
        per_insn(self.checked, self.checked_insns) / per_insn(self.builtin, self.builtin_insns)
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
            let (time, insns) = timed(kernel, scenario, MmuMode::Builtin)?;
            cost.builtin += time;
            cost.builtin_insns += insns;
            let (time, insns) = timed(kernel, scenario, MmuMode::Checked)?;
            cost.checked += time;
            cost.checked_insns += insns;
            cost.runs += 1;
        }
        costs.push(cost);
    }
    Ok(costs)
}
