//! The guest's implementation of the per-CPU allocator's platform
//! (`allocator::Platform`), and the kernel-wide allocator instance.
//!
//! - Locks: the allocator's locks are this file's statics with the seed's
//!   names and symbols (`pcpu_alloc_mutex`, `pcpu_lock`, `pcpu_mutex`), taken
//!   through the kernel's stable primitives (`mutex_lock`, `spin_lock_irq`,
//!   `spin_lock_irqsave`, ...) so the host sees every acquire and release.
//! - Pages: the physical page allocator; a `Gfp::KERNEL` request below the low
//!   watermark enters direct reclaim (`fs_reclaim`, shrinkers).
//! - Metadata: as the seed's `pcpu_mem_alloc`/`pcpu_mem_free`: `kzalloc`/
//!   `kfree` up to a page, `vmalloc`/`vfree` above it (an area map of more
//!   than 1024 entries); `vfree` takes `vmap_area_lock`, which is not IRQ-safe.
//! - Chunk virtual areas: slots of one chunk each in a pool reserved once from
//!   the vmalloc area (TTBR1 half). The lowest free slot is handed out first, so
//!   a chunk created after reclaim reuses the address of a reclaimed one; its
//!   old translations must be gone by then (see `vm_release`).
//! - Page tables: `mmu::map_page` (break-before-make if an entry were live) and
//!   `vunmap_page_noflush`; TLB maintenance `flush_tlb_kernel_range`
//!   (`dsb ishst; tlbi vaae1is; dsb ish; isb`).
//! - Work: one static work item on the queuing CPU's worker.
//! - Entry points with Linux's names and the C ABI, so the host can probe
//!   them: `__alloc_percpu(size, align) -> ptr`, `__alloc_reserved_percpu`,
//!   `free_percpu(ptr)` (0 = failure / ignored).
//!
//! The TLB flush on reclaim follows the seed: reclaim frees a chunk's pages,
//! then unmaps them without flushing, and relies on freeing the virtual area
//! to flush it, as `free_vm_area` did through vmalloc's lazy vunmap: a released
//! area is only flushed by the next purge, which runs when a new chunk wants
//! the address back (it takes the lowest free one), when enough lazily freed
//! pages pile up, or when a scenario asks at its end. Until then the freed
//! pages stay reachable through other CPUs' cached translations (`fixed`
//! flushes before freeing them). The `inject=skip-tlb-flush` bootarg skips the
//! purge's flush.
//!
//! Synchronization rules — the locks this file adds:
//! - `pcpu_alloc_mutex` (mutex; `fine`/`fixed`/`irq`): the allocator's alloc and
//!   reclaim paths, chunks and their page arrays (allocator/src/percpu.rs).
//!   `inject=reclaim-one-lock` makes reclaim skip it.
//! - `pcpu_lock` (spinlock, always with IRQs off; `fine`/`fixed`/`irq`): the
//!   allocator's index: chunk slots, chunks by address, area maps.
//!   `inject=free-unlocked` makes `free_percpu` skip it (or `pcpu_mutex`), and
//!   `inject=extend-no-restart` makes `fixed`'s allocation walk on after
//!   dropping it to extend a map, as the seed does; the allocator's checks
//!   (allocator/src/percpu.rs) catch what the races break.
//!   `inject=ipi-flush-irqs-off` takes it around the allocator's TLB flushes:
//!   with `flush=ipi` a flusher then waits, IRQs off, for CPUs that may be
//!   spinning on it with IRQs off (the host's wait-for graph reports it).
//! - `pcpu_mutex` (mutex; `mutex` variant only): everything of the allocator.
//! - `pcpu_vm_pool` (spinlock, irqsave): the slot bitmaps (used, lazily
//!   freed) of the chunk address pool; held while the pool itself is reserved
//!   (once), so it nests outside `vm_area_lock`. Not held while a purge
//!   flushes.
//! - `pcpu_flush_batch` (spinlock, irqsave; `flush=batched` only): the reclaim
//!   work's deferred TLB flush range and page frees, and which thread owns the
//!   batch. Only the owner adds to it; it is never held while flushing or
//!   freeing, so nothing nests inside it.
//! - `pcpu_reclaim_done` (wait queue, its spinlock irqsave): threads waiting
//!   for the reclaim work to finish a run; the wait condition reads an atomic
//!   only, so nothing nests inside it.
//!
//! Lock order: pcpu_alloc_mutex -> pcpu_lock -> worker_pool (schedule work);
//! pcpu_alloc_mutex / pcpu_mutex -> fs_reclaim -> shrinker_list (allocations);
//! pcpu_lock -> zone_lock, and in the seed's variants pcpu_lock ->
//! vmap_area_lock (mem_free of a replaced area map: the seed's hazard);
//! pcpu_vm_pool -> vm_area_lock.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use allocator::{Config, Gfp, MapError, Page, PcpuPtr, Percpu, Platform, Variant, PAGE_SIZE};

