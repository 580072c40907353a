//! Chunk memory: creating and destroying chunks, and populating and
//! depopulating their pages with the seed's flush discipline (cache flush
//! after mapping; cache flush before unmapping and TLB flush after, when
//! asked).

use core::ptr::{addr_of_mut, NonNull};

use crate::area_map::{AreaMap, DFL_MAP_ALLOC};
use crate::platform::{Gfp, Page, Platform, PAGE_SIZE};
use crate::shared::{Chunk, ChunkIndex, ChunkPages, ChunkPtr, Unlinked};

/// Values fixed at init.
pub(crate) struct Geometry {
    pub(crate) nr_cpus: usize,
    pub(crate) unit_pages: usize,
    pub(crate) unit_size: usize,
    pub(crate) chunk_size: usize,
    /// Base of the first chunk (`pcpu_base_addr`).
    pub(crate) base_addr: usize,
    pub(crate) per_cpu_start: usize,
}

/// How [`Backing::depopulate`] orders freeing pages against unmapping them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Depopulate {
    /// The seed's `pcpu_depopulate_chunk(.., flush = false)` from reclaim:
    /// free every page, then unmap without any flush. The freed frames stay
    /// mapped (until the unmap) and cached in TLBs (until the platform's lazy
    /// purge), so they can be reused while still reachable.
    SeedFreeThenUnmap,
    /// The later correction: cache flush, unmap, TLB flush, and only then
    /// free the pages.
    FlushThenFree,
}

impl Geometry {
    /// Bytes of metadata for one chunk: the `Chunk` and, unless it shares
    /// another chunk's, its page storage (`pcpu_chunk_struct_size`).
    ///
    /// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
    fn chunk_struct_size(&self, with_pages: bool) -> usize {
        let header = core::mem::size_of::<Chunk>().next_multiple_of(16);
        if with_pages {
            header + ChunkPages::storage_size(self.nr_cpus, self.unit_pages)
        } else {
            header
        }
    }

    /// `pcpu_chunk_addr`: address of page `page` of `cpu`'s unit.
    ///
    /// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
    fn page_addr(&self, base: usize, cpu: usize, page: usize) -> usize {
        base + cpu * self.unit_size + page * PAGE_SIZE
    }
}

/// Pages `[start, end)` that hold bytes `[off, off + size)` of a unit.
///
/// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
fn page_range(off: usize, size: usize) -> (usize, usize) {
    (off / PAGE_SIZE, (off + size).div_ceil(PAGE_SIZE))
}

/// Chunk memory operations over a platform.
pub(crate) struct Backing<'a, P: Platform> {
    pub(crate) platform: &'a P,
    pub(crate) geo: &'a Geometry,
}

