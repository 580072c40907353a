//! A GICv2 subset as on QEMU's `virt` board: the distributor (SGIs with target-list
//! filters, per-CPU banked SGI/PPI state, a few SPIs) and one CPU interface per core
//! (enable, priority mask, acknowledge with the SGI source, EOI).
//!
//! Pure state: the machine feeds it MMIO accesses and timer levels, and asks it
//! whether a core's IRQ line is asserted.

/// Interrupt IDs 0..NR_IRQS: 16 SGIs, 16 PPIs, 32 SPIs.
pub const NR_IRQS: usize = 64;
/// The acknowledge value meaning "nothing pending".
pub const SPURIOUS: u32 = 1023;
/// Most CPUs a GICv2 can serve.
pub const MAX_CPUS: usize = 8;

const SGIS: usize = 16;
const PRIVATE: usize = 32;
const IDLE_PRIORITY: u16 = 0x100;

pub const DIST_BASE: u64 = 0x0800_0000;
pub const CPU_IF_BASE: u64 = 0x0801_0000;
pub const REGION_SIZE: u64 = 0x1_0000;

#[derive(Debug, Clone, Default)]
struct CpuInterface {
    enabled: bool,
    pmr: u8,
    bpr: u32,
    /// Banked enables for INTIDs 0..31.
    private_enabled: u32,
    private_priority: [u8; PRIVATE],
    /// Per SGI, the set of CPUs that sent it and are not yet acknowledged.
    sgi_sources: [u8; SGIS],
    /// Latched pending PPIs (bit = INTID).
    ppi_pending: u32,
    /// PPI input levels (bit = INTID), e.g. the timer's output.
    ppi_level: u32,
    /// Active interrupts, innermost last, with the priority each had when taken.
    active: Vec<(u32, u8)>,
}

#[derive(Debug, Clone)]
pub struct Gic {
    ncpus: usize,
    dist_enabled: bool,
    cpus: Vec<CpuInterface>,
    spi_enabled: u32,
    spi_pending: u32,
    spi_priority: [u8; NR_IRQS - PRIVATE],
    spi_targets: [u8; NR_IRQS - PRIVATE],
    config: [u32; NR_IRQS / 16],
}

impl Gic {
    pub fn new(ncpus: usize) -> Self {
        assert!((1..=MAX_CPUS).contains(&ncpus));
        Self {
            ncpus,
            dist_enabled: false,
            cpus: vec![CpuInterface::default(); ncpus],
            spi_enabled: 0,
            spi_pending: 0,
            spi_priority: [0; NR_IRQS - PRIVATE],
            spi_targets: [0; NR_IRQS - PRIVATE],
            config: [0; NR_IRQS / 16],
        }
    }

    /// Sets the level of a private peripheral interrupt (INTID 16..31) of `cpu`.
    pub fn set_ppi_level(&mut self, cpu: usize, intid: u32, high: bool) {
        let bit = 1u32 << intid;
        let c = &mut self.cpus[cpu];
        c.ppi_level = if high {
            c.ppi_level | bit
        } else {
            c.ppi_level & !bit
        };
    }

    /// Whether `cpu`'s IRQ line is asserted: an enabled, pending, inactive interrupt
    /// whose priority passes the priority mask and the running priority.
    pub fn irq_line(&self, cpu: usize) -> bool {
        self.cpus[cpu].enabled && self.dist_enabled && self.best_pending(cpu).is_some()
    }

    /// The interrupt `cpu` would acknowledge now, if any (what the host delivers).
    pub fn pending_intid(&self, cpu: usize) -> Option<u32> {
        self.best_pending(cpu).map(|(intid, _)| intid)
    }

