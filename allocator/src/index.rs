//! The index data structures protected by `pcpu_lock` (rule I in
//! `shared.rs`): chunk lists by free size ("slots") and chunks by address.
//!
//! The seed keeps chunks by address in an rbtree. Here it is a sorted array of
//! chunk pointers with a capacity fixed at init (`Config::max_chunks`), held in
//! platform metadata memory: lookups are a binary search, inserts and removals
//! shift the tail. Chunk counts are small, and this needs no node memory.

use core::ptr::NonNull;

use crate::area_map::MapProblem;
use crate::shared::{ChunkPtr, Unlinked};
use crate::Stats;

/// Slot lists are indexed by `size_to_slot`; a unit of up to 1 GiB needs 30.
pub(crate) const MAX_SLOTS: usize = 32;

/// Sizes below `1 << SLOT_BASE_SHIFT` share slot 1 (`PCPU_SLOT_BASE_SHIFT`).
const SLOT_BASE_SHIFT: u32 = 5;

/// Blocks smaller than this cannot serve any allocation (`sizeof(int)`).
const MIN_USEFUL: usize = 4;

/// `__pcpu_size_to_slot`: slot of a free size, ignoring the fully-free slot.
///
/// CONTEXT: any (pure arithmetic).
pub fn raw_size_to_slot(size: usize) -> usize {
    let highbit = usize::BITS - size.leading_zeros(); // fls()
    (highbit as isize - SLOT_BASE_SHIFT as isize + 2).max(1) as usize
}

/// Number of slots for a unit size: one per size class plus the last one for
/// fully free chunks.
///
/// CONTEXT: any (pure arithmetic).
pub fn nr_slots(unit_size: usize) -> usize {
    raw_size_to_slot(unit_size) + 2
}

/// `pcpu_size_to_slot`: a free size equal to the unit goes to the last slot.
///
/// CONTEXT: any (pure arithmetic).
pub fn size_to_slot(size: usize, unit_size: usize) -> usize {
    if size == unit_size {
        nr_slots(unit_size) - 1
    } else {
        raw_size_to_slot(size)
    }
}

/// `pcpu_chunk_slot`: chunks that cannot serve even the smallest
/// allocation go to slot 0.
///
/// CONTEXT: any (pure arithmetic).
pub fn chunk_slot(free_size: usize, contig_hint: usize, unit_size: usize) -> usize {
    if free_size < MIN_USEFUL || contig_hint < MIN_USEFUL {
        0
    } else {
        size_to_slot(free_size, unit_size)
    }
}

#[derive(Clone, Copy, Default)]
struct SlotList {
    first: Option<ChunkPtr>,
    last: Option<ChunkPtr>,
}

/// Everything `pcpu_lock` protects besides the chunks' own index parts.
pub(crate) struct Index {
    slots: [SlotList; MAX_SLOTS],
    nr_slots: usize,
    unit_size: usize,
    /// Chunks other than the first ones, sorted by base address.
    by_addr: NonNull<ChunkPtr>,
    by_addr_len: usize,
    by_addr_cap: usize,
    /// The chunk that serves dynamic allocations from the first chunk's area.
    pub(crate) first_chunk: ChunkPtr,
    /// The chunk serving `alloc_reserved` (shares the first chunk's area).
    pub(crate) reserved_chunk: Option<ChunkPtr>,
    /// End of the reserved area (`pcpu_reserved_chunk_limit`).
    pub(crate) reserved_limit: usize,
    /// Base and size of the first chunk's virtual area.
    first_base: usize,
    chunk_size: usize,
    pub(crate) stats: Stats,
}

// SAFETY: the Index is only reached through `Shared::get` (rule I); the chunk
// pointers it holds are addresses governed by the same rule.
unsafe impl Send for Index {}