use crate::arch;
use crate::bootinfo::boot_info;
use crate::config::MAX_CPUS;
use crate::mmu::{self, PageKind};
use crate::mutex::{self, RawMutex};
use crate::page_alloc;
use crate::percpu::cpu_id;
use crate::sched::WaitQueue;
use crate::sync::{self, RawSpinLock, SpinLock};
use crate::vmalloc;
use crate::workqueue::{self, Work};

/// `pcpu_alloc_mutex`: protects the whole alloc and reclaim paths (fine, irq).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static pcpu_alloc_mutex: RawMutex = RawMutex::new("pcpu_alloc_mutex");

/// `pcpu_lock`: protects the index data structures (fine, irq).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static pcpu_lock: RawSpinLock = RawSpinLock::new("pcpu_lock");

/// `pcpu_mutex`: the one mutex of before the patch (mutex variant).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static pcpu_mutex: RawMutex = RawMutex::new("pcpu_mutex");

/// Static per-CPU data every unit of the first chunk starts with (the kernel
/// keeps its own per-CPU data in `percpu.rs`; the seed requires a static area).
const STATIC_IMAGE: &[u8] = b"percpu-lab guest static per-CPU area\0";
/// Bytes of the static area at the start of each unit.
const STATIC_SIZE: usize = 4096;
/// Bytes after it served only by `alloc_reserved` (the seed's module area).
pub const RESERVED_SIZE: usize = 8192;
/// Chunks beyond the first one the allocator may have at once.
const MAX_CHUNKS: usize = 64;
/// Chunk-sized slots in the address pool: the first chunk and MAX_CHUNKS more.
const POOL_SLOTS: usize = MAX_CHUNKS + 1;
/// Lazily freed pages after which a release purges (Linux's `lazy_max_pages`
/// for 4 CPUs: 32 MiB of pages times fls(4)). Chunk releases here never reach
/// it; purges come from reuse of an address or the end of a scenario.
const LAZY_MAX_PAGES: usize = (32 << 20) / PAGE_SIZE * 3;

/// The platform: what the allocator takes from this kernel.
pub struct GuestPlatform {
    cpus: usize,
    /// `inject=skip-tlb-flush`: vm_release does not flush the released range.
    skip_tlb_flush: bool,
}

/// The chunk address pool: `POOL_SLOTS` chunk-sized slots reserved from the
/// vmalloc area at the first `vm_reserve`.
struct VmPool {
    base: usize,
    slot_size: usize,
    /// Slots reserved, lazily freed ones included.
    used: u128,
    /// Slots released but not yet purged (still in `used`).
    lazy: u128,
}

impl VmPool {
    /// Lowest slot not in use.
    ///
    /// CONTEXT: PCPU_VM_POOL held.
    fn lowest_free(&self) -> Option<usize> {
        (0..POOL_SLOTS).find(|&slot| self.used & (1u128 << slot) == 0)
    }

    /// Whether a purge would give back a lower (or the only) address than
    /// the lowest free slot.
    ///
    /// CONTEXT: PCPU_VM_POOL held.
    fn purge_helps(&self) -> bool {
        self.lazy != 0
            && self
                .lowest_free()
                .is_none_or(|free| (self.lazy.trailing_zeros() as usize) < free)
    }
}

/// PCPU_VM_POOL: which chunk address slots are in use.
static PCPU_VM_POOL: SpinLock<VmPool> = SpinLock::new(
    "pcpu_vm_pool",
    VmPool {
        base: 0,
        slot_size: 0,
        used: 0,
        lazy: 0,
    },
);