    /// Highest-priority deliverable interrupt for `cpu`: (INTID, source CPU for SGIs).
    fn best_pending(&self, cpu: usize) -> Option<(u32, u32)> {
        let c = &self.cpus[cpu];
        let running = c
            .active
            .iter()
            .map(|&(_, p)| p as u16)
            .min()
            .unwrap_or(IDLE_PRIORITY);
        let mut best: Option<(u8, u32, u32)> = None;
        // Asked at every slice for every CPU, and mostly nothing is pending: visit
        // only the pending and enabled INTIDs.
        let mut candidates = self.pending_mask(cpu) & self.enabled_mask(cpu);
        while candidates != 0 {
            let intid = candidates.trailing_zeros();
            candidates &= candidates - 1;
            let Some(source) = self.pending_source(cpu, intid) else {
                continue;
            };
            if c.active.iter().any(|&(a, _)| a == intid) {
                continue;
            }
            let prio = self.priority(cpu, intid);
            if (prio as u16) < running && prio < c.pmr && best.is_none_or(|(bp, _, _)| prio < bp) {
                best = Some((prio, intid, source));
            }
        }
        best.map(|(_, intid, source)| (intid, source))
    }

    /// Bit `i` set: INTID `i` is pending for `cpu` ([`Gic::pending_source`] finds
    /// a source).
    fn pending_mask(&self, cpu: usize) -> u64 {
        let c = &self.cpus[cpu];
        let sgis = c
            .sgi_sources
            .iter()
            .enumerate()
            .filter(|&(_, &sources)| sources != 0)
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        let ppis = u64::from((c.ppi_pending | c.ppi_level) & !((1u32 << SGIS) - 1));
        let spis = (0..NR_IRQS - PRIVATE)
            .filter(|&i| self.spi_pending & (1 << i) != 0 && self.spi_targets[i] & (1 << cpu) != 0)
            .fold(0u64, |mask, i| mask | 1 << (i + PRIVATE));
        sgis | ppis | spis
    }

    /// Bit `i` set: INTID `i` is enabled for `cpu`.
    fn enabled_mask(&self, cpu: usize) -> u64 {
        u64::from(self.cpus[cpu].private_enabled) | u64::from(self.spi_enabled) << PRIVATE
    }

    fn pending_source(&self, cpu: usize, intid: u32) -> Option<u32> {
        let c = &self.cpus[cpu];
        let i = intid as usize;
        if i < SGIS {
            let sources = c.sgi_sources[i];
            (sources != 0).then(|| sources.trailing_zeros())
        } else if i < PRIVATE {
            ((c.ppi_pending | c.ppi_level) & (1 << i) != 0).then_some(0)
        } else {
            let targeted = self.spi_targets[i - PRIVATE] & (1 << cpu) != 0;
            (targeted && self.spi_pending & (1 << (i - PRIVATE)) != 0).then_some(0)
        }
    }

    fn priority(&self, cpu: usize, intid: u32) -> u8 {
        let i = intid as usize;
        if i < PRIVATE {
            self.cpus[cpu].private_priority[i]
        } else {
            self.spi_priority[i - PRIVATE]
        }
    }

    /// GICC_IAR: acknowledges the best pending interrupt.
    fn acknowledge(&mut self, cpu: usize) -> u32 {
        if !(self.dist_enabled && self.cpus[cpu].enabled) {
            return SPURIOUS;
        }
        let Some((intid, source)) = self.best_pending(cpu) else {
            return SPURIOUS;
        };
        let prio = self.priority(cpu, intid);
        let i = intid as usize;
        let c = &mut self.cpus[cpu];
        if i < SGIS {
            c.sgi_sources[i] &= !(1 << source);
        } else if i < PRIVATE {
            c.ppi_pending &= !(1 << i);
        } else {
            self.spi_pending &= !(1 << (i - PRIVATE));
        }
        self.cpus[cpu].active.push((intid, prio));
        intid | (source << 10)
    }

    /// GICC_EOIR / GICC_DIR: the interrupt is no longer active.
    fn end_of_interrupt(&mut self, cpu: usize, value: u32) {
        let intid = value & 0x3ff;
        let active = &mut self.cpus[cpu].active;
        if let Some(pos) = active.iter().rposition(|&(a, _)| a == intid) {
            active.remove(pos);
        }
    }

