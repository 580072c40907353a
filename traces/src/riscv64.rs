//! The RISC-V facts the emulator's MMU and the offline TLB check share: what an Sv39
//! page-table entry means at each level. Sv39 has the geometry of a 39-bit VMSAv8-64
//! translation with 4 KiB granules, so levels are numbered as there: the root is
//! level 1 (1 GiB per entry), then 2 (2 MiB) and 3 (4 KiB).

use crate::aarch64::{level_shift, Descriptor};

/// Valid.
pub const PTE_V: u64 = 1 << 0;
/// Readable.
pub const PTE_R: u64 = 1 << 1;
/// Writable.
pub const PTE_W: u64 = 1 << 2;
/// Executable.
pub const PTE_X: u64 = 1 << 3;
/// Accessible from U-mode (and then not from S-mode without `sstatus.SUM`).
pub const PTE_U: u64 = 1 << 4;
/// Global: the entry matches every ASID.
pub const PTE_G: u64 = 1 << 5;
/// Accessed.
pub const PTE_A: u64 = 1 << 6;
/// Dirty.
pub const PTE_D: u64 = 1 << 7;
/// The two bits reserved for software.
pub const PTE_RSW: u64 = 3 << 8;

/// The physical page an entry points at (PPN, bits 53:10).
pub fn pte_address(pte: u64) -> u64 {
    ((pte >> 10) & ((1 << 44) - 1)) << 12
}

/// What entry `pte` at `level` (1–3) means for a walk. Reserved encodings (W without
/// R), a pointer at the last level and a misaligned superpage are invalid: a walk
/// through them faults.
pub fn decode(pte: u64, level: u8) -> Descriptor {
    if pte & PTE_V == 0 || (pte & PTE_W != 0 && pte & PTE_R == 0) {
        return Descriptor::Invalid;
    }
    let output = pte_address(pte);
    if pte & (PTE_R | PTE_X) == 0 {
        return if level < 3 {
            Descriptor::Table(output)
        } else {
            Descriptor::Invalid
        };
    }
    let mask = (1u64 << level_shift(level)) - 1;
    if output & mask != 0 {
        return Descriptor::Invalid;
    }
    Descriptor::Leaf { output, level }
}

/// Whether replacing `old` by `new` (both at `level`) changes a translation a TLB
/// may hold: the output, the size or the permissions, not the accessed bit nor the
/// software bits (a clear D bit must fault the next store, so D counts).
pub fn change_matters(old: u64, new: u64, level: u8) -> bool {
    let (od, nd) = (decode(old, level), decode(new, level));
    match (od, nd) {
        (Descriptor::Invalid, _) => false,
        (Descriptor::Leaf { .. }, Descriptor::Leaf { .. }) => {
            od != nd || (old ^ new) & !(PTE_A | PTE_RSW) != 0
        }
        _ => od != nd,
    }
}

/// `va` with bits 63:39 copies of bit 38, as Sv39 requires of every address.
pub fn canonical(va: u64) -> u64 {
    ((va << 25) as i64 >> 25) as u64
}

/// The page-table format a machine's MMU walks, and what its TLB rules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageTableFormat {
    /// Arm VMSAv8-64 stage 1, 4 KiB granule.
    #[default]
    Vmsa,
    /// RISC-V Sv39.
    Sv39,
}

impl PageTableFormat {
    /// What descriptor `desc` at `level` means.
    pub fn decode(self, desc: u64, level: u8) -> Descriptor {
        match self {
            PageTableFormat::Vmsa => Descriptor::decode(desc, level),
            PageTableFormat::Sv39 => decode(desc, level),
        }
    }

    /// Whether replacing `old` by `new` changes a translation a TLB may hold.
    pub fn change_matters(self, old: u64, new: u64, level: u8) -> bool {
        match self {
            PageTableFormat::Vmsa => Descriptor::change_matters(old, new, level),
            PageTableFormat::Sv39 => change_matters(old, new, level),
        }
    }

    /// The address the entry at `index` of a table whose first entry maps `va_base`
    /// maps, with `shift` bits per entry (Sv39's one root holds both halves: the
    /// upper half's entries sign-extend).
    pub fn entry_va(self, va_base: u64, index: u64, shift: u32) -> u64 {
        let va = va_base.wrapping_add(index << shift);
        match self {
            PageTableFormat::Vmsa => va,
            PageTableFormat::Sv39 => canonical(va),
        }
    }

    /// Whether the leaf descriptor `desc` maps for every ASID (Arm's nG clear,
    /// RISC-V's G set).
    pub fn is_global(self, desc: u64) -> bool {
        match self {
            PageTableFormat::Vmsa => desc & (1 << 11) == 0,
            PageTableFormat::Sv39 => desc & PTE_G != 0,
        }
    }

