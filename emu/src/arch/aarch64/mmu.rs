//! The guest's stage 1 translation (VMSAv8-64, 4 KiB granule), walked by the host:
//! the simulated MMU answers Unicorn's TLB fills with it ([`walk`]), and an abort's
//! fault status code comes from it ([`fault_status`]).
//!
//! What is modelled: TTBR0/TTBR1 selected by VA bit 55 with T0SZ/T1SZ (clamped to
//! 16..=39) and EPD0/EPD1, start level from the input size, levels 0–3, table, block
//! (levels 1 and 2) and page descriptors, the hierarchical APTable/PXNTable/UXNTable
//! bits, `AP[2:1]`, PXN/UXN (and EL1 never executing EL0-writable memory), SCTLR_EL1.WXN,
//! the access flag (no hardware update: AF = 0 faults), nG and the ASID (TTBR1_EL1's
//! when TCR_EL1.A1 is set, as Linux sets it, else TTBR0_EL1's; 8 bits unless
//! TCR_EL1.AS). A walk gives the permissions of EL1 and of EL0 (`AP[1]`, UXN,
//! APTable[0], UXNTable). MMU off (SCTLR_EL1.M = 0) is a flat, fully permitted map.
//! Not modelled: other granules (treated as walks that fault), PAN, address size
//! faults, stage 2.

use traces::aarch64::OUTPUT_ADDRESS;
pub use traces::aarch64::{level_shift, Access, Descriptor, PAGE_SIZE};
pub use traces::Perms;

use crate::memory::GuestMemory;
pub use crate::translation::{
    Fault, Translation, ACCESS_FLAG_FAULT, ALIGNMENT_FAULT, PERMISSION_FAULT, TRANSLATION_FAULT,
};

/// The translation registers of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmsaRegs {
    pub sctlr: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
}

/// What selects a core's translation: Arm's registers, or RISC-V's `satp` (Sv39,
/// walked by [`crate::arch::riscv64::sv39`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslationRegs {
    Vmsa(VmsaRegs),
    Sv39 { satp: u64 },
}

impl Default for TranslationRegs {
    fn default() -> Self {
        TranslationRegs::Vmsa(VmsaRegs::default())
    }
}

impl From<VmsaRegs> for TranslationRegs {
    fn from(regs: VmsaRegs) -> Self {
        TranslationRegs::Vmsa(regs)
    }
}

impl TranslationRegs {
    pub fn mmu_on(&self) -> bool {
        match self {
            TranslationRegs::Vmsa(regs) => regs.sctlr & 1 != 0,
            TranslationRegs::Sv39 { satp } => {
                satp >> 60 == crate::arch::riscv64::sv39::SATP_MODE_SV39
            }
        }
    }

    /// The current ASID (non-global entries are filled under it).
    pub fn asid(&self) -> u16 {
        match self {
            TranslationRegs::Vmsa(regs) => {
                const A1: u64 = 1 << 22;
                const AS: u64 = 1 << 36;
                let ttbr = if regs.tcr & A1 != 0 {
                    regs.ttbr1
                } else {
                    regs.ttbr0
                };
                let asid = (ttbr >> 48) as u16;
                if regs.tcr & AS != 0 {
                    asid
                } else {
                    asid & 0xff
                }
            }
            TranslationRegs::Sv39 { satp } => (satp >> 44) as u16,
        }
    }

    /// The VA the first entry of the root table that translates `va` maps.
    pub fn root_va_base(&self, va: u64) -> u64 {
        match self {
            TranslationRegs::Vmsa(_) => {
                let Ok((_, _, input_bits)) = walk_start(self, va) else {
                    return 0;
                };
                // TTBR1's table maps the top of the address space.
                if (va >> 55) & 1 == 1 && input_bits < 64 {
                    !((1u64 << input_bits) - 1)
                } else {
                    0
                }
            }
            // One root for both halves: its entries from 256 on sign-extend.
            TranslationRegs::Sv39 { .. } => 0,
        }
    }

    /// The format of the tables these registers select.
    pub fn format(&self) -> traces::riscv64::PageTableFormat {
        match self {
            TranslationRegs::Vmsa(_) => traces::riscv64::PageTableFormat::Vmsa,
            TranslationRegs::Sv39 { .. } => traces::riscv64::PageTableFormat::Sv39,
        }
    }
}

