//! The seam between the allocator and whatever runs it (the guest kernel, or a
//! host mock in the tests).
//!
//! Everything the 2009 `mm/percpu.c` took from the rest of the kernel comes
//! through [`Platform`]: page frames, metadata memory (kzalloc/vmalloc), the
//! chunk's virtual area, the page-table and cache/TLB maintenance calls, the two
//! lock kinds and the workqueue. Every method documents its CONTEXT the way the
//! seed does: which allocator locks may be held when it is called, whether IRQs
//! may be off, and whether the implementation is allowed to sleep.
//!
//! Addresses are plain `usize` virtual addresses in the kernel's address space;
//! page frames are opaque [`Page`] handles (the guest uses physical addresses).

use core::ptr::NonNull;

/// log2 of the page size; the allocator works in 4 KiB pages like arm64 4K.
pub const PAGE_SHIFT: usize = 12;
/// Page size in bytes.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Alignment that [`Platform::mem_alloc`] must guarantee.
pub const MEM_ALIGN: usize = 16;

/// What an allocation is allowed to do to satisfy a request (the seed only ever
/// asks with `GFP_KERNEL`, i.e. both set; the flag is passed so the platform can
/// see it and, in the guest, take the `fs_reclaim` pseudo-lock when it enters
/// reclaim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp {
    /// The allocation may sleep (block on a mutex, wait for I/O).
    pub may_sleep: bool,
    /// The allocation may enter direct reclaim (shrinkers, writeback).
    pub may_reclaim: bool,
}

impl Gfp {
    /// `GFP_KERNEL`: may sleep and may enter direct reclaim.
    pub const KERNEL: Gfp = Gfp {
        may_sleep: true,
        may_reclaim: true,
    };
}

/// One page frame handed out by [`Platform::alloc_page`]; the guest stores
/// the physical address here. Zero is never a valid frame. Transparent, so a
/// `&[Page]` may be viewed as a `&[u64]` of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Page(pub u64);

/// Mapping pages into a virtual area failed (page-table memory ran out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapError;

/// An allocation request the allocator refuses: size 0 or over
/// [`crate::MIN_UNIT_SIZE`], or alignment not a power of two or over a page.
/// Displays as the seed's `WARN` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalRequest {
    /// Bytes asked for.
    pub size: usize,
    /// Alignment asked for.
    pub align: usize,
}

impl core::fmt::Display for IllegalRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "illegal size ({}) or align ({}) for percpu allocation",
            self.size, self.align
        )
    }
}

/// The platform the allocator runs on.
///
/// The lock types are associated types so the guest can use its own spinlock
/// and mutex (for instance `&'static` references to statics with stable symbol
/// names, which is how the host probes them). The allocator calls the lock
/// methods exactly where the seed calls `mutex_lock`, `spin_lock_irq`, ... and
/// nowhere else.
pub trait Platform {
    /// A sleeping mutex (`struct mutex`).
    type Mutex;
    /// A spinlock (`spinlock_t`); the seed uses its `_irq` and `_irqsave`
    /// forms, the `irq-plain` variant's `free` the plain ones.
    type SpinLock;
    /// Saved interrupt state for `spin_lock_irqsave` / `spin_unlock_irqrestore`.
    type IrqFlags: Copy;

    /// Number of possible CPUs (units per chunk). Read once at init.
    ///
    /// CONTEXT: init only.
    fn nr_cpus(&self) -> usize;

