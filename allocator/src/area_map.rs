//! The area map of one chunk: the seed's `chunk->map` with `free_size` and
//! `contig_hint`.
//!
//! The map is a run of signed sizes covering the unit from offset 0: a
//! positive entry is a free block of that many bytes, a negative one an
//! allocated block. Allocation scans it first-fit; free flips the sign back
//! and merges with free neighbours. `contig_hint` is, as in the seed, an upper
//! bound on the largest free block that becomes exact whenever a scan runs to
//! the end of the map.
//!
//! This module is pure bookkeeping: no locks, no platform. The caller (see
//! `index.rs`) holds `pcpu_lock` and handles slots and storage.

use core::ptr::NonNull;

/// Entries a fresh chunk's map starts with (`PCPU_DFL_MAP_ALLOC`).
pub const DFL_MAP_ALLOC: usize = 16;

/// Free blocks smaller than this are never split off (the seed's
/// `sizeof(int)`): they are absorbed into a neighbour instead.
const MIN_BLOCK: usize = 4;

/// One chunk's allocation map. The entry storage is owned by whoever built the
/// map (metadata memory from the platform, or a static for the first chunk).
pub struct AreaMap {
    map: NonNull<i32>,
    used: usize,
    alloc: usize,
    /// Bytes the map covers, fixed at creation (the sum of its entries'
    /// sizes, for [`AreaMap::check`]).
    size: usize,
    /// Free bytes in the chunk.
    pub free_size: usize,
    /// Upper bound on the largest free block.
    pub contig_hint: usize,
}

// SAFETY: an AreaMap owns its entry storage exclusively (see `from_raw`), so
// moving it to another thread moves that ownership along.
unsafe impl Send for AreaMap {}

impl AreaMap {
    /// Build a map over `alloc` entries at `storage` holding `initial`.
    ///
    /// # Safety
    /// `storage` must be valid for reads and writes of `alloc` `i32`s, owned
    /// by this map alone until it is replaced or dropped by the owner.
    ///
    /// CONTEXT: chunk creation (the chunk is not shared yet); never sleeps.
    pub unsafe fn from_raw(storage: NonNull<i32>, alloc: usize, initial: &[i32]) -> AreaMap {
        assert!(!initial.is_empty() && initial.len() <= alloc);
        let mut map = AreaMap {
            map: storage,
            used: initial.len(),
            alloc,
            size: initial.iter().map(|e| e.unsigned_abs() as usize).sum(),
            free_size: 0,
            contig_hint: 0,
        };
        map.entries_mut().copy_from_slice(initial);
        let mut largest = 0;
        for &e in initial {
            if e > 0 {
                map.free_size += e as usize;
                largest = largest.max(e as usize);
            }
        }
        map.contig_hint = largest;
        map
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    fn entries_mut(&mut self) -> &mut [i32] {
        // SAFETY: `from_raw`'s contract: `alloc` entries, exclusively ours.
        unsafe { core::slice::from_raw_parts_mut(self.map.as_ptr(), self.used) }
    }

    /// The used entries.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn entries(&self) -> &[i32] {
        // SAFETY: as `entries_mut`; `used <= alloc`.
        unsafe { core::slice::from_raw_parts(self.map.as_ptr(), self.used) }
    }

    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    fn storage(&mut self) -> &mut [i32] {
        // SAFETY: as `entries_mut`.
        unsafe { core::slice::from_raw_parts_mut(self.map.as_ptr(), self.alloc) }
    }

