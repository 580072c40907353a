//! Virtual address space in the vmalloc area (mmu.rs holds its page tables):
//! reserving and releasing page-aligned ranges, and mapping/unmapping runs of
//! pages in them without TLB maintenance (callers batch one flush). This is what
//! the per-CPU allocator's chunks get their addresses from.
//!
//! Synchronization rules: `VM_AREA_LOCK` (spinlock, irqsave) protects the bitmap
//! of reserved pages. It is never held while page tables change (mmu.rs takes
//! VMAP_LOCK for that), so the two are unordered.

use crate::config::PAGE_SIZE;
use crate::mmu::{self, MapError, PageKind, VMALLOC_END, VMALLOC_START};
use crate::sync::SpinLock;

const AREA_PAGES: usize = (VMALLOC_END - VMALLOC_START) / PAGE_SIZE;
/// The first page stays unreserved so that no area starts at VMALLOC_START and a
/// stray small offset from a null area pointer still faults.
const GUARD_PAGES: usize = 1;

struct Reserved {
    bits: [u64; AREA_PAGES / 64],
    /// Where the next search starts (next-fit: a released range is not handed out
    /// again at once, which keeps stale-TLB bugs visible rather than lucky).
    hint: usize,
}

/// VM_AREA_LOCK: which pages of the vmalloc area are reserved.
static VM_AREA_LOCK: SpinLock<Reserved> = SpinLock::new(
    "vm_area_lock",
    Reserved {
        bits: [0; AREA_PAGES / 64],
        hint: GUARD_PAGES,
    },
);

impl Reserved {
    /// CONTEXT: VM_AREA_LOCK held.
    fn is_reserved(&self, page: usize) -> bool {
        self.bits[page / 64] & (1 << (page % 64)) != 0
    }

    /// CONTEXT: VM_AREA_LOCK held.
    fn set(&mut self, first: usize, count: usize, reserved: bool) {
        crate::sync::lockdep_assert_held(VM_AREA_LOCK.raw());
        for page in first..first + count {
            if reserved {
                self.bits[page / 64] |= 1 << (page % 64);
            } else {
                self.bits[page / 64] &= !(1 << (page % 64));
            }
        }
    }

    /// First free run of `count` pages at or after the hint, wrapping once.
    ///
    /// CONTEXT: VM_AREA_LOCK held.
    fn find(&self, count: usize) -> Option<usize> {
        crate::sync::lockdep_assert_held(VM_AREA_LOCK.raw());
        let mut start = self.hint;
        let mut wrapped = false;
        loop {
            if start + count > AREA_PAGES {
                if wrapped {
                    return None;
                }
                wrapped = true;
                start = GUARD_PAGES;
                continue;
            }
            match (start..start + count).find(|&page| self.is_reserved(page)) {
                None => return Some(start),
                Some(taken) => start = taken + 1,
            }
            if wrapped && start >= self.hint {
                return None;
            }
        }
    }
}

/// Reserves `size` bytes (rounded up to pages) of the vmalloc area with nothing
/// mapped; returns the page-aligned start.
///
/// CONTEXT: any; takes VM_AREA_LOCK (irqsave); does not sleep.
pub fn vm_reserve(size: usize) -> Option<usize> {
    let count = size.div_ceil(PAGE_SIZE).max(1);
    let mut reserved = VM_AREA_LOCK.lock_irqsave();
    let first = reserved.find(count)?;
    reserved.set(first, count, true);
    reserved.hint = first + count;
    Some(VMALLOC_START + first * PAGE_SIZE)
}