/// Frames of RAM tracked by `MAPPED_FRAMES` (1 GiB from the RAM base).
const TRACKED_FRAMES: usize = (1 << 30) / PAGE_SIZE;
/// MAPPED_FRAMES: per page frame, whether a chunk maps it now (set by
/// map_pages, cleared by unmap_pages), so that free_page can tell a frame
/// freed while still mapped: the seed's reclaim order.
static MAPPED_FRAMES: [AtomicU64; TRACKED_FRAMES / 64] =
    [const { AtomicU64::new(0) }; TRACKED_FRAMES / 64];
/// Metadata allocations in progress (the allocator has dropped pcpu_lock for
/// each), and frees that ran meanwhile: the window in which the seed's
/// allocation path later continues its walk over changed slot lists.
static MEM_ALLOCS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static FREES_DURING_MEM_ALLOC: AtomicU64 = AtomicU64::new(0);

/// Frames the allocator freed while a chunk still mapped them.
static FREED_WHILE_MAPPED: AtomicU64 = AtomicU64::new(0);

/// The MAPPED_FRAMES word and bit of the frame at physical address `pa`, if
/// tracked.
///
/// CONTEXT: any.
fn frame_bit(pa: usize) -> Option<(&'static AtomicU64, u64)> {
    let frame = pa.checked_sub(boot_info().ram_base as usize)? / PAGE_SIZE;
    let word = MAPPED_FRAMES.get(frame / 64)?;
    Some((word, 1u64 << (frame % 64)))
}

/// Chunk areas released so far, and how many of them were flushed.
static VM_RELEASES: AtomicU64 = AtomicU64::new(0);
static VM_RELEASE_FLUSHES: AtomicU64 = AtomicU64::new(0);

impl Platform for GuestPlatform {
    type Mutex = &'static RawMutex;
    type SpinLock = &'static RawSpinLock;
    type IrqFlags = u64;

    /// CONTEXT: init only.
    fn nr_cpus(&self) -> usize {
        self.cpus
    }

