//! The allocator's part of `percpu-lab bench`: guest instructions per `alloc` and
//! per `free` on `storm`, for each locking variant. These are deterministic figures
//! (instruction counts, not host time), measured with call probes on the guest's
//! `__alloc_percpu` and `free_percpu` (see `emu::probe`: inclusive of callees, and
//! of whatever else ran on that CPU meanwhile — IRQs, or other threads while the
//! caller slept on a mutex).

use emu::{CallStats, KernelImage, Machine, RunEnd};

use crate::BadInput;

pub const VARIANTS: [&str; 3] = ["fine", "irq", "mutex"];
const ALLOC_ENTRY: &str = "__alloc_percpu";
const FREE_ENTRY: &str = "free_percpu";

pub struct AllocCost {
    pub variant: &'static str,
    pub alloc: CallStats,
    pub free: CallStats,
    /// How the run ended, when it did not power off cleanly (a variant's bug).
    pub failure: Option<String>,
}

pub fn measure(kernel: &KernelImage) -> Result<Vec<AllocCost>, BadInput> {
    VARIANTS
        .into_iter()
        .map(|variant| measure_variant(kernel, variant))
        .collect()
}

fn measure_variant(kernel: &KernelImage, variant: &'static str) -> Result<AllocCost, BadInput> {
    let config = crate::bench_run::run_config(&["--scenario", "storm", "--variant", variant])?;
    let mut machine = Machine::new(config, kernel)?;
    let alloc = machine.probe_calls(ALLOC_ENTRY)?;
    let free = machine.probe_calls(FREE_ENTRY)?;
    let outcome = machine.run(&mut |_, _| {});
    let failure = match outcome.end {
        RunEnd::PoweredOff { status: 0, .. } => None,
        other => Some(format!("{other:?}")),
    };
    Ok(AllocCost {
        variant,
        alloc: machine.call_stats(alloc),
        free: machine.call_stats(free),
        failure,
    })
}

/// "1234.5 insns/call over N calls", or why there is no figure.
pub fn describe(stats: &CallStats) -> String {
    match stats.insns_per_call() {
        Some(per_call) => format!("{per_call:8.1} insns/call over {} calls", stats.calls),
        None => "no call returned".to_string(),
    }
}
