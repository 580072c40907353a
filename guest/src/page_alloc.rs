//! The physical page allocator: every page of RAM after the kernel image, tracked
//! in a bitmap that sits in the first free pages. Blocks of 2^order pages, aligned
//! to their size.
//!
//! Allocations that may sleep (`Gfp::Kernel`) and find the free count below the low
//! watermark first enter direct reclaim: they take the `fs_reclaim` pseudo-lock (as
//! Linux does since v4.14, so lock checkers see reclaim as a lock) and call every
//! registered shrinker. Atomic allocations never reclaim and may use the reserve
//! below the watermark.
//!
//! Synchronization rules: `ZONE_LOCK` (spinlock, irqsave; callers include IRQ
//! handlers and the vmalloc code under VMAP_LOCK) protects the bitmap and the
//! counters. `SHRINKER_LIST` (a mutex) protects the shrinker table; direct reclaim
//! holds it while calling shrinkers. Lock order: fs_reclaim -> SHRINKER_LIST ->
//! whatever the shrinkers take; VMAP_LOCK -> ZONE_LOCK.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use crate::config::PAGE_SIZE;
use crate::mutex::Mutex;
use crate::sync::{self, SpinLock};

/// How an allocation may wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gfp {
    /// May sleep, so may enter direct reclaim (GFP_KERNEL).
    Kernel,
    /// Must not sleep; may dip into the reserve below the watermark (GFP_ATOMIC).
    Atomic,
}

struct Zone {
    bitmap: *mut u64,
    base: usize,
    pages: usize,
    free: usize,
    /// Where the next search starts (next-fit keeps searches short).
    hint: usize,
}

// SAFETY: the bitmap pointer is only followed under ZONE_LOCK.
unsafe impl Send for Zone {}

/// ZONE_LOCK: protects the page bitmap and the free count.
static ZONE_LOCK: SpinLock<Zone> = SpinLock::new(
    "zone_lock",
    Zone {
        bitmap: core::ptr::null_mut(),
        base: 0,
        pages: 0,
        free: 0,
        hint: 0,
    },
);

/// Whether a free points the next search at the block it freed, so the page freed
/// last is the next one handed out, as Linux's per-CPU page lists give out the
/// hottest page first (`reclaim-reuse` turns it on; off, next-fit keeps freed pages
/// unused for long).
static REUSE_FREED_FIRST: AtomicBool = AtomicBool::new(false);

/// Free pages below which a sleeping allocation reclaims first.
static LOW_WATERMARK: AtomicUsize = AtomicUsize::new(32);
/// Direct reclaim passes so far (scenarios check that reclaim happened).
static RECLAIM_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Something that can give memory back under pressure.
pub struct Shrinker {
    pub name: &'static str,
    /// Frees up to `nr_to_scan` objects; returns how many it freed.
    /// CONTEXT: called from direct reclaim: may sleep, fs_reclaim and SHRINKER_LIST held.
    pub scan: fn(nr_to_scan: usize) -> usize,
}