    /// CONTEXT: init only.
    fn new_mutex(&self, name: &'static str) -> &'static RawMutex {
        match name {
            "pcpu_alloc_mutex" => &pcpu_alloc_mutex,
            "pcpu_mutex" => &pcpu_mutex,
            other => panic!("pcpu: no mutex named {}", other),
        }
    }

    /// CONTEXT: init only.
    fn new_spinlock(&self, name: &'static str) -> &'static RawSpinLock {
        match name {
            "pcpu_lock" => &pcpu_lock,
            other => panic!("pcpu: no spinlock named {}", other),
        }
    }

    /// CONTEXT: process context, IRQs on, no spinlock held; sleeps.
    fn mutex_lock(&self, lock: &&'static RawMutex) {
        mutex::mutex_lock(lock);
    }

    /// CONTEXT: process context, caller holds `lock`.
    fn mutex_unlock(&self, lock: &&'static RawMutex) {
        mutex::mutex_unlock(lock);
    }

    /// CONTEXT: any.
    fn mutex_assert_held(&self, lock: &&'static RawMutex) {
        mutex::lockdep_assert_mutex_held(lock);
    }

    /// CONTEXT: process context with IRQs on; does not sleep.
    fn spin_lock_irq(&self, lock: &&'static RawSpinLock) {
        sync::spin_lock_irq(lock);
    }

    /// CONTEXT: caller holds `lock`; enables IRQs (the irq variant's bug when
    /// this runs in an IRQ handler).
    fn spin_unlock_irq(&self, lock: &&'static RawSpinLock) {
        sync::spin_unlock_irq(lock);
    }

    /// CONTEXT: any, including hard-IRQ; does not sleep.
    fn spin_lock_irqsave(&self, lock: &&'static RawSpinLock) -> u64 {
        sync::spin_lock_irqsave(lock)
    }

    /// CONTEXT: caller holds `lock`.
    fn spin_unlock_irqrestore(&self, lock: &&'static RawSpinLock, flags: u64) {
        sync::spin_unlock_irqrestore(lock, flags);
    }

    /// CONTEXT: any, hard-IRQ included (irq-plain's free); does not sleep.
    fn spin_lock(&self, lock: &&'static RawSpinLock) {
        sync::spin_lock(lock);
    }

    /// CONTEXT: caller holds `lock`, taken with spin_lock.
    fn spin_unlock(&self, lock: &&'static RawSpinLock) {
        sync::spin_unlock(lock);
    }

    /// CONTEXT: any.
    fn spin_assert_held(&self, lock: &&'static RawSpinLock) {
        sync::lockdep_assert_held(lock);
    }

    /// The seed's `WARN`: one console line, then carry on.
    ///
    /// CONTEXT: process context (alloc); takes console_lock.
    fn warn(&self, what: allocator::IllegalRequest) {
        crate::println!("cpu{}: WARNING: percpu: {}", cpu_id(), what);
    }

    /// CONTEXT: allocator mutex held, no spinlock, IRQs on; with may_reclaim it
    /// may sleep and enter direct reclaim (fs_reclaim).
    fn alloc_page(&self, _cpu: usize, gfp: Gfp) -> Option<Page> {
        let address = page_alloc::alloc_pages(0, guest_gfp(gfp))?;
        Some(Page(address as u64))
    }

    /// CONTEXT: process context, no spinlock held; does not sleep.
    fn free_page(&self, page: Page) {
        if let Some((word, bit)) = frame_bit(page.0 as usize) {
            if word.load(Relaxed) & bit != 0 {
                FREED_WHILE_MAPPED.fetch_add(1, Relaxed);
            }
        }
        if !FlushBatch::defer_free(page.0 as usize) {
            page_alloc::free_pages(page.0 as usize, 0);
        }
    }

    /// `pcpu_mem_alloc`: kzalloc up to a page, vmalloc above.
    ///
    /// CONTEXT: no spinlock held, IRQs on; takes vmap_area_lock above a page;
    /// with may_reclaim it may sleep and enter direct reclaim.
    fn mem_alloc(&self, size: usize, gfp: Gfp) -> Option<NonNull<u8>> {
        MEM_ALLOCS_IN_FLIGHT.fetch_add(1, AcqRel);
        let memory = if size <= PAGE_SIZE {
            page_alloc::kzalloc(size, guest_gfp(gfp))
        } else {
            vmalloc::vmalloc(size, guest_gfp(gfp))
        };
        MEM_ALLOCS_IN_FLIGHT.fetch_sub(1, AcqRel);
        memory
    }

    /// `pcpu_mem_free`: kfree up to a page, vfree above (which takes
    /// vmap_area_lock, not IRQ-safe: the seed calls this under pcpu_lock).
    ///
    /// CONTEXT: any but hard-IRQ; takes zone_lock (irqsave) and above a page
    /// vmap_area_lock (plain); does not sleep.
    fn mem_free(&self, ptr: NonNull<u8>, size: usize) {
        if size <= PAGE_SIZE {
            page_alloc::kfree(ptr, size);
        } else {
            vmalloc::vfree(ptr, size);
        }
    }

    /// Hands out the lowest free slot; purges lazily freed ones first when
    /// that gives a lower address back (or the only one).
    ///
    /// CONTEXT: process context, allocator mutex held, no spinlock; takes
    /// pcpu_vm_pool (irqsave) and, the first time, vm_area_lock.
    fn vm_reserve(&self, size: usize) -> Option<usize> {
        if PCPU_VM_POOL.lock_irqsave().purge_helps() {
            self.purge_lazy();
        }
        let mut pool = PCPU_VM_POOL.lock_irqsave();
        if pool.slot_size == 0 {
            pool.base = vmalloc::vm_reserve(POOL_SLOTS * size)?;
            pool.slot_size = size;
        }
        if size != pool.slot_size {
            panic!(
                "pcpu: vm_reserve of 0x{:x} bytes, chunks are 0x{:x}",
                size, pool.slot_size
            );
        }
        let slot = pool.lowest_free()?;
        pool.used |= 1u128 << slot;
        Some(pool.base + slot * pool.slot_size)
    }

    /// Releases a chunk's area lazily, as `free_vm_area` did: the slot stays
    /// taken and unflushed until the next purge. The allocator has unmapped
    /// it; in the seed's variants without a TLB flush, after freeing its
    /// pages.
    ///
    /// CONTEXT: process context, no allocator lock held; takes pcpu_vm_pool.
    fn vm_release(&self, addr: usize, size: usize) {
        VM_RELEASES.fetch_add(1, Relaxed);
        let lazy_pages = {
            let mut pool = PCPU_VM_POOL.lock_irqsave();
            let offset = addr.wrapping_sub(pool.base);
            let slot = offset / pool.slot_size.max(1);
            if pool.slot_size == 0
                || size != pool.slot_size
                || offset % pool.slot_size != 0
                || slot >= POOL_SLOTS
                || pool.used & (1u128 << slot) == 0
                || pool.lazy & (1u128 << slot) != 0
            {
                panic!("pcpu: vm_release of 0x{:x}+0x{:x} not reserved", addr, size);
            }
            pool.lazy |= 1u128 << slot;
            pool.lazy.count_ones() as usize * pool.slot_size / PAGE_SIZE
        };
        if lazy_pages >= LAZY_MAX_PAGES {
            self.purge_lazy();
        }
    }

    /// CONTEXT: allocator mutex held, no spinlock; takes vmap_lock and may take
    /// zone_lock (level-3 tables); does not sleep.
    fn map_pages(&self, addr: usize, pages: &[Page]) -> Result<(), MapError> {
        for (index, page) in pages.iter().enumerate() {
            mmu::map_page(addr + index * PAGE_SIZE, page.0 as usize, PageKind::Data)
                .map_err(|_| MapError)?;
            if let Some((word, bit)) = frame_bit(page.0 as usize) {
                word.fetch_or(bit, Relaxed);
            }
        }
        Ok(())
    }

    /// CONTEXT: allocator mutex held or the chunk owned by reclaim; no
    /// spinlock; takes vmap_lock; does not sleep.
    fn unmap_pages(&self, addr: usize, size: usize) {
        for va in (addr..addr + size).step_by(PAGE_SIZE) {
            if let Some((word, bit)) = mmu::translate(va).and_then(frame_bit) {
                word.fetch_and(!bit, Relaxed);
            }
        }
        vmalloc::unmap_range_noflush(addr, size);
    }

    /// Makes the new entries visible to the table walkers of every CPU.
    ///
    /// CONTEXT: as map_pages.
    fn flush_cache_vmap(&self, _start: usize, _end: usize) {
        arch::table_store_barrier();
        arch::context_barrier();
    }

    /// The data cache is PIPT on arm64: nothing to write back; a barrier so the
    /// accesses before it are done before the entries go.
    ///
    /// CONTEXT: as unmap_pages.
    fn flush_cache_vunmap(&self, _start: usize, _end: usize) {
        arch::table_store_barrier();
    }

    /// CONTEXT: as unmap_pages.
    fn flush_tlb_kernel_range(&self, start: usize, end: usize) {
        if !FlushBatch::defer_flush(start, end) {
            flush_kernel_range(start, end);
        }
    }

    /// CONTEXT: pcpu_lock held with IRQs off (maybe hard-IRQ), or pcpu_mutex;
    /// takes a worker_pool lock (irqsave); does not sleep.
    fn schedule_reclaim_work(&self) {
        workqueue::queue_work_on(cpu_id(), &PCPU_RECLAIM_WORK);
    }
}

impl GuestPlatform {
    /// vmalloc's lazy purge for the chunk pool: flush the TLB over every
    /// lazily freed slot, then make the slots free. `inject=skip-tlb-flush`
    /// skips the flush (and only it).
    ///
    /// CONTEXT: process context, no allocator spinlock; takes pcpu_vm_pool
    /// (irqsave), not held while flushing.
    fn purge_lazy(&self) {
        let (lazy, base, slot_size) = {
            let mut pool = PCPU_VM_POOL.lock_irqsave();
            let lazy = core::mem::take(&mut pool.lazy);
            (lazy, pool.base, pool.slot_size)
        };
        for slot in (0..POOL_SLOTS).filter(|&slot| lazy & (1u128 << slot) != 0) {
            if !self.skip_tlb_flush {
                let start = base + slot * slot_size;
                flush_kernel_range(start, start + slot_size);
                VM_RELEASE_FLUSHES.fetch_add(1, Relaxed);
            }
        }
        PCPU_VM_POOL.lock_irqsave().used &= !lazy;
    }
}

/// Purges the chunk areas released lazily so far (a scenario's end).
///
/// CONTEXT: process context, no allocator lock held.
pub fn purge_lazy_vm_areas() {
    pcpu().platform().purge_lazy();
}

/// The page allocator's flag for an allocator request.
///
/// CONTEXT: any; pure.
fn guest_gfp(gfp: Gfp) -> page_alloc::Gfp {
    if gfp.may_reclaim || gfp.may_sleep {
        page_alloc::Gfp::Kernel
    } else {
        page_alloc::Gfp::Atomic
    }
}

/// `pcpu_reclaim_work`.
static PCPU_RECLAIM_WORK: Work = Work::new(pcpu_reclaim);
/// Runs of the reclaim work so far, and the allocator's chunks_reclaimed
/// after the last one (read by scenarios waiting for reclaim).
static RECLAIM_WORK_RUNS: AtomicU64 = AtomicU64::new(0);
static CHUNKS_RECLAIMED: AtomicU64 = AtomicU64::new(0);
/// Woken after every run of the reclaim work.
static RECLAIM_DONE: WaitQueue = WaitQueue::new("pcpu_reclaim_done");

/// The work item's function: `pcpu_reclaim`.
///
/// CONTEXT: a kworker (process context, may sleep, no lock held).
fn pcpu_reclaim(_: &'static Work) {
    let pcpu = pcpu();
    let batch = FlushBatch::open();
    pcpu.reclaim_work();
    if batch {
        FlushBatch::close();
    }
    CHUNKS_RECLAIMED.store(pcpu.stats().chunks_reclaimed, Release);
    RECLAIM_WORK_RUNS.fetch_add(1, AcqRel);
    RECLAIM_DONE.wake_all();
}

/// Pages a batch holds before it flushes early.
const BATCH_PAGES: usize = 256;

/// `flush=batched`: the TLB flushes of one run of the reclaim work, and the
/// page frees that must follow them, deferred to its end (one flush of the
/// union of the ranges, then the frees). Reclaim works of several CPUs may
/// run at once (they serialize on `pcpu_alloc_mutex` inside): each has its
/// own batch.
struct FlushBatch {
    /// The thread that opened it (`sched::current_thread_ptr`), 0 if free.
    owner: usize,
    start: usize,
    end: usize,
    pages: [usize; BATCH_PAGES],
    count: usize,
}

impl FlushBatch {
    const EMPTY: FlushBatch = FlushBatch {
        owner: 0,
        start: usize::MAX,
        end: 0,
        pages: [0; BATCH_PAGES],
        count: 0,
    };
}

/// One batch per reclaim work that may run at once (one per CPU).
static FLUSH_BATCHES: [SpinLock<FlushBatch>; MAX_CPUS] =
    [const { SpinLock::new("pcpu_flush_batch", FlushBatch::EMPTY) }; MAX_CPUS];

impl FlushBatch {
    /// The batch the running thread opened, if any.
    ///
    /// CONTEXT: any; takes each pcpu_flush_batch briefly.
    fn mine() -> Option<&'static SpinLock<FlushBatch>> {
        let me = crate::sched::current_thread_ptr() as usize;
        FLUSH_BATCHES
            .iter()
            .find(|batch| batch.lock_irqsave().owner == me)
    }

    /// Opens a batch for the running thread if the strategy is `batched`;
    /// whether it did.
    ///
    /// CONTEXT: the reclaim work, no spinlock held.
    fn open() -> bool {
        if boot_info().flush != mmu::FlushStrategy::Batched {
            return false;
        }
        let me = crate::sched::current_thread_ptr() as usize;
        for batch in &FLUSH_BATCHES {
            let mut batch = batch.lock_irqsave();
            if batch.owner == 0 {
                batch.owner = me;
                return true;
            }
        }
        panic!("pcpu: more flush batches open than CPUs");
    }

    /// Whether the running thread has a batch open (then it takes the range).
    ///
    /// CONTEXT: as unmap_pages.
    fn defer_flush(start: usize, end: usize) -> bool {
        let Some(batch) = Self::mine() else {
            return false;
        };
        let mut batch = batch.lock_irqsave();
        batch.start = batch.start.min(start);
        batch.end = batch.end.max(end);
        true
    }

    /// Whether the running thread has a batch open (then it frees `page` after
    /// the batch's flush; a full batch is flushed and emptied first).
    ///
    /// CONTEXT: process context, no spinlock held; does not sleep.
    fn defer_free(page: usize) -> bool {
        let Some(batch) = Self::mine() else {
            return false;
        };
        if batch.lock_irqsave().count == BATCH_PAGES {
            Self::flush_and_free(batch);
        }
        let mut batch = batch.lock_irqsave();
        let count = batch.count;
        batch.pages[count] = page;
        batch.count += 1;
        true
    }

    /// Flushes the union of `batch`'s deferred ranges once, then frees its
    /// deferred pages; the batch stays open.
    ///
    /// CONTEXT: the batch's owner, no spinlock held; does not sleep.
    fn flush_and_free(batch: &SpinLock<FlushBatch>) {
        let (start, end) = {
            let mut batch = batch.lock_irqsave();
            let range = (batch.start, batch.end);
            (batch.start, batch.end) = (usize::MAX, 0);
            range
        };
        if start < end {
            flush_kernel_range(start, end);
        }
        // One page at a time: the lock is not held while zone_lock is taken.
        loop {
            let page = {
                let mut batch = batch.lock_irqsave();
                if batch.count == 0 {
                    break;
                }
                batch.count -= 1;
                batch.pages[batch.count]
            };
            page_alloc::free_pages(page, 0);
        }
    }

    /// Flushes and frees what the running thread's batch holds and closes it.
    ///
    /// CONTEXT: the batch's owner, no spinlock held; does not sleep.
    fn close() {
        let batch = Self::mine().expect("pcpu: closing a flush batch never opened");
        Self::flush_and_free(batch);
        batch.lock_irqsave().owner = 0;
    }
}

/// Whether some allocation has pcpu_lock dropped to allocate metadata now.
///
/// CONTEXT: any (a racy snapshot).
pub fn mem_alloc_in_flight() -> bool {
    MEM_ALLOCS_IN_FLIGHT.load(Acquire) != 0
}

/// Frees that ran while some allocation had dropped pcpu_lock to allocate
/// metadata (a new area map or chunk).
///
/// CONTEXT: any.
pub fn frees_during_mem_alloc() -> u64 {
    FREES_DURING_MEM_ALLOC.load(Relaxed)
}

/// Page frames the allocator freed while a chunk still mapped them (the
/// seed's reclaim frees before it unmaps).
///
/// CONTEXT: any.
pub fn freed_while_mapped() -> u64 {
    FREED_WHILE_MAPPED.load(Relaxed)
}

/// Sleeps until the reclaim work has reclaimed `chunks` chunks in total.
///
/// CONTEXT: may sleep; no spinlock held.
pub fn wait_for_chunks_reclaimed(chunks: u64) {
    RECLAIM_DONE.wait_until(|| CHUNKS_RECLAIMED.load(Acquire) >= chunks);
}

/// Chunk areas released so far and how many of those releases flushed the TLB.
///
/// CONTEXT: any.
pub fn vm_release_counts() -> (u64, u64) {
    (VM_RELEASES.load(Relaxed), VM_RELEASE_FLUSHES.load(Relaxed))
}

/// The kernel's allocator, set once by `init`.
struct PcpuCell {
    ready: AtomicBool,
    value: UnsafeCell<MaybeUninit<Percpu<GuestPlatform>>>,
}

// SAFETY: written once by `init` before `ready` is published; read-only after
// (the allocator's own state is behind its locks, and Percpu is Sync).
unsafe impl Sync for PcpuCell {}

static PCPU: PcpuCell = PcpuCell {
    ready: AtomicBool::new(false),
    value: UnsafeCell::new(MaybeUninit::uninit()),
};

/// The allocator variant the bootargs ask for.
///
/// CONTEXT: any, after boot.
pub fn variant() -> Variant {
    boot_info().variant
}

/// The allocator's TLB flush. `inject=ipi-flush-irqs-off` issues it under
/// `pcpu_lock` with IRQs off, as a port would that kept the seed's pre-2009
/// habit of releasing memory under `pcpu_lock`: with `flush=ipi` the flusher
/// waits for every other CPU's IPI handler while one of them may be spinning,
/// IRQs masked, for `pcpu_lock` (a free, even from an IRQ handler).
///
/// CONTEXT: process context, allocator mutex held, no spinlock; does not sleep.
fn flush_kernel_range(start: usize, end: usize) {
    if !ipi_flush_irqs_off_injected() {
        mmu::flush_tlb_kernel_range(start, end);
        return;
    }
    let flags = sync::spin_lock_irqsave(&pcpu_lock);
    mmu::flush_tlb_kernel_range(start, end);
    sync::spin_unlock_irqrestore(&pcpu_lock, flags);
}

/// Whether the bootargs inject the IPI flush under `pcpu_lock` with IRQs off.
///
/// CONTEXT: any, after boot.
pub fn ipi_flush_irqs_off_injected() -> bool {
    boot_info()
        .inject
        .is_some_and(|word| word.as_str() == "ipi-flush-irqs-off")
}

/// Whether the bootargs inject the missing TLB flush on chunk release.
///
/// CONTEXT: any, after boot.
pub fn skip_tlb_flush_injected() -> bool {
    boot_info()
        .inject
        .is_some_and(|word| word.as_str() == "skip-tlb-flush")
}

/// The allocator's seeded rule break the bootargs ask for
/// (`inject=extend-no-restart`, `reclaim-one-lock` or `free-unlocked`).
///
/// CONTEXT: any, after boot.
pub fn allocator_inject() -> Option<allocator::Inject> {
    boot_info()
        .inject
        .and_then(|word| allocator::Inject::from_name(word.as_str()))
}

/// Sets up the allocator (`pcpu_setup_first_chunk`) for every online CPU with
/// the bootargs' variant.
///
/// CONTEXT: the kinit thread, once, before any scenario runs; may sleep.
pub fn init(cpus: usize) {
    if PCPU.ready.load(Acquire) {
        panic!("pcpu: init twice");
    }
    let platform = GuestPlatform {
        cpus,
        skip_tlb_flush: skip_tlb_flush_injected(),
    };
    let mut config = Config::new(variant(), STATIC_SIZE);
    config.reserved_size = RESERVED_SIZE;
    config.max_chunks = MAX_CHUNKS;
    config.inject = allocator_inject();
    let percpu = match Percpu::new(platform, config, STATIC_IMAGE) {
        Ok(percpu) => percpu,
        Err(error) => panic!("pcpu: setting up the first chunk failed: {:?}", error),
    };
    // SAFETY: the only writer, before `ready` is set; nobody reads it yet.
    unsafe { (*PCPU.value.get()).write(percpu) };
    PCPU.ready.store(true, Release);
}

/// The kernel's per-CPU allocator.
///
/// CONTEXT: any, after `init`.
pub fn pcpu() -> &'static Percpu<GuestPlatform> {
    if !PCPU.ready.load(Acquire) {
        panic!("pcpu: used before init");
    }
    // SAFETY: initialised (ready is set after the write) and never written again.
    unsafe { (*PCPU.value.get()).assume_init_ref() }
}

