//! TLB maintenance and barriers by meaning, whatever instruction set recorded
//! them ([`EventKind::maintenance`]).
//!
//! A trace keeps what the hardware was told: arm64's `tlbi`, `dsb`, `dmb` and
//! `isb` as issued (an arm64 TLBI is complete only at a later DSB of enough
//! reach, so its rules need the instructions), RISC-V's invalidations
//! (`sfence.vma`, the SBI firmware's remote fences) already by meaning. An
//! analysis that needs only the meaning (which translations go, on which CPUs,
//! when the removal is complete, what a barrier orders) matches on
//! [`Maintenance`] and is the same for every ISA.

use crate::aarch64::{DsbReach, TlbiScope};
use crate::event::EventKind;

/// Which CPUs an invalidation reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The issuing CPU only (arm64's non-shareable TLBIs).
    ThisCpu,
    /// Every CPU of the shareability domain (arm64's `…is`/`…os` TLBIs).
    Broadcast,
    /// These CPUs, a bit per CPU (RISC-V: a local `sfence.vma` is its own CPU's
    /// bit; a remote fence names the harts it reached).
    Cpus(u64),
}

/// When an invalidation is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// When it is recorded (RISC-V: `sfence.vma` orders and invalidates at once;
    /// a remote fence returns once the harts have done theirs).
    Immediate,
    /// At the issuing CPU's next barrier that waits for maintenance, reaching as
    /// far as the invalidation did (arm64's `dsb ish` after a `tlbi …is`).
    AtBarrier,
}

/// What a maintenance or barrier event means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Translations of `scope` leave the TLBs `reach` names.
    Invalidate {
        /// Which CPUs' TLBs.
        reach: Reach,
        /// Which translations.
        scope: TlbiScope,
        /// When the removal is complete.
        completion: Completion,
    },
    /// A barrier: what it orders (`reach`), and whether it also waits for the
    /// issuing CPU's earlier maintenance to complete (a DSB does, a DMB does not).
    Barrier {
        /// What it orders, and how far.
        reach: DsbReach,
        /// Whether it waits for earlier maintenance.
        completes_maintenance: bool,
    },
    /// Context synchronisation: later instructions see the effects of earlier
    /// completed maintenance (arm64's `isb`).
    ContextSync,
}

impl EventKind {
    /// The meaning of a TLB maintenance or barrier event, or `None` for other kinds
    /// and for the TLBI forms not modelled (`TlbiOp::Other`).
    pub fn maintenance(&self) -> Option<Maintenance> {
        Some(match *self {
            EventKind::Tlbi {
                op,
                broadcast,
                operand,
            } => Maintenance::Invalidate {
                reach: if broadcast {
                    Reach::Broadcast
                } else {
                    Reach::ThisCpu
                },
                scope: TlbiScope::of(op, operand)?,
                completion: Completion::AtBarrier,
            },
            EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid,
            } => Maintenance::Invalidate {
                reach: Reach::Cpus(cpus),
                scope: TlbiScope::of_range(start, len, asid),
                completion: Completion::Immediate,
            },
            EventKind::Dsb { option } => Maintenance::Barrier {
                reach: DsbReach::of(option),
                completes_maintenance: true,
            },
            EventKind::Dmb { option } => Maintenance::Barrier {
                reach: DsbReach::of(option),
                completes_maintenance: false,
            },
            EventKind::Isb => Maintenance::ContextSync,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aarch64::{BarrierOption, TlbiOp};

    #[test]
    fn both_isas_maintenance_reads_as_the_same_meanings() {
        // tlbi vaae1is, x0 with x0 = VA 0xffff_ff80_0104_1000 >> 12.
        let va: u64 = 0xffff_ff80_0104_1000;
        let tlbi = EventKind::Tlbi {
            op: TlbiOp::Vaae1,
            broadcast: true,
            operand: (va >> 12) & ((1 << 44) - 1),
        };
        assert_eq!(
            tlbi.maintenance(),
            Some(Maintenance::Invalidate {
                reach: Reach::Broadcast,
                scope: TlbiScope::Va { va, asid: None },
                completion: Completion::AtBarrier,
            })
        );
        let local = EventKind::Tlbi {
            op: TlbiOp::Vmalle1,
            broadcast: false,
            operand: 0,
        };
        assert!(matches!(
            local.maintenance(),
            Some(Maintenance::Invalidate {
                reach: Reach::ThisCpu,
                scope: TlbiScope::All,
                ..
            })
        ));
        // sfence.vma va on CPU 2, and a remote fence of every ASID on CPUs 0 and 3.
        let sfence = EventKind::TlbInvalidate {
            cpus: 1 << 2,
            start: va,
            len: 4096,
            asid: None,
        };
        assert_eq!(
            sfence.maintenance(),
            Some(Maintenance::Invalidate {
                reach: Reach::Cpus(0b100),
                scope: TlbiScope::Range {
                    start: va,
                    end: va + 4096,
                    asid: None
                },
                completion: Completion::Immediate,
            })
        );
        let everything = EventKind::TlbInvalidate {
            cpus: 0b1001,
            start: 0,
            len: 0,
            asid: None,
        };
        assert!(matches!(
            everything.maintenance(),
            Some(Maintenance::Invalidate {
                scope: TlbiScope::All,
                ..
            })
        ));
        // dsb ish waits for maintenance and reaches the other CPUs; dmb ishst
        // orders stores only and waits for nothing; dsb nsh stays local.
        let barrier = |kind: EventKind| match kind.maintenance() {
            Some(Maintenance::Barrier {
                reach,
                completes_maintenance,
            }) => (
                reach.stores,
                reach.full,
                reach.shareable,
                completes_maintenance,
            ),
            other => panic!("{other:?}"),
        };
        let ish = BarrierOption(0b1011);
        let ishst = BarrierOption(0b1010);
        let nsh = BarrierOption(0b0111);
        assert_eq!(
            barrier(EventKind::Dsb { option: ish }),
            (true, true, true, true)
        );
        assert_eq!(
            barrier(EventKind::Dmb { option: ishst }),
            (true, false, true, false)
        );
        assert_eq!(
            barrier(EventKind::Dsb { option: nsh }),
            (true, true, false, true)
        );
        assert_eq!(EventKind::Isb.maintenance(), Some(Maintenance::ContextSync));
        // A TLBI form the model does not decode, and an event of another kind.
        let other = EventKind::Tlbi {
            op: TlbiOp::Other(17),
            broadcast: true,
            operand: 0,
        };
        assert_eq!(other.maintenance(), None);
        assert_eq!(EventKind::Sleep.maintenance(), None);
    }
}