const MAX_SHRINKERS: usize = 8;
/// SHRINKER_LIST: the registered shrinkers.
static SHRINKER_LIST: Mutex<[Option<&'static Shrinker>; MAX_SHRINKERS]> =
    Mutex::new("shrinker_list", [None; MAX_SHRINKERS]);

impl Zone {
    /// CONTEXT: ZONE_LOCK held.
    fn is_free(&self, index: usize) -> bool {
        // SAFETY: index < pages; the bitmap covers `pages` bits.
        unsafe { *self.bitmap.add(index / 64) & (1 << (index % 64)) == 0 }
    }

    /// CONTEXT: ZONE_LOCK held.
    fn mark(&mut self, first: usize, count: usize, used: bool) {
        sync::lockdep_assert_held(ZONE_LOCK.raw());
        for index in first..first + count {
            // SAFETY: as above.
            unsafe {
                let word = self.bitmap.add(index / 64);
                if used {
                    *word |= 1 << (index % 64);
                } else {
                    *word &= !(1 << (index % 64));
                }
            }
        }
    }

    /// CONTEXT: ZONE_LOCK held.
    fn find_block(&self, count: usize) -> Option<usize> {
        sync::lockdep_assert_held(ZONE_LOCK.raw());
        let aligned_start = |index: usize| index.next_multiple_of(count);
        let mut index = aligned_start(self.hint % self.pages.max(1));
        let mut scanned = 0;
        while scanned <= self.pages {
            if index + count > self.pages {
                scanned += self.pages - index.min(self.pages);
                index = 0;
                continue;
            }
            if (index..index + count).all(|i| self.is_free(i)) {
                return Some(index);
            }
            index += count;
            scanned += count;
        }
        None
    }
}

/// Takes over RAM `start..end` (page-aligned inward). The bitmap goes in the first
/// pages of the range.
///
/// CONTEXT: boot CPU, once, after the device tree has been read (its memory is
/// reused from here on).
pub fn init(start: usize, end: usize) {
    let start = start.next_multiple_of(PAGE_SIZE);
    let end = end & !(PAGE_SIZE - 1);
    let pages = (end - start) / PAGE_SIZE;
    let bitmap_bytes = pages.div_ceil(64) * 8;
    let bitmap_pages = bitmap_bytes.div_ceil(PAGE_SIZE);
    let mut zone = ZONE_LOCK.lock_irqsave();
    zone.bitmap = start as *mut u64;
    zone.base = start;
    zone.pages = pages;
    // SAFETY: the range is RAM nobody else owns; the bitmap fits in its first pages.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, bitmap_pages * PAGE_SIZE) };
    zone.mark(0, bitmap_pages, true);
    zone.free = pages - bitmap_pages;
    zone.hint = bitmap_pages;
}

/// Free pages now.
///
/// CONTEXT: any.
pub fn free_page_count() -> usize {
    ZONE_LOCK.lock_irqsave().free
}

/// Sets the low watermark (scenarios create memory pressure with it).
///
/// CONTEXT: any.
pub fn set_low_watermark(pages: usize) {
    LOW_WATERMARK.store(pages, Relaxed);
}

/// Direct reclaim passes so far.
///
/// CONTEXT: any.
pub fn reclaim_runs() -> usize {
    RECLAIM_RUNS.load(Relaxed)
}

/// CONTEXT: any; takes ZONE_LOCK (irqsave); does not sleep.
fn take_block(order: usize) -> Option<usize> {
    let count = 1 << order;
    let mut zone = ZONE_LOCK.lock_irqsave();
    if zone.free < count {
        return None;
    }
    let first = zone.find_block(count)?;
    zone.mark(first, count, true);
    zone.free -= count;
    zone.hint = first + count;
    Some(zone.base + first * PAGE_SIZE)
}

/// Allocates 2^order contiguous pages; returns their physical (= identity-mapped)
/// address. Contents are not cleared.
///
/// CONTEXT: `Gfp::Atomic`: any, takes ZONE_LOCK (irqsave). `Gfp::Kernel`: may sleep
/// (direct reclaim): no spinlock held.
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn alloc_pages(order: usize, gfp: Gfp) -> Option<usize> {
    if gfp == Gfp::Kernel {
        sync::might_sleep();
        if free_page_count() < LOW_WATERMARK.load(Relaxed) + (1 << order) {
            direct_reclaim(1 << order);
        }
    }
    take_block(order)
}

/// Returns 2^order pages from `alloc_pages`.
///
/// CONTEXT: any; takes ZONE_LOCK (irqsave).
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn free_pages(address: usize, order: usize) {
    let count = 1 << order;
    let mut zone = ZONE_LOCK.lock_irqsave();
    let offset = address.wrapping_sub(zone.base);
    if address % PAGE_SIZE != 0 || offset / PAGE_SIZE + count > zone.pages {
        panic!("free_pages: 0x{:x} is not a page of the allocator", address);
    }
    let first = offset / PAGE_SIZE;
    if (first..first + count).any(|i| zone.is_free(i)) {
        panic!("free_pages: double free of 0x{:x}", address);
    }
    zone.mark(first, count, false);
    zone.free += count;
    if REUSE_FREED_FIRST.load(Relaxed) {
        zone.hint = first;
    }
}

/// From now on, hand out the page freed last first (see `REUSE_FREED_FIRST`).
///
/// CONTEXT: any; does not sleep.
pub fn reuse_freed_first() {
    REUSE_FREED_FIRST.store(true, Relaxed);
}

/// CONTEXT: any; pure.
fn order_for(size: usize) -> usize {
    size.div_ceil(PAGE_SIZE)
        .max(1)
        .next_power_of_two()
        .trailing_zeros() as usize
}

/// Allocates `size` bytes of zeroed kernel memory, page-aligned (so 16-aligned),
/// in whole pages from the page allocator (the kernel has no small-object heap).
///
/// CONTEXT: as alloc_pages for `gfp`.
pub fn kzalloc(size: usize, gfp: Gfp) -> Option<core::ptr::NonNull<u8>> {
    let order = order_for(size);
    let address = alloc_pages(order, gfp)?;
    // SAFETY: fresh identity-mapped pages, ours alone.
    unsafe { core::ptr::write_bytes(address as *mut u8, 0, PAGE_SIZE << order) };
    core::ptr::NonNull::new(address as *mut u8)
}

/// Frees memory from kzalloc of the same `size`.
///
/// CONTEXT: any, IRQs off or locks held included; does not sleep.
pub fn kfree(ptr: core::ptr::NonNull<u8>, size: usize) {
    free_pages(ptr.as_ptr() as usize, order_for(size));
}

/// Marks the start of a reclaim section for lock checkers (the `fs_reclaim`
/// pseudo-lock). The host probes this symbol.
///
/// CONTEXT: may sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn fs_reclaim_acquire() {
    sync::might_sleep();
}

