//! Hooks on instructions that always start a translation block, run from the
//! core's block hook rather than as Unicorn code hooks.
//!
//! Unicorn runs code hooks through one helper that walks the engine's whole list
//! of code hooks at every hit (`helper_uc_tracecode`, checking each hook's
//! range): a recorded storm run on the checked MMU had 80 of them, hit about
//! 650 000 times per 100 M guest instructions, which cost about 15% of the run
//! (fewer since: see [`crate::code_sites`]).
//! An instruction that no translation block can reach but from its own start
//! is reached only where the block hook runs anyway; a bit test there costs one
//! load per block.
//!
//! Such an instruction is one whose predecessor ends every block that holds it
//! (a branch, an exception-generating instruction: what follows starts a new
//! block), or padding after an instruction that never continues (a jump, a
//! return: the padding is never reached).

use std::cell::{Cell, RefCell};
use std::fmt;

use traces::fx::FxHashMap;
use unicorn_engine::Unicorn;

use crate::kernel::KernelImage;
use crate::record::abi::IsaAbi;

/// A hook run at the start of each block that starts at its address, given the
/// core's slice counter `C`.
pub(crate) type BlockStartFn<C> = Box<dyn FnMut(&mut Unicorn<'_, ()>, &C, u64)>;

/// Bits of the filter, one per 4-byte instruction slot modulo its size.
const FILTER_BITS: usize = 1 << 14;

/// Longest block, in bytes, that [`BlockStartHooks::needs_look`] answers from its
/// filter: a longer one always gets a look. Blocks are mostly a few instructions.
const WATCH_REACH: u64 = 256;

/// One core's block-start hooks, and the filter that spares most blocks any look
/// beyond counting their instructions.
pub(crate) struct BlockStartHooks<C> {
    /// A bit per hooked address (hashed): clear means no hook there.
    filter: Bitmap,
    /// A bit per block start (hashed) where a block of at most [`WATCH_REACH`]
    /// bytes may hold a hooked address or a watched instruction: clear means
    /// neither. One bit test per block where two filters took a dozen instructions.
    looks: Bitmap,
    hooks: RefCell<FxHashMap<u64, Vec<BlockStartFn<C>>>>,
}

/// [`FILTER_BITS`] bits, inline: the word index of a slot needs no bounds check.
type Bitmap = [Cell<u64>; FILTER_BITS / 64];

fn empty_filter() -> Bitmap {
    std::array::from_fn(|_| Cell::new(0))
}

fn set(filter: &[Cell<u64>], addr: u64) {
    let (word, bit) = slot(addr);
    filter[word].set(filter[word].get() | bit);
}

impl<C> Default for BlockStartHooks<C> {
    fn default() -> Self {
        Self {
            filter: empty_filter(),
            looks: empty_filter(),
            hooks: RefCell::default(),
        }
    }
}

impl<C> fmt::Debug for BlockStartHooks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<u64> = self.hooks.borrow().keys().copied().collect();
        f.debug_struct("BlockStartHooks")
            .field("addrs", &addrs)
            .finish()
    }
}

fn slot(addr: u64) -> (usize, u64) {
    let bit = (addr >> 2) as usize & (FILTER_BITS - 1);
    (bit / 64, 1 << (bit % 64))
}

impl<C> BlockStartHooks<C> {
    /// Runs `hook` whenever a block starting at `addr` runs.
    pub(crate) fn add(&self, addr: u64, hook: BlockStartFn<C>) {
        set(&self.filter, addr);
        set(&self.looks, addr);
        self.hooks.borrow_mut().entry(addr).or_default().push(hook);
    }

    /// Blocks that hold the instruction at `addr` need a look
    /// ([`Self::needs_look`]), whatever their start.
    pub(crate) fn watch(&self, addr: u64) {
        let aligned = addr & !3;
        for back in (0..WATCH_REACH).step_by(4) {
            set(&self.looks, aligned.wrapping_sub(back));
        }
    }

    /// Whether the block of `size` bytes at `addr` may start at a hook or hold a
    /// watched instruction ([`Self::watch`]); false is exact.
    #[inline]
    pub(crate) fn needs_look(&self, addr: u64, size: u32) -> bool {
        let (word, bit) = slot(addr);
        u64::from(size) > WATCH_REACH || self.looks[word].get() & bit != 0
    }

    /// From the block hook: the hooks of `addr`, a block about to run. Inlined
    /// into the block hook, so that most blocks cost one load and no call.
    #[inline]
    pub(crate) fn run(&self, uc: &mut Unicorn<'_, ()>, counter: &C, addr: u64) {
        let (word, bit) = slot(addr);
        if self.filter[word].get() & bit != 0 {
            self.run_hooks(uc, counter, addr);
        }
    }

    #[cold]
    #[inline(never)]
    fn run_hooks(&self, uc: &mut Unicorn<'_, ()>, counter: &C, addr: u64) {
        let Ok(mut hooks) = self.hooks.try_borrow_mut() else {
            return;
        };
        for hook in hooks.get_mut(&addr).into_iter().flatten() {
            hook(uc, counter, addr);
        }
    }
}

/// Whether every translation block that holds the instruction at `addr` starts
/// there (see the module's doc).
pub(crate) fn always_starts_block(kernel: &KernelImage, abi: &dyn IsaAbi, addr: u64) -> bool {
    const PADDING_MAX: u64 = 16;
    let before = |back: u64| kernel.code_word(addr.checked_sub(4 * back)?);
    match before(1) {
        Some(word) if abi.ends_block(word) => true,
        Some(word) if abi.is_padding(word) => (2..=PADDING_MAX)
            .map_while(before)
            .find(|&word| !abi.is_padding(word))
            .is_some_and(|word| abi.never_falls_through(word)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_that_may_hold_a_watched_instruction_needs_a_look() {
        let hooks = BlockStartHooks::<()>::default();
        let site = 0x4008_1000;
        hooks.watch(site);
        // Every start from which a block of at most the reach holds the site.
        for start in (site + 4 - WATCH_REACH..=site).step_by(4) {
            let size = (site + 4 - start) as u32;
            assert!(hooks.needs_look(start, size), "{start:#x}");
        }
        // Starts just past it, or a reach before it (such a block ends before it).
        assert!(!hooks.needs_look(site + 4, 4));
        assert!(!hooks.needs_look(site - WATCH_REACH, WATCH_REACH as u32));
        // A longer block always gets a look.
        assert!(hooks.needs_look(site - 0x1000, WATCH_REACH as u32 + 4));
        // A hook's own start gets one, its next instruction not.
        hooks.add(0x4009_0000, Box::new(|_, _, _| {}));
        assert!(hooks.needs_look(0x4009_0000, 4));
        assert!(!hooks.needs_look(0x4009_0004, 4));
    }
}