    /// Number of entries in use (`map_used`).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The entry storage (to free it with the chunk).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn storage_ptr(&self) -> NonNull<i32> {
        self.map
    }

    /// Number of entries the storage holds (`map_alloc`).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn capacity(&self) -> usize {
        self.alloc
    }

    /// Whether an allocation can proceed without extending the map: one
    /// allocation splits a block into at most three.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn has_room_for_alloc(&self) -> bool {
        self.alloc >= self.used + 2
    }

    /// The capacity `pcpu_extend_area_map` would grow the map to.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn extended_capacity(&self) -> usize {
        let mut new_alloc = DFL_MAP_ALLOC;
        while new_alloc < self.used + 2 {
            new_alloc *= 2;
        }
        new_alloc
    }

    /// Move the entries into `storage` of `alloc` entries and return the old
    /// storage with its capacity.
    ///
    /// # Safety
    /// As for [`AreaMap::from_raw`] for the new storage.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub unsafe fn replace_storage(
        &mut self,
        storage: NonNull<i32>,
        alloc: usize,
    ) -> (NonNull<i32>, usize) {
        // Only frees can have happened while pcpu_lock was dropped, so the map
        // can only have shrunk since the size was chosen.
        assert!(
            alloc >= self.used + 2,
            "area map grew while pcpu_lock was dropped"
        );
        // SAFETY: caller guarantees `alloc` writable entries at `storage`.
        let new = unsafe { core::slice::from_raw_parts_mut(storage.as_ptr(), alloc) };
        new[..self.used].copy_from_slice(self.entries());
        let old = (self.map, self.alloc);
        self.map = storage;
        self.alloc = alloc;
        old
    }

    /// `pcpu_split_block`: split block `i` into `head` free bytes, the block,
    /// and `tail` free bytes (either may be zero).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    fn split_block(&mut self, i: usize, head: usize, tail: usize) {
        let extra = usize::from(head != 0) + usize::from(tail != 0);
        assert!(
            self.alloc >= self.used + extra,
            "area map has no room to split"
        );
        let used = self.used;
        self.storage().copy_within(i..used, i + extra);
        self.used += extra;
        let map = self.entries_mut();
        let mut i = i;
        if head != 0 {
            map[i + 1] = map[i] - head as i32;
            map[i] = head as i32;
            i += 1;
        }
        if tail != 0 {
            map[i] -= tail as i32;
            map[i + 1] = tail as i32;
        }
    }

    /// `pcpu_alloc_area`: allocate `size` bytes aligned to `align` (a power of
    /// two) first-fit. Returns the offset, or `None` after a full scan (which
    /// also makes `contig_hint` exact). The map must have room for two more
    /// entries.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn alloc(&mut self, size: usize, align: usize) -> Option<usize> {
        debug_assert!(size > 0 && align.is_power_of_two());
        let mut max_contig = 0usize;
        let mut off = 0usize;
        let mut i = 0usize;
        while i < self.used {
            let is_last = i + 1 == self.used;
            let entry = self.entries()[i];
            let mut head = off.next_multiple_of(align) - off;
            debug_assert!(i != 0 || head == 0, "offset 0 is always aligned");

            if entry < 0 || (entry as usize) < head + size {
                if entry > 0 {
                    max_contig = max_contig.max(entry as usize);
                }
                off += entry.unsigned_abs() as usize;
                i += 1;
                continue;
            }

            // A head too small to be a block of its own, or one next to a free
            // block, goes to the previous block (allocated blocks simply grow).
            if head != 0 && (head < MIN_BLOCK || self.entries()[i - 1] > 0) {
                let map = self.entries_mut();
                if map[i - 1] > 0 {
                    map[i - 1] += head as i32;
                } else {
                    map[i - 1] -= head as i32;
                    self.free_size -= head;
                }
                self.entries_mut()[i] -= head as i32;
                off += head;
                head = 0;
            }

            // A tail too small to be a block stays with the allocation.
            let mut tail = self.entries()[i] as usize - head - size;
            if tail < MIN_BLOCK {
                tail = 0;
            }

            if head != 0 || tail != 0 {
                self.split_block(i, head, tail);
                if head != 0 {
                    i += 1;
                    off += head;
                    max_contig = max_contig.max(self.entries()[i - 1] as usize);
                }
                if tail != 0 {
                    max_contig = max_contig.max(self.entries()[i + 1] as usize);
                }
            }

            if is_last {
                self.contig_hint = max_contig; // fully scanned
            } else {
                self.contig_hint = self.contig_hint.max(max_contig);
            }

            let size = self.entries()[i];
            self.free_size -= size as usize;
            self.entries_mut()[i] = -size;
            return Some(off);
        }

        self.contig_hint = max_contig; // fully scanned
        None
    }

    /// `pcpu_free_area`: free the block that starts at `freeme` and merge it
    /// with free neighbours. Panics (the seed's `BUG_ON`) if no allocated block
    /// starts there.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn free(&mut self, freeme: usize) {
        let mut off = 0usize;
        let mut i = 0usize;
        while i < self.used && off != freeme {
            off += self.entries()[i].unsigned_abs() as usize;
            i += 1;
        }
        assert!(
            i < self.used && off == freeme,
            "percpu: freeing offset {freeme:#x} which starts no block"
        );
        assert!(
            self.entries()[i] < 0,
            "percpu: double free of offset {freeme:#x}"
        );

        let map = self.entries_mut();
        map[i] = -map[i];
        self.free_size += map[i] as usize;

        if i > 0 && self.entries()[i - 1] >= 0 {
            let used = self.used;
            let map = self.storage();
            map[i - 1] += map[i];
            map.copy_within(i + 1..used, i);
            self.used -= 1;
            i -= 1;
        }
        if i + 1 < self.used && self.entries()[i + 1] >= 0 {
            let used = self.used;
            let map = self.storage();
            map[i] += map[i + 1];
            map.copy_within(i + 2..used, i + 1);
            self.used -= 1;
        }

        self.contig_hint = self.contig_hint.max(self.entries()[i] as usize);
    }

    /// Largest free block, computed by a scan (for checks; the allocator uses
    /// `contig_hint`).
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn largest_free(&self) -> usize {
        self.entries()
            .iter()
            .filter(|&&e| e > 0)
            .map(|&e| e as usize)
            .max()
            .unwrap_or(0)
    }

    /// Total bytes covered by the map.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn span(&self) -> usize {
        self.entries()
            .iter()
            .map(|e| e.unsigned_abs() as usize)
            .sum()
    }

    /// Checks the map's invariants, which hold whenever nobody is changing it
    /// (between `pcpu_lock` sections): at most `alloc` entries, none empty, no
    /// two free neighbours (free merges them), covering the bytes it covered
    /// at creation; `free_size` the sum of the free blocks and `contig_hint`
    /// at least the largest one. A map changed by two CPUs at once (a free
    /// that skipped `pcpu_lock`) breaks them.
    ///
    /// CONTEXT: pcpu_lock (or pcpu_mutex), held by whoever reached this map through the index; never sleeps.
    pub fn check(&self) -> Result<(), MapProblem> {
        if self.used == 0 || self.used > self.alloc {
            return Err(MapProblem::EntriesInUse {
                used: self.used,
                alloc: self.alloc,
            });
        }
        let entries = self.entries();
        if let Some(entry) = entries.iter().position(|&e| e == 0) {
            return Err(MapProblem::EmptyBlock { entry });
        }
        if let Some(entry) = entries.windows(2).position(|w| w[0] > 0 && w[1] > 0) {
            return Err(MapProblem::UnmergedFree { entry });
        }
        if self.span() != self.size {
            return Err(MapProblem::Span {
                found: self.span(),
                expected: self.size,
            });
        }
        let free: usize = entries
            .iter()
            .filter(|&&e| e > 0)
            .map(|&e| e as usize)
            .sum();
        if self.free_size != free {
            return Err(MapProblem::FreeSize {
                found: self.free_size,
                expected: free,
            });
        }
        if self.contig_hint < self.largest_free() {
            return Err(MapProblem::ContigHint {
                hint: self.contig_hint,
                largest: self.largest_free(),
            });
        }
        Ok(())
    }
}