impl Index {
    /// # Safety
    /// `by_addr` must be writable storage for `cap` chunk pointers, owned by
    /// the index for its whole life.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        unit_size: usize,
        chunk_size: usize,
        first_base: usize,
        first_chunk: ChunkPtr,
        reserved_chunk: Option<ChunkPtr>,
        reserved_limit: usize,
        by_addr: NonNull<ChunkPtr>,
        cap: usize,
    ) -> Self {
        let nr_slots = nr_slots(unit_size);
        assert!(
            nr_slots <= MAX_SLOTS,
            "unit size too large for the slot table"
        );
        Index {
            slots: [SlotList::default(); MAX_SLOTS],
            nr_slots,
            unit_size,
            by_addr,
            by_addr_len: 0,
            by_addr_cap: cap,
            first_chunk,
            reserved_chunk,
            reserved_limit,
            first_base,
            chunk_size,
            stats: Stats::default(),
        }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn nr_slots(&self) -> usize {
        self.nr_slots
    }

    /// The area map, `free_size` and `contig_hint` of `chunk`.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn areas(&mut self, chunk: ChunkPtr) -> &mut crate::area_map::AreaMap {
        // SAFETY: rule I: `&mut self` proves pcpu_lock; the reference borrows
        // self, so no second one to the same chunk can coexist.
        unsafe { &mut chunk.index_part().areas }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn slot_of(&mut self, chunk: ChunkPtr) -> usize {
        let unit = self.unit_size;
        let areas = self.areas(chunk);
        chunk_slot(areas.free_size, areas.contig_hint, unit)
    }

    /// The slot `chunk` belongs on according to its current state.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn current_slot(&mut self, chunk: ChunkPtr) -> usize {
        self.slot_of(chunk)
    }

    /// The slot list `chunk` is on, if any.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn listed_slot(&mut self, chunk: ChunkPtr) -> Option<usize> {
        // SAFETY: rule I, as in `areas`.
        unsafe { chunk.index_part().slot }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn first_in_slot(&self, slot: usize) -> Option<ChunkPtr> {
        self.slots[slot].first
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn next_in_slot(&mut self, chunk: ChunkPtr) -> Option<ChunkPtr> {
        // SAFETY: rule I, as in `areas`.
        unsafe { chunk.index_part().next }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn unlink(&mut self, chunk: ChunkPtr) {
        // SAFETY: rule I; each index_part reference below is dropped before
        // the next is made.
        let (slot, prev, next) = unsafe {
            let part = chunk.index_part();
            let links = (part.slot, part.prev, part.next);
            part.slot = None;
            part.prev = None;
            part.next = None;
            links
        };
        let Some(slot) = slot else { return };
        match prev {
            // SAFETY: rule I.
            Some(p) => unsafe { p.index_part().next = next },
            None => self.slots[slot].first = next,
        }
        match next {
            // SAFETY: rule I.
            Some(n) => unsafe { n.index_part().prev = prev },
            None => self.slots[slot].last = prev,
        }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn push_front(&mut self, slot: usize, chunk: ChunkPtr) {
        let old_first = self.slots[slot].first;
        // SAFETY: rule I; one index_part reference at a time.
        unsafe {
            let part = chunk.index_part();
            part.slot = Some(slot);
            part.prev = None;
            part.next = old_first;
        }
        match old_first {
            // SAFETY: rule I.
            Some(f) => unsafe { f.index_part().prev = Some(chunk) },
            None => self.slots[slot].last = Some(chunk),
        }
        self.slots[slot].first = Some(chunk);
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn push_back(&mut self, slot: usize, chunk: ChunkPtr) {
        let old_last = self.slots[slot].last;
        // SAFETY: rule I; one index_part reference at a time.
        unsafe {
            let part = chunk.index_part();
            part.slot = Some(slot);
            part.prev = old_last;
            part.next = None;
        }
        match old_last {
            // SAFETY: rule I.
            Some(l) => unsafe { l.index_part().next = Some(chunk) },
            None => self.slots[slot].first = Some(chunk),
        }
        self.slots[slot].last = Some(chunk);
    }

    /// `pcpu_chunk_relocate`: move `chunk` to the slot its state calls for.
    /// A chunk that got fuller goes to the tail of its new list, one that got
    /// emptier to the head. The reserved chunk is never on a slot list.
    ///
    /// CONTEXT: pcpu_lock (`&mut self`).
    pub(crate) fn relocate(&mut self, chunk: ChunkPtr, oslot: Option<usize>) {
        if Some(chunk) == self.reserved_chunk {
            return;
        }
        let nslot = self.slot_of(chunk);
        if oslot == Some(nslot) {
            return;
        }
        self.unlink(chunk);
        match oslot {
            Some(o) if o > nslot => self.push_back(nslot, chunk),
            _ => self.push_front(nslot, chunk),
        }
    }

    /// `pcpu_alloc_area` with its slot relocation.
    ///
    /// CONTEXT: pcpu_lock (`&mut self`); the map has room for two entries.
    pub(crate) fn alloc_area(
        &mut self,
        chunk: ChunkPtr,
        size: usize,
        align: usize,
    ) -> Option<usize> {
        let oslot = self.slot_of(chunk);
        let off = self.areas(chunk).alloc(size, align);
        self.relocate(chunk, Some(oslot));
        off
    }

    /// `pcpu_free_area` with its slot relocation.
    ///
    /// CONTEXT: pcpu_lock (`&mut self`).
    pub(crate) fn free_area(&mut self, chunk: ChunkPtr, off: usize) {
        let oslot = self.slot_of(chunk);
        self.areas(chunk).free(off);
        self.relocate(chunk, Some(oslot));
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn by_addr(&self) -> &[ChunkPtr] {
        // SAFETY: `new`'s contract; `len <= cap`.
        unsafe { core::slice::from_raw_parts(self.by_addr.as_ptr(), self.by_addr_len) }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn by_addr_storage(&mut self) -> &mut [ChunkPtr] {
        // SAFETY: `new`'s contract; the first `len` entries are initialised and
        // `insert` writes before it reads beyond them.
        unsafe { core::slice::from_raw_parts_mut(self.by_addr.as_ptr(), self.by_addr_cap) }
    }

    /// Whether the address tree can take another chunk.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn has_room_for_chunk(&self) -> bool {
        self.by_addr_len < self.by_addr_cap
    }

    /// Number of chunks other than the first ones.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn nr_dynamic_chunks(&self) -> usize {
        self.by_addr_len
    }

    /// `pcpu_chunk_addr_insert`.
    ///
    /// CONTEXT: pcpu_lock (`&mut self`).
    pub(crate) fn addr_insert(&mut self, chunk: ChunkPtr) {
        assert!(self.has_room_for_chunk(), "percpu: address tree full");
        let base = chunk.base();
        let pos = match self.by_addr().binary_search_by_key(&base, |c| c.base()) {
            Ok(_) => panic!("percpu: two chunks at {base:#x}"),
            Err(pos) => pos,
        };
        let len = self.by_addr_len;
        let storage = self.by_addr_storage();
        storage.copy_within(pos..len, pos + 1);
        storage[pos] = chunk;
        self.by_addr_len += 1;
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn addr_remove(&mut self, chunk: ChunkPtr) {
        let pos = self
            .by_addr()
            .binary_search_by_key(&chunk.base(), |c| c.base())
            .expect("percpu: removing a chunk that is not in the tree");
        let len = self.by_addr_len;
        self.by_addr_storage().copy_within(pos + 1..len, pos);
        self.by_addr_len -= 1;
    }

    /// `pcpu_chunk_addr_search`: the chunk whose area contains `addr`
    /// (an address in unit 0). Panics like the seed's `BUG_ON` if none can.
    ///
    /// CONTEXT: pcpu_lock (`&mut self`).
    pub(crate) fn addr_search(&self, addr: usize) -> ChunkPtr {
        if addr >= self.first_base && addr < self.first_base + self.chunk_size {
            if addr < self.first_base + self.reserved_limit {
                if let Some(reserved) = self.reserved_chunk {
                    return reserved;
                }
            }
            return self.first_chunk;
        }
        let chunks = self.by_addr();
        let pos = chunks.partition_point(|c| c.base() <= addr);
        assert!(pos > 0, "percpu: no chunk contains {addr:#x}");
        chunks[pos - 1]
    }

    /// The chunks in the address tree, in address order.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn dynamic_chunks(&self) -> &[ChunkPtr] {
        self.by_addr()
    }

    /// Whether a fully free chunk other than `chunk` is on the last slot (the
    /// test `free_percpu` uses to decide whether to wake the reclaimer).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn other_free_chunk_than(&mut self, chunk: ChunkPtr) -> bool {
        let mut pos = self.first_in_slot(self.nr_slots - 1);
        while let Some(c) = pos {
            if c != chunk {
                return true;
            }
            pos = self.next_in_slot(c);
        }
        false
    }

    /// The body of `pcpu_reclaim` under both locks: unlink every fully free
    /// chunk but the first one on the last slot, from the slot lists and the
    /// address tree, and hand them back in a list threaded through their
    /// `next` links.
    ///
    /// CONTEXT: pcpu_alloc_mutex and pcpu_lock (the caller's witnesses).
    pub(crate) fn unlink_reclaimable(&mut self) -> ReclaimList {
        let last = self.nr_slots - 1;
        let mut todo = ReclaimList { head: None };
        let Some(keep) = self.first_in_slot(last) else {
            return todo;
        };
        while let Some(victim) = self.next_in_slot(keep) {
            self.unlink(victim);
            self.addr_remove(victim);
            // SAFETY: rule I; the chunk is now unlinked and reused as a todo
            // list node.
            unsafe { victim.index_part().next = todo.head };
            todo.head = Some(victim);
            self.stats.chunks_reclaimed += 1;
        }
        todo
    }

    /// Whether `chunk`, whose base was `base` when it was last known to be
    /// live, is still in the index: one of the first chunks or in the address
    /// tree. Reads no memory of `chunk` itself, which may have been freed.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn holds(&self, chunk: ChunkPtr, base: usize) -> bool {
        chunk == self.first_chunk
            || Some(chunk) == self.reserved_chunk
            || self
                .by_addr()
                .binary_search_by_key(&base, |c| c.base())
                .is_ok_and(|pos| self.by_addr()[pos] == chunk)
    }

    /// Checks the index's invariants, which hold between `pcpu_lock`
    /// sections: the address tree sorted; every chunk's area map sound (see
    /// `AreaMap::check`); every chunk but the reserved one on the slot list
    /// its state calls for, the reserved one on none; the slot lists well
    /// linked (each chunk's slot and prev links match the list it is on,
    /// each list's last entry is its tail) and holding exactly the index's
    /// chunks.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    pub(crate) fn check(&mut self) -> Result<(), IndexProblem> {
        if let Some(i) = self
            .by_addr()
            .windows(2)
            .position(|w| w[0].base() >= w[1].base())
        {
            return Err(IndexProblem::Unsorted { position: i + 1 });
        }
        let first = self.first_chunk;
        let reserved = self.reserved_chunk.filter(|&r| r != first);
        let nr_chunks = 2 + self.by_addr_len;
        for i in 0..nr_chunks {
            let chunk = match i {
                0 => first,
                1 => match reserved {
                    Some(reserved) => reserved,
                    None => continue,
                },
                _ => self.by_addr()[i - 2],
            };
            let base = chunk.base();
            self.areas(chunk)
                .check()
                .map_err(|problem| IndexProblem::Map {
                    chunk: base,
                    problem,
                })?;
            let expected = (Some(chunk) != reserved).then(|| self.slot_of(chunk));
            let listed = self.listed_slot(chunk);
            if listed != expected {
                return Err(IndexProblem::WrongSlot {
                    chunk: base,
                    listed,
                    expected,
                });
            }
        }
        // The first chunk and the address tree's chunks; the reserved one is
        // on no list.
        let expected = 1 + self.by_addr_len;
        let mut listed = 0;
        for slot in 0..self.nr_slots {
            let mut prev = None;
            let mut pos = self.slots[slot].first;
            while let Some(chunk) = pos {
                listed += 1;
                if listed > expected {
                    return Err(IndexProblem::ListedCount { listed, expected });
                }
                let base = chunk.base();
                if !self.holds(chunk, base) || Some(chunk) == reserved {
                    return Err(IndexProblem::Unindexed { slot, chunk: base });
                }
                // SAFETY: rule I, as in `areas`.
                let (on, back, next) = unsafe {
                    let part = chunk.index_part();
                    (part.slot, part.prev, part.next)
                };
                if on != Some(slot) || back != prev {
                    return Err(IndexProblem::BrokenList { slot, chunk: base });
                }
                prev = Some(chunk);
                pos = next;
            }
            if self.slots[slot].last != prev {
                let at = self.slots[slot].last.map_or(0, |c| c.base());
                return Err(IndexProblem::BrokenList { slot, chunk: at });
            }
        }
        if listed != expected {
            return Err(IndexProblem::ListedCount { listed, expected });
        }
        Ok(())
    }
}

