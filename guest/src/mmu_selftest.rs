//! Self-tests for the host's simulated MMU: each `selftest-*` scenario below gets one
//! vmalloc-area page wrong in exactly one way (or, `selftest-tlb-ok`, right), so the
//! host must report exactly that finding (or none), as its summary in [`CASES`] says.
//! They run on the scenario thread (CPU 0) alone and power off with status 0: the finding is the host's to make.
//!
//! Every case: reserve one page of the vmalloc area, map page A there, touch it so
//! that CPU 0's TLB holds the translation, do the case's sequence, then clean up
//! correctly (flush, unmap, release) so that nothing else is reported.
//!
//! Synchronization: the cases write level-3 descriptors of their own reserved page
//! directly (a page no one else maps), outside VMAP_LOCK; the rest of the kernel does
//! not touch that entry while the case runs.

use crate::arch::{self, read_sysreg};
use crate::config::PAGE_SIZE;
use crate::mmu::{self, PageKind};
use crate::page_alloc::{self, Gfp};
use crate::println;
use crate::scenarios::Scenario;
use crate::vmalloc;

const OUTPUT_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The MMU self-tests, with the finding each must give.
pub const CASES: &[Scenario] = &[
    Scenario {
        name: "selftest-tlb-ok",
        summary:
            "MMU self-test: unmap with flush, remap, break-before-make done right (no finding)",
        main: tlb_ok,
    },
    Scenario {
        name: "selftest-stale-tlb",
        summary: "MMU self-test: unmap without TLBI, then read the page (stale-tlb)",
        main: stale_tlb,
    },
    Scenario {
        name: "selftest-missing-tlb-flush",
        summary: "MMU self-test: unmap without TLBI, map another page there (missing-tlb-flush)",
        main: missing_tlb_flush,
    },
    Scenario {
        name: "selftest-bbm",
        summary: "MMU self-test: change a live descriptor to another page (break-before-make)",
        main: bbm,
    },
    Scenario {
        name: "selftest-missing-barrier",
        summary: "MMU self-test: TLBI then ISB with no DSB ISH between (missing-barrier)",
        main: missing_barrier,
    },
    Scenario {
        name: "selftest-missing-dsb-ishst",
        summary: "MMU self-test: descriptor store then TLBI with no DSB ISHST (missing-barrier)",
        main: missing_dsb_ishst,
    },
];

/// The scenario function for `name`, if it is one of these.
///
/// CONTEXT: any; pure.
pub fn lookup(name: &str) -> Option<fn(usize)> {
    CASES
        .iter()
        .find(|case| case.name == name)
        .map(|case| case.main)
}

/// One reserved vmalloc page and two physical pages to map there.
struct Setup {
    va: usize,
    a: usize,
    b: usize,
}

/// CONTEXT: scenario thread; may sleep (page allocation).
fn setup() -> Setup {
    let va = vmalloc::vm_reserve(PAGE_SIZE).expect("mmu selftest: no vmalloc space");
    let a = page_alloc::alloc_pages(0, Gfp::Kernel).expect("mmu selftest: no page");
    let b = page_alloc::alloc_pages(0, Gfp::Kernel).expect("mmu selftest: no page");
    // SAFETY: fresh pages from the allocator, identity-mapped, ours alone.
    unsafe {
        (a as *mut u64).write_volatile(0xaaaa);
        (b as *mut u64).write_volatile(0xbbbb);
    }
    mmu::map_page(va, a, PageKind::Data).expect("mmu selftest: map A");
    // Caches the translation va -> A in this CPU's TLB.
    let seen = read(va);
    if seen != 0xaaaa {
        panic!("mmu selftest: read 0x{:x} through the new mapping", seen);
    }
    Setup { va, a, b }
}

/// Undoes `setup` correctly: unmap with flush, free, release.
///
/// CONTEXT: scenario thread.
fn teardown(s: Setup, name: &str) -> ! {
    mmu::vunmap_page(s.va);
    page_alloc::free_pages(s.a, 0);
    page_alloc::free_pages(s.b, 0);
    vmalloc::vm_release(s.va, PAGE_SIZE);
    println!("cpu0: {}: done", name);
    crate::psci::system_off(0);
}