    /// GICD_SGIR: sends SGI `value[3:0]` from `cpu` to the CPUs its filter selects.
    fn send_sgi(&mut self, cpu: usize, value: u32) {
        let intid = (value & 0xf) as usize;
        let all = (1u32 << self.ncpus) - 1;
        let targets = match (value >> 24) & 3 {
            0 => (value >> 16) & 0xff & all,
            1 => all & !(1 << cpu),
            2 => 1 << cpu,
            _ => 0,
        };
        for target in 0..self.ncpus {
            if targets & (1 << target) != 0 {
                self.cpus[target].sgi_sources[intid] |= 1 << cpu;
            }
        }
    }

    /// A distributor register read of `size` bytes at `offset`, as seen by `cpu`.
    pub fn dist_read(&self, cpu: usize, offset: u64, size: usize) -> u64 {
        let word = |o: u64| self.dist_read32(cpu, o & !3);
        let shift = (offset & 3) * 8;
        let value = word(offset) as u64 >> shift;
        match size {
            1 => value & 0xff,
            2 => value & 0xffff,
            _ => value & 0xffff_ffff,
        }
    }

    fn dist_read32(&self, cpu: usize, offset: u64) -> u32 {
        let c = &self.cpus[cpu];
        let bytes = |f: &dyn Fn(usize) -> u8| {
            let first = match offset {
                0x400..=0x7fc => (offset - 0x400) as usize,
                _ => (offset - 0x800) as usize,
            };
            (0..4).fold(0u32, |acc, k| acc | (f(first + k) as u32) << (8 * k))
        };
        match offset {
            0x000 => self.dist_enabled as u32,
            0x004 => (((self.ncpus - 1) as u32) << 5) | (NR_IRQS as u32 / 32 - 1),
            0x008 => 0x0200_043b,
            0x100 | 0x180 => c.private_enabled,
            0x104 | 0x184 => self.spi_enabled,
            0x200 | 0x280 => (0..PRIVATE as u32)
                .filter(|&i| self.pending_source(cpu, i).is_some())
                .fold(0, |acc, i| acc | 1 << i),
            0x204 | 0x284 => self.spi_pending,
            0x300 | 0x380 => c
                .active
                .iter()
                .filter(|&&(a, _)| a < 32)
                .fold(0, |acc, &(a, _)| acc | 1 << a),
            0x400..=0x7fc if offset < 0x400 + NR_IRQS as u64 => bytes(&|i| {
                if i < PRIVATE {
                    c.private_priority[i]
                } else {
                    self.spi_priority[i - PRIVATE]
                }
            }),
            0x800..=0xbfc if offset < 0x800 + NR_IRQS as u64 => bytes(&|i| {
                if i < PRIVATE {
                    1 << cpu
                } else {
                    self.spi_targets[i - PRIVATE]
                }
            }),
            0xc00..=0xcfc if offset < 0xc00 + NR_IRQS as u64 / 4 => {
                self.config[((offset - 0xc00) / 4) as usize]
            }
            0xf10..=0xf1c | 0xf20..=0xf2c => {
                let first = ((offset & 0xf) as usize / 4) * 4;
                (0..4).fold(0, |acc, k| {
                    acc | (c.sgi_sources[first + k] as u32) << (8 * k)
                })
            }
            0xfe8 => 0x2b, // PIDR2: architecture version 2
            _ => 0,
        }
    }

    pub fn dist_write(&mut self, cpu: usize, offset: u64, size: usize, value: u64) {
        let value = value as u32;
        match offset {
            0x000 => self.dist_enabled = value & 1 != 0,
            0x100 => self.cpus[cpu].private_enabled |= value,
            0x104 => self.spi_enabled |= value,
            0x180 => self.cpus[cpu].private_enabled &= !value,
            0x184 => self.spi_enabled &= !value,
            0x200 => self.cpus[cpu].ppi_pending |= value & 0xffff_0000,
            0x204 => self.spi_pending |= value,
            0x280 => self.cpus[cpu].ppi_pending &= !value,
            0x284 => self.spi_pending &= !value,
            0x400..=0xbff => {
                let (base, targets) = if offset < 0x800 {
                    (0x400, false)
                } else {
                    (0x800, true)
                };
                for k in 0..size {
                    let i = (offset - base) as usize + k;
                    let byte = (value >> (8 * k)) as u8;
                    match (i < PRIVATE, targets) {
                        (true, false) => self.cpus[cpu].private_priority[i] = byte,
                        (false, false) if i < NR_IRQS => self.spi_priority[i - PRIVATE] = byte,
                        (false, true) if i < NR_IRQS => self.spi_targets[i - PRIVATE] = byte,
                        _ => {} // SGI/PPI targets are read-only
                    }
                }
            }
            0xc00..=0xcff if offset < 0xc00 + NR_IRQS as u64 / 4 => {
                self.config[((offset - 0xc00) / 4) as usize] = value
            }
            0xf00 => self.send_sgi(cpu, value),
            _ => {}
        }
    }

