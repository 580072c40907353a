//! WFE and SEV: each CPU's event register (Arm ARM D1.6, "Wait for Event").
//!
//! `sev` sets every CPU's event register, `sevl` its own. A `wfe` with the event
//! register set clears it and goes on; otherwise the CPU waits, not scheduled, until
//! an event or an interrupt arrives (an interrupt wakes a WFE even while masked). So
//! a CPU spinning on a lock whose wait loop has a WFE costs host time per release,
//! not per iteration.
//!
//! Unicorn treats these hints as doing nothing, and a code hook on them would slow
//! every block (measured: 25% on storm), so the block hook that counts instructions
//! does the work: a block that holds a SEV/SEVL signals when it starts to run (early
//! by a few instructions of this CPU, which no other CPU can observe: they are not
//! running); a WFE always ends its block in QEMU, so when a block ending in a WFE
//! starts with the event register clear, the slice stops right after that block and
//! the CPU waits, to resume after the WFE (the WFE completes when woken).

use crate::cpu::{Core, SliceCounter};
use crate::kernel::KernelImage;

const WFE: u32 = 0xd503_205f;
const SEV: u32 = 0xd503_209f;
const SEVL: u32 = 0xd503_20bf;

/// Where the kernel's WFE, SEV and SEVL instructions are.
#[derive(Debug, Default)]
pub(crate) struct EventSites {
    wait: Vec<u64>,
    signal_all: Vec<u64>,
    signal_self: Vec<u64>,
    /// Every site lies in `span` (so most blocks are ruled out by two compares:
    /// this runs at every block).
    span: (u64, u64),
}

impl EventSites {
    fn of(kernel: &KernelImage) -> Self {
        let mut sites = EventSites::default();
        for (addr, word) in kernel.code_words() {
            match word {
                WFE => sites.wait.push(addr),
                SEV => sites.signal_all.push(addr),
                SEVL => sites.signal_self.push(addr),
                _ => {}
            }
        }
        let all = || {
            sites
                .wait
                .iter()
                .chain(&sites.signal_all)
                .chain(&sites.signal_self)
        };
        sites.span = (
            all().copied().min().unwrap_or(u64::MAX),
            all().copied().max().unwrap_or(0),
        );
        sites
    }

    /// Whether a block of `size` bytes at `start` may hold a site.
    pub(crate) fn may_hold(&self, start: u64, size: u32) -> bool {
        start <= self.span.1 && start + u64::from(size) > self.span.0
    }

    fn any_in(list: &[u64], start: u64, size: u32) -> bool {
        list.iter()
            .any(|&site| site >= start && site < start + u64::from(size))
    }

    /// A block of `size` bytes at `start` of CPU `cpu` is about to run: signal
    /// its SEV/SEVL in the CPUs' event registers `events`, and say whether it ends
    /// in a WFE that will wait.
    pub(crate) fn block_runs(
        &self,
        events: &mut [bool],
        cpu: usize,
        start: u64,
        size: u32,
    ) -> bool {
        if Self::any_in(&self.signal_all, start, size) {
            events.iter_mut().for_each(|e| *e = true);
        } else if Self::any_in(&self.signal_self, start, size) {
            events[cpu] = true;
        }
        Self::any_in(&self.wait, start, size) && !std::mem::take(&mut events[cpu])
    }

    /// Whether `pc` is right after a WFE (where a waiting CPU stopped).
    pub(crate) fn after_wait(&self, pc: u64) -> bool {
        self.wait.iter().any(|&site| site + 4 == pc)
    }
}

/// Gives every core the kernel's event sites.
pub(crate) fn install(cores: &[Core], kernel: &KernelImage) {
    let sites = std::rc::Rc::new(EventSites::of(kernel));
    for core in cores {
        let _ = core.counter.event_sites.set(sites.clone());
    }
}

/// Whether the slice of `counter` stopped at `pc` to wait after a WFE.
pub(crate) fn waits_at(counter: &SliceCounter, pc: u64) -> bool {
    counter.wfe_wait.get()
        && counter
            .event_sites
            .get()
            .is_some_and(|sites| sites.after_wait(pc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_signals_its_sev_and_waits_at_its_wfe_only_without_an_event() {
        let sites = EventSites {
            wait: vec![0x1010],
            signal_all: vec![0x2008],
            signal_self: vec![0x3000],
            span: (0x1010, 0x3000),
        };
        assert!(sites.may_hold(0x1000, 0x14) && sites.may_hold(0x3000, 4));
        assert!(!sites.may_hold(0x1000, 0x10) && !sites.may_hold(0x3004, 8));
        let mut events = vec![false, false];
        let mut run = |start, size| {
            let waits = sites.block_runs(&mut events, 0, start, size);
            (waits, events.clone())
        };
        assert_eq!(
            run(0x1000, 0x14),
            (true, vec![false, false]),
            "no event: waits"
        );
        assert_eq!(
            run(0x2000, 0x10),
            (false, vec![true, true]),
            "SEV: everyone"
        );
        assert_eq!(run(0x1000, 0x14), (false, vec![false, true]), "consumed");
        assert_eq!(run(0x3000, 4), (false, vec![true, true]), "SEVL: own");
        assert_eq!(
            run(0x1000, 0x10),
            (false, vec![true, true]),
            "WFE not in block"
        );
        assert!(sites.after_wait(0x1014) && !sites.after_wait(0x1010));
    }
}
