//! The guest's own debug state while the machine steps it (`step.rs`): a leaf,
//! so that the slice counter can hold it without importing the stepping.

/// PSTATE.D: debug exceptions masked.
pub(crate) const PSTATE_D: u64 = 1 << 9;

/// What the guest's own PSTATE.D and MDSCR_EL1 are while the machine steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestDebug {
    /// PSTATE.D as the guest set it (0 or [`PSTATE_D`]).
    pub(crate) d: u64,
    pub(crate) mdscr: u64,
}

impl GuestDebug {
    /// DAIF as the guest would read it, from the live PSTATE.
    pub(crate) fn daif(&self, pstate: u64) -> u64 {
        const DAIF: u64 = 0xf << 6;
        (pstate & DAIF & !PSTATE_D) | self.d
    }
}