/// Where a walk for `va` starts: the table base, the start level and the input size,
/// or the level 0 translation fault of an address the tables do not cover.
pub fn walk_start(regs: &TranslationRegs, va: u64) -> Result<(u64, u8, u32), Fault> {
    let regs = match regs {
        TranslationRegs::Vmsa(regs) => regs,
        TranslationRegs::Sv39 { satp } => return crate::arch::riscv64::sv39::walk_start(*satp, va),
    };
    let upper = (va >> 55) & 1 == 1;
    let tcr = regs.tcr;
    let (tsz, walk_disabled, granule_4k, ttbr) = if upper {
        (
            (tcr >> 16) & 0x3f,
            tcr & (1 << 23) != 0,
            (tcr >> 30) & 3 == 2,
            regs.ttbr1,
        )
    } else {
        (
            tcr & 0x3f,
            tcr & (1 << 7) != 0,
            (tcr >> 14) & 3 == 0,
            regs.ttbr0,
        )
    };
    let input_bits = 64 - tsz.clamp(16, 39) as u32;
    // Every bit above the input size must equal bit 55's choice of half.
    let top = if upper { !va } else { va };
    if !granule_4k || walk_disabled || top >> input_bits != 0 {
        return Err(Fault::new(TRANSLATION_FAULT, 0));
    }
    let start_level = 4 - (input_bits - 12).div_ceil(9) as u8;
    Ok((ttbr & OUTPUT_ADDRESS, start_level, input_bits))
}

/// Translates `va` for an `access` at EL1 (at EL0 if `el0`) through the tables in
/// `mem`. `Ok` also for an access the permissions forbid is not given: a forbidden
/// access is a permission fault; use [`walk_any`] to get the translation regardless
/// of the access.
pub fn walk(
    mem: &dyn GuestMemory,
    regs: &TranslationRegs,
    va: u64,
    access: Access,
    el0: bool,
) -> Result<Translation, Fault> {
    let t = walk_any(mem, regs, va)?;
    if t.allows(access, el0) {
        Ok(t)
    } else {
        Err(Fault::new(PERMISSION_FAULT, t.level))
    }
}

/// Translates `va` (MMU on) with the permissions it grants at EL1 and EL0; faults
/// are translation and access flag faults only.
pub fn walk_any(
    mem: &dyn GuestMemory,
    regs: &TranslationRegs,
    va: u64,
) -> Result<Translation, Fault> {
    let vmsa = match regs {
        TranslationRegs::Vmsa(vmsa) => vmsa,
        TranslationRegs::Sv39 { satp } => {
            return crate::arch::riscv64::sv39::walk_any(mem, *satp, va)
        }
    };
    let (mut table, start_level, input_bits) = walk_start(regs, va)?;
    let mut tables = [0u64; 3];
    let mut n_tables = 0u8;
    // Hierarchical restrictions from table descriptors.
    let (mut no_write, mut pxn_table) = (false, false);
    let (mut no_el0, mut uxn_table) = (false, false);
    for level in start_level..=3 {
        let shift = level_shift(level);
        let index_bits = (input_bits - shift).min(9);
        let index = (va >> shift) & ((1 << index_bits) - 1);
        let desc_addr = table + 8 * index;
        let Ok(desc) = mem.read_u64(desc_addr) else {
            return Err(Fault::new(TRANSLATION_FAULT, level));
        };
        let valid = desc & 1 != 0;
        let table_or_page = desc & 2 != 0;
        // Invalid, a level 3 "block" (reserved), or a block at level 0: translation fault.
        if !valid || (level == 3 && !table_or_page) || (level == 0 && !table_or_page) {
            return Err(Fault::new(TRANSLATION_FAULT, level));
        }
        if table_or_page && level < 3 {
            tables[n_tables as usize] = desc_addr;
            n_tables += 1;
            no_write |= desc & (1 << 62) != 0; // APTable[1]
            no_el0 |= desc & (1 << 61) != 0; // APTable[0]
            uxn_table |= desc & (1 << 60) != 0;
            pxn_table |= desc & (1 << 59) != 0;
            table = desc & OUTPUT_ADDRESS;
            continue;
        }
        if desc & (1 << 10) == 0 {
            return Err(Fault::new(ACCESS_FLAG_FAULT, level));
        }
        let block_mask = (1u64 << shift) - 1;
        let output = desc & OUTPUT_ADDRESS & !block_mask;
        let pa = output | (va & block_mask & !(PAGE_SIZE - 1));
        let ap = (desc >> 6) & 3;
        let read_only = ap & 2 != 0 || no_write;
        let el0_writable = ap == 0b01 && !no_write;
        let write = !read_only;
        let wxn = vmsa.sctlr & (1 << 19) != 0 && write;
        let exec = desc & (1 << 53) == 0 && !pxn_table && !el0_writable && !wxn;
        // EL0 reads with AP[1]; executes unless UXN (an execute-only page is AP[1]
        // clear), never what it may write under WXN.
        let el0_read = ap & 1 != 0 && !no_el0;
        let el0_write = el0_read && !read_only;
        let user = Perms {
            read: el0_read,
            write: el0_write,
            exec: desc & (1 << 54) == 0
                && !uxn_table
                && !(vmsa.sctlr & (1 << 19) != 0 && el0_write),
        };
        return Ok(Translation {
            pa,
            level,
            read: true,
            write,
            exec,
            user,
            global: desc & (1 << 11) == 0,
            leaf: desc_addr,
            tables,
            n_tables,
            descriptor: desc,
        });
    }
    unreachable!("level 3 always ends the walk")
}

