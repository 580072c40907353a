//! The allocator proper: setup of the first chunk, `alloc`, `alloc_reserved`,
//! `free`, and the reclaim work, in the three locking variants.
//!
//! Synchronization rules.
//!
//! `fine`, `fixed`, `irq`, `irq-plain` (the seed patch): there are two locks,
//! `pcpu_alloc_mutex` and `pcpu_lock`. The former protects the allocation and
//! reclaim paths, chunks and their page arrays and populated bitmaps. The
//! latter is a spinlock, taken with IRQs disabled (except by `irq-plain`'s
//! free), and protects the index data structures: chunk slots, the address
//! tree, and each chunk's area map, `free_size` and `contig_hint`.
//!
//! During allocation `pcpu_alloc_mutex` is held throughout and `pcpu_lock` is
//! taken and dropped as needed. Every memory allocation (area map, chunk,
//! virtual area, pages) is done with `pcpu_lock` released. Extending an area
//! map therefore drops `pcpu_lock`, allocates, re-takes it and switches maps;
//! since frees may have run in between, `fixed` restarts the search, while the
//! seed (`fine` and its siblings) continues its walk, its `restart` being dead
//! code. The seed walks a slot list with `list_for_each_entry`, so even with
//! the lock held throughout, a chunk its own failed scan relocates to slot 0
//! takes the walk off its list; `fixed` reads the next entry first, as later
//! kernels do (`list_for_each_entry_safe`). The seed frees the old map under `pcpu_lock` (`vfree` above a page);
//! `fixed` frees it after dropping the lock.
//!
//! The free path only touches the index, so it may run in atomic and hard-IRQ
//! context (`fine`, `fixed`: `spin_lock_irqsave`; `irq`: `spin_lock_irq`,
//! which re-enables IRQs on unlock even inside an IRQ handler; `irq-plain`:
//! `spin_lock`, inconsistent with the IRQ-context use). When a chunk becomes
//! fully free while another fully free chunk exists, free schedules the
//! reclaim work, which takes both locks, unlinks the chunks to reclaim, drops
//! both locks, then depopulates and frees them (the seed: pages freed before
//! an unflushed unmap; `fixed`: flush, unmap, flush, free). Both locks are
//! needed to take a chunk out of circulation because the allocation path may
//! be using a chunk with only `pcpu_alloc_mutex` held.
//!
//! `mutex` (before the patch): one mutex, `pcpu_mutex`, is taken by the
//! outermost `alloc`, `free` and reclaim work and held until the operation
//! completes; it protects everything above. `free` may therefore sleep and
//! depends on every allocation the allocator makes, which is the deadlock the
//! patch fixes.
//!
//! The proof that a lock is held travels as a witness value (`shared.rs`);
//! every function that expects a lock asserts it through the platform too.
//!
//! Seeded breaks of these rules ([`Inject`], one per run, on any variant):
//! `extend-no-restart` continues the search after an extension dropped
//! `pcpu_lock` (the seed's dead `restart`, in `fixed`); `reclaim-one-lock`
//! unlinks chunks to reclaim holding `pcpu_lock` only; `free-unlocked` frees
//! holding no lock (and skips its lock assertion). What each race breaks is
//! checked where it shows: the walk of a slot list must end on the list it
//! started on (`walk_next`), a chunk whose map is being extended must
//! still be in the index when `pcpu_lock` is re-taken (`check_still_indexed`),
//! and [`Percpu::check`] verifies the index and every area map under the
//! lock.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::area_map::{AreaMap, DFL_MAP_ALLOC};
use crate::chunk::{Backing, Depopulate, Geometry};
use crate::index::{self, Index, IndexProblem};
use crate::platform::{Gfp, IllegalRequest, Platform, PAGE_SIZE};
use crate::shared::{AllocLocked, ChunkPtr, IndexLocked, Shared, Unlinked};

/// Minimum unit size and largest allocation (`PCPU_MIN_UNIT_SIZE`).
pub const MIN_UNIT_SIZE: usize = 64 << 10;

/// Which locking protocol the allocator follows; chosen at init.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Before the patch: one `pcpu_mutex` around all of alloc, free, reclaim.
    Mutex,
    /// The patch's first version as read today: like `Fine`, but `free` uses
    /// `spin_lock_irq`/`spin_unlock_irq`.
    Irq,
    /// The literal reading of the seed's note ("IRQ spin lock ops should be
    /// used ... Fixed."): like `Fine`, but `free` uses plain
    /// `spin_lock`/`spin_unlock` on `pcpu_lock`.
    IrqPlain,
    /// The final patch exactly as in 2009 (commit ccea34b5), latent hazards
    /// included: map extension does not restart the search, the old map is
    /// freed under `pcpu_lock`, reclaim frees pages before unmapping them and
    /// does not flush the TLB.
    Fine,
    /// `Fine` with the later corrections: map extension restarts the search,
    /// the old map is freed after dropping `pcpu_lock`, reclaim flushes the
    /// TLB before it frees the pages.
    Fixed,
}

impl Variant {
    /// Every variant, in the order the CLI lists them.
    pub const ALL: [Variant; 5] = [
        Variant::Mutex,
        Variant::Irq,
        Variant::IrqPlain,
        Variant::Fine,
        Variant::Fixed,
    ];

    /// Parse a [`Variant::name`] (the guest's `variant=` boot argument).
    ///
    /// CONTEXT: any.
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The name [`Variant::from_name`] accepts.
    ///
    /// CONTEXT: any.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Mutex => "mutex",
            Variant::Irq => "irq",
            Variant::IrqPlain => "irq-plain",
            Variant::Fine => "fine",
            Variant::Fixed => "fixed",
        }
    }

    /// Whether this variant carries the corrections made after 2009.
    ///
    /// CONTEXT: any.
    fn corrected(self) -> bool {
        self == Variant::Fixed
    }
}

