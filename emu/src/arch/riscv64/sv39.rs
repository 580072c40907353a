//! RISC-V Sv39 translation for the simulated MMU: the same [`Translation`] the
//! VMSA walker gives, levels numbered as there (root 1, then 2 and 3; the entry
//! meanings are `traces::riscv64`'s, shared with the TLB check).
//!
//! Modelled: one root from `satp` (mode 8, its ASID), canonical addresses, pointers,
//! leaves at any level with aligned superpages, R/W/X, G, U (S-mode may not use U
//! pages: `sstatus.SUM` is not modelled) and A/D without hardware update (A clear
//! faults every access, D clear every store, as the spec allows). Faults carry the
//! VMSA status codes the model's events use (translation, access flag, permission,
//! with the level); the CPU takes them as page faults of the access's kind.

use traces::aarch64::{level_shift, Descriptor};
use traces::riscv64::{self, PTE_A, PTE_D, PTE_G, PTE_R, PTE_U, PTE_W, PTE_X};

use crate::memory::GuestMemory;
use crate::translation::{Fault, Translation, ACCESS_FLAG_FAULT, TRANSLATION_FAULT};
use traces::aarch64::PAGE_SIZE;
use traces::Perms;

/// `satp.MODE` of Sv39.
pub const SATP_MODE_SV39: u64 = 8;

/// The root table `satp` names, its level and the input size; a translation fault
/// for an address that is not canonical.
pub fn walk_start(satp: u64, va: u64) -> Result<(u64, u8, u32), Fault> {
    if riscv64::canonical(va) != va {
        return Err(Fault::new(TRANSLATION_FAULT, 1));
    }
    Ok(((satp & ((1 << 44) - 1)) << 12, 1, 39))
}

/// Translates `va` through the tables `satp` names, with the permissions S-mode has.
pub fn walk_any(mem: &dyn GuestMemory, satp: u64, va: u64) -> Result<Translation, Fault> {
    let (mut table, start, _) = walk_start(satp, va)?;
    let mut tables = [0u64; 3];
    let mut n_tables = 0u8;
    for level in start..=3 {
        let shift = level_shift(level);
        let desc_addr = table + 8 * ((va >> shift) & 511);
        let Ok(pte) = mem.read_u64(desc_addr) else {
            return Err(Fault::new(TRANSLATION_FAULT, level));
        };
        match riscv64::decode(pte, level) {
            Descriptor::Invalid => return Err(Fault::new(TRANSLATION_FAULT, level)),
            Descriptor::Table(next) => {
                tables[n_tables as usize] = desc_addr;
                n_tables += 1;
                table = next;
            }
            Descriptor::Leaf { output, .. } => {
                if pte & PTE_A == 0 {
                    return Err(Fault::new(ACCESS_FLAG_FAULT, level));
                }
                let supervisor = pte & PTE_U == 0;
                let block_mask = (1u64 << shift) - 1;
                // Which privilege the page is for (S-mode reaching U pages, SUM,
                // is not modelled): that one gets R, W (with D) and X.
                let (read, write, exec) = (
                    pte & PTE_R != 0,
                    pte & PTE_W != 0 && pte & PTE_D != 0,
                    pte & PTE_X != 0,
                );
                let user = Perms {
                    read: !supervisor && read,
                    write: !supervisor && write,
                    exec: !supervisor && exec,
                };
                return Ok(Translation {
                    pa: output | (va & block_mask & !(PAGE_SIZE - 1)),
                    level,
                    read: supervisor && read,
                    write: supervisor && write,
                    exec: supervisor && exec,
                    user,
                    global: pte & PTE_G != 0,
                    leaf: desc_addr,
                    tables,
                    n_tables,
                    descriptor: pte,
                });
            }
        }
    }
    unreachable!("a level 3 entry is a leaf or invalid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::mmu::{walk, Access, TranslationRegs, PERMISSION_FAULT};
    use crate::memory::GuestRam;
    use traces::riscv64::PTE_V;

    const RAM: u64 = 0x8000_0000;
    const ROOT: u64 = RAM;
    const MID: u64 = RAM + 0x1000;
    const LEAVES: u64 = RAM + 0x2000;
    const VMALLOC: u64 = 0xffff_ffc0_0000_0000;

    fn pointer(table: u64) -> u64 {
        (table >> 12) << 10 | PTE_V
    }

    fn leaf(pa: u64, perms: u64) -> u64 {
        (pa >> 12) << 10 | perms | PTE_V | PTE_A | PTE_D | PTE_G
    }

    fn setup() -> (GuestRam, TranslationRegs) {
        let mut ram = GuestRam::new(RAM, 0x10_0000).unwrap();
        // Identity gigapage of RAM; the vmalloc area's first GiB through two tables.
        ram.write_u64(ROOT + 8 * 2, leaf(RAM, PTE_R | PTE_W | PTE_X))
            .unwrap();
        ram.write_u64(ROOT + 8 * 256, pointer(MID)).unwrap();
        ram.write_u64(MID, pointer(LEAVES)).unwrap();
        ram.write_u64(LEAVES, leaf(RAM + 0x5000, PTE_R | PTE_W))
            .unwrap();
        ram.write_u64(LEAVES + 8, leaf(RAM + 0x6000, PTE_R) & !PTE_A)
            .unwrap();
        ram.write_u64(LEAVES + 16, leaf(RAM + 0x7000, PTE_R | PTE_W) & !PTE_D)
            .unwrap();
        let satp = SATP_MODE_SV39 << 60 | 3 << 44 | ROOT >> 12;
        (ram, TranslationRegs::Sv39 { satp })
    }

    #[test]
    fn walks_gigapages_and_the_upper_half() {
        let (ram, regs) = setup();
        assert!(regs.mmu_on());
        assert_eq!(regs.asid(), 3);
        let t = walk(&ram, &regs, RAM + 0x1234_5000, Access::Fetch, false).unwrap();
        assert_eq!((t.pa, t.level, t.n_tables), (RAM + 0x1234_5000, 1, 0));
        let t = walk(&ram, &regs, VMALLOC, Access::Write, false).unwrap();
        assert_eq!((t.pa, t.level, t.global), (RAM + 0x5000, 3, true));
        assert_eq!(t.tables, [ROOT + 8 * 256, MID, 0]);
        assert_eq!(t.leaf, LEAVES);
        assert!(!t.exec);
    }

    #[test]
    fn faults_as_the_spec_says() {
        let (ram, regs) = setup();
        let status = |va, access| walk(&ram, &regs, va, access, false).err().map(|f| f.status);
        assert_eq!(
            status(VMALLOC + 0x1000, Access::Read),
            Some(ACCESS_FLAG_FAULT + 3)
        );
        assert_eq!(status(VMALLOC + 0x2000, Access::Read), None);
        assert_eq!(
            status(VMALLOC + 0x2000, Access::Write),
            Some(PERMISSION_FAULT + 3)
        );
        assert_eq!(
            status(VMALLOC + 0x3000, Access::Read),
            Some(TRANSLATION_FAULT + 3)
        );
        assert_eq!(
            status(0x4000_0000, Access::Read),
            Some(TRANSLATION_FAULT + 1)
        );
        // Bits 63:39 must copy bit 38.
        assert_eq!(
            status(0x0000_0040_0000_0000, Access::Read),
            Some(TRANSLATION_FAULT + 1)
        );
    }
}
