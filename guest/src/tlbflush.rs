//! What every architecture's `flush_tlb_kernel_range` shares: the `flush=`
//! strategies, a porting experiment (how the flush reaches the other CPUs).

/// How `flush_tlb_kernel_range` reaches the other CPUs' TLBs (the `flush=`
/// bootarg): the porting experiment of an architecture without broadcast
/// invalidation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlushStrategy {
    /// One `tlbi vaae1is` per page: the hardware broadcasts it (ARM64's way).
    Broadcast,
    /// A call-function IPI to every other CPU, each invalidating its own TLB
    /// (`tlbi vaae1`, `dsb nsh`): the way of RISC-V (`sfence.vma`) and x86
    /// (`invlpg`). The sender waits for every CPU, so it needs IRQs on, as
    /// Linux's `on_each_cpu` does.
    Ipi,
    /// `tlbi vmalle1is`: every translation of every CPU, whatever the range.
    Full,
    /// Broadcast invalidation, but the allocator's reclaim defers its flushes
    /// (and the page frees that must wait for them) to its end and flushes
    /// their union once (guest/src/pcpu_platform.rs); a union above
    /// [`MAX_TLBI_PAGES`] pages becomes one `tlbi vmalle1is`, as arm64 Linux
    /// does past `MAX_TLBI_OPS`.
    Batched,
}

/// Pages above which one ranged flush of the `batched` strategy invalidates
/// everything instead (arm64 Linux's `MAX_TLBI_OPS`, one table's entries).
pub const MAX_TLBI_PAGES: usize = 512;

impl FlushStrategy {
    const ALL: [FlushStrategy; 4] = [Self::Broadcast, Self::Ipi, Self::Full, Self::Batched];

    /// The bootarg value.
    ///
    /// CONTEXT: any; pure.
    pub fn name(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::Ipi => "ipi",
            Self::Full => "full",
            Self::Batched => "batched",
        }
    }

    /// Parses [`FlushStrategy::name`].
    ///
    /// CONTEXT: any; pure.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}
