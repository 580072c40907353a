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
//!
//! A store by another CPU that clears a waiting CPU's exclusive monitor is an event
//! too (Arm ARM: clearing the global monitor generates one). Linux waits that way,
//! with no SEV (`smp_cond_load_*` → `__cmpwait`: `ldxr`, compare, `wfe`): when a CPU
//! starts to wait right after a load-exclusive, the machine notes the address and
//! the value loaded ([`Monitor`]) and wakes the CPU once the value there differs.
//! (A store of the same value, which would clear the monitor too, is not seen: the
//! waits this serves are for a value to change.)

use crate::kernel::KernelImage;

/// LDXR/LDAXR of any size (bits 31-30 size, bit 15 acquire, Rn 9-5, Rt 4-0).
const LDXR_MASK: u32 = 0x3fff_7c00;
const LDXR: u32 = 0x085f_7c00;
/// How many instructions before a WFE its load-exclusive may lie.
const MONITOR_LOOKBACK: u64 = 4;

const WFE: u32 = 0xd503_205f;
const SEV: u32 = 0xd503_209f;
const SEVL: u32 = 0xd503_20bf;

/// Where the kernel's WFE, SEV and SEVL instructions are.
#[derive(Debug, Default)]
pub(crate) struct EventSites {
    wait: Vec<u64>,
    signal_all: Vec<u64>,
    signal_self: Vec<u64>,
    /// Every site, sorted. The block hook looks here only for blocks its filter
    /// says may hold one ([`crate::block_start::BlockStartHooks::watch`]).
    all: Vec<u64>,
}

impl EventSites {
    pub(crate) fn of(kernel: &KernelImage) -> Self {
        let mut sites = EventSites::default();
        for (addr, word) in kernel.code_words() {
            match word {
                WFE => sites.wait.push(addr),
                SEV => sites.signal_all.push(addr),
                SEVL => sites.signal_self.push(addr),
                _ => {}
            }
        }
        sites.index();
        sites
    }

    /// Fills `all` from the three lists.
    fn index(&mut self) {
        self.all = [&self.wait[..], &self.signal_all, &self.signal_self].concat();
        self.all.sort_unstable();
    }

    /// Every site, sorted.
    pub(crate) fn all(&self) -> &[u64] {
        &self.all
    }

    /// Whether a block of `size` bytes at `start` holds a site.
    pub(crate) fn holds_any(&self, start: u64, size: u32) -> bool {
        let end = start + u64::from(size);
        let first_at_or_after = self.all.partition_point(|&site| site < start);
        self.all
            .get(first_at_or_after)
            .is_some_and(|&site| site < end)
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

/// What a CPU waiting in WFE watches: the physical address its last
/// load-exclusive read (`size` bytes) and the value it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Monitor {
    pub(crate) pa: u64,
    pub(crate) size: usize,
    pub(crate) value: u64,
}

impl Monitor {
    /// The monitor of a CPU that waits at the WFE before `resume_pc`, if a
    /// load-exclusive shortly before it set one: `base` reads a general register
    /// (the load's address register), `translate` gives a virtual address's
    /// physical one, `read` a physical little-endian value of a size.
    pub(crate) fn before_wfe(
        kernel: &KernelImage,
        resume_pc: u64,
        base: impl Fn(u32) -> u64,
        translate: impl Fn(u64) -> Option<u64>,
        read: impl Fn(u64, usize) -> Option<u64>,
    ) -> Option<Monitor> {
        let wfe = resume_pc.checked_sub(4)?;
        let (start, code) = kernel.function_containing(wfe)?;
        let load = (1..=MONITOR_LOOKBACK)
            .map_while(|back| wfe.checked_sub(4 * back).filter(|&a| a >= start))
            .map(|addr| {
                let off = (addr - start) as usize;
                u32::from_le_bytes(code[off..off + 4].try_into().expect("4 bytes"))
            })
            .find(|word| word & LDXR_MASK == LDXR)?;
        let size = 1usize << (load >> 30);
        let pa = translate(base((load >> 5) & 31))?;
        let value = read(pa, size)?;
        Some(Monitor { pa, size, value })
    }

    /// Whether another CPU has changed the watched value (an event for the
    /// waiter).
    pub(crate) fn cleared(&self, read: impl Fn(u64, usize) -> Option<u64>) -> bool {
        read(self.pa, self.size) != Some(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_signals_its_sev_and_waits_at_its_wfe_only_without_an_event() {
        let mut sites = EventSites {
            wait: vec![0x1010],
            signal_all: vec![0x2008],
            signal_self: vec![0x3000],
            ..EventSites::default()
        };
        sites.index();
        assert!(sites.holds_any(0x1000, 0x14) && sites.holds_any(0x3000, 4));
        assert!(sites.holds_any(0x2000, 0x10));
        assert!(!sites.holds_any(0x1000, 0x10) && !sites.holds_any(0x3004, 8));
        // Between two sites, and past the last.
        assert!(!sites.holds_any(0x1014, 0x100) && !sites.holds_any(0x2010, 0x80));
        assert!(!sites.holds_any(0x3004, 0x1000));
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
