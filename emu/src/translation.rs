//! What a page-table walk gives, on either ISA: the translation of a page or the
//! fault that stopped it. The walkers (`mmu` for VMSAv8-64, `sv39` for RISC-V)
//! both produce these, so neither needs the other.

use traces::aarch64::Access;
use traces::Perms;

/// Fault status codes (DFSC/IFSC).
pub const ALIGNMENT_FAULT: u64 = 0b10_0001;
pub const TRANSLATION_FAULT: u64 = 0b00_0100;
pub const ACCESS_FLAG_FAULT: u64 = 0b00_1000;
pub const PERMISSION_FAULT: u64 = 0b00_1100;

/// Why a walk failed: the fault status code (with its level) for ESR_EL1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub status: u64,
    pub level: u8,
}

impl Fault {
    pub(crate) fn new(kind: u64, level: u8) -> Self {
        Self {
            status: kind + level as u64,
            level,
        }
    }
    pub fn is_permission(&self) -> bool {
        self.status & !3 == PERMISSION_FAULT
    }
}

/// What a successful walk found for one 4 KiB page of virtual address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the 4 KiB page (inside a block: the matching part).
    pub pa: u64,
    /// Level of the leaf descriptor: 3 page, 2 a 2 MiB block, 1 a 1 GiB block.
    pub level: u8,
    /// Permissions at EL1 (S-mode).
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// Permissions at EL0 (U-mode).
    pub user: Perms,
    /// nG clear: the entry matches every ASID.
    pub global: bool,
    /// Physical address of the leaf descriptor and of the table descriptors above it
    /// (`tables[..levels]`, outermost first, leaf excluded).
    pub leaf: u64,
    pub tables: [u64; 3],
    pub n_tables: u8,
    /// The leaf descriptor's value.
    pub descriptor: u64,
}

impl Translation {
    /// Size of the block or page the leaf maps, as a shift.
    #[cfg(test)]
    pub fn block_shift(&self) -> u32 {
        traces::aarch64::level_shift(self.level)
    }
    /// Whether the walk read the descriptor at physical address `desc`.
    #[cfg(test)]
    pub fn uses_descriptor(&self, desc: u64) -> bool {
        self.leaf == desc || self.tables[..self.n_tables as usize].contains(&desc)
    }
    /// The permissions at EL1 (`el0` false) or EL0.
    pub fn perms(&self, el0: bool) -> Perms {
        if el0 {
            self.user
        } else {
            Perms {
                read: self.read,
                write: self.write,
                exec: self.exec,
            }
        }
    }

    pub fn allows(&self, access: Access, el0: bool) -> bool {
        self.perms(el0).allows(access)
    }
}