/// A broken index invariant found by [`crate::Percpu::check`]; chunks are
/// named by their base address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexProblem {
    /// A chunk's area map is unsound.
    Map {
        /// The chunk.
        chunk: usize,
        /// What is wrong with its map.
        problem: MapProblem,
    },
    /// A chunk is on another slot list than its state calls for (`None`:
    /// on no list).
    WrongSlot {
        /// The chunk.
        chunk: usize,
        /// The slot whose list holds it.
        listed: Option<usize>,
        /// The slot its free space calls for.
        expected: Option<usize>,
    },
    /// A slot list's links are inconsistent at this chunk.
    BrokenList {
        /// The slot.
        slot: usize,
        /// Where the links disagree.
        chunk: usize,
    },
    /// A slot list holds a chunk the index does not (or the reserved one).
    Unindexed {
        /// The slot.
        slot: usize,
        /// The chunk not in the index.
        chunk: usize,
    },
    /// The slot lists hold another number of chunks than the index (or
    /// loop).
    ListedCount {
        /// Chunks counted on the lists (the count stops one past `expected`).
        listed: usize,
        /// Chunks in the index.
        expected: usize,
    },
    /// The address tree is out of order at this position.
    Unsorted {
        /// The position in the address-ordered chunk array.
        position: usize,
    },
}