/// A seeded break of one of the Synchronization rules (the guest's `inject=`
/// boot argument), applied on top of whatever variant is chosen and meant for
/// [`Variant::Fixed`], the clean one: each makes exactly one race possible,
/// which the checks must then find on the interleavings that expose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// Extending an area map drops `pcpu_lock`, but the search goes on with
    /// the chunk it had instead of restarting ("pcpu_lock dropped, restart"):
    /// `Fixed` then walks on like the seed, for this one rule.
    ExtendNoRestart,
    /// Reclaim unlinks and frees chunks holding `pcpu_lock` only, without
    /// `pcpu_alloc_mutex`, although an allocation may be using a chunk with
    /// only the mutex held (while it extends the chunk's map). No effect on
    /// `Mutex`, whose one lock covers both.
    ReclaimOneLock,
    /// `free_percpu` takes no lock (`pcpu_lock`, or `pcpu_mutex` in
    /// `Mutex`), and skips the assertion that it holds one.
    FreeUnlocked,
}

impl Inject {
    /// Every inject, in the order the CLI lists them.
    pub const ALL: [Inject; 3] = [
        Inject::ExtendNoRestart,
        Inject::ReclaimOneLock,
        Inject::FreeUnlocked,
    ];

    /// Parse an [`Inject::name`] (the guest's `inject=` boot argument;
    /// injects of the platform's, like `skip-tlb-flush`, are not ours).
    ///
    /// CONTEXT: any.
    pub fn from_name(name: &str) -> Option<Inject> {
        Inject::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The name [`Inject::from_name`] accepts.
    ///
    /// CONTEXT: any.
    pub fn name(self) -> &'static str {
        match self {
            Inject::ExtendNoRestart => "extend-no-restart",
            Inject::ReclaimOneLock => "reclaim-one-lock",
            Inject::FreeUnlocked => "free-unlocked",
        }
    }
}

/// Parameters of `pcpu_setup_first_chunk`, plus the run-time choices.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Which version of the locking to run.
    pub variant: Variant,
    /// Bytes of the kernel's static per-CPU data at the start of every unit
    /// of the first chunk (non-zero).
    pub static_size: usize,
    /// Bytes after the static area served only by [`Percpu::alloc_reserved`].
    pub reserved_size: usize,
    /// Bytes of the first chunk for dynamic allocation; `None`: the rest of
    /// the unit.
    pub dyn_size: Option<usize>,
    /// Unit size (a multiple of [`PAGE_SIZE`], at least [`MIN_UNIT_SIZE`]);
    /// `None`: the smallest that fits.
    pub unit_size: Option<usize>,
    /// Link address of the static per-CPU section. Per-CPU pointers are biased
    /// so that a static per-CPU variable's link address is its [`PcpuPtr`].
    pub per_cpu_start: usize,
    /// Capacity of the address tree: chunks beyond the first one(s).
    pub max_chunks: usize,
    /// A seeded rule break, if any.
    pub inject: Option<Inject>,
}

impl Config {
    /// A configuration with the seed's defaults for everything but the
    /// variant and the static size.
    ///
    /// CONTEXT: any.
    pub fn new(variant: Variant, static_size: usize) -> Config {
        Config {
            variant,
            static_size,
            reserved_size: 0,
            dyn_size: None,
            unit_size: None,
            per_cpu_start: 0,
            max_chunks: 64,
            inject: None,
        }
    }
}

/// Why [`Percpu::new`] failed. Memory it took before failing is not returned
/// (a kernel panics at this point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The configuration cannot describe a first chunk; the text says why.
    BadConfig(&'static str),
    /// The platform refused what the first chunk needs: address space, a page,
    /// a map or the index's storage.
    NoMemory,
}

/// A per-CPU pointer: not an address by itself; [`Percpu::per_cpu_ptr`]
/// turns it into the address of one CPU's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PcpuPtr(pub usize);

/// Counters kept under the index lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Allocations that failed for lack of memory.
    pub alloc_failures: u64,
    /// Chunks created after init.
    pub chunks_created: u64,
    /// Chunks reclaimed by the reclaim work.
    pub chunks_reclaimed: u64,
    /// Area maps extended.
    pub map_extensions: u64,
    /// Times the chunk search started over after extending a map (only the
    /// corrected variant does; in the seed the `restart` is dead code).
    pub search_restarts: u64,
    /// Times `free` scheduled the reclaim work.
    pub reclaim_scheduled: u64,
}

/// Which of the allocator's chunks a [`ChunkInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// The dynamic part of the first chunk (static data precedes it).
    First,
    /// The reserved part of the first chunk.
    Reserved,
    /// A chunk created on demand.
    Dynamic,
}

/// A snapshot of one chunk's index state, for checks and statistics.
pub struct ChunkInfo<'a> {
    /// Which chunk of the allocator this is.
    pub kind: ChunkKind,
    /// Address of unit 0.
    pub base: usize,
    /// Free bytes in each unit (`free_size`).
    pub free_size: usize,
    /// The largest free block may be this big, not bigger (`contig_hint`).
    pub contig_hint: usize,
    /// The area map.
    pub map: &'a [i32],
    /// Slot list the chunk is on (`None` for the reserved chunk).
    pub listed_slot: Option<usize>,
    /// Slot its state calls for (`pcpu_chunk_slot`).
    pub expected_slot: usize,
}

/// Whether `extend_area_map` changed the map.
enum Extend {
    Noop,
    Extended,
}

/// Why a walk of a slot list is no longer on that list (`list_for_each_entry`
/// reads the next entry from wherever the current chunk is linked by then).
#[derive(Clone, Copy)]
enum Stray {
    /// A free moved the chunk while an extension had pcpu_lock dropped and
    /// the search did not restart (the seed's dead `restart`).
    LockDropped,
    /// The walk's own failed `pcpu_alloc_area`: its full scan set
    /// `contig_hint` to the largest free block, and a chunk whose free space
    /// is all in blocks too small to use goes to slot 0. A latent bug of the
    /// 2009 code, no lock involved.
    FailedScan,
}

/// The per-CPU allocator.
pub struct Percpu<P: Platform> {
    platform: P,
    variant: Variant,
    inject: Option<Inject>,
    /// `pcpu_mutex` (mutex variant) or `pcpu_alloc_mutex`.
    mutex: P::Mutex,
    /// `pcpu_lock` (unused by the mutex variant).
    lock: P::SpinLock,
    geo: Geometry,
    index: Shared<Index>,
    /// Failed allocations; counted outside the locks so that failure paths
    /// keep the seed's exact lock calls.
    alloc_failures: AtomicUsize,
}

// SAFETY: the shared state is reached only under the locks (see the
// Synchronization rules); the platform and lock objects must be Sync
// themselves.
unsafe impl<P> Sync for Percpu<P>
where
    P: Platform + Sync,
    P::Mutex: Sync,
    P::SpinLock: Sync,
{
}

