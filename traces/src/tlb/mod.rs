//! The TLB-shootdown check: a pure function of the simulated MMU's events, run online
//! by `run` (fed as the machine records) and offline by `check` (fed from the trace),
//! so both report the same findings.
//!
//! The machine records what its TLB model does ([`crate::EventKind::TlbFill`],
//! [`crate::EventKind::PageTablePage`], [`crate::EventKind::StaleTlbUse`]) next to
//! the guest's own maintenance (`PageTableWrite`, `Tlbi`, `Dsb`, `Isb`, or on RISC-V
//! `TlbInvalidate`, and `PageTableRetired` when a table page goes out of use); [`held`]
//! keeps which translations each CPU holds, the state both the machine and this
//! check derive from those events, and [`check`] turns the events into findings:
//! - `stale-tlb`: an access through a held translation the tables no longer give;
//! - `missing-tlb-flush`: a descriptor made valid while some CPU still holds a
//!   translation that went through it when it held the old mapping;
//! - `break-before-make`: a valid descriptor changed to another output address, block
//!   size or table, directly or through invalid without a TLBI for its address;
//! - `missing-barrier`: a TLBI with a descriptor store of the same CPU not yet ordered
//!   by a `dsb` (ISH or wider for broadcast TLBIs), or a TLBI not completed by a full
//!   `dsb` before the CPU's next `isb` or a store to the translation it invalidates;
//! - `freed-page-in-tlb`: pages freed (`free_pages`) while some CPU's TLB still holds
//!   a translation to them, mapped or unmapped but not invalidated — a latent
//!   use-after-free through the TLB — with how long (instructions) until the TLBI
//!   that removed the last one, the CPUs that held them, and whether the page was
//!   allocated again meanwhile.
//!
//! The tables' format ([`crate::riscv64::PageTableFormat`]) says what a descriptor
//! means and which rules apply: break-before-make and the barrier rules are Arm's;
//! RISC-V allows a valid entry to change directly and `sfence.vma` orders itself.

pub mod check;
pub mod held;

pub use check::TlbCheck;
pub use held::{HeldEntry, HeldTlbs, StaleSince};

#[cfg(test)]
mod tests;