impl core::fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let slot = |slot: Option<usize>| match slot {
            Some(s) => s as isize,
            None => -1,
        };
        match *self {
            IndexProblem::Map { chunk, problem } => {
                write!(f, "chunk 0x{chunk:x}: area map: {problem}")
            }
            IndexProblem::WrongSlot {
                chunk,
                listed,
                expected,
            } => write!(
                f,
                "chunk 0x{chunk:x} is on slot list {} but belongs on {} (-1: none)",
                slot(listed),
                slot(expected)
            ),
            IndexProblem::BrokenList { slot, chunk } => {
                write!(f, "slot {slot}'s list is broken at chunk 0x{chunk:x}")
            }
            IndexProblem::Unindexed { slot, chunk } => write!(
                f,
                "slot {slot}'s list holds chunk 0x{chunk:x}, which the index does not"
            ),
            IndexProblem::ListedCount { listed, expected } => write!(
                f,
                "{listed} chunks on the slot lists, {expected} in the index"
            ),
            IndexProblem::Unsorted { position } => {
                write!(f, "the address tree is out of order at position {position}")
            }
        }
    }
}

/// Chunks unlinked by `unlink_reclaimable`, threaded through `next`.
pub(crate) struct ReclaimList {
    head: Option<ChunkPtr>,
}