    /// A CPU interface register read by `cpu` (GICC_IAR has a side effect).
    pub fn cpu_read(&mut self, cpu: usize, offset: u64) -> u64 {
        let c = &self.cpus[cpu];
        (match offset {
            0x00 => c.enabled as u32,
            0x04 => c.pmr as u32,
            0x08 => c.bpr,
            0x0c => self.acknowledge(cpu),
            0x14 => c
                .active
                .iter()
                .map(|&(_, p)| p as u32)
                .min()
                .unwrap_or(0xff),
            0x18 => self
                .best_pending(cpu)
                .map_or(SPURIOUS, |(i, s)| i | s << 10),
            0xfc => 0x0202_043b,
            _ => 0,
        }) as u64
    }

    pub fn cpu_write(&mut self, cpu: usize, offset: u64, value: u64) {
        let c = &mut self.cpus[cpu];
        match offset {
            0x00 => c.enabled = value & 1 != 0,
            0x04 => c.pmr = value as u8,
            0x08 => c.bpr = value as u32 & 7,
            0x10 | 0x1000 => self.end_of_interrupt(cpu, value as u32),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled_gic(ncpus: usize) -> Gic {
        let mut g = Gic::new(ncpus);
        g.dist_write(0, 0x000, 4, 1);
        for cpu in 0..ncpus {
            g.cpu_write(cpu, 0x00, 1);
            g.cpu_write(cpu, 0x04, 0xf0);
            g.dist_write(cpu, 0x100, 4, 0xffff_ffff);
        }
        g
    }

    #[test]
    fn sgi_reports_its_source_and_is_gone_after_ack() {
        let mut g = enabled_gic(4);
        // Target list {1, 3}, SGI 5, sent by CPU 2.
        g.dist_write(2, 0xf00, 4, (0b1010 << 16) | 5);
        assert!(g.irq_line(1) && g.irq_line(3) && !g.irq_line(0) && !g.irq_line(2));
        assert_eq!(g.cpu_read(1, 0x0c), 5 | (2 << 10));
        assert!(!g.irq_line(1));
        assert_eq!(g.cpu_read(1, 0x0c), SPURIOUS as u64);
        g.cpu_write(1, 0x10, 5 | (2 << 10));
        // "All but self" from CPU 0.
        g.dist_write(0, 0xf00, 4, (1 << 24) | 1);
        assert!(!g.irq_line(0) && g.irq_line(1) && g.irq_line(2) && g.irq_line(3));
    }

    #[test]
    fn masked_disabled_or_low_priority_interrupts_are_not_signalled() {
        let mut g = enabled_gic(1);
        g.set_ppi_level(0, 27, true);
        assert!(g.irq_line(0));
        g.dist_write(0, 0x180, 4, 1 << 27);
        assert!(!g.irq_line(0), "disabled");
        g.dist_write(0, 0x100, 4, 1 << 27);
        g.dist_write(0, 0x418, 4, 0xf0 << 24); // priority of INTID 27
        assert!(!g.irq_line(0), "priority not below the mask");
        g.dist_write(0, 0x41b, 1, 0x80);
        assert_eq!(g.dist_read(0, 0x418, 4), 0x80 << 24);
        assert!(g.irq_line(0));
        // A level interrupt stays active until EOI, then is pending again while high.
        assert_eq!(g.cpu_read(0, 0x0c), 27);
        assert!(!g.irq_line(0));
        g.cpu_write(0, 0x10, 27);
        assert!(g.irq_line(0));
        g.set_ppi_level(0, 27, false);
        assert!(!g.irq_line(0));
    }
}