/// A broken area-map invariant (see [`AreaMap::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapProblem {
    /// No entry in use, or more than the storage holds.
    EntriesInUse {
        /// Entries in use (`map_used`).
        used: usize,
        /// Entries the storage holds (`map_alloc`).
        alloc: usize,
    },
    /// A block of zero bytes.
    EmptyBlock {
        /// Its index in the map.
        entry: usize,
    },
    /// Two free blocks side by side (`entry` and the next).
    UnmergedFree {
        /// The first one's index in the map.
        entry: usize,
    },
    /// The blocks no longer add up to the bytes the map covers.
    Span {
        /// Bytes the blocks add up to.
        found: usize,
        /// Bytes the map covers.
        expected: usize,
    },
    /// `free_size` is not the sum of the free blocks.
    FreeSize {
        /// `free_size` as kept.
        found: usize,
        /// The sum of the free blocks.
        expected: usize,
    },
    /// `contig_hint` is below the largest free block.
    ContigHint {
        /// `contig_hint` as kept.
        hint: usize,
        /// The largest free block's size.
        largest: usize,
    },
}

impl core::fmt::Display for MapProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            MapProblem::EntriesInUse { used, alloc } => {
                write!(f, "{used} entries in use of {alloc}")
            }
            MapProblem::EmptyBlock { entry } => write!(f, "entry {entry} is an empty block"),
            MapProblem::UnmergedFree { entry } => {
                write!(
                    f,
                    "entries {entry} and {} are unmerged free blocks",
                    entry + 1
                )
            }
            MapProblem::Span { found, expected } => {
                write!(
                    f,
                    "blocks add up to {found} bytes, the map covers {expected}"
                )
            }
            MapProblem::FreeSize { found, expected } => {
                write!(
                    f,
                    "free_size is {found}, the free blocks add up to {expected}"
                )
            }
            MapProblem::ContigHint { hint, largest } => write!(
                f,
                "contig_hint {hint} is below the largest free block ({largest})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A map with its own storage, for tests.
    struct Owned {
        _storage: Vec<i32>,
        map: AreaMap,
    }

    fn owned(alloc: usize, initial: &[i32]) -> Owned {
        let mut storage = vec![0i32; alloc];
        let ptr = NonNull::new(storage.as_mut_ptr()).unwrap();
        // SAFETY: the Vec lives as long as the map inside `Owned` and is not
        // touched otherwise.
        let map = unsafe { AreaMap::from_raw(ptr, alloc, initial) };
        Owned {
            _storage: storage,
            map,
        }
    }

    fn check_invariants(m: &AreaMap) {
        assert_eq!(m.check(), Ok(()), "{:?}", m.entries());
        let free: usize = m
            .entries()
            .iter()
            .filter(|&&e| e > 0)
            .map(|&e| e as usize)
            .sum();
        assert_eq!(
            m.free_size,
            free,
            "free_size matches the map: {:?}",
            m.entries()
        );
        assert!(
            m.contig_hint >= m.largest_free(),
            "contig_hint is an upper bound"
        );
        assert!(m.entries().iter().all(|&e| e != 0), "no empty blocks");
        for w in m.entries().windows(2) {
            assert!(
                !(w[0] > 0 && w[1] > 0),
                "free neighbours merged: {:?}",
                m.entries()
            );
        }
    }

    #[test]
    fn check_names_the_broken_invariant() {
        let o = owned(16, &[10, 20]);
        assert_eq!(o.map.check(), Err(MapProblem::UnmergedFree { entry: 0 }));
        let mut o = owned(16, &[-10, 20]);
        assert_eq!(o.map.check(), Ok(()));
        o.map.free_size = 7;
        assert_eq!(
            o.map.check(),
            Err(MapProblem::FreeSize {
                found: 7,
                expected: 20
            })
        );
        o.map.free_size = 20;
        o.map.contig_hint = 3;
        assert_eq!(
            o.map.check(),
            Err(MapProblem::ContigHint {
                hint: 3,
                largest: 20
            })
        );
    }

    #[test]
    fn fresh_map_describes_one_free_block() {
        let o = owned(16, &[4096]);
        assert_eq!(o.map.entries(), &[4096]);
        assert_eq!(o.map.free_size, 4096);
        assert_eq!(o.map.contig_hint, 4096);
    }

    #[test]
    fn alloc_splits_off_the_tail() {
        let mut o = owned(16, &[4096]);
        assert_eq!(o.map.alloc(100, 4), Some(0));
        assert_eq!(o.map.entries(), &[-100, 3996]);
        assert_eq!(o.map.free_size, 3996);
        // The last block was scanned: the hint is exact.
        assert_eq!(o.map.contig_hint, 3996);
        check_invariants(&o.map);
    }

    #[test]
    fn alignment_splits_a_head_and_is_honoured() {
        let mut o = owned(16, &[4096]);
        assert_eq!(o.map.alloc(10, 1), Some(0));
        let off = o.map.alloc(64, 64).unwrap();
        assert_eq!(off, 64);
        assert_eq!(o.map.entries(), &[-10, 54, -64, 3968]);
        check_invariants(&o.map);
        for align in [1, 2, 8, 128, 1024, 4096] {
            if let Some(off) = o.map.alloc(3, align) {
                assert_eq!(off % align, 0);
            }
            check_invariants(&o.map);
        }
    }

    #[test]
    fn tiny_head_is_absorbed_by_the_previous_allocation() {
        let mut o = owned(16, &[4096]);
        assert_eq!(o.map.alloc(2, 1), Some(0));
        // head of 2 bytes < MIN_BLOCK: the first allocation grows to 4.
        assert_eq!(o.map.alloc(8, 4), Some(4));
        assert_eq!(o.map.entries(), &[-4, -8, 4084]);
        assert_eq!(o.map.free_size, 4084);
        check_invariants(&o.map);
    }

    #[test]
    fn tiny_tail_stays_with_the_allocation() {
        let mut o = owned(16, &[-8, 10, -16, 4062]);
        assert_eq!(o.map.alloc(8, 1), Some(8));
        assert_eq!(o.map.entries(), &[-8, -10, -16, 4062]);
        check_invariants(&o.map);
    }

    #[test]
    fn free_merges_with_both_neighbours() {
        let mut o = owned(16, &[4096]);
        let a = o.map.alloc(16, 1).unwrap();
        let b = o.map.alloc(16, 1).unwrap();
        let c = o.map.alloc(16, 1).unwrap();
        let _d = o.map.alloc(16, 1).unwrap();
        o.map.free(a);
        assert_eq!(o.map.entries(), &[16, -16, -16, -16, 4032]);
        o.map.free(c);
        assert_eq!(o.map.entries(), &[16, -16, 16, -16, 4032]);
        o.map.free(b); // merges with a and c
        assert_eq!(o.map.entries(), &[48, -16, 4032]);
        check_invariants(&o.map);
        o.map.free(48);
        assert_eq!(o.map.entries(), &[4096]);
        assert_eq!(o.map.free_size, 4096);
        assert_eq!(o.map.contig_hint, 4096);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let mut o = owned(16, &[4096]);
        let a = o.map.alloc(16, 1).unwrap();
        o.map.alloc(16, 1).unwrap();
        o.map.free(a);
        o.map.free(a);
    }

    #[test]
    #[should_panic(expected = "starts no block")]
    fn free_inside_a_block_is_caught() {
        let mut o = owned(16, &[4096]);
        o.map.alloc(16, 1).unwrap();
        o.map.free(8);
    }

    #[test]
    fn contig_hint_is_exact_after_a_failed_scan() {
        let mut o = owned(16, &[4096]);
        let offs: Vec<usize> = (0..8).map(|_| o.map.alloc(512, 1).unwrap()).collect();
        o.map.free(offs[1]);
        o.map.free(offs[5]);
        o.map.free(offs[6]);
        assert_eq!(o.map.largest_free(), 1024);
        assert!(o.map.contig_hint >= 1024);
        assert_eq!(o.map.alloc(2048, 1), None);
        assert_eq!(o.map.contig_hint, 1024);
        // Allocating the largest block (not the last one) keeps the hint an
        // upper bound, as in the seed.
        assert_eq!(o.map.alloc(1024, 1), Some(5 * 512));
        assert!(o.map.contig_hint >= o.map.largest_free());
        check_invariants(&o.map);
    }

    #[test]
    fn replace_storage_keeps_entries() {
        let mut o = owned(4, &[4096]);
        o.map.alloc(8, 8).unwrap();
        o.map.alloc(8, 64).unwrap();
        assert!(!o.map.has_room_for_alloc());
        assert_eq!(o.map.extended_capacity(), 16);
        let mut bigger = vec![0i32; 16];
        let before: Vec<i32> = o.map.entries().to_vec();
        // SAFETY: `bigger` outlives the map's use below.
        let (_old, old_alloc) = unsafe {
            o.map
                .replace_storage(NonNull::new(bigger.as_mut_ptr()).unwrap(), 16)
        };
        assert_eq!(old_alloc, 4);
        assert_eq!(o.map.entries(), &before[..]);
        assert!(o.map.has_room_for_alloc());
        o.map.alloc(8, 1).unwrap();
        check_invariants(&o.map);
        drop(o);
        drop(bigger);
    }

    /// A brute-force model of a unit: which bytes are in use.
    #[test]
    fn random_sequences_keep_the_invariants() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _round in 0..50 {
            let mut storage = vec![0i32; 1024];
            // SAFETY: `storage` outlives `map` in this scope.
            let mut map = unsafe {
                AreaMap::from_raw(NonNull::new(storage.as_mut_ptr()).unwrap(), 1024, &[8192])
            };
            let mut live: Vec<(usize, usize)> = Vec::new();
            for _ in 0..200 {
                if next() % 3 != 0 || live.is_empty() {
                    let size = 1 + (next() % 300) as usize;
                    let align = 1 << (next() % 8);
                    assert!(map.has_room_for_alloc());
                    let hint_before = map.contig_hint;
                    match map.alloc(size, align) {
                        Some(off) => {
                            assert_eq!(off % align, 0);
                            assert!(off + size <= 8192);
                            for &(o, s) in &live {
                                assert!(off + size <= o || o + s <= off, "overlap");
                            }
                            live.push((off, size));
                        }
                        None => {
                            assert!(hint_before >= map.contig_hint);
                            assert!(map.largest_free() < size + align);
                        }
                    }
                } else {
                    let idx = (next() as usize) % live.len();
                    let (off, _) = live.swap_remove(idx);
                    let before = map.free_size;
                    map.free(off);
                    assert!(map.free_size > before);
                }
                check_invariants(&map);
                assert_eq!(map.span(), 8192);
            }
            for (off, _) in live.drain(..) {
                map.free(off);
            }
            assert_eq!(map.entries(), &[8192]);
        }
    }
}