impl Iterator for ReclaimList {
    type Item = Unlinked;

    /// CONTEXT: pcpu_lock (or pcpu_mutex): `&mut Index` exists only under it; never sleeps.
    fn next(&mut self) -> Option<Unlinked> {
        let chunk = self.head?;
        // SAFETY: rule U: `unlink_reclaimable` removed the chunk from every
        // shared structure under both locks; this list is its only path.
        let mut unlinked = unsafe { Unlinked::new(chunk) };
        self.head = unlinked.index_part().next.take();
        Some(unlinked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_seed() {
        // max(fls(size) - 3, 1): sizes up to 15 bytes share slot 1, then one
        // slot per power of two.
        assert_eq!(raw_size_to_slot(1), 1);
        assert_eq!(raw_size_to_slot(15), 1);
        assert_eq!(raw_size_to_slot(16), 2);
        assert_eq!(raw_size_to_slot(31), 2);
        assert_eq!(raw_size_to_slot(32), 3);
        assert_eq!(raw_size_to_slot(4096), 10);
        let unit = 64 << 10;
        assert_eq!(nr_slots(unit), 16);
        assert_eq!(size_to_slot(unit, unit), 15, "fully free chunks: last slot");
        assert_eq!(size_to_slot(unit - 4, unit), 13);
        assert_eq!(chunk_slot(3, 3, unit), 0, "nothing usable left");
        assert_eq!(chunk_slot(100, 2, unit), 0, "only tiny fragments");
        assert_eq!(chunk_slot(100, 100, unit), 4);
    }
}