// SAFETY: as for Sync; nothing in the allocator is tied to a thread.
unsafe impl<P> Send for Percpu<P>
where
    P: Platform + Send,
    P::Mutex: Send,
    P::SpinLock: Send,
{
}

impl<P: Platform> Percpu<P> {
    /// `pcpu_setup_first_chunk`: reserve the first chunk's virtual area,
    /// populate and map its static, reserved and dynamic parts for every CPU,
    /// copy `static_image` into every unit (the rest is zeroed) and set up the
    /// index.
    ///
    /// CONTEXT: boot, single-threaded; may sleep.
    pub fn new(platform: P, config: Config, static_image: &[u8]) -> Result<Self, InitError> {
        let bad = |why| Err(InitError::BadConfig(why));
        if config.static_size == 0 {
            return bad("static_size must not be zero");
        }
        if static_image.len() > config.static_size {
            return bad("static image larger than static_size");
        }
        let nr_cpus = platform.nr_cpus();
        if nr_cpus == 0 {
            return bad("no CPUs");
        }
        let size_sum = config.static_size + config.reserved_size + config.dyn_size.unwrap_or(0);
        let unit_size = match config.unit_size {
            Some(u) => u,
            None => MIN_UNIT_SIZE.max(size_sum.next_multiple_of(PAGE_SIZE)),
        };
        if unit_size % PAGE_SIZE != 0 || unit_size < MIN_UNIT_SIZE || unit_size < size_sum {
            return bad("unit size must be page aligned, >= 64 KiB and hold the first chunk");
        }
        if index::nr_slots(unit_size) > index::MAX_SLOTS || unit_size > i32::MAX as usize {
            return bad("unit size too large");
        }
        let dyn_size = config
            .dyn_size
            .unwrap_or(unit_size - config.static_size - config.reserved_size);
        let mut geo = Geometry {
            nr_cpus,
            unit_pages: unit_size / PAGE_SIZE,
            unit_size,
            chunk_size: nr_cpus * unit_size,
            base_addr: 0,
            per_cpu_start: config.per_cpu_start,
        };
        let mutex_name = match config.variant {
            Variant::Mutex => "pcpu_mutex",
            _ => "pcpu_alloc_mutex",
        };
        let mutex = platform.new_mutex(mutex_name);
        let lock = platform.new_spinlock("pcpu_lock");
        let index = setup_first_chunk(&platform, &mut geo, &config, dyn_size, static_image)?;
        Ok(Percpu {
            platform,
            variant: config.variant,
            inject: config.inject,
            mutex,
            lock,
            geo,
            index: Shared::new(index),
            alloc_failures: AtomicUsize::new(0),
        })
    }

    // ---- locks: the only places that call the platform's lock methods ----

    /// `mutex_lock(&pcpu_alloc_mutex)`.
    ///
    /// CONTEXT: process context, no spinlock; may sleep.
    fn lock_alloc_mutex(&self) -> AllocLocked {
        self.platform.mutex_lock(&self.mutex);
        // SAFETY: just acquired.
        unsafe { AllocLocked::assume_held() }
    }

    /// `mutex_unlock(&pcpu_alloc_mutex)`.
    ///
    /// CONTEXT: pcpu_alloc_mutex.
    fn unlock_alloc_mutex(&self, held: AllocLocked) {
        held.release();
        self.platform.mutex_unlock(&self.mutex);
    }

    /// `mutex_lock(&pcpu_mutex)`: in the mutex variant it covers both the
    /// index and the pages.
    ///
    /// CONTEXT: process context, no spinlock; may sleep.
    fn lock_pcpu_mutex(&self) -> (AllocLocked, IndexLocked) {
        self.platform.mutex_lock(&self.mutex);
        // SAFETY: just acquired; in this variant the mutex protects both.
        unsafe { (AllocLocked::assume_held(), IndexLocked::assume_held()) }
    }

    /// `mutex_unlock(&pcpu_mutex)`.
    ///
    /// CONTEXT: pcpu_mutex.
    fn unlock_pcpu_mutex(&self, alloc: AllocLocked, idx: IndexLocked) {
        alloc.release();
        idx.release();
        self.platform.mutex_unlock(&self.mutex);
    }

    /// `spin_lock_irq(&pcpu_lock)`.
    ///
    /// CONTEXT: IRQs on; disables them.
    fn lock_irq(&self) -> IndexLocked {
        self.platform.spin_lock_irq(&self.lock);
        // SAFETY: just acquired.
        unsafe { IndexLocked::assume_held() }
    }

    /// `spin_unlock_irq(&pcpu_lock)`.
    ///
    /// CONTEXT: pcpu_lock; enables IRQs.
    fn unlock_irq(&self, held: IndexLocked) {
        held.release();
        self.platform.spin_unlock_irq(&self.lock);
    }

    /// `spin_lock(&pcpu_lock)`: leaves IRQs as they are.
    ///
    /// CONTEXT: any; does not sleep.
    fn lock_plain(&self) -> IndexLocked {
        self.platform.spin_lock(&self.lock);
        // SAFETY: just acquired.
        unsafe { IndexLocked::assume_held() }
    }

    /// `spin_unlock(&pcpu_lock)`.
    ///
    /// CONTEXT: pcpu_lock, taken with `spin_lock`.
    fn unlock_plain(&self, held: IndexLocked) {
        held.release();
        self.platform.spin_unlock(&self.lock);
    }

    /// `spin_lock_irqsave(&pcpu_lock, flags)`.
    ///
    /// CONTEXT: any, including hard-IRQ.
    fn lock_irqsave(&self) -> (IndexLocked, P::IrqFlags) {
        let flags = self.platform.spin_lock_irqsave(&self.lock);
        // SAFETY: just acquired.
        (unsafe { IndexLocked::assume_held() }, flags)
    }

    /// `spin_unlock_irqrestore(&pcpu_lock, flags)`.
    ///
    /// CONTEXT: pcpu_lock; restores the saved IRQ state.
    fn unlock_irqrestore(&self, held: IndexLocked, flags: P::IrqFlags) {
        held.release();
        self.platform.spin_unlock_irqrestore(&self.lock, flags);
    }