impl<P: Platform> Backing<'_, P> {
    /// Allocate and initialise chunk metadata. The area map uses `map`
    /// (storage and capacity) or, if `None`, the chunk's own two-entry static
    /// storage; it starts as `initial`. `shares_pages_of` names the chunk
    /// whose page array this one uses (the first chunks share one, as in the
    /// seed; both are only used under the alloc mutex, rule A).
    ///
    /// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
    fn new_chunk(
        &self,
        base: usize,
        shares_pages_of: Option<ChunkPtr>,
        map: Option<(NonNull<i32>, usize)>,
        initial: &[i32],
    ) -> Option<ChunkPtr> {
        let own_pages = shares_pages_of.is_none();
        let mem = self
            .platform
            .mem_alloc(self.geo.chunk_struct_size(own_pages), Gfp::KERNEL)?;
        let header = self.geo.chunk_struct_size(false);
        let page_storage = match shares_pages_of {
            // SAFETY: the page storage follows the 16-byte rounded header
            // inside the allocation.
            None => unsafe { mem.add(header) },
            // SAFETY: the owner was allocated with the same layout.
            Some(owner) => unsafe { owner.as_non_null().cast::<u8>().add(header) },
        };
        let raw = mem.cast::<Chunk>().as_ptr();
        // SAFETY: `mem` is fresh, zeroed, MEM_ALIGN-aligned and large enough
        // for a Chunk, which is written field by field before any use; the
        // page storage is zeroed and lives as long as the chunk; `map` (or the
        // static storage) holds enough entries for `initial`.
        unsafe {
            addr_of_mut!((*raw).static_map).write([0; 2]);
            addr_of_mut!((*raw).base).write(base);
            addr_of_mut!((*raw).pages).write(ChunkPages::from_raw(
                page_storage,
                self.geo.nr_cpus,
                self.geo.unit_pages,
            ));
            let (storage, alloc) = match map {
                Some(map) => map,
                None => (
                    NonNull::new_unchecked(addr_of_mut!((*raw).static_map).cast()),
                    2,
                ),
            };
            addr_of_mut!((*raw).index).write(ChunkIndex {
                areas: AreaMap::from_raw(storage, alloc, initial),
                slot: None,
                prev: None,
                next: None,
            });
        }
        Some(ChunkPtr::new(mem.cast()))
    }

    /// One of the first chunks (the seed's `schunk`/`dchunk`): its map lives
    /// in the chunk's static two-entry storage.
    ///
    /// CONTEXT: init.
    pub(crate) fn new_first_chunk(
        &self,
        base: usize,
        shares_pages_of: Option<ChunkPtr>,
        map: &[i32],
    ) -> Option<ChunkPtr> {
        self.new_chunk(base, shares_pages_of, None, map)
    }

    /// `alloc_pcpu_chunk`: metadata, a default-sized area map and a virtual
    /// area, nothing populated.
    ///
    /// CONTEXT: allocator mutex held, no spinlock; does GFP_KERNEL
    /// allocations.
    pub(crate) fn create_chunk(&self) -> Option<ChunkPtr> {
        let map_bytes = DFL_MAP_ALLOC * core::mem::size_of::<i32>();
        let map = self.platform.mem_alloc(map_bytes, Gfp::KERNEL)?;
        let Some(base) = self.platform.vm_reserve(self.geo.chunk_size) else {
            self.platform.mem_free(map, map_bytes);
            return None;
        };
        let initial = [self.geo.unit_size as i32];
        let Some(chunk) = self.new_chunk(base, None, Some((map.cast(), DFL_MAP_ALLOC)), &initial)
        else {
            self.platform.vm_release(base, self.geo.chunk_size);
            self.platform.mem_free(map, map_bytes);
            return None;
        };
        Some(chunk)
    }

    /// `free_pcpu_chunk`: release the virtual area, the area map and the
    /// metadata of a chunk whose pages are already depopulated.
    ///
    /// CONTEXT: process context, no spinlock; the chunk is owned by the
    /// caller (unlinked by reclaim, or never published).
    pub(crate) fn destroy_chunk(&self, mut chunk: Unlinked) {
        debug_assert_eq!(chunk.pages().populated_count(), 0);
        let ptr = chunk.chunk();
        self.platform.vm_release(ptr.base(), self.geo.chunk_size);
        let areas = &chunk.index_part().areas;
        let (map, map_alloc) = (areas.storage_ptr(), areas.capacity());
        if map_alloc >= DFL_MAP_ALLOC {
            self.platform
                .mem_free(map.cast(), map_alloc * core::mem::size_of::<i32>());
        }
        self.platform
            .mem_free(ptr.as_non_null().cast(), self.geo.chunk_struct_size(true));
    }

    /// `pcpu_map`: map pages `[start, end)` of every CPU's unit, then flush the
    /// cache over the whole range at once.
    ///
    /// CONTEXT: allocator mutex held (or init); may sleep.
    pub(crate) fn map(
        &self,
        base: usize,
        pages: &mut ChunkPages,
        start: usize,
        end: usize,
    ) -> Result<(), ()> {
        for cpu in 0..self.geo.nr_cpus {
            let addr = self.geo.page_addr(base, cpu, start);
            self.platform
                .map_pages(addr, pages.frames_of(cpu, start, end))
                .map_err(|_| ())?;
        }
        let last = self.geo.nr_cpus - 1;
        self.platform.flush_cache_vmap(
            self.geo.page_addr(base, 0, start),
            self.geo.page_addr(base, last, end),
        );
        Ok(())
    }

    /// `pcpu_unmap`: unmap pages `[start, end)` of every CPU's unit; with
    /// `flush`, flush the cache over the whole range before and the TLB after.
    ///
    /// CONTEXT: allocator mutex held, or the chunk owned by reclaim.
    fn unmap(&self, base: usize, start: usize, end: usize, flush: bool) {
        let last = self.geo.nr_cpus - 1;
        let range = (
            self.geo.page_addr(base, 0, start),
            self.geo.page_addr(base, last, end),
        );
        if flush {
            self.platform.flush_cache_vunmap(range.0, range.1);
        }
        for cpu in 0..self.geo.nr_cpus {
            self.platform.unmap_pages(
                self.geo.page_addr(base, cpu, start),
                (end - start) * PAGE_SIZE,
            );
        }
        if flush {
            self.platform.flush_tlb_kernel_range(range.0, range.1);
        }
    }

    /// Free the frames of pages in `[start, end)` that are not populated
    /// (those a failed populate allocated).
    ///
    /// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
    fn release_unpopulated(&self, pages: &mut ChunkPages, start: usize, end: usize) {
        for page in start..end {
            if pages.is_populated(page) {
                continue;
            }
            for cpu in 0..self.geo.nr_cpus {
                let frame = pages.frame(cpu, page);
                if frame != Page(0) {
                    self.platform.free_page(frame);
                    pages.set_frame(cpu, page, Page(0));
                }
            }
        }
    }

    /// Runs of unpopulated pages in `[start, end)`.
    ///
    /// CONTEXT: as its caller: the allocator mutex held, or the chunk privately owned; no spinlock.
    fn unpopulated_runs<'p>(
        pages: &'p mut ChunkPages,
        start: usize,
        end: usize,
    ) -> impl Iterator<Item = (usize, usize)> + 'p {
        let mut page = start;
        core::iter::from_fn(move || {
            while page < end && pages.is_populated(page) {
                page += 1;
            }
            if page >= end {
                return None;
            }
            let run_start = page;
            while page < end && !pages.is_populated(page) {
                page += 1;
            }
            Some((run_start, page))
        })
    }

    /// `pcpu_populate_chunk`: make sure every CPU's pages under
    /// `[off, off + size)` are allocated and mapped, then zero that range in
    /// every CPU's unit.
    ///
    /// On failure only what this call allocated or mapped is undone (unmapped
    /// with flushes, then freed); pages populated before stay, since other
    /// areas may live in them.
    ///
    /// CONTEXT: allocator mutex held (`pages` comes from its witness), no
    /// spinlock; does GFP_KERNEL allocations.
    pub(crate) fn populate(
        &self,
        base: usize,
        pages: &mut ChunkPages,
        off: usize,
        size: usize,
    ) -> Result<(), ()> {
        let (start, end) = page_range(off, size);

        // Frames for every unpopulated page of every CPU.
        for page in start..end {
            if pages.is_populated(page) {
                continue;
            }
            for cpu in 0..self.geo.nr_cpus {
                match self.platform.alloc_page(cpu, Gfp::KERNEL) {
                    Some(frame) => pages.set_frame(cpu, page, frame),
                    None => {
                        self.release_unpopulated(pages, start, end);
                        return Err(());
                    }
                }
            }
        }

        // Map each run of them.
        let mut mapped_end = start;
        loop {
            let next = Self::unpopulated_runs(pages, mapped_end, end).next();
            let Some((run_start, run_end)) = next else {
                break;
            };
            if self.map(base, pages, run_start, run_end).is_err() {
                // Undo this call's mappings: every unpopulated run up to here.
                let mut undo = start;
                while let Some((s, e)) = Self::unpopulated_runs(pages, undo, run_end).next() {
                    self.unmap(base, s, e, true);
                    undo = e;
                }
                self.release_unpopulated(pages, start, end);
                return Err(());
            }
            mapped_end = run_end;
        }

        for page in start..end {
            pages.set_populated(page, true);
        }
        for cpu in 0..self.geo.nr_cpus {
            let addr = base + cpu * self.geo.unit_size + off;
            // SAFETY: the range lies in pages that are now mapped for `cpu`,
            // and belongs to the area being allocated, which nobody else
            // can use yet.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, size) };
        }
        Ok(())
    }

    /// `pcpu_depopulate_chunk`: free every populated page under
    /// `[off, off + size)` and unmap it, in the given `order`.
    ///
    /// CONTEXT: allocator mutex held, or the chunk owned by reclaim (no lock).
    pub(crate) fn depopulate(
        &self,
        base: usize,
        pages: &mut ChunkPages,
        off: usize,
        size: usize,
        order: Depopulate,
    ) {
        let (start, end) = page_range(off, size);
        let first = (start..end).find(|&p| pages.is_populated(p));
        let Some(first) = first else { return };
        let last = (start..end)
            .rev()
            .find(|&p| pages.is_populated(p))
            .unwrap_or(first);

        match order {
            Depopulate::SeedFreeThenUnmap => {
                self.free_populated(pages, first, last);
                self.unmap(base, first, last + 1, false);
            }
            Depopulate::FlushThenFree => {
                self.unmap(base, first, last + 1, true);
                self.free_populated(pages, first, last);
            }
        }
    }

    /// Free the frames of the populated pages in `[first, last]` and mark
    /// them unpopulated.
    ///
    /// CONTEXT: as [`Backing::depopulate`].
    fn free_populated(&self, pages: &mut ChunkPages, first: usize, last: usize) {
        for page in first..=last {
            if !pages.is_populated(page) {
                continue;
            }
            for cpu in 0..self.geo.nr_cpus {
                let frame = pages.frame(cpu, page);
                self.platform.free_page(frame);
                pages.set_frame(cpu, page, Page(0));
            }
            pages.set_populated(page, false);
        }
    }
}