/// `__alloc_percpu`: allocates `size` bytes aligned to `align` on every CPU,
/// zeroed; returns the per-CPU pointer (`per_cpu_ptr` turns it into a CPU's
/// copy), 0 if the request is illegal or memory ran out. A stable symbol with
/// Linux's name (C ABI) so the host can probe every allocation.
///
/// CONTEXT: process context; may sleep (GFP_KERNEL allocations).
#[no_mangle]
#[inline(never)]
pub extern "C" fn __alloc_percpu(size: usize, align: usize) -> usize {
    pcpu().alloc(size, align).map_or(0, |ptr| ptr.0)
}

/// `__alloc_reserved_percpu`: as `__alloc_percpu`, from the reserved chunk.
///
/// CONTEXT: process context; may sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __alloc_reserved_percpu(size: usize, align: usize) -> usize {
    pcpu().alloc_reserved(size, align).map_or(0, |ptr| ptr.0)
}

/// `free_percpu`: frees a per-CPU pointer from `__alloc_percpu` (0 is
/// ignored). A stable symbol (C ABI) so the host can probe every free.
///
/// CONTEXT: `fine`, `fixed`: any context, hard-IRQ included; `irq`: IRQs on,
/// or a hard-IRQ handler (then it re-enables IRQs there: the bug);
/// `irq-plain`: any, but an IRQ freeing on the CPU that holds pcpu_lock
/// deadlocks; `mutex`: process context, may sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn free_percpu(ptr: usize) {
    if ptr != 0 {
        let in_window = MEM_ALLOCS_IN_FLIGHT.load(Acquire) != 0;
        pcpu().free(PcpuPtr(ptr));
        if in_window {
            FREES_DURING_MEM_ALLOC.fetch_add(1, Relaxed);
        }
    }
}