/// Gives back a range from vm_reserve. The caller has unmapped it and flushed the
/// TLB for it.
///
/// CONTEXT: any; takes VM_AREA_LOCK (irqsave); does not sleep.
pub fn vm_release(addr: usize, size: usize) {
    let count = size.div_ceil(PAGE_SIZE).max(1);
    let first = addr.wrapping_sub(VMALLOC_START) / PAGE_SIZE;
    if addr % PAGE_SIZE != 0 || first < GUARD_PAGES || first + count > AREA_PAGES {
        panic!(
            "vm_release: 0x{:x}+0x{:x} is not in the vmalloc area",
            addr, size
        );
    }
    let mut reserved = VM_AREA_LOCK.lock_irqsave();
    if (first..first + count).any(|page| !reserved.is_reserved(page)) {
        panic!("vm_release: 0x{:x}+0x{:x} was not reserved", addr, size);
    }
    reserved.set(first, count, false);
}

/// Maps the physical pages `pages` at consecutive pages from `addr`. Fresh entries
/// need no TLB maintenance; a live entry is replaced with break-before-make.
///
/// CONTEXT: any; takes VMAP_LOCK and may take ZONE_LOCK; does not sleep.
pub fn map_pages(addr: usize, pages: &[usize]) -> Result<(), MapError> {
    for (index, &page) in pages.iter().enumerate() {
        mmu::map_page(addr + index * PAGE_SIZE, page, PageKind::Data)?;
    }
    Ok(())
}

/// Clears the mappings of `addr..addr + size` without TLB maintenance; the caller
/// must `flush_tlb_kernel_range` over the range before reusing the pages.
///
/// CONTEXT: any; takes VMAP_LOCK; does not sleep.
pub fn unmap_range_noflush(addr: usize, size: usize) {
    let mut va = addr & !(PAGE_SIZE - 1);
    while va < addr + size {
        mmu::vunmap_page_noflush(va);
        va += PAGE_SIZE;
    }
}

/// Metadata allocations `vmalloc` handed out and `vfree` has not taken back.
struct VmallocAreas {
    live: usize,
    pages: usize,
}

/// `vmap_area_lock`: the list of vmalloc'ed metadata areas. Like Linux's, it
/// is taken with plain `spin_lock`: it is not IRQ-safe, so it must never be
/// taken under an IRQ-safe lock (the seed's `pcpu_mem_free` does, through
/// `vfree`, under `pcpu_lock`). Linux's name and an unmangled symbol, so the
/// lock validator's reports name it as lockdep would.
#[no_mangle]
#[allow(non_upper_case_globals)]
static vmap_area_lock: SpinLock<VmallocAreas> =
    SpinLock::new("vmap_area_lock", VmallocAreas { live: 0, pages: 0 });

/// `vmalloc` for metadata above a page (the seed's `pcpu_mem_alloc`): zeroed
/// pages, accounted under vmap_area_lock. The pages are physically contiguous
/// and used through the linear map here; what matters to the allocator is the
/// lock, which the real vmalloc takes the same way.
///
/// CONTEXT: process context, IRQs on, no spinlock held; takes
/// vmap_area_lock (plain spin_lock); may sleep with `Gfp::Kernel`.
pub fn vmalloc(size: usize, gfp: crate::page_alloc::Gfp) -> Option<core::ptr::NonNull<u8>> {
    let ptr = crate::page_alloc::kzalloc(size, gfp)?;
    let mut areas = vmap_area_lock.lock();
    areas.live += 1;
    areas.pages += size.div_ceil(PAGE_SIZE);
    Some(ptr)
}

/// `vfree` of memory from `vmalloc` of the same `size`.
///
/// CONTEXT: not hard-IRQ; takes vmap_area_lock (plain spin_lock), so a caller
/// holding an IRQ-safe lock makes a HARDIRQ-safe -> HARDIRQ-unsafe order.
pub fn vfree(ptr: core::ptr::NonNull<u8>, size: usize) {
    {
        let mut areas = vmap_area_lock.lock();
        if areas.live == 0 {
            panic!("vfree: {:p} with no live vmalloc area", ptr.as_ptr());
        }
        areas.live -= 1;
        areas.pages -= size.div_ceil(PAGE_SIZE);
    }
    crate::page_alloc::kfree(ptr, size);
}
