//! A walk of the guest's stage 1 page tables (4 KiB granule), used to tell which fault
//! an abort was: Unicorn raises data and prefetch aborts without saying why, and
//! ESR_EL1's fault status code must say it, as QEMU's does.

use crate::memory::GuestMemory;

/// The translation registers of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranslationRegs {
    pub sctlr: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

/// Fault status codes (DFSC/IFSC).
pub const ALIGNMENT_FAULT: u64 = 0b10_0001;
const TRANSLATION_FAULT: u64 = 0b00_0100;
const ACCESS_FLAG_FAULT: u64 = 0b00_1000;
const PERMISSION_FAULT: u64 = 0b00_1100;

const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;

/// The fault an EL1 `access` to `va` takes, or `None` if the tables allow it (so the
/// abort had another cause, such as alignment). Only the 4 KiB granule is walked.
pub fn fault_status(
    tables: &dyn GuestMemory,
    regs: &TranslationRegs,
    va: u64,
    access: Access,
) -> Option<u64> {
    if regs.sctlr & 1 == 0 {
        return None; // MMU off: no translation faults
    }
    let upper = va >> 63 == 1;
    let (tsz, walk_disabled, granule_4k, ttbr) = if upper {
        let tcr = regs.tcr;
        (
            (tcr >> 16) & 0x3f,
            tcr & (1 << 23) != 0,
            (tcr >> 30) & 3 == 2,
            regs.ttbr1,
        )
    } else {
        let tcr = regs.tcr;
        (
            tcr & 0x3f,
            tcr & (1 << 7) != 0,
            (tcr >> 14) & 3 == 0,
            regs.ttbr0,
        )
    };
    if !granule_4k {
        return None;
    }
    let input_bits = 64 - tsz.clamp(16, 39);
    let top = if upper { !va } else { va };
    if walk_disabled || top >> input_bits != 0 {
        return Some(TRANSLATION_FAULT); // level 0: outside the range the tables cover
    }
    let start_level = 4 - (input_bits - 12).div_ceil(9);
    let mut table = ttbr & OUTPUT_ADDRESS;
    for level in start_level..=3 {
        let shift = 12 + 9 * (3 - level);
        let index = (va >> shift) & ((1 << (input_bits - shift).min(9)) - 1);
        let Ok(desc) = tables.read_u64(table + 8 * index) else {
            return Some(TRANSLATION_FAULT + level);
        };
        let is_table = desc & 2 != 0 && level < 3;
        if desc & 1 == 0 || (level == 3 && desc & 2 == 0) {
            return Some(TRANSLATION_FAULT + level);
        }
        if is_table {
            table = desc & OUTPUT_ADDRESS;
            continue;
        }
        if desc & (1 << 10) == 0 {
            return Some(ACCESS_FLAG_FAULT + level);
        }
        let read_only = desc & (1 << 7) != 0;
        let privileged_never_execute = desc & (1 << 53) != 0;
        let denied = match access {
            Access::Write => read_only,
            Access::Fetch => privileged_never_execute,
            Access::Read => false,
        };
        return denied.then_some(PERMISSION_FAULT + level);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, RAM_BASE};

    const L1: u64 = RAM_BASE;
    const L2: u64 = RAM_BASE + 0x1000;
    const L3: u64 = RAM_BASE + 0x2000;

    fn setup() -> (GuestRam, TranslationRegs) {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        ram.write_u64(L1 + 8 * 2, L2 | 3).unwrap(); // VA 0x8000_0000 -> L2
        ram.write_u64(L2, L3 | 3).unwrap();
        ram.write_u64(L3, 0x4010_0000 | 0x403).unwrap(); // page 0: RW, AF
        ram.write_u64(L3 + 8, 0x4010_1000 | 0x483).unwrap(); // page 1: read-only
        ram.write_u64(L3 + 16, 0x4010_2000 | 0x003).unwrap(); // page 2: AF clear
        ram.write_u64(L3 + 24, 0x4010_3000 | 0x403 | (1 << 53))
            .unwrap(); // page 3: PXN
                       // 39-bit VA, 4 KiB granules, no TTBR1 walks.
        let regs = TranslationRegs {
            sctlr: 1,
            tcr: 25 | (1 << 23) | (2 << 30),
            ttbr0: L1,
            ttbr1: 0,
        };
        (ram, regs)
    }

    #[test]
    fn names_the_fault_and_its_level() {
        let (ram, regs) = setup();
        let status = |va, access| fault_status(&ram, &regs, va, access);
        assert_eq!(status(0x8000_0000, Access::Write), None);
        assert_eq!(status(0x8000_1000, Access::Read), None);
        assert_eq!(
            status(0x8000_1000, Access::Write),
            Some(0b00_1111),
            "permission, level 3"
        );
        assert_eq!(
            status(0x8000_2000, Access::Read),
            Some(0b00_1011),
            "access flag, level 3"
        );
        assert_eq!(status(0x8000_3000, Access::Fetch), Some(0b00_1111));
        assert_eq!(
            status(0x8000_4000, Access::Read),
            Some(0b00_0111),
            "translation, level 3"
        );
        assert_eq!(
            status(0x8020_0000, Access::Read),
            Some(0b00_0110),
            "translation, level 2"
        );
        assert_eq!(
            status(0x4000_0000, Access::Read),
            Some(0b00_0101),
            "translation, level 1"
        );
        assert_eq!(
            status(0x80_0000_0000, Access::Read),
            Some(0b00_0100),
            "beyond 39 bits: level 0"
        );
        assert_eq!(
            status(0xffff_0000_0000_0000, Access::Read),
            Some(0b00_0100),
            "TTBR1 walks disabled"
        );
        let off = TranslationRegs { sctlr: 0, ..regs };
        assert_eq!(fault_status(&ram, &off, 0x8000_4000, Access::Read), None);
    }
}
