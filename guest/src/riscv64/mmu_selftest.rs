//! The MMU self-test scenarios are arm64 sequences (TLBI, DSB): none on RISC-V.

use crate::scenarios::Scenario;

/// No cases on this ISA.
pub const CASES: &[Scenario] = &[];

/// CONTEXT: any; pure.
pub fn lookup(_name: &str) -> Option<fn(usize)> {
    None
}
