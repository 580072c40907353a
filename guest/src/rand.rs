//! Workload randomness: SplitMix64 streams derived from the bootargs' `seed`, one
//! per use and CPU, so a run is a function of the seed and the interleaving only.

use crate::bootinfo::boot_info;

pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream for `stream` (a constant naming the use) on CPU `cpu`.
    ///
    /// CONTEXT: any, after boot.
    pub fn new(stream: u64, cpu: usize) -> Self {
        let mut rng = Rng {
            state: boot_info().seed,
        };
        rng.state ^= rng.next_u64() ^ stream.rotate_left(17) ^ (cpu as u64).rotate_left(40);
        rng
    }

    /// CONTEXT: any; pure state update.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (bound > 0).
    ///
    /// CONTEXT: any.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}