    /// Assert (through the platform) that the index lock of this variant is
    /// held.
    ///
    /// CONTEXT: any.
    fn assert_index_locked(&self) {
        match self.variant {
            Variant::Mutex => self.platform.mutex_assert_held(&self.mutex),
            _ => self.platform.spin_assert_held(&self.lock),
        }
    }

    /// Assert that the alloc mutex of this variant is held.
    ///
    /// CONTEXT: any.
    pub(crate) fn assert_alloc_locked(&self) {
        self.platform.mutex_assert_held(&self.mutex);
    }

    /// Whether `which` is the seeded rule break of this run.
    ///
    /// CONTEXT: any.
    fn injected(&self, which: Inject) -> bool {
        self.inject == Some(which)
    }

    /// Whether the search starts over after an extension dropped pcpu_lock:
    /// the corrected variant does, unless told not to.
    ///
    /// CONTEXT: any.
    fn restarts_after_extension(&self) -> bool {
        self.variant.corrected() && !self.injected(Inject::ExtendNoRestart)
    }

    // ---- chunk memory, with the CONTEXT checks ----

    /// The chunk memory operations. CONTEXT: any (they state their own).
    fn backing(&self) -> Backing<'_, P> {
        Backing {
            platform: &self.platform,
            geo: &self.geo,
        }
    }

    /// `pcpu_populate_chunk` on a published chunk.
    ///
    /// CONTEXT: pcpu_alloc_mutex (or pcpu_mutex); does GFP_KERNEL allocation.
    fn populate_chunk(
        &self,
        chunk: ChunkPtr,
        alloc: &mut AllocLocked,
        off: usize,
        size: usize,
    ) -> Result<(), ()> {
        self.assert_alloc_locked();
        self.backing()
            .populate(chunk.base(), chunk.pages(alloc), off, size)
    }

    /// `pcpu_depopulate_chunk` + `free_pcpu_chunk` for a chunk reclaim
    /// unlinked. The seed passes `flush = false` and frees the pages before
    /// unmapping them, leaving the TLB to `free_vm_area`'s lazy purge; the
    /// corrected variant flushes first (Linux did from 2009 on for the order
    /// and from 2021 on for the flush in reclaim).
    ///
    /// CONTEXT: process context, no allocator lock (the chunk is ours).
    fn release_reclaimed_chunk(&self, mut chunk: Unlinked) {
        let base = chunk.chunk().base();
        let order = if self.variant.corrected() {
            Depopulate::FlushThenFree
        } else {
            Depopulate::SeedFreeThenUnmap
        };
        let backing = self.backing();
        backing.depopulate(base, chunk.pages(), 0, self.geo.unit_size, order);
        backing.destroy_chunk(chunk);
    }

    /// Free a chunk that was created but could not be published.
    ///
    /// CONTEXT: allocator mutex held, no spinlock.
    fn destroy_unpublished_chunk(&self, chunk: ChunkPtr) {
        self.assert_alloc_locked();
        // SAFETY: the chunk was never put on a list or in the tree; only this
        // caller knows it.
        let chunk = unsafe { Unlinked::new(chunk) };
        self.backing().destroy_chunk(chunk);
    }

    // ---- public interface ----

    /// The platform the allocator runs on. CONTEXT: any.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The locking variant chosen at init. CONTEXT: any.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The seeded rule break chosen at init, if any. CONTEXT: any.
    pub fn inject(&self) -> Option<Inject> {
        self.inject
    }

    /// Unit size in bytes (`pcpu_unit_size`). CONTEXT: any.
    pub fn unit_size(&self) -> usize {
        self.geo.unit_size
    }

    /// Number of CPUs (units per chunk). CONTEXT: any.
    pub fn nr_cpus(&self) -> usize {
        self.geo.nr_cpus
    }

    /// Base of the first chunk (`pcpu_base_addr`). CONTEXT: any.
    pub fn base_addr(&self) -> usize {
        self.geo.base_addr
    }

    /// `__per_cpu_offset[cpu]`: add to a [`PcpuPtr`] (or a static per-CPU
    /// variable's link address) to reach `cpu`'s copy. The guest loads this
    /// into `TPIDR_EL1`.
    ///
    /// CONTEXT: any.
    pub fn per_cpu_offset(&self, cpu: usize) -> usize {
        assert!(cpu < self.geo.nr_cpus, "no CPU {cpu}");
        self.geo
            .base_addr
            .wrapping_sub(self.geo.per_cpu_start)
            .wrapping_add(cpu * self.geo.unit_size)
    }

    /// `per_cpu_ptr(ptr, cpu)`: address of `cpu`'s copy of `ptr`.
    /// CONTEXT: any.
    pub fn per_cpu_ptr(&self, ptr: PcpuPtr, cpu: usize) -> *mut u8 {
        ptr.0.wrapping_add(self.per_cpu_offset(cpu)) as *mut u8
    }

    /// `__addr_to_pcpu_ptr`. CONTEXT: any.
    fn addr_to_ptr(&self, addr: usize) -> PcpuPtr {
        PcpuPtr(
            addr.wrapping_sub(self.geo.base_addr)
                .wrapping_add(self.geo.per_cpu_start),
        )
    }

    /// `__pcpu_ptr_to_addr`. CONTEXT: any.
    fn ptr_to_addr(&self, ptr: PcpuPtr) -> usize {
        ptr.0
            .wrapping_sub(self.geo.per_cpu_start)
            .wrapping_add(self.geo.base_addr)
    }

    /// `__alloc_percpu`: allocate `size` bytes aligned to `align` (a power of
    /// two up to [`PAGE_SIZE`]) in every CPU's unit, zeroed in all of them.
    /// `None` for an illegal request or when memory runs out.
    ///
    /// CONTEXT: process context; may sleep (does GFP_KERNEL allocations).
    pub fn alloc(&self, size: usize, align: usize) -> Option<PcpuPtr> {
        self.pcpu_alloc(size, align, false)
    }

    /// `__alloc_reserved_percpu`: like [`Percpu::alloc`] but from the
    /// reserved area if there is one.
    ///
    /// CONTEXT: process context; may sleep.
    pub fn alloc_reserved(&self, size: usize, align: usize) -> Option<PcpuPtr> {
        self.pcpu_alloc(size, align, true)
    }

    /// `pcpu_alloc`.
    ///
    /// CONTEXT: process context; may sleep.
    fn pcpu_alloc(&self, size: usize, align: usize, reserved: bool) -> Option<PcpuPtr> {
        // The seed does not check for a power of two (its area map would
        // then misalign); the port refuses those too, with the same warning.
        if size == 0 || size > MIN_UNIT_SIZE || !align.is_power_of_two() || align > PAGE_SIZE {
            self.platform.warn(IllegalRequest { size, align });
            return None;
        }
        match self.variant {
            Variant::Mutex => self.alloc_under_pcpu_mutex(size, align, reserved),
            _ => self.alloc_fine(size, align, reserved),
        }
    }

    /// `pcpu_alloc` before the patch: everything under `pcpu_mutex`,
    /// including every memory allocation.
    ///
    /// CONTEXT: process context; takes pcpu_mutex; may sleep.
    fn alloc_under_pcpu_mutex(&self, size: usize, align: usize, reserved: bool) -> Option<PcpuPtr> {
        let (mut alloc, mut idx) = self.lock_pcpu_mutex();
        let index = self.index.get(&mut idx);

        let found = 'search: {
            if let (true, Some(chunk)) = (reserved, index.reserved_chunk) {
                if size > index.areas(chunk).contig_hint
                    || self.extend_area_map_locked(index, chunk).is_err()
                {
                    break 'search None;
                }
                break 'search index.alloc_area(chunk, size, align).map(|off| (chunk, off));
            }

            for slot in index::size_to_slot(size, self.geo.unit_size)..index.nr_slots() {
                let mut pos = index.first_in_slot(slot);
                let mut strayed = None;
                while let Some(chunk) = pos {
                    if size <= index.areas(chunk).contig_hint {
                        if self.extend_area_map_locked(index, chunk).is_err() {
                            break 'search None;
                        }
                        if let Some(off) = index.alloc_area(chunk, size, align) {
                            break 'search Some((chunk, off));
                        }
                    }
                    pos = Self::walk_next(index, chunk, slot, None, &mut strayed);
                }
            }

            // No space left: create a new chunk, still under pcpu_mutex.
            let Some(chunk) = self.backing().create_chunk() else {
                break 'search None;
            };
            if !index.has_room_for_chunk() {
                self.destroy_unpublished_chunk(chunk);
                break 'search None;
            }
            index.relocate(chunk, None);
            index.addr_insert(chunk);
            index.stats.chunks_created += 1;
            index.alloc_area(chunk, size, align).map(|off| (chunk, off))
        };

        let result = match found {
            Some((chunk, off)) => {
                if self.populate_chunk(chunk, &mut alloc, off, size).is_ok() {
                    index.stats.allocs += 1;
                    Some(self.addr_to_ptr(chunk.base() + off))
                } else {
                    index.free_area(chunk, off);
                    None
                }
            }
            None => None,
        };
        self.unlock_pcpu_mutex(alloc, idx);
        if result.is_none() {
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// `pcpu_alloc` after the patch (`irq` and `fine`).
    ///
    /// CONTEXT: process context with IRQs on; takes pcpu_alloc_mutex and
    /// pcpu_lock; may sleep (with pcpu_lock released).
    fn alloc_fine(&self, size: usize, align: usize, reserved: bool) -> Option<PcpuPtr> {
        let mut alloc = self.lock_alloc_mutex();
        let idx = self.lock_irq();

        let (chunk, off, mut idx) = match self.find_area_fine(idx, size, align, reserved) {
            Ok(found) => found,
            Err(still_locked) => {
                // fail_unlock / fail_unlock_mutex
                if let Some(idx) = still_locked {
                    self.unlock_irq(idx);
                }
                self.unlock_alloc_mutex(alloc);
                self.alloc_failures.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        self.index.get(&mut idx).stats.allocs += 1;

        // area_found: populate, map and clear the area without pcpu_lock.
        self.unlock_irq(idx);
        if self.populate_chunk(chunk, &mut alloc, off, size).is_err() {
            let mut idx = self.lock_irq();
            let index = self.index.get(&mut idx);
            index.free_area(chunk, off);
            index.stats.allocs -= 1;
            self.unlock_irq(idx);
            self.unlock_alloc_mutex(alloc);
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }

        self.unlock_alloc_mutex(alloc);
        Some(self.addr_to_ptr(chunk.base() + off))
    }

    /// The search part of the patched `pcpu_alloc`: find or make room for
    /// the area and allocate it in the area map. Returns the chunk, the offset
    /// and the lock witness; on failure the witness if pcpu_lock is still held
    /// (`fail_unlock`), `None` if it is not (`fail_unlock_mutex`).
    ///
    /// CONTEXT: pcpu_alloc_mutex and pcpu_lock; pcpu_lock is dropped and
    /// re-taken to extend area maps and to create chunks.
    fn find_area_fine(
        &self,
        mut idx: IndexLocked,
        size: usize,
        align: usize,
        reserved: bool,
    ) -> Result<(ChunkPtr, usize, IndexLocked), Option<IndexLocked>> {
        self.assert_alloc_locked();
        self.assert_index_locked();

        // Serve reserved allocations from the reserved chunk if there is one.
        if let (true, Some(chunk)) = (reserved, self.index.get(&mut idx).reserved_chunk) {
            if size > self.index.get(&mut idx).areas(chunk).contig_hint {
                return Err(Some(idx));
            }
            let (extended, relocked) = self.extend_area_map(chunk, idx);
            idx = relocked;
            if extended.is_err() {
                return Err(Some(idx));
            }
            return match self.index.get(&mut idx).alloc_area(chunk, size, align) {
                Some(off) => Ok((chunk, off, idx)),
                None => Err(Some(idx)),
            };
        }

        'restart: loop {
            let first_slot = index::size_to_slot(size, self.geo.unit_size);
            for slot in first_slot..self.index.get(&mut idx).nr_slots() {
                let mut pos = self.index.get(&mut idx).first_in_slot(slot);
                let mut strayed = None;
                while let Some(chunk) = pos {
                    let mut read_ahead = None;
                    if size <= self.index.get(&mut idx).areas(chunk).contig_hint {
                        let (extended, relocked) = self.extend_area_map(chunk, idx);
                        idx = relocked;
                        match extended {
                            Ok(Extend::Noop) => {}
                            // pcpu_lock was dropped: the lists may have
                            // changed. The seed returns 0 here, so its
                            // `goto restart` is dead code and the walk goes on.
                            Ok(Extend::Extended) if self.restarts_after_extension() => {
                                self.index.get(&mut idx).stats.search_restarts += 1;
                                continue 'restart;
                            }
                            Ok(Extend::Extended) => Self::note_stray(
                                self.index.get(&mut idx),
                                chunk,
                                slot,
                                &mut strayed,
                                Stray::LockDropped,
                            ),
                            Err(()) => return Err(Some(idx)),
                        }
                        let index = self.index.get(&mut idx);
                        if self.variant.corrected() {
                            read_ahead = Some(index.next_in_slot(chunk));
                        }
                        if let Some(off) = index.alloc_area(chunk, size, align) {
                            return Ok((chunk, off, idx));
                        }
                    }
                    pos = Self::walk_next(
                        self.index.get(&mut idx),
                        chunk,
                        slot,
                        read_ahead,
                        &mut strayed,
                    );
                }
            }

            // No space left: create a new chunk with pcpu_lock released.
            self.unlock_irq(idx);
            let chunk = self.backing().create_chunk().ok_or(None)?;
            idx = self.lock_irq();
            let index = self.index.get(&mut idx);
            if !index.has_room_for_chunk() {
                self.unlock_irq(idx);
                self.destroy_unpublished_chunk(chunk);
                return Err(None);
            }
            index.relocate(chunk, None);
            index.addr_insert(chunk);
            index.stats.chunks_created += 1;
        }
    }

    /// The chunk after `chunk` in a walk of `slot`'s list. `read_ahead` is
    /// the next entry when it was read before the body could move `chunk`
    /// (`fixed`, like later kernels' `list_for_each_entry_safe`). Otherwise
    /// it is read now, after the body, from whatever list `chunk` is on by
    /// then (the seed's `list_for_each_entry`). A walk that has left its list
    /// and reaches the end of another one would take that list's head for a
    /// chunk: it panics like the oops that would follow.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex).
    fn walk_next(
        index: &mut Index,
        chunk: ChunkPtr,
        slot: usize,
        read_ahead: Option<Option<ChunkPtr>>,
        strayed: &mut Option<Stray>,
    ) -> Option<ChunkPtr> {
        let next = read_ahead.unwrap_or_else(|| {
            // Nothing else moved it, so the body's own failed scan did.
            Self::note_stray(index, chunk, slot, strayed, Stray::FailedScan);
            index.next_in_slot(chunk)
        });
        if let (None, Some(why)) = (next, *strayed) {
            Self::walked_off(index, chunk, slot, why);
        }
        next
    }

    /// Remember why a walk of `slot`'s list is no longer on it, if `chunk`
    /// has left it and the walk had not already strayed.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex).
    fn note_stray(
        index: &mut Index,
        chunk: ChunkPtr,
        slot: usize,
        strayed: &mut Option<Stray>,
        why: Stray,
    ) {
        if strayed.is_none() && index.listed_slot(chunk) != Some(slot) {
            *strayed = Some(why);
        }
    }

    /// A walk of `slot`'s list, which left it because of `why`, ended at
    /// `chunk`, on another list or none.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex).
    fn walked_off(index: &mut Index, chunk: ChunkPtr, slot: usize, why: Stray) -> ! {
        let base = chunk.base();
        let why = match why {
            Stray::LockDropped => {
                "moved there while pcpu_lock was dropped and the search did not restart"
            }
            Stray::FailedScan => {
                "moved there by this walk's own failed pcpu_alloc_area, whose full scan lowered contig_hint below the smallest useful size"
            }
        };
        match index.listed_slot(chunk) {
            Some(other) => panic!(
                "percpu: pcpu_alloc's walk of slot {slot} ran off the end of slot {other}'s list: chunk 0x{base:x} {why} (list_for_each_entry would take that list's head for a chunk)"
            ),
            None => panic!(
                "percpu: pcpu_alloc's walk of slot {slot} ran off chunk 0x{base:x}, which is on no list any more"
            ),
        }
    }

    /// After pcpu_lock was re-taken around an allocation for `chunk`'s map:
    /// the chunk (whose base was `base`) must still be in the index. Only
    /// reclaim takes chunks out, and it needs pcpu_alloc_mutex to do so
    /// because this allocation holds only that mutex meanwhile; a reclaim
    /// without it may have unlinked (and freed) the chunk under our feet.
    /// Checked without touching the chunk's memory.
    ///
    /// CONTEXT: pcpu_alloc_mutex, pcpu_lock.
    fn check_still_indexed(index: &mut Index, chunk: ChunkPtr, base: usize) {
        if !index.holds(chunk, base) {
            panic!(
                "percpu: chunk 0x{base:x} was reclaimed while an allocation had pcpu_lock dropped to extend its area map, holding only pcpu_alloc_mutex"
            );
        }
    }

    /// `pcpu_extend_area_map` after the patch: make sure `chunk`'s map has two
    /// free entries. Allocating the new map drops pcpu_lock, so the chunk
    /// lists may have changed when this returns `Extended` (the corrected
    /// variant's caller restarts; the seed's does not). The seed frees the
    /// old map under pcpu_lock with IRQs off (`vfree` above a page); the
    /// corrected variant frees it after dropping the lock again.
    ///
    /// CONTEXT: pcpu_alloc_mutex, pcpu_lock. pcpu_lock is released and
    /// re-acquired (with `spin_unlock_irq`/`spin_lock_irq`) if the map is
    /// extended, and the witness returned is the new one.
    fn extend_area_map(
        &self,
        chunk: ChunkPtr,
        mut idx: IndexLocked,
    ) -> (Result<Extend, ()>, IndexLocked) {
        self.assert_alloc_locked();
        self.assert_index_locked();
        let areas = self.index.get(&mut idx).areas(chunk);
        if areas.has_room_for_alloc() {
            return (Ok(Extend::Noop), idx);
        }
        let new_alloc = areas.extended_capacity();
        let base = chunk.base();

        self.unlock_irq(idx);
        let new = self
            .platform
            .mem_alloc(new_alloc * core::mem::size_of::<i32>(), Gfp::KERNEL);
        let mut idx = self.lock_irq();
        Self::check_still_indexed(self.index.get(&mut idx), chunk, base);

        let Some(new) = new else {
            return (Err(()), idx);
        };
        let old = self.install_area_map(self.index.get(&mut idx), chunk, new, new_alloc);
        if let (Some((ptr, bytes)), true) = (old, self.variant.corrected()) {
            self.unlock_irq(idx);
            self.platform.mem_free(ptr, bytes);
            idx = self.lock_irq();
        } else if let Some((ptr, bytes)) = old {
            // The seed: pcpu_mem_free under pcpu_lock, IRQs off.
            self.platform.mem_free(ptr, bytes);
        }
        (Ok(Extend::Extended), idx)
    }

    /// `pcpu_extend_area_map` before the patch: allocate the new map with
    /// pcpu_mutex held.
    ///
    /// CONTEXT: pcpu_mutex; does GFP_KERNEL allocation.
    fn extend_area_map_locked(&self, index: &mut Index, chunk: ChunkPtr) -> Result<Extend, ()> {
        self.assert_alloc_locked();
        let areas = index.areas(chunk);
        if areas.has_room_for_alloc() {
            return Ok(Extend::Noop);
        }
        let new_alloc = areas.extended_capacity();
        let new = self
            .platform
            .mem_alloc(new_alloc * core::mem::size_of::<i32>(), Gfp::KERNEL)
            .ok_or(())?;
        if let Some((old, bytes)) = self.install_area_map(index, chunk, new, new_alloc) {
            self.platform.mem_free(old, bytes);
        }
        Ok(Extend::Extended)
    }

    /// Switch `chunk` to the new map storage. Returns the old storage and its
    /// size in bytes for the caller to free, unless it is a first chunk's
    /// static map.
    ///
    /// CONTEXT: the index lock (pcpu_lock with IRQs off, or pcpu_mutex).
    fn install_area_map(
        &self,
        index: &mut Index,
        chunk: ChunkPtr,
        new: NonNull<u8>,
        new_alloc: usize,
    ) -> Option<(NonNull<u8>, usize)> {
        self.assert_index_locked();
        // SAFETY: `new` is fresh metadata memory for `new_alloc` entries; the
        // map owns it from now on.
        let (old, old_alloc) = unsafe { index.areas(chunk).replace_storage(new.cast(), new_alloc) };
        index.stats.map_extensions += 1;
        (old_alloc >= DFL_MAP_ALLOC).then(|| (old.cast(), old_alloc * core::mem::size_of::<i32>()))
    }

    /// `free_percpu`: free an area from [`Percpu::alloc`] or
    /// [`Percpu::alloc_reserved`]. Panics if `ptr` is not the start of a live
    /// area (the seed's `BUG_ON`).
    ///
    /// CONTEXT: `fine`, `fixed`: any context, including hard-IRQ. `irq`: any
    /// context with IRQs on (it re-enables them). `irq-plain`: any context,
    /// but an IRQ that frees on a CPU holding pcpu_lock deadlocks. `mutex`:
    /// process context; may sleep.
    pub fn free(&self, ptr: PcpuPtr) {
        let addr = self.ptr_to_addr(ptr);
        if self.injected(Inject::FreeUnlocked) {
            // SAFETY: none: this is the seeded bug. The index is changed
            // without its lock, racing with every other user of it.
            let mut idx = unsafe { IndexLocked::assume_held() };
            self.free_locked(&mut idx, addr);
            idx.release();
            return;
        }
        match self.variant {
            Variant::Mutex => {
                let (alloc, mut idx) = self.lock_pcpu_mutex();
                self.free_locked(&mut idx, addr);
                self.unlock_pcpu_mutex(alloc, idx);
            }
            Variant::Irq => {
                let mut idx = self.lock_irq();
                self.free_locked(&mut idx, addr);
                self.unlock_irq(idx);
            }
            Variant::IrqPlain => {
                let mut idx = self.lock_plain();
                self.free_locked(&mut idx, addr);
                self.unlock_plain(idx);
            }
            Variant::Fine | Variant::Fixed => {
                let (mut idx, flags) = self.lock_irqsave();
                self.free_locked(&mut idx, addr);
                self.unlock_irqrestore(idx, flags);
            }
        }
    }

    /// The body of `free_percpu`: free the area and wake the reclaimer if
    /// this made a second chunk fully free.
    ///
    /// CONTEXT: the index lock (pcpu_lock with IRQs off, or pcpu_mutex).
    fn free_locked(&self, idx: &mut IndexLocked, addr: usize) {
        // `free-unlocked` holds no lock: the assertion would fire on every
        // free, so it is skipped and the race's damage is what gets caught.
        if !self.injected(Inject::FreeUnlocked) {
            self.assert_index_locked();
        }
        let index = self.index.get(idx);
        let chunk = index.addr_search(addr);
        index.free_area(chunk, addr.wrapping_sub(chunk.base()));
        index.stats.frees += 1;
        if index.areas(chunk).free_size == self.geo.unit_size && index.other_free_chunk_than(chunk)
        {
            self.platform.schedule_reclaim_work();
            index.stats.reclaim_scheduled += 1;
        }
    }

    /// `pcpu_reclaim`: the work item that [`Percpu::free`] schedules through
    /// [`Platform::schedule_reclaim_work`]. Releases every fully free chunk
    /// except one. With `reclaim-one-lock` the chunks are unlinked under
    /// pcpu_lock alone, so the "only reclaim can reach an unlinked chunk"
    /// rule (U) no longer holds: an allocation extending one's map still uses
    /// it (`check_still_indexed` catches that).
    ///
    /// CONTEXT: workqueue (process) context; takes the allocator's locks;
    /// may sleep.
    pub fn reclaim_work(&self) {
        let todo = match self.variant {
            Variant::Mutex => {
                let (alloc, mut idx) = self.lock_pcpu_mutex();
                let todo = self.index.get(&mut idx).unlink_reclaimable();
                self.unlock_pcpu_mutex(alloc, idx);
                todo
            }
            // The seeded bug: unlink under pcpu_lock alone.
            _ if self.injected(Inject::ReclaimOneLock) => {
                let mut idx = self.lock_irq();
                let todo = self.index.get(&mut idx).unlink_reclaimable();
                self.unlock_irq(idx);
                todo
            }
            _ => {
                let alloc = self.lock_alloc_mutex();
                let mut idx = self.lock_irq();
                let todo = self.index.get(&mut idx).unlink_reclaimable();
                self.unlock_irq(idx);
                self.unlock_alloc_mutex(alloc);
                todo
            }
        };
        for chunk in todo {
            self.release_reclaimed_chunk(chunk);
        }
    }

    /// The allocator's counters.
    ///
    /// CONTEXT: as [`Percpu::free`].
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        self.with_index(|index| stats = index.stats);
        stats.alloc_failures = self.alloc_failures.load(Ordering::Relaxed) as u64;
        stats
    }

    /// Check the index's invariants under the index lock (see
    /// [`IndexProblem`]): area maps, slot lists, the address tree. They hold
    /// whenever the lock is free, so a problem means the index was changed
    /// without it or two changes raced.
    ///
    /// CONTEXT: as [`Percpu::free`].
    pub fn check(&self) -> Result<(), IndexProblem> {
        let mut result = Ok(());
        self.with_index(|index| result = index.check());
        result
    }

    /// Call `f` for every chunk: the first chunk, the reserved chunk if any,
    /// then the dynamic chunks by address. Runs with the index lock held, so
    /// `f` must not call back into the allocator.
    ///
    /// CONTEXT: as [`Percpu::free`].
    pub fn for_each_chunk(&self, mut f: impl FnMut(&ChunkInfo<'_>)) {
        self.with_index(|index| {
            let mut visit = |index: &mut Index, chunk: ChunkPtr, kind: ChunkKind| {
                let listed_slot = index.listed_slot(chunk);
                let expected_slot = index.current_slot(chunk);
                let areas: &AreaMap = index.areas(chunk);
                f(&ChunkInfo {
                    kind,
                    base: chunk.base(),
                    free_size: areas.free_size,
                    contig_hint: areas.contig_hint,
                    map: areas.entries(),
                    listed_slot,
                    expected_slot,
                });
            };
            let first = index.first_chunk;
            visit(index, first, ChunkKind::First);
            if let Some(reserved) = index.reserved_chunk.filter(|&r| r != first) {
                visit(index, reserved, ChunkKind::Reserved);
            }
            for i in 0..index.nr_dynamic_chunks() {
                let chunk = index.dynamic_chunks()[i];
                visit(index, chunk, ChunkKind::Dynamic);
            }
        });
    }

    /// Run `f` on the index under the variant's index lock (irqsave form).
    ///
    /// CONTEXT: as [`Percpu::free`].
    fn with_index(&self, f: impl FnOnce(&mut Index)) {
        match self.variant {
            Variant::Mutex => {
                let (alloc, mut idx) = self.lock_pcpu_mutex();
                f(self.index.get(&mut idx));
                self.unlock_pcpu_mutex(alloc, idx);
            }
            _ => {
                let (mut idx, flags) = self.lock_irqsave();
                f(self.index.get(&mut idx));
                self.unlock_irqrestore(idx, flags);
            }
        }
    }
}

/// `pcpu_setup_first_chunk`'s work: see [`Percpu::new`].
///
/// CONTEXT: init, single-threaded.
fn setup_first_chunk<P: Platform>(
    platform: &P,
    geo: &mut Geometry,
    config: &Config,
    dyn_size: usize,
    static_image: &[u8],
) -> Result<Index, InitError> {
    let static_size = config.static_size;
    let reserved_size = config.reserved_size;

    // The static chunk covers static + reserved (or static + dynamic
    // without a reserved area); a second chunk on the same area serves
    // the dynamic part when there is a reserved area.
    let (schunk_free, dchunk_size) = if reserved_size != 0 {
        (reserved_size, dyn_size)
    } else {
        (dyn_size, 0)
    };
    let reserved_limit = if reserved_size != 0 {
        static_size + reserved_size
    } else {
        0
    };

    let base = platform
        .vm_reserve(geo.chunk_size)
        .ok_or(InitError::NoMemory)?;
    geo.base_addr = base;
    let backing = Backing {
        platform,
        geo: &*geo,
    };

    let schunk = backing
        .new_first_chunk(base, None, &[-(static_size as i32), schunk_free as i32])
        .ok_or(InitError::NoMemory)?;
    let dchunk = if dchunk_size != 0 {
        Some(
            backing
                .new_first_chunk(
                    base,
                    Some(schunk),
                    &[-(reserved_limit as i32), dchunk_size as i32],
                )
                .ok_or(InitError::NoMemory)?,
        )
    } else {
        None
    };

    // Populate and map every page the first chunk uses, on every CPU.
    let nr_pages = (static_size + reserved_size + dyn_size).div_ceil(PAGE_SIZE);
    // SAFETY: init is single-threaded; nothing else holds the mutex.
    let mut alloc = unsafe { AllocLocked::assume_held() };
    let pages = schunk.pages(&mut alloc);
    for page in 0..nr_pages {
        for cpu in 0..geo.nr_cpus {
            let frame = platform
                .alloc_page(cpu, Gfp::KERNEL)
                .ok_or(InitError::NoMemory)?;
            pages.set_frame(cpu, page, frame);
        }
    }
    backing
        .map(base, pages, 0, nr_pages)
        .map_err(|_| InitError::NoMemory)?;
    for page in 0..nr_pages {
        pages.set_populated(page, true);
    }
    for cpu in 0..geo.nr_cpus {
        let unit = (base + cpu * geo.unit_size) as *mut u8;
        // SAFETY: pages [0, nr_pages) of every unit were just mapped and
        // belong to nobody else yet.
        unsafe {
            core::ptr::write_bytes(unit, 0, nr_pages * PAGE_SIZE);
            core::ptr::copy_nonoverlapping(static_image.as_ptr(), unit, static_image.len());
        }
    }

    let cap = config.max_chunks;
    let by_addr = platform
        .mem_alloc(cap.max(1) * core::mem::size_of::<ChunkPtr>(), Gfp::KERNEL)
        .ok_or(InitError::NoMemory)?;
    let first = dchunk.unwrap_or(schunk);
    let reserved = (reserved_size != 0).then_some(schunk);
    // SAFETY: `by_addr` is fresh metadata memory for `cap` pointers that the
    // index keeps for its whole life.
    let index = unsafe {
        Index::new(
            geo.unit_size,
            geo.chunk_size,
            base,
            first,
            reserved,
            reserved_limit,
            by_addr.cast(),
            cap,
        )
    };
    let mut index = index;
    index.relocate(first, None);
    Ok(index)
}
