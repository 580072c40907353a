//! Unicorn's own speed on the guest, for `percpu-lab bench` to compare against.

use crate::kernel::KernelImage;
use crate::machine::{EmuError, Hooks, Machine, MachineConfig, RunEnd};

/// A run of the boot CPU alone with only the hooks every run needs (block counting,
/// exception stop, MMIO devices) and no system-register or TLB hooks, in slices as
/// long as possible. The caller times it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRun {
    pub insns: u64,
    pub end: RunEnd,
    /// Where the CPU was when the run ended.
    pub pc: u64,
}

pub fn raw_single_instance(
    kernel: &KernelImage,
    bootargs: &str,
    insns: u64,
) -> Result<RawRun, EmuError> {
    let config = MachineConfig {
        cpus: 1,
        quantum: insns,
        max_insns: insns,
        bootargs: bootargs.to_string(),
        ..MachineConfig::default()
    };
    let mut machine = Machine::with_hooks(config, kernel, Hooks::CountOnly)?;
    let outcome = machine.run(&mut |_, _| {});
    Ok(RawRun {
        insns: outcome.total_insns,
        end: outcome.end,
        pc: outcome.cpus[0].pc,
    })
}
