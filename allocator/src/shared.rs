//! Shared state behind the allocator's locks, and the only place that turns
//! raw pointers into references to it.
//!
//! The rules come from the "Synchronization rules" comment in `percpu.rs`:
//!
//! * **I** (index): chunk slots, the address tree, every chunk's area map,
//!   `free_size`, `contig_hint` and slot links are protected by `pcpu_lock`
//!   (`pcpu_mutex` in the `mutex` variant). Code proves it holds that lock
//!   with an [`IndexLocked`] witness, and `&mut Index` is only reachable
//!   through one.
//! * **A** (alloc): a chunk's page array and populated bitmap are protected by
//!   `pcpu_alloc_mutex` (`pcpu_mutex`). Proof: an [`AllocLocked`] witness.
//! * **U** (unlinked): a chunk that reclaim unlinked while holding both locks
//!   is reachable by no one else; the [`Unlinked`] handle owns it.
//! * **B** (base): a chunk's base address never changes while the chunk
//!   exists.
//!
//! Witnesses are created only by the lock functions in `percpu.rs`, right
//! after the platform lock call, and consumed by the unlock functions, so a
//! reference derived from one cannot outlive the lock.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::{addr_of_mut, NonNull};

use crate::area_map::AreaMap;
use crate::platform::Page;

/// Proof that the current thread of execution holds the index lock (rule I).
pub(crate) struct IndexLocked {
    _not_send: PhantomData<*mut ()>,
}

/// Proof that the current thread of execution holds the alloc mutex (rule A).
pub(crate) struct AllocLocked {
    _not_send: PhantomData<*mut ()>,
}

impl IndexLocked {
    /// Give up the witness; called right before the unlock.
    ///
    /// CONTEXT: the lock is held; the caller unlocks right after.
    pub(crate) fn release(self) {}

    /// # Safety
    /// Call only right after acquiring the lock that protects the index for
    /// the running variant (or during init, before the allocator is shared).
    ///
    /// CONTEXT: right after the lock call (or at init).
    pub(crate) unsafe fn assume_held() -> Self {
        IndexLocked {
            _not_send: PhantomData,
        }
    }
}

impl AllocLocked {
    /// Give up the witness; called right before the unlock.
    ///
    /// CONTEXT: the lock is held; the caller unlocks right after.
    pub(crate) fn release(self) {}

    /// # Safety
    /// Call only right after acquiring the alloc mutex for the running variant
    /// (or during init, before the allocator is shared).
    ///
    /// CONTEXT: right after the lock call (or at init).
    pub(crate) unsafe fn assume_held() -> Self {
        AllocLocked {
            _not_send: PhantomData,
        }
    }
}

/// State shared between CPUs, reachable only with the witness of its lock.
pub(crate) struct Shared<T> {
    cell: UnsafeCell<T>,
}

// SAFETY: every access goes through `get`, which requires the witness of
// the lock that serialises access (rule I).
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// CONTEXT: init, or the caller owns the chunk.
    pub(crate) fn new(value: T) -> Self {
        Shared {
            cell: UnsafeCell::new(value),
        }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn get<'w>(&'w self, _held: &'w mut IndexLocked) -> &'w mut T {
        // SAFETY: rule I: the witness proves the lock is held and is borrowed
        // mutably for as long as the reference lives, so no second reference
        // can be made from it; other CPUs cannot create one without the lock.
        unsafe { &mut *self.cell.get() }
    }
}

/// The index part of a chunk (rule I).
pub(crate) struct ChunkIndex {
    pub(crate) areas: AreaMap,
    /// Slot list the chunk is on, `None` while on none (the reserved chunk,
    /// a chunk just created, or an unlinked one).
    pub(crate) slot: Option<usize>,
    pub(crate) prev: Option<ChunkPtr>,
    pub(crate) next: Option<ChunkPtr>,
}

/// The page part of a chunk (rule A): for every CPU's unit the page frame
/// backing each page, and one populated bit per page index (a page index is
/// populated when all CPUs' pages at that index are allocated and mapped).
pub(crate) struct ChunkPages {
    frames: NonNull<Page>,
    populated: NonNull<u64>,
    nr_cpus: usize,
    unit_pages: usize,
}

impl ChunkPages {
    /// Bytes of storage needed for `nr_cpus` units of `unit_pages` pages.
    ///
    /// CONTEXT: any (pure arithmetic).
    pub(crate) fn storage_size(nr_cpus: usize, unit_pages: usize) -> usize {
        nr_cpus * unit_pages * core::mem::size_of::<Page>()
            + unit_pages.div_ceil(64) * core::mem::size_of::<u64>()
    }