    /// Whether a valid entry may only be replaced through invalid and a TLB
    /// invalidation (Arm's break-before-make), and whether TLB maintenance needs
    /// barriers of its own (Arm's `dsb`). RISC-V's `sfence.vma` orders the earlier
    /// stores itself, and a changed valid entry gives the old or the new translation
    /// until it: neither rule applies there.
    pub fn arm_rules(self) -> bool {
        self == PageTableFormat::Vmsa
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(pa: u64, perms: u64) -> u64 {
        (pa >> 12) << 10 | perms | PTE_V | PTE_A | PTE_D
    }

    #[test]
    fn decodes_sv39_entries() {
        let page = leaf(0x8020_1000, PTE_R | PTE_W);
        assert_eq!(
            decode(page, 3),
            Descriptor::Leaf {
                output: 0x8020_1000,
                level: 3
            }
        );
        let pointer = (0x8030_0000u64 >> 12) << 10 | PTE_V;
        assert_eq!(decode(pointer, 1), Descriptor::Table(0x8030_0000));
        assert_eq!(
            decode(pointer, 3),
            Descriptor::Invalid,
            "pointer at the last level"
        );
        assert_eq!(decode(page & !PTE_V, 3), Descriptor::Invalid);
        assert_eq!(
            decode(leaf(0x8020_1000, PTE_W), 3),
            Descriptor::Invalid,
            "W without R"
        );
        assert_eq!(
            decode(leaf(0x8020_1000, PTE_R), 2),
            Descriptor::Invalid,
            "misaligned megapage"
        );
        assert_eq!(
            decode(leaf(0x8000_0000, PTE_R | PTE_X), 1),
            Descriptor::Leaf {
                output: 0x8000_0000,
                level: 1
            }
        );
    }

    #[test]
    fn what_a_tlb_may_hold_changes_with_output_and_permissions_not_accessed() {
        let page = leaf(0x8020_1000, PTE_R | PTE_W);
        assert!(change_matters(page, leaf(0x8020_2000, PTE_R | PTE_W), 3));
        assert!(change_matters(page, page & !PTE_W, 3));
        assert!(
            change_matters(page, page & !PTE_D, 3),
            "a clean page must fault stores"
        );
        assert!(change_matters(page, 0, 3));
        assert!(!change_matters(page, page & !PTE_A, 3));
        assert!(!change_matters(page, page | PTE_RSW, 3));
        assert!(!change_matters(0, page, 3), "nothing was cached");
    }

    #[test]
    fn the_address_is_the_ppn_alone_and_execute_only_is_a_leaf() {
        // Bits 63:54 (N, PBMT, reserved) are not part of the address.
        let high = leaf(0x8020_1000, PTE_R) | 1 << 63 | 1 << 61;
        assert_eq!(pte_address(high), 0x8020_1000);
        let exec_only = leaf(0x8020_1000, PTE_X);
        assert_eq!(
            decode(exec_only, 3),
            Descriptor::Leaf {
                output: 0x8020_1000,
                level: 3
            }
        );
        let exec_giga = leaf(0x8000_0000, PTE_X);
        assert!(matches!(
            decode(exec_giga, 1),
            Descriptor::Leaf { level: 1, .. }
        ));
    }

    #[test]
    fn every_permission_and_the_global_bit_matter() {
        let page = leaf(0x8020_1000, PTE_R | PTE_W);
        for bit in [PTE_G, PTE_X, PTE_U, PTE_W] {
            assert!(change_matters(page, page ^ bit, 3), "bit {bit:#x}");
        }
    }

    /// Each format dispatches to its own rules: they differ on a page whose bit 10
    /// (Sv39's PPN, Arm's access flag) changes and on Sv39's accessed bit.
    #[test]
    fn each_format_applies_its_own_rules() {
        let page = leaf(0x8020_1000, PTE_R | PTE_W);
        let (sv39, vmsa) = (PageTableFormat::Sv39, PageTableFormat::Vmsa);
        assert_eq!(sv39.decode(page, 3), decode(page, 3));
        assert_eq!(vmsa.decode(page, 3), Descriptor::decode(page, 3));
        assert_ne!(sv39.decode(page, 3), vmsa.decode(page, 3));
        let next_page = leaf(0x8020_2000, PTE_R | PTE_W);
        assert!(sv39.change_matters(page, next_page, 3));
        assert!(!sv39.change_matters(page, page & !PTE_A, 3));
        assert!(vmsa.change_matters(page, page & !PTE_A, 3), "Arm's AP[1]");
        assert!(sv39.change_matters(page, page ^ PTE_D, 3));
        assert!(
            !vmsa.change_matters(0x4010_0403, 0x4010_0003, 3),
            "Arm's AF"
        );
        assert!(
            sv39.change_matters(0x4010_0403, 0x4010_0003, 3),
            "Sv39's PPN bit 0"
        );
        assert!(sv39.arm_rules() != vmsa.arm_rules() && vmsa.arm_rules());
    }

    #[test]
    fn the_one_root_holds_both_halves() {
        let f = PageTableFormat::Sv39;
        assert_eq!(f.entry_va(0, 2, 30), 0x8000_0000);
        assert_eq!(f.entry_va(0, 256, 30), 0xffff_ffc0_0000_0000);
        assert_eq!(PageTableFormat::Vmsa.entry_va(0, 256, 30), 0x40_0000_0000);
    }
}