/// Ends the section begun by fs_reclaim_acquire.
///
/// CONTEXT: after fs_reclaim_acquire.
#[no_mangle]
#[inline(never)]
pub extern "C" fn fs_reclaim_release() {}

/// Calls every shrinker, asking for `wanted` pages' worth.
///
/// CONTEXT: may sleep; no spinlock held. Takes fs_reclaim, then SHRINKER_LIST.
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn direct_reclaim(wanted: usize) -> usize {
    RECLAIM_RUNS.fetch_add(1, Relaxed);
    fs_reclaim_acquire();
    let mut freed = 0;
    {
        let shrinkers = SHRINKER_LIST.lock();
        for shrinker in shrinkers.iter().flatten() {
            freed += (shrinker.scan)(wanted.max(32));
        }
    }
    fs_reclaim_release();
    freed
}

/// Registers a shrinker for direct reclaim (panics if the table is full).
///
/// CONTEXT: may sleep (takes SHRINKER_LIST).
pub fn register_shrinker(shrinker: &'static Shrinker) {
    let mut shrinkers = SHRINKER_LIST.lock();
    match shrinkers.iter_mut().find(|slot| slot.is_none()) {
        Some(slot) => *slot = Some(shrinker),
        None => panic!("no room to register shrinker {}", shrinker.name),
    }
}

/// Removes a shrinker registered with register_shrinker.
///
/// CONTEXT: may sleep (takes SHRINKER_LIST).
pub fn unregister_shrinker(shrinker: &'static Shrinker) {
    let mut shrinkers = SHRINKER_LIST.lock();
    for slot in shrinkers.iter_mut() {
        if slot.is_some_and(|s| core::ptr::eq(s, shrinker)) {
            *slot = None;
        }
    }
}
