//! A port of the Linux per-CPU allocator (`mm/percpu.c`) as it stood after
//! the March 2009 patch "percpu: finer grained locking to break deadlock and
//! allow atomic free", with the locking of before the patch and of its first
//! version selectable at run time ([`Variant`]).
//!
//! The allocator hands out areas that exist once per CPU: an area of `size`
//! bytes at offset `off` of a chunk occupies `off..off + size` of every CPU's
//! unit of that chunk. Chunks live in virtual areas the allocator populates
//! page by page through the [`Platform`] seam, which also supplies the locks,
//! metadata memory, cache/TLB maintenance and the workqueue. See `README.md`.
//!
//! Module map: `area_map` (one chunk's allocation map), `index` (slot lists
//! and chunks by address, under `pcpu_lock`), `chunk` (chunk memory: create,
//! destroy, populate, depopulate), `shared` (the shared state behind the locks
//! and the only raw accesses to it), `percpu` (the operations and the lock
//! protocol of each variant).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod area_map;
mod chunk;
pub mod index;
mod percpu;
pub mod platform;
mod shared;

pub use area_map::MapProblem;
pub use index::IndexProblem;
pub use percpu::{
    ChunkInfo, ChunkKind, Config, InitError, Inject, PcpuPtr, Percpu, Stats, Variant, MIN_UNIT_SIZE,
};
pub use platform::{
    Gfp, IllegalRequest, MapError, Page, Platform, MEM_ALIGN, PAGE_SHIFT, PAGE_SIZE,
};
