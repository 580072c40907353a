//! The RISC-V half of the kernel page tables (mmu.rs has the rest): Sv39
//! entries, turning translation on, and `sfence.vma`.
//!
//! One root table (satp, mmu.rs's identity table) holds both halves: identity gigapages for the board's
//! devices (the first GiB) and for RAM, and the vmalloc area, the first GiB of
//! the upper half, through a level-1 table (mmu.rs's "level 2").

use core::arch::asm;

use crate::config::PAGE_SIZE;
use crate::mmu::PageKind;

/// First address of the vmalloc area (the first GiB of Sv39's upper half).
pub const VMALLOC_START: usize = 0xffff_ffc0_0000_0000;

// Sv39 entry bits.
const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const G: u64 = 1 << 5;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
/// satp.MODE = Sv39.
const SATP_SV39: u64 = 8 << 60;

/// CONTEXT: any; pure.
fn leaf(pa: u64, permissions: u64) -> u64 {
    ((pa >> 12) << 10) | permissions | V | G | A | D
}

/// The gigapage of the board's devices (the first GiB): read-write, no execute.
pub const DEVICE_BLOCK: u64 = ((0 >> 12) << 10) | R | W | V | G | A | D;

/// The leaf mapping the RAM at `pa` identically: a gigapage, a megapage or a
/// page (Sv39 leaves look alike at every level, so `size` changes nothing),
/// executable only if `exec`.
///
/// CONTEXT: any; pure.
pub fn ram_leaf(pa: u64, _size: u64, exec: bool) -> u64 {
    leaf(pa, R | W | if exec { X } else { 0 })
}

/// The table the vmalloc area hangs from: Sv39 has one root, the identity map's.
///
/// CONTEXT: any; pure.
pub fn kernel_root<'a, T>(identity: &'a T, _kernel: &'a T) -> &'a T {
    identity
}

/// Orders the new tables before translation is turned on.
///
/// CONTEXT: any.
pub fn tables_built_barrier() {
    table_store_barrier();
}

/// Turns Sv39 translation on for this hart with the root table `kernel`.
///
/// CONTEXT: each CPU once at bring-up, after `build_tables`; IRQs masked; the code
/// runs identity-mapped so execution continues across the switch.
pub fn enable_this_cpu(identity: u64, _kernel: u64) {
    let satp = SATP_SV39 | (identity >> 12);
    // SAFETY: the root maps this code identically; the TLB is flushed after.
    unsafe { asm!("csrw satp, {}", "sfence.vma", in(reg) satp, options(nostack)) };
}

/// Whether an entry is valid.
///
/// CONTEXT: any; pure.
pub fn is_valid(entry: u64) -> bool {
    entry & V != 0
}

/// A non-leaf entry pointing at the next-level table at `table`.
///
/// CONTEXT: any; pure.
pub fn table_entry(table: u64) -> u64 {
    ((table >> 12) << 10) | V
}

/// The address an entry points at.
///
/// CONTEXT: any; pure.
pub fn entry_output(entry: u64) -> u64 {
    ((entry >> 10) & ((1 << 44) - 1)) << 12
}

/// A leaf entry for the page at `pa`.
///
/// CONTEXT: any; pure.
pub fn page_entry(pa: usize, kind: PageKind) -> u64 {
    match kind {
        PageKind::Data => leaf(pa as u64, R | W),
    }
}

pub use crate::arch::{context_barrier, table_store_barrier};

/// Invalidates `start..end` in this hart's TLB only (`sfence.vma` per page).
///
/// CONTEXT: any; does not sleep.
pub fn local_flush_tlb_range(start: usize, end: usize) {
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        // SAFETY: drops this hart's cached translations of one page.
        unsafe { asm!("sfence.vma {}, zero", in(reg) va, options(nostack)) };
        va += PAGE_SIZE;
    }
}

/// Invalidates `start..end` in every hart's TLB: RISC-V has no broadcast
/// invalidation, so this one is the firmware's (SBI RFENCE `remote_sfence_vma`),
/// hart by hart.
///
/// CONTEXT: any; does not sleep.
pub fn broadcast_flush_tlb_range(start: usize, end: usize) {
    let start = start & !(PAGE_SIZE - 1);
    for cpu in 0..crate::smp::online_cpus() {
        let hart = crate::bootinfo::boot_info().cpu_mpidr[cpu];
        crate::sbi::remote_sfence_vma(hart, start as u64, (end - start) as u64);
    }
}

/// Invalidates every translation of every hart.
///
/// CONTEXT: any; does not sleep.
pub fn broadcast_flush_all() {
    for cpu in 0..crate::smp::online_cpus() {
        let hart = crate::bootinfo::boot_info().cpu_mpidr[cpu];
        // SBI: start 0 and size all-ones mean the whole address space.
        crate::sbi::remote_sfence_vma(hart, 0, u64::MAX);
    }
}
