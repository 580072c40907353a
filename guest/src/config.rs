//! Sizes and limits fixed at build time.

/// GICv2 addresses at most 8 CPU interfaces.
pub const MAX_CPUS: usize = 8;
/// Boot (later idle-thread) stack per CPU.
pub const BOOT_STACK_SIZE: usize = 16 * 1024;
/// Kernel thread stacks, allocated from the page allocator.
pub const THREAD_STACK_PAGES: usize = 4;
/// Size of a page (4 KiB granule everywhere).
pub const PAGE_SIZE: usize = 4096;
/// Timer tick: 1 ms of the counter.
pub const TICK_COUNTS: u64 = crate::arch::COUNTER_HZ / 1000;