    /// # Safety
    /// `storage` must be zeroed, 8-byte aligned, `storage_size` bytes long and
    /// live as long as the chunk; only this `ChunkPages` may use it.
    ///
    /// CONTEXT: chunk creation; the chunk is not shared yet.
    pub(crate) unsafe fn from_raw(storage: NonNull<u8>, nr_cpus: usize, unit_pages: usize) -> Self {
        let frames = storage.cast::<Page>();
        // SAFETY: within the storage, by `storage_size`.
        let populated = unsafe { storage.add(nr_cpus * unit_pages * 8) }.cast::<u64>();
        ChunkPages {
            frames,
            populated,
            nr_cpus,
            unit_pages,
        }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    fn frames(&mut self) -> &mut [Page] {
        // SAFETY: `from_raw` contract.
        unsafe {
            core::slice::from_raw_parts_mut(self.frames.as_ptr(), self.nr_cpus * self.unit_pages)
        }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    fn bitmap(&mut self) -> &mut [u64] {
        // SAFETY: `from_raw` contract.
        unsafe {
            core::slice::from_raw_parts_mut(self.populated.as_ptr(), self.unit_pages.div_ceil(64))
        }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn frame(&mut self, cpu: usize, page: usize) -> Page {
        let unit_pages = self.unit_pages;
        self.frames()[cpu * unit_pages + page]
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn set_frame(&mut self, cpu: usize, page: usize, frame: Page) {
        let unit_pages = self.unit_pages;
        self.frames()[cpu * unit_pages + page] = frame;
    }

    /// The frames of `cpu`'s unit for pages `[start, end)`.
    ///
    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn frames_of(&mut self, cpu: usize, start: usize, end: usize) -> &[Page] {
        let unit_pages = self.unit_pages;
        &self.frames()[cpu * unit_pages + start..cpu * unit_pages + end]
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn is_populated(&mut self, page: usize) -> bool {
        self.bitmap()[page / 64] & (1 << (page % 64)) != 0
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn set_populated(&mut self, page: usize, populated: bool) {
        let bit = 1u64 << (page % 64);
        let word = &mut self.bitmap()[page / 64];
        if populated {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn populated_count(&mut self) -> usize {
        self.bitmap().iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// A chunk: one virtual area of `nr_cpus` units. Lives in platform metadata
/// memory; see `chunk.rs` for creation and destruction.
pub(crate) struct Chunk {
    pub(crate) index: ChunkIndex,
    pub(crate) pages: ChunkPages,
    /// Address of unit 0 (rule B).
    pub(crate) base: usize,
    /// Storage for the first chunks' two-entry static maps (the seed's
    /// `smap`/`dmap`), so those maps need no metadata allocation.
    pub(crate) static_map: [i32; 2],
}

/// A pointer to a live chunk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ChunkPtr(NonNull<Chunk>);

// SAFETY: a ChunkPtr is an address; what it may be used for is governed by
// the rules above, not by which thread holds it.
unsafe impl Send for ChunkPtr {}

impl ChunkPtr {
    /// CONTEXT: init, or the caller owns the chunk.
    pub(crate) fn new(chunk: NonNull<Chunk>) -> Self {
        ChunkPtr(chunk)
    }

    /// CONTEXT: any.
    pub(crate) fn as_non_null(self) -> NonNull<Chunk> {
        self.0
    }

    /// The chunk's base address (rule B).
    ///
    /// CONTEXT: any; the chunk is alive (rule B).
    pub(crate) fn base(self) -> usize {
        // SAFETY: rule B: `base` is written once before the chunk is
        // published and never again; the chunk is alive while reachable.
        unsafe { (*self.0.as_ptr()).base }
    }

    /// The chunk's index part.
    ///
    /// # Safety
    /// Rule I: the caller holds `&mut Index` (hence the index lock) for the
    /// whole life of the returned reference and makes no other reference to
    /// the same chunk's index part meanwhile.
    ///
    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) unsafe fn index_part<'a>(self) -> &'a mut ChunkIndex {
        // SAFETY: caller's contract; the projection touches only this field,
        // so it never aliases the page part used under the alloc mutex.
        unsafe { &mut *addr_of_mut!((*self.0.as_ptr()).index) }
    }

    /// The chunk's page part (rule A).
    ///
    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn pages(self, _held: &mut AllocLocked) -> &mut ChunkPages {
        // SAFETY: rule A: the witness proves the alloc mutex is held and is
        // borrowed mutably for the reference's life; only the page field is
        // projected, so concurrent users of the index part (free under
        // pcpu_lock) are not aliased.
        unsafe { &mut *addr_of_mut!((*self.0.as_ptr()).pages) }
    }
}

/// A chunk that reclaim took out of circulation under both locks (rule U).
pub(crate) struct Unlinked(ChunkPtr);

impl Unlinked {
    /// # Safety
    /// `chunk` must have just been removed from the slot lists and the address
    /// tree with both locks held, so nothing else can reach it.
    ///
    /// CONTEXT: init, or the caller owns the chunk.
    pub(crate) unsafe fn new(chunk: ChunkPtr) -> Self {
        Unlinked(chunk)
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn chunk(&self) -> ChunkPtr {
        self.0
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn pages(&mut self) -> &mut ChunkPages {
        // SAFETY: rule U: this handle is the chunk's only owner.
        unsafe { &mut *addr_of_mut!((*self.0 .0.as_ptr()).pages) }
    }

    /// CONTEXT: the lock of the part it touches (see the rules above); never sleeps.
    pub(crate) fn index_part(&mut self) -> &mut ChunkIndex {
        // SAFETY: rule U.
        unsafe { &mut *addr_of_mut!((*self.0 .0.as_ptr()).index) }
    }
}