/// The fault an `access` to `va` at EL1 (at EL0 if `el0`) takes, or `None` if the
/// tables allow it (so the abort had another cause, such as alignment).
pub fn fault_status(
    tables: &dyn GuestMemory,
    regs: &TranslationRegs,
    va: u64,
    access: Access,
    el0: bool,
) -> Option<u64> {
    if !regs.mmu_on() {
        return None; // MMU off: no translation faults
    }
    walk(tables, regs, va, access, el0).err().map(|f| f.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, RAM_BASE};

    const L1: u64 = RAM_BASE;
    const L2: u64 = RAM_BASE + 0x1000;
    const L3: u64 = RAM_BASE + 0x2000;

    /// MMU on, a 39-bit lower half from `L1`, no TTBR1 walks.
    fn lower_half_only() -> VmsaRegs {
        VmsaRegs {
            sctlr: 1,
            tcr: 25 | (1 << 23),
            ttbr0: L1,
            ttbr1: 0,
        }
    }

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
        let regs = VmsaRegs {
            sctlr: 1,
            tcr: 25 | (1 << 23) | (2 << 30),
            ttbr0: L1,
            ttbr1: 0,
        };
        (ram, regs.into())
    }

    #[test]
    fn names_the_fault_and_its_level() {
        let (ram, regs) = setup();
        let status = |va, access| fault_status(&ram, &regs, va, access, false);
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
        let TranslationRegs::Vmsa(vmsa) = regs else {
            unreachable!("set up as VMSA")
        };
        let off = VmsaRegs { sctlr: 0, ..vmsa }.into();
        assert_eq!(
            fault_status(&ram, &off, 0x8000_4000, Access::Read, false),
            None
        );
    }

    /// Upper half: 39-bit TTBR1 walk starting at level 1, with a 2 MiB block, a table
    /// marked APTable read-only and PXNTable, and a 1 GiB block in the lower half.
    fn two_halves() -> (GuestRam, TranslationRegs) {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        let (t0, t1, l2, l2ro, l3ro) = (L1, L1 + 0x1000, L1 + 0x2000, L1 + 0x3000, L1 + 0x4000);
        // TTBR0: GiB 1 identity, 1 GiB block, RW, AF.
        ram.write_u64(t0 + 8, 0x4000_0000 | 0x401).unwrap();
        // TTBR1: slot 0 -> l2 (plain), slot 1 -> l2ro (APTable = read-only, PXNTable).
        ram.write_u64(t1, l2 | 3).unwrap();
        ram.write_u64(t1 + 8, l2ro | 3 | (1 << 62) | (1 << 59))
            .unwrap();
        // l2 slot 1: a 2 MiB block at 0x4020_0000; slot 2: reserved-looking nothing.
        ram.write_u64(l2 + 8, 0x4020_0000 | 0x401).unwrap();
        ram.write_u64(l2ro, l3ro | 3).unwrap();
        ram.write_u64(l3ro, 0x4030_0000 | 0x403).unwrap();
        let regs: TranslationRegs = VmsaRegs {
            sctlr: 1,
            tcr: 25 | (25 << 16) | (2 << 30),
            ttbr0: t0,
            ttbr1: t1,
        }
        .into();
        (ram, regs)
    }

    const UPPER: u64 = 0xffff_ff80_0000_0000;

    #[test]
    fn walks_both_halves_blocks_and_pages() {
        let (ram, regs) = two_halves();
        // 1 GiB block in TTBR0: the 4 KiB page inside it, level 1, one descriptor.
        let t = walk(&ram, &regs, 0x4123_4567, Access::Write, false).unwrap();
        assert_eq!((t.pa, t.level, t.n_tables), (0x4123_4000, 1, 0));
        assert_eq!(t.leaf, L1 + 8);
        assert!(t.read && t.write && t.exec && t.global);
        // 2 MiB block in TTBR1 (VA bit 55 set): level 2 under one table.
        let t = walk(&ram, &regs, UPPER + 0x20_5000, Access::Read, false).unwrap();
        assert_eq!((t.pa, t.level, t.n_tables), (0x4020_5000, 2, 1));
        assert_eq!(t.block_shift(), 21);
        assert!(t.uses_descriptor(L1 + 0x1000) && t.uses_descriptor(L1 + 0x2000 + 8));
        // Hole in the level 2 table: translation fault at level 2.
        assert_eq!(
            walk(&ram, &regs, UPPER + 0x40_0000, Access::Read, false),
            Err(Fault {
                status: 0b00_0110,
                level: 2
            })
        );
        // Between the halves (bits above 39 neither all 0 nor all 1): level 0 fault.
        assert_eq!(
            walk(&ram, &regs, 0xffff_0000_0000_0000, Access::Read, false)
                .unwrap_err()
                .status,
            0b00_0100
        );
        assert_eq!(
            walk(&ram, &regs, 0x0000_ff80_0000_0000, Access::Read, false)
                .unwrap_err()
                .status,
            0b00_0100
        );
    }

    #[test]
    fn table_attributes_restrict_the_leaf() {
        let (ram, regs) = two_halves();
        let va = UPPER + (1 << 30);
        let t = walk_any(&ram, &regs, va).unwrap();
        assert_eq!((t.pa, t.level, t.n_tables), (0x4030_0000, 3, 2));
        assert!(
            t.read && !t.write && !t.exec,
            "APTable[1] and PXNTable inherited"
        );
        assert_eq!(
            walk(&ram, &regs, va, Access::Write, false).unwrap_err(),
            Fault {
                status: 0b00_1111,
                level: 3
            }
        );
        assert!(walk(&ram, &regs, va, Access::Fetch, false)
            .unwrap_err()
            .is_permission());
    }

    /// EL0's permissions: AP[1] grants reads (AP[2] takes writes away at both
    /// levels), UXN and UXNTable take execution, APTable[0] takes every data access
    /// below it, an execute-only page (AP[1] clear, UXN clear) executes, and WXN keeps
    /// EL0 from executing what it may write.
    #[test]
    fn el0_has_its_own_permissions() {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        ram.write_u64(L1 + 8 * 2, L2 | 3).unwrap(); // 0x8000_0000 -> L2
        ram.write_u64(L1 + 8 * 3, (L2 + 0x800) | 3 | (1 << 61) | (1 << 60))
            .unwrap(); // 0xc000_0000 -> L2's upper half, APTable[0] + UXNTable
        ram.write_u64(L2, L3 | 3).unwrap();
        ram.write_u64(L2 + 0x800, L3 | 3).unwrap();
        let pages: [(u64, u64); 5] = [
            (0x443 | (1 << 53) | (1 << 54), 0b011), // AP 01, PXN, UXN: EL0 rw-
            (0x4c3 | (1 << 53), 0b101),             // AP 11, PXN only: EL0 r-x
            (0x403 | (1 << 53) | (1 << 54), 0b000), // AP 00: kernel only
            (0x483 | (1 << 53), 0b100),             // AP 10, UXN clear: execute-only
            (0x443 | (1 << 54), 0b011),             // AP 01, UXN: EL0 rw-
        ];
        for (i, &(attrs, _)) in pages.iter().enumerate() {
            ram.write_u64(
                L3 + 8 * i as u64,
                (0x4010_0000 + (i as u64) * 0x1000) | attrs,
            )
            .unwrap();
        }
        let mut vmsa = lower_half_only();
        let regs: TranslationRegs = vmsa.into();
        for (i, &(_, user)) in pages.iter().enumerate() {
            let va = 0x8000_0000 + i as u64 * 0x1000;
            let t = walk_any(&ram, &regs, va).unwrap();
            assert_eq!(t.user.bits(), user, "page {i}: {}", t.user.letters());
            assert_eq!(
                walk(&ram, &regs, va, Access::Read, true).is_ok(),
                user & 1 != 0,
                "page {i}"
            );
        }
        // At EL1 the execute-only page is read-only and never executes (PXN).
        let t = walk_any(&ram, &regs, 0x8000_3000).unwrap();
        assert!(t.read && !t.write && !t.exec);
        assert_eq!(
            fault_status(&ram, &regs, 0x8000_2000, Access::Read, true),
            Some(0b00_1111),
            "a kernel page read from EL0: permission fault, level 3"
        );
        assert_eq!(
            fault_status(&ram, &regs, 0x8000_2000, Access::Read, false),
            None
        );
        // The same leaves under APTable[0] and UXNTable: nothing for EL0.
        for i in 0..pages.len() as u64 {
            let t = walk_any(&ram, &regs, 0xc000_0000 + i * 0x1000).unwrap();
            assert_eq!(t.user, Perms::NONE, "page {i} under APTable[0]");
        }
        vmsa.sctlr |= 1 << 19; // WXN
        let t = walk_any(&ram, &vmsa.into(), 0x8000_4000).unwrap();
        assert_eq!(t.user.letters(), "rw-");
        ram.write_u64(L3 + 8 * 4, 0x4010_4000 | 0x443 | (1 << 53))
            .unwrap(); // UXN clear
        assert_eq!(
            walk_any(&ram, &regs, 0x8000_4000).unwrap().user.letters(),
            "rwx"
        );
        assert_eq!(
            walk_any(&ram, &vmsa.into(), 0x8000_4000)
                .unwrap()
                .user
                .letters(),
            "rw-",
            "WXN: EL0 never executes what it may write"
        );
    }

    /// The ASID comes from TTBR1 when TCR.A1 is set (Linux), else from TTBR0, and
    /// is 8 bits wide unless TCR.AS.
    #[test]
    fn the_asid_follows_tcr_a1_and_as() {
        let regs = |tcr: u64| -> TranslationRegs {
            VmsaRegs {
                sctlr: 1,
                tcr,
                ttbr0: 0x1234 << 48,
                ttbr1: 0x5678 << 48,
            }
            .into()
        };
        const A1: u64 = 1 << 22;
        const AS: u64 = 1 << 36;
        assert_eq!(regs(0).asid(), 0x34);
        assert_eq!(regs(AS).asid(), 0x1234);
        assert_eq!(regs(A1).asid(), 0x78);
        assert_eq!(regs(A1 | AS).asid(), 0x5678);
    }

    #[test]
    fn el0_writable_and_wxn_pages_do_not_execute_at_el1() {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        ram.write_u64(L1 + 8 * 2, L2 | 3).unwrap();
        ram.write_u64(L2, L3 | 3).unwrap();
        ram.write_u64(L3, 0x4010_0000 | 0x443).unwrap(); // AP = 01: EL0 read-write
        ram.write_u64(L3 + 8, 0x4010_1000 | 0x803).unwrap(); // AF clear, nG
        ram.write_u64(L3 + 16, 0x4010_2000 | 0xc03).unwrap(); // nG
        let mut vmsa = lower_half_only();
        let regs: TranslationRegs = vmsa.into();
        let t = walk_any(&ram, &regs, 0x8000_0000).unwrap();
        assert!(t.write && !t.exec);
        assert_eq!(
            walk_any(&ram, &regs, 0x8000_1000).unwrap_err().status,
            0b00_1011
        );
        let t = walk_any(&ram, &regs, 0x8000_2000).unwrap();
        assert!(t.exec && !t.global);
        vmsa.sctlr |= 1 << 19; // WXN: writable implies execute-never
        assert!(!walk_any(&ram, &vmsa.into(), 0x8000_2000).unwrap().exec);
    }

    #[test]
    fn descriptors_decode_by_level() {
        assert_eq!(Descriptor::decode(0, 3), Descriptor::Invalid);
        assert_eq!(
            Descriptor::decode(0x4000_0001, 3),
            Descriptor::Invalid,
            "level 3 block"
        );
        assert_eq!(
            Descriptor::decode(0x4000_0003, 3),
            Descriptor::Leaf {
                output: 0x4000_0000,
                level: 3
            }
        );
        assert_eq!(
            Descriptor::decode(0x4000_1003, 2),
            Descriptor::Table(0x4000_1000)
        );
        assert_eq!(
            Descriptor::decode(0x4020_0401, 2),
            Descriptor::Leaf {
                output: 0x4020_0000,
                level: 2
            }
        );
        assert_eq!(Descriptor::decode(0x4000_0001, 0), Descriptor::Invalid);
    }
}
