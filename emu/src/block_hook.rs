//! The core's block hook, registered through Unicorn's C API directly.
//!
//! The binding's proxy upgrades a `Weak` to the engine and builds a `Unicorn` for
//! every block it reports (measured: about a fifth of the block hook's cost, which
//! every block of every run pays). This proxy hands the callback one `Unicorn`
//! made when the hook was added, over the same engine.

use std::any::Any;
use std::ffi::c_void;

use unicorn_engine::{uc_engine, uc_error, uc_hook, uc_hook_add, HookType, Unicorn};

/// What the engine's hook points to: the callback and the engine it is given.
struct State<F> {
    engine: Unicorn<'static, ()>,
    callback: F,
}

/// Keeps a block hook's state alive: the engine refers to it until it is dropped,
/// so this must outlive the engine (a [`crate::cpu::KeepAlive`] of its core).
pub(crate) struct BlockHook {
    _state: Box<dyn Any>,
}

/// One proxy per callback type: the callback is called directly, not through a
/// `dyn` pointer.
unsafe extern "C" fn proxy<F: FnMut(&mut Unicorn<'static, ()>, u64, u32)>(
    _uc: *mut uc_engine,
    address: u64,
    size: u32,
    user_data: *mut c_void,
) {
    // SAFETY: `user_data` is the `State<F>` this hook was added with (`add`), which
    // its `BlockHook` keeps alive as long as the engine. The engine runs one block
    // hook at a time on its one thread, and nothing else reaches the state meanwhile.
    let state = unsafe { &mut *user_data.cast::<State<F>>() };
    (state.callback)(&mut state.engine, address, size);
}

/// Runs `callback` at the start of every block `uc` runs (all addresses).
pub(crate) fn add<F: FnMut(&mut Unicorn<'static, ()>, u64, u32) + 'static>(
    uc: &mut Unicorn<'static, ()>,
    callback: F,
) -> Result<BlockHook, uc_error> {
    let handle = uc.get_handle();
    // SAFETY: `handle` is the live engine of `uc`. The wrapper does not own it (it
    // never closes it), and no hook is added through it, so dropping it frees
    // nothing the engine uses.
    let engine = unsafe { Unicorn::from_handle(handle) }?;
    let mut state = Box::new(State { engine, callback });
    let mut hook: uc_hook = Default::default();
    // SAFETY: `proxy::<F>` has the C signature of a block hook (`uc_cb_hookcode_t`);
    // `user_data` points into a box the returned `BlockHook` keeps alive (see there);
    // begin 1 > end 0 covers every address.
    let err = unsafe {
        uc_hook_add(
            handle,
            &mut hook,
            HookType::BLOCK.0 as i32,
            proxy::<F> as *mut c_void,
            (&raw mut *state).cast(),
            1u64,
            0u64,
        )
    };
    match err {
        uc_error::OK => Ok(BlockHook { _state: state }),
        e => Err(e),
    }
}
