//! Unicorn's own speed on the guest, for `percpu-lab bench` to compare against.
//!
//! The raw run is the boot CPU alone with only the hooks any run needs (block
//! counting, the exception stop, the MMIO devices) and none of the system-register
//! or TLB hooks, in one slice as long as the budget. Without the modelled timer the
//! guest's code path differs from a real run once it waits for time to pass; it is
//! the same code, at Unicorn's pace. The caller times the calls.
//!
//! The engine's floor ([`RawInstance::uncounted`]) drops the counting block hook
//! too: Unicorn with only the exception stop and the devices, what no machine of
//! ours can undercut. It counts nothing; the counted raw run of the same path
//! says how many instructions it ran.

use crate::kernel::KernelImage;
use crate::machine::{EmuError, Hooks, Machine, MachineConfig, RunEnd};

/// What one raw run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRun {
    /// Instructions this call executed.
    pub insns: u64,
    /// How it ended.
    pub end: RunEnd,
    /// Where the CPU was when the run ended.
    pub pc: u64,
    /// The guest's console lines, each ended by a newline: what says that two
    /// runs took the same path when one of them could not count.
    pub console: String,
}

/// A raw single-instance machine, built once so that repeated runs can be timed
/// without the setup (RAM, device tree, Unicorn instance).
pub struct RawInstance {
    machine: Machine,
}

impl RawInstance {
    /// The boot CPU alone with its block-counting hook.
    pub fn new(kernel: &KernelImage, bootargs: &str) -> Result<Self, EmuError> {
        Self::with_hooks(kernel, bootargs, Hooks::CountOnly)
    }

    /// The engine's floor: no block hook, so the run goes to the guest's end (or
    /// its first WFI) in one slice and [`RawRun::insns`] reads 0.
    pub fn uncounted(kernel: &KernelImage, bootargs: &str) -> Result<Self, EmuError> {
        Self::with_hooks(kernel, bootargs, Hooks::Uncounted)
    }

    fn with_hooks(kernel: &KernelImage, bootargs: &str, hooks: Hooks) -> Result<Self, EmuError> {
        let config = MachineConfig {
            cpus: 1,
            quantum: u64::MAX / 2,
            max_insns: 0,
            bootargs: bootargs.to_string(),
            ..MachineConfig::default()
        };
        Ok(Self {
            machine: Machine::with_hooks(config, kernel, hooks)?,
        })
    }

    /// Runs `insns` more instructions (fewer if the guest ends or stops first).
    pub fn run(&mut self, insns: u64) -> RawRun {
        let before = self.machine.total_insns();
        self.machine.extend_watchdog(insns);
        let mut console = String::new();
        let outcome = self.machine.run(&mut |_, line| {
            console.push_str(line);
            console.push('\n');
        });
        RawRun {
            insns: outcome.total_insns - before,
            end: outcome.end,
            pc: outcome.cpus[0].pc,
            console,
        }
    }
}

/// Builds a raw instance and runs it for `insns` instructions.
pub fn raw_single_instance(
    kernel: &KernelImage,
    bootargs: &str,
    insns: u64,
) -> Result<RawRun, EmuError> {
    Ok(RawInstance::new(kernel, bootargs)?.run(insns))
}
