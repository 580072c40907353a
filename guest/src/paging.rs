//! The arm64 half of the kernel page tables (mmu.rs has the rest): descriptor
//! formats, turning the MMU on, and TLB maintenance.
//!
//! Both halves use a 4 KiB granule and 39-bit virtual addresses (T0SZ = T1SZ = 25),
//! so a walk starts at level 1:
//! - TTBR0: identity. Level-1 1 GiB blocks: the first GiB (the board's devices) is
//!   Device-nGnRE, execute-never; the GiBs covering RAM are Normal write-back,
//!   execute-never, except the kernel's, split down to pages so that only its
//!   code is executable (mmu.rs). Everything else faults.
//! - TTBR1: the vmalloc area is the first GiB of the upper half.

use crate::arch::{self, read_sysreg, write_sysreg};
use crate::config::PAGE_SIZE;
use crate::mmu::PageKind;

/// First address of the vmalloc area (the first GiB of TTBR1's half).
pub const VMALLOC_START: usize = 0xffff_ff80_0000_0000;

// Descriptor bits.
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_DEVICE: u64 = 0 << 2; // MAIR index 0
const ATTR_NORMAL: u64 = 1 << 2; // MAIR index 1
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const OUTPUT_MASK: u64 = 0x0000_ffff_ffff_f000;

/// MAIR_EL1: index 0 = Device-nGnRE, index 1 = Normal, inner/outer write-back RW-allocate.
const MAIR: u64 = 0x04 | (0xff << 8);

/// The level-1 block descriptor of the board's devices' GiB (the first):
/// Device-nGnRE, execute-never.
pub const DEVICE_BLOCK: u64 = VALID | ATTR_DEVICE | AF | PXN | UXN;

/// The descriptor mapping the RAM at `pa` identically, Normal write-back: a block
/// of `size` (1 GiB at level 1, 2 MiB at level 2) or a page (level 3), executable
/// at EL1 only if `exec`.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn ram_leaf(pa: u64, size: u64, exec: bool) -> u64 {
    let kind = if size == PAGE_SIZE as u64 {
        TABLE_OR_PAGE
    } else {
        0
    };
    let never_exec = if exec { 0 } else { PXN };
    pa | kind | VALID | ATTR_NORMAL | SH_INNER | AF | UXN | never_exec
}

/// The table the vmalloc area hangs from: TTBR1's, not the identity map's.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn kernel_root<'a, T>(_identity: &'a T, kernel: &'a T) -> &'a T {
    kernel
}

pub use crate::arch::dsb_sy_isb as tables_built_barrier;

/// Turns the MMU and caches on for this CPU with the two level-1 tables.
///
/// CONTEXT: each CPU once at bring-up, after `build_tables`; IRQs masked; the code
/// runs identity-mapped so execution continues across the switch.
#[inline(always)]
pub fn enable_this_cpu(identity: u64, kernel: u64) {
    let pa_range = read_sysreg!("id_aa64mmfr0_el1") & 0xf;
    let tcr: u64 = 25            // T0SZ: 39-bit lower half
        | (1 << 8) | (1 << 10)   // IRGN0/ORGN0: write-back write-allocate
        | (3 << 12)              // SH0: inner shareable
        | (25 << 16)             // T1SZ: 39-bit upper half
        | (1 << 24) | (1 << 26)  // IRGN1/ORGN1
        | (3 << 28)              // SH1
        | (2 << 30)              // TG1: 4 KiB (TG0 = 0 is 4 KiB too)
        | (pa_range.min(5) << 32); // IPS: what the CPU supports
    let sctlr = read_sysreg!("sctlr_el1");
    // M (MMU), C (data cache), I (instruction cache) on; WXN off.
    let sctlr = (sctlr | 1 | (1 << 2) | (1 << 12)) & !(1 << 19);
    // SAFETY: the tables map this code identically, so turning translation on does
    // not move the running code; the TLB is clean of stale entries first.
    unsafe {
        write_sysreg!("mair_el1", MAIR);
        write_sysreg!("tcr_el1", tcr);
        write_sysreg!("ttbr0_el1", identity);
        write_sysreg!("ttbr1_el1", kernel);
        arch::isb();
        core::arch::asm!(
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
        write_sysreg!("sctlr_el1", sctlr);
        arch::isb();
    }
}

/// Whether a descriptor is valid.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn is_valid(entry: u64) -> bool {
    entry & VALID != 0
}

/// A table descriptor pointing at the next-level table at `table`.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn table_entry(table: u64) -> u64 {
    table | VALID | TABLE_OR_PAGE
}

/// The address a table or page descriptor points at.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn entry_output(entry: u64) -> u64 {
    entry & OUTPUT_MASK
}

/// A level-3 page descriptor for the page at `pa`.
///
/// CONTEXT: any; pure.
#[inline(always)]
pub fn page_entry(pa: usize, kind: PageKind) -> u64 {
    match kind {
        PageKind::Data => {
            pa as u64 | VALID | TABLE_OR_PAGE | ATTR_NORMAL | SH_INNER | AF | PXN | UXN
        }
    }
}

/// Orders page-table stores before what follows (`dsb ishst`).
pub use crate::arch::dsb_ishst as table_store_barrier;
/// `isb`.
pub use crate::arch::isb as context_barrier;

/// Invalidates `start..end` in this CPU's TLB only.
///
/// CONTEXT: any; IRQs masked (a call-function handler, or the flushing CPU
/// with IRQs saved off); does not sleep.
pub fn local_flush_tlb_range(start: usize, end: usize) {
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        // SAFETY: TLB invalidation by VA, all ASIDs, this CPU only: only drops
        // cached translations.
        unsafe {
            core::arch::asm!("tlbi vaae1, {}", in(reg) (va >> 12) as u64, options(nostack, preserves_flags))
        };
        va += PAGE_SIZE;
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// Invalidates `start..end` in every CPU's TLB: one `tlbi vaae1is` per page,
/// which the hardware broadcasts.
///
/// CONTEXT: any; does not sleep.
#[inline(always)]
pub fn broadcast_flush_tlb_range(start: usize, end: usize) {
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        // SAFETY: TLB invalidation by VA, all ASIDs, inner shareable:
        // only drops cached translations.
        unsafe {
            core::arch::asm!("tlbi vaae1is, {}", in(reg) (va >> 12) as u64, options(nostack, preserves_flags))
        };
        va += PAGE_SIZE;
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
}

/// Invalidates every translation of every CPU (`tlbi vmalle1is`).
///
/// CONTEXT: any; does not sleep.
#[inline(always)]
pub fn broadcast_flush_all() {
    // SAFETY: invalidates every stage-1 EL1 translation of every CPU:
    // only drops cached translations.
    unsafe {
        core::arch::asm!(
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