    /// Create the mutex the allocator will use under `name`
    /// (`"pcpu_mutex"` for [`crate::Variant::Mutex`], `"pcpu_alloc_mutex"`
    /// otherwise).
    ///
    /// CONTEXT: init only.
    fn new_mutex(&self, name: &'static str) -> Self::Mutex;

    /// Create the spinlock the allocator will use under `name` (`"pcpu_lock"`).
    ///
    /// CONTEXT: init only.
    fn new_spinlock(&self, name: &'static str) -> Self::SpinLock;

    /// `mutex_lock`. CONTEXT: process context, IRQs on, no spinlock held; sleeps.
    fn mutex_lock(&self, lock: &Self::Mutex);
    /// `mutex_unlock`. CONTEXT: process context, caller holds `lock`.
    fn mutex_unlock(&self, lock: &Self::Mutex);
    /// `lockdep_assert_held` for a mutex: panic if the current thread of
    /// execution does not hold `lock`. CONTEXT: any.
    fn mutex_assert_held(&self, lock: &Self::Mutex);

    /// `spin_lock_irq`: disable IRQs, then take `lock`.
    /// CONTEXT: process context with IRQs on; does not sleep.
    fn spin_lock_irq(&self, lock: &Self::SpinLock);
    /// `spin_unlock_irq`: release `lock`, then enable IRQs unconditionally.
    /// CONTEXT: caller holds `lock`; re-enabling IRQs is the caller's bug if it
    /// runs in hard-IRQ context (the `irq` variant's bug).
    fn spin_unlock_irq(&self, lock: &Self::SpinLock);
    /// `spin_lock_irqsave`: save the IRQ state, disable IRQs, take `lock`.
    /// CONTEXT: any, including hard-IRQ; does not sleep.
    fn spin_lock_irqsave(&self, lock: &Self::SpinLock) -> Self::IrqFlags;
    /// `spin_unlock_irqrestore`: release `lock`, restore the saved IRQ state.
    /// CONTEXT: caller holds `lock`.
    fn spin_unlock_irqrestore(&self, lock: &Self::SpinLock, flags: Self::IrqFlags);
    /// `spin_lock`: take `lock`, leaving IRQs as they are (only the
    /// `irq-plain` variant's `free`).
    /// CONTEXT: any; does not sleep.
    fn spin_lock(&self, lock: &Self::SpinLock);
    /// `spin_unlock`: release `lock` taken with [`Platform::spin_lock`].
    /// CONTEXT: caller holds `lock`.
    fn spin_unlock(&self, lock: &Self::SpinLock);
    /// `lockdep_assert_held` for a spinlock. CONTEXT: any.
    fn spin_assert_held(&self, lock: &Self::SpinLock);

    /// `WARN(true, ...)`: report a refused request (the seed's warning on an
    /// illegal size or alignment) and carry on.
    /// CONTEXT: process context (where `alloc` is called); must not sleep.
    fn warn(&self, what: IllegalRequest);

    /// Allocate one page frame for `cpu`'s unit (`alloc_pages_node`).
    /// Contents are undefined; the allocator clears what it hands out.
    ///
    /// CONTEXT: `pcpu_alloc_mutex` (or `pcpu_mutex`) held, no spinlock held,
    /// IRQs on. With [`Gfp::KERNEL`] it may sleep and enter direct reclaim.
    fn alloc_page(&self, cpu: usize, gfp: Gfp) -> Option<Page>;
    /// Return a page frame (`__free_page`). The page is no longer mapped in any
    /// percpu area when this is called.
    ///
    /// CONTEXT: process context, no spinlock held; must not sleep.
    fn free_page(&self, page: Page);

    /// Allocate `size` bytes of zeroed metadata memory aligned to
    /// [`MEM_ALIGN`] (the seed's `pcpu_mem_alloc`: kzalloc up to a page,
    /// vmalloc above).
    ///
    /// CONTEXT: process context, no spinlock held, IRQs on; the allocator's
    /// mutex may be held. With [`Gfp::KERNEL`] it may sleep and enter reclaim.
    fn mem_alloc(&self, size: usize, gfp: Gfp) -> Option<NonNull<u8>>;
    /// Free memory from [`Platform::mem_alloc`] of the same `size`
    /// (`pcpu_mem_free`).
    ///
    /// CONTEXT: any allocator lock may be held, including `pcpu_lock` with IRQs
    /// off (the seed frees a replaced area map there); must not sleep.
    fn mem_free(&self, ptr: NonNull<u8>, size: usize);

    /// Reserve `size` bytes (a multiple of [`PAGE_SIZE`]) of kernel virtual
    /// address space with nothing mapped (`get_vm_area`). Returns a
    /// page-aligned address.
    ///
    /// CONTEXT: process context, allocator mutex held, no spinlock; may sleep.
    fn vm_reserve(&self, size: usize) -> Option<usize>;
    /// Give back an area from [`Platform::vm_reserve`] (`free_vm_area`). The
    /// allocator has already unmapped every page in it, but with the seed's
    /// reclaim (every variant but `fixed`) it has not flushed the TLB: then the
    /// platform must flush the range before it can be reserved again, as
    /// Linux's `free_vm_area` did (lazily, before reuse).
    ///
    /// CONTEXT: process context, no allocator lock held; may sleep.
    fn vm_release(&self, addr: usize, size: usize);

    /// Map `pages` at consecutive pages from `addr` (`map_kernel_range_noflush`).
    /// No cache or TLB maintenance: the allocator calls
    /// [`Platform::flush_cache_vmap`] afterwards.
    ///
    /// CONTEXT: allocator mutex held, no spinlock, IRQs on; may allocate
    /// page-table pages and sleep.
    fn map_pages(&self, addr: usize, pages: &[Page]) -> Result<(), MapError>;
    /// Unmap `[addr, addr + size)` (`unmap_kernel_range_noflush`). Pages in
    /// the range that are not mapped are skipped. No TLB maintenance.
    ///
    /// CONTEXT: allocator mutex held or the chunk privately owned by reclaim;
    /// no spinlock; must not sleep.
    fn unmap_pages(&self, addr: usize, size: usize);
    /// `flush_cache_vmap(start, end)`: after new mappings were made.
    /// CONTEXT: as [`Platform::map_pages`].
    fn flush_cache_vmap(&self, start: usize, end: usize);
    /// `flush_cache_vunmap(start, end)`: before mappings are removed.
    /// CONTEXT: as [`Platform::unmap_pages`].
    fn flush_cache_vunmap(&self, start: usize, end: usize);
    /// `flush_tlb_kernel_range(start, end)`: after mappings were removed; on
    /// arm64 `dsb ishst; tlbi vaae1is ...; dsb ish; isb` per page.
    /// CONTEXT: as [`Platform::unmap_pages`].
    fn flush_tlb_kernel_range(&self, start: usize, end: usize);

    /// `schedule_work(&pcpu_reclaim_work)`: arrange for
    /// [`crate::Percpu::reclaim_work`] to run later in process context (a
    /// workqueue). Scheduling an already pending work is a no-op.
    ///
    /// CONTEXT: called with the allocator's lock held: `pcpu_lock` with IRQs
    /// off (possibly in hard-IRQ) for `irq`/`fine`, `pcpu_mutex` for `mutex`.
    /// Must not sleep.
    fn schedule_reclaim_work(&self);
}
