//! The PLIC of QEMU's riscv64 `virt` (SiFive's layout): 96 sources, priorities
//! 0–7, two contexts per hart (M-mode `2h`, S-mode `2h + 1`). Where QEMU 7.2
//! departs from the layout, this follows QEMU (measured from S-mode under
//! OpenSBI): priorities exist for sources 1 to 96 but enables for bits 0 to 95
//! only, and enable bit 0 (no source) is kept like any other.
//!
//! No source of this board is wired to it: the NS16550A's transmitter is polled
//! and nothing else raises a line. So nothing is ever pending, a claim gives 0
//! and no hart's external interrupt rises; what a guest writes (priorities,
//! enables, thresholds) reads back as on QEMU, so a kernel that sets the PLIC
//! up works the same on both.

/// Its window and the device tree's `riscv,ndev`.
pub const BASE: u64 = 0x0c00_0000;
pub const SIZE: u64 = 0x60_0000;
pub const SOURCES: u32 = 96;

const PRIORITY_MASK: u32 = 7;
const PENDING: u64 = 0x1000;
const ENABLE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
/// Words of enable bits: bits 0 to 95, as on QEMU.
const WORDS: usize = SOURCES as usize / 32;

/// The PLIC's registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plic {
    /// By source; source 0 does not exist and stays 0.
    priority: [u32; SOURCES as usize + 1],
    /// By context: one enable bit per source.
    enable: Vec<[u32; WORDS]>,
    /// By context.
    threshold: Vec<u32>,
}

/// What a 32-bit access at an offset of the window names.
#[derive(Debug, PartialEq, Eq)]
enum Register {
    Priority(usize),
    Pending,
    Enable { context: usize, word: usize },
    Threshold(usize),
    Claim(usize),
    Reserved,
}

impl Plic {
    pub(crate) fn new(harts: usize) -> Self {
        Self {
            priority: [0; SOURCES as usize + 1],
            enable: vec![[0; WORDS]; 2 * harts],
            threshold: vec![0; 2 * harts],
        }
    }

    fn register(&self, offset: u64) -> Register {
        let contexts = self.threshold.len() as u64;
        let index = |base: u64, stride: u64| ((offset - base) / stride) as usize;
        match offset {
            o if o < PENDING => match index(0, 4) {
                source if source <= SOURCES as usize => Register::Priority(source),
                _ => Register::Reserved,
            },
            o if o < PENDING + 4 * WORDS as u64 => Register::Pending,
            o if (ENABLE..ENABLE + contexts * ENABLE_STRIDE).contains(&o) => {
                let within = (o - ENABLE) % ENABLE_STRIDE;
                match (within / 4) as usize {
                    word if word < WORDS => Register::Enable {
                        context: index(ENABLE, ENABLE_STRIDE),
                        word,
                    },
                    _ => Register::Reserved,
                }
            }
            o if (CONTEXT..CONTEXT + contexts * CONTEXT_STRIDE).contains(&o) => {
                let context = index(CONTEXT, CONTEXT_STRIDE);
                match (o - CONTEXT) % CONTEXT_STRIDE {
                    0 => Register::Threshold(context),
                    4 => Register::Claim(context),
                    _ => Register::Reserved,
                }
            }
            _ => Register::Reserved,
        }
    }

    /// A guest load at `offset` (32-bit registers; anything else reads 0).
    pub(crate) fn read(&mut self, offset: u64) -> u64 {
        let value = match self.register(offset & !3) {
            Register::Priority(source) => self.priority[source],
            Register::Enable { context, word } => self.enable[context][word],
            Register::Threshold(context) => self.threshold[context],
            // Nothing is pending: no interrupt to claim.
            Register::Pending | Register::Claim(_) | Register::Reserved => 0,
        };
        u64::from(value)
    }

    /// A guest store at `offset`.
    pub(crate) fn write(&mut self, offset: u64, value: u64) {
        let value = value as u32;
        match self.register(offset & !3) {
            Register::Priority(0) => {}
            Register::Priority(source) => self.priority[source] = value & PRIORITY_MASK,
            Register::Enable { context, word } => self.enable[context][word] = value,
            Register::Threshold(context) => self.threshold[context] = value & PRIORITY_MASK,
            // A completion of an interrupt never claimed changes nothing.
            Register::Claim(_) | Register::Pending | Register::Reserved => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_guest_sets_up_reads_back_as_on_qemu_and_nothing_is_claimed() {
        let mut plic = Plic::new(2);
        // Source 10 (QEMU's UART) at priority 5, enabled for hart 1's S-mode.
        plic.write(4 * 10, 0xff);
        assert_eq!(plic.read(4 * 10), 7, "priorities have 3 bits");
        let s_mode_hart1 = 3;
        plic.write(ENABLE + s_mode_hart1 * ENABLE_STRIDE, 1 << 10 | 1);
        assert_eq!(
            plic.read(ENABLE + s_mode_hart1 * ENABLE_STRIDE),
            1 << 10 | 1
        );
        plic.write(ENABLE + s_mode_hart1 * ENABLE_STRIDE + 12, !0);
        assert_eq!(
            plic.read(ENABLE + s_mode_hart1 * ENABLE_STRIDE + 12),
            0,
            "no enable word for source 96"
        );
        assert_eq!(plic.read(ENABLE), 0, "other contexts are untouched");
        plic.write(CONTEXT + s_mode_hart1 * CONTEXT_STRIDE, 2);
        assert_eq!(plic.read(CONTEXT + s_mode_hart1 * CONTEXT_STRIDE), 2);
        assert_eq!(plic.read(CONTEXT + s_mode_hart1 * CONTEXT_STRIDE + 4), 0);
        assert_eq!(plic.read(PENDING), 0);
        plic.write(0, 3);
        assert_eq!(plic.read(0), 0, "source 0 has no priority");
        // Past the last context: reserved.
        plic.write(CONTEXT + 4 * CONTEXT_STRIDE, 5);
        assert_eq!(plic.read(CONTEXT + 4 * CONTEXT_STRIDE), 0);
        plic.write(4 * u64::from(SOURCES), 3);
        assert_eq!(plic.read(4 * u64::from(SOURCES)), 3);
        plic.write(4 * (u64::from(SOURCES) + 1), 3);
        assert_eq!(plic.read(4 * (u64::from(SOURCES) + 1)), 0);
    }
}
