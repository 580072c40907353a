//! A fast, deterministic hasher for the analyses' and the recorder's maps: their
//! keys are addresses, ids and small tuples of them, which need no protection
//! from chosen collisions, and whose hashing is on the per-event path. The
//! multiply-rotate step of rustc's `FxHasher`; no random state, so iteration
//! order is the same on every run and host.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// See the module documentation.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        // The product's low bits depend only on the key's low bits, and hashbrown
        // picks buckets by the low bits: page-aligned keys would all start at
        // bucket 0. Rotating brings the well-mixed high bits down.
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes a step (slices of integers hash as their bytes).
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64)
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64)
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64)
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64)
    }
}

/// Builds [`FxHasher`]s.
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;
/// A `HashSet` with [`FxHasher`].
pub type FxHashSet<K> = HashSet<K, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
        let mut h = FxHasher::default();
        value.hash(&mut h);
        h.finish()
    }

    #[test]
    fn the_same_key_hashes_the_same_and_neighbours_apart() {
        let stack = vec![0x4008_e980u64, 0x4008_d78c];
        assert_eq!(hash(&stack), hash(&stack.clone()));
        assert_ne!(hash(&stack), hash(&vec![0x4008_e980u64, 0x4008_d790]));
        assert_ne!(hash(&(1usize, 2u64)), hash(&(2usize, 1u64)));
        // Bytes past the last whole word count too.
        assert_ne!(hash(&[1u8, 2, 3][..]), hash(&[1u8, 2, 4][..]));
    }

    /// Hash maps pick a key's first bucket from the hash's low bits: page
    /// addresses (twelve low zero bits) must not all start in the same one.
    #[test]
    fn page_aligned_keys_spread_over_the_low_bits() {
        let pages = 256u64;
        let buckets: FxHashSet<u64> = (0..pages)
            .map(|page| hash(&(0x4000_0000 + (page << 12))) & (pages - 1))
            .collect();
        assert!(
            buckets.len() > pages as usize / 2,
            "{} buckets",
            buckets.len()
        );
    }
}