/// CONTEXT: any; `va` must be mapped (or deliberately stale).
fn read(va: usize) -> u64 {
    // SAFETY: the selftest maps `va` (the stale case reads it on purpose).
    unsafe { (va as *const u64).read_volatile() }
}

/// The level-3 descriptor of `va` in the vmalloc area, found by walking TTBR1.
///
/// CONTEXT: any; `va` mapped by map_page (its level-3 table exists).
fn pte(va: usize) -> *mut u64 {
    let l1 = (read_sysreg!("ttbr1_el1") & OUTPUT_MASK) as *const u64;
    // SAFETY: the kernel tables are identity-mapped; indices are below 512.
    unsafe {
        let l2 = (l1.add((va >> 30) & 511).read_volatile() & OUTPUT_MASK) as *const u64;
        let l3 = (l2.add((va >> 21) & 511).read_volatile() & OUTPUT_MASK) as *mut u64;
        l3.add((va >> 12) & 511)
    }
}

/// `tlbi vaae1is` for one page, with no barrier around it.
///
/// CONTEXT: any.
fn tlbi_page(va: usize) {
    // SAFETY: TLB invalidation only.
    unsafe {
        core::arch::asm!("tlbi vaae1is, {}", in(reg) (va >> 12) as u64, options(nostack, preserves_flags))
    };
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn tlb_ok(_: usize) {
    let s = setup();
    mmu::vunmap_page(s.va);
    mmu::map_page(s.va, s.b, PageKind::Data).expect("remap");
    assert_eq!(read(s.va), 0xbbbb, "mmu selftest: remap not seen");
    // A live entry replaced through map_page goes through break-before-make.
    mmu::map_page(s.va, s.a, PageKind::Data).expect("remap");
    assert_eq!(read(s.va), 0xaaaa, "mmu selftest: remap not seen");
    teardown(s, "selftest-tlb-ok");
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn stale_tlb(_: usize) {
    let s = setup();
    mmu::vunmap_page_noflush(s.va);
    // The TLB still holds va -> A: the read goes through it (and returns A's data).
    let seen = read(s.va);
    println!("cpu0: selftest-stale-tlb: read 0x{:x} after unmap", seen);
    mmu::flush_tlb_kernel_range(s.va, s.va + PAGE_SIZE);
    teardown(s, "selftest-stale-tlb");
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn missing_tlb_flush(_: usize) {
    let s = setup();
    mmu::vunmap_page_noflush(s.va);
    // Mapped again (to B) while this CPU's TLB still holds va -> A.
    mmu::map_page(s.va, s.b, PageKind::Data).expect("remap");
    mmu::flush_tlb_kernel_range(s.va, s.va + PAGE_SIZE);
    assert_eq!(read(s.va), 0xbbbb, "mmu selftest: remap not seen");
    teardown(s, "selftest-missing-tlb-flush");
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn bbm(_: usize) {
    let s = setup();
    let entry = pte(s.va);
    // SAFETY: the level-3 entry of our own reserved page.
    unsafe {
        let old = entry.read_volatile();
        // Straight from A to B: no invalid entry and no TLBI in between.
        entry.write_volatile((old & !OUTPUT_MASK) | s.b as u64);
    }
    mmu::flush_tlb_kernel_range(s.va, s.va + PAGE_SIZE);
    assert_eq!(read(s.va), 0xbbbb, "mmu selftest: new mapping not seen");
    teardown(s, "selftest-bbm");
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn missing_barrier(_: usize) {
    let s = setup();
    // The store is ordered (vunmap_page_noflush ends with dsb ishst) but the TLBI is
    // not completed by a `dsb ish` before the ISB.
    mmu::vunmap_page_noflush(s.va);
    tlbi_page(s.va);
    arch::isb();
    // Now completed properly.
    mmu::flush_tlb_kernel_range(s.va, s.va + PAGE_SIZE);
    teardown(s, "selftest-missing-barrier");
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn missing_dsb_ishst(_: usize) {
    let s = setup();
    let entry = pte(s.va);
    // SAFETY: the level-3 entry of our own reserved page.
    unsafe { entry.write_volatile(0) };
    // No `dsb ishst` between the store and the TLBI.
    tlbi_page(s.va);
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    teardown(s, "selftest-missing-dsb-ishst");
}
