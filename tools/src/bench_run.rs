//! What every part of `percpu-lab bench` needs to run the guest: the machine a
//! user's `run` arguments give, and the rule that a measured run must pass.

use emu::{MachineConfig, RunEnd};

use crate::BadInput;

/// The machine configuration of `percpu-lab run ARGS` (round-robin unless ARGS say
/// otherwise): each figure measures a run a user can make.
pub fn run_config(args: &[&str]) -> Result<MachineConfig, BadInput> {
    let argv: Vec<&str> = ["run", "--sched", "rr"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    crate::tracefile::parse_run_args(&argv)?.machine_config()
}

/// A measured run must have powered off cleanly; anything else gives no figure.
pub fn require_clean(end: &RunEnd, what: &str) -> Result<(), BadInput> {
    match end {
        RunEnd::PoweredOff { status: 0, .. } => Ok(()),
        other => Err(BadInput(format!(
            "{what} did not pass under bench: {other:?}"
        ))),
    }
}
