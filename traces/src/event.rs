//! The event model: what the host records about the guest.
//!
//! Every [`Event`] carries where and when it happened (CPU, running task, PC, caller PC,
//! virtual time) and an [`EventKind`] with the kind-specific payload. Strings (lock class
//! names, marker labels) are [`StrId`]s into the trace's string table, so an `Event` is a
//! small `Copy` value that decodes without allocating.
//!
//! Conventions the probes follow and the analyses rely on:
//! - A blocking lock operation is `LockAttempt` then `LockAcquired` (possibly much later,
//!   after spinning or sleeping); a trylock is a single `Trylock` whose `acquired` tells
//!   whether the lock is now held.
//! - `_irqsave`/`_irqrestore` are the `SpinIrqSave` flavor of acquire and release; the DAIF
//!   changes they make are separate `IrqMask` events.
//! - After a `ContextSwitch` the CPU's running task is `to`.

use std::fmt;

use crate::aarch64::Access;
pub use crate::aarch64::{BarrierOption, TlbiOp};
pub use crate::strings::StrId;
use crate::strings::StringTable;

/// A guest CPU (core) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CpuId(pub u16);

/// A guest task (kernel thread) id as the guest numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TaskId(pub u32);

/// One recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Virtual time: the machine's instruction count when the event happened. Never
    /// decreases along one CPU's events.
    pub time: u64,
    /// The CPU it happened on.
    pub cpu: CpuId,
    /// The task running on `cpu` (for a context switch: the task switched away from).
    pub task: TaskId,
    /// Where it happened (for probes on a function: that function's hooked address).
    pub pc: u64,
    /// The return address into the caller (the call site), 0 when there is none.
    pub caller: u64,
    /// What happened.
    pub kind: EventKind,
}

/// A lock as the validator keys it: its address and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockRef {
    /// The lock's address (a pseudo-lock's: its lockdep map's).
    pub addr: u64,
    /// A static lock's symbol, or a dynamic lock's init site (e.g. `"chunk->lock@alloc.rs:40"`),
    /// as lockdep keys classes. A lock taken with a nesting annotation
    /// (`spin_lock_nested(lock, n)`, n ≥ 1) names its class with a `/n` suffix
    /// (`"chunk->lock@alloc.rs:40/1"`): lockdep's subclass, a class of its own.
    pub class: StrId,
}

/// Linux's GFP flag bits, as `PageAlloc::gfp` carries them.
pub mod gfp {
    /// May start I/O.
    pub const IO: u32 = 0x40;
    /// May call into the filesystem (so may enter FS reclaim).
    pub const FS: u32 = 0x80;
    /// May enter direct reclaim, so may sleep (`__GFP_DIRECT_RECLAIM`).
    pub const DIRECT_RECLAIM: u32 = 0x400;
    /// May wake kswapd (`__GFP_KSWAPD_RECLAIM`).
    pub const KSWAPD_RECLAIM: u32 = 0x800;
    /// May use the emergency reserve (`__GFP_HIGH`).
    pub const HIGH: u32 = 0x20;
    /// `GFP_KERNEL`: may sleep, do I/O and enter the filesystem.
    pub const KERNEL: u32 = DIRECT_RECLAIM | KSWAPD_RECLAIM | IO | FS;
    /// `GFP_NOFS`: may sleep and do I/O, not enter the filesystem.
    pub const NOFS: u32 = DIRECT_RECLAIM | KSWAPD_RECLAIM | IO;
    /// `GFP_NOIO`: may sleep, no I/O.
    pub const NOIO: u32 = DIRECT_RECLAIM | KSWAPD_RECLAIM;
    /// `GFP_ATOMIC`: never sleeps; may use the reserve.
    pub const ATOMIC: u32 = HIGH | KSWAPD_RECLAIM;
    /// `GFP_NOWAIT`: never sleeps.
    pub const NOWAIT: u32 = KSWAPD_RECLAIM;

    /// `gfpflags_allow_blocking`: the allocation may sleep.
    pub fn may_block(flags: u32) -> bool {
        flags & DIRECT_RECLAIM != 0
    }

    /// The allocation may enter FS reclaim (lockdep's `fs_reclaim_acquire` takes
    /// the `fs_reclaim` map for it).
    pub fn may_enter_fs_reclaim(flags: u32) -> bool {
        may_block(flags) && flags & FS != 0
    }
}

/// Which lock API was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockFlavor {
    /// `spin_lock` / `spin_unlock`.
    Spin,
    /// `spin_lock_irq` / `spin_unlock_irq`.
    SpinIrq,
    /// `spin_lock_irqsave` / `spin_unlock_irqrestore`.
    SpinIrqSave,
    /// A sleeping mutex.
    Mutex,
    /// A lockdep-style pseudo-lock with no memory of its own (e.g. `fs_reclaim`).
    Pseudo,
}

impl LockFlavor {
    /// Every flavor.
    pub const ALL: [LockFlavor; 5] = [
        LockFlavor::Spin,
        LockFlavor::SpinIrq,
        LockFlavor::SpinIrqSave,
        LockFlavor::Mutex,
        LockFlavor::Pseudo,
    ];

    /// A short stable name (for reports and exporters).
    pub fn name(self) -> &'static str {
        match self {
            LockFlavor::Spin => "spin",
            LockFlavor::SpinIrq => "spin_irq",
            LockFlavor::SpinIrqSave => "spin_irqsave",
            LockFlavor::Mutex => "mutex",
            LockFlavor::Pseudo => "pseudo",
        }
    }
}

/// What changed DAIF.I.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqMaskCause {
    /// `msr daifset/daifclr`, `msr daif, xN`.
    Instruction,
    /// Taking an exception masks IRQs.
    ExceptionEntry,
    /// `eret` restores SPSR's I bit.
    Eret,
}

/// A translation entered into a CPU's TLB: one 4 KiB page of it (a block is held page
/// by page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbFill {
    /// The page's virtual address.
    pub va: u64,
    /// The physical page it maps to.
    pub pa: u64,
    /// The leaf descriptor's level (3 for a page, 2 or 1 for a block).
    pub level: u8,
    /// Write permission at EL1 (S-mode); EL1 may always read.
    pub write: bool,
    /// Execute permission at EL1 (S-mode).
    pub exec: bool,
    /// What EL0 (U-mode) may do through it.
    pub user: Perms,
    /// nG clear: the entry matches every ASID.
    pub global: bool,
    /// The ASID it was filled under (TTBR1_EL1's when TCR_EL1.A1 is set, else
    /// TTBR0_EL1's; `satp`'s on RISC-V).
    pub asid: u16,
    /// Physical addresses of the descriptors the walk read, outermost first, the leaf
    /// last (`walk[..walk_len]`).
    pub walk: [u64; 4],
    /// How many of `walk` the walk read (1 to 4).
    pub walk_len: u8,
}

impl TlbFill {
    /// The descriptors the walk read.
    pub fn descriptors(&self) -> &[u64] {
        &self.walk[..usize::from(self.walk_len).min(4)]
    }
}

/// Which accesses a translation allows at one privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    /// Loads.
    pub read: bool,
    /// Stores.
    pub write: bool,
    /// Instruction fetches.
    pub exec: bool,
}

impl Perms {
    /// No access at all (a kernel-only page, seen from EL0).
    pub const NONE: Perms = Perms {
        read: false,
        write: false,
        exec: false,
    };

    /// Whether `access` is allowed.
    pub fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
            Access::Fetch => self.exec,
        }
    }

    /// As `ls -l` shows them: `rwx`, `r--`, `---`.
    pub fn letters(&self) -> String {
        let bit = |on, c| if on { c } else { '-' };
        [
            bit(self.read, 'r'),
            bit(self.write, 'w'),
            bit(self.exec, 'x'),
        ]
        .iter()
        .collect()
    }

    /// Bits 0–2: read, write, execute (the trace's encoding).
    pub fn bits(&self) -> u64 {
        u64::from(self.read) | u64::from(self.write) << 1 | u64::from(self.exec) << 2
    }

    /// The inverse of [`Self::bits`].
    pub fn from_bits(bits: u64) -> Self {
        Perms {
            read: bits & 1 != 0,
            write: bits & 2 != 0,
            exec: bits & 4 != 0,
        }
    }
}

/// What a table walk gives for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkResult {
    /// The physical page.
    Maps(u64),
    /// A fault, with its status code (DFSC).
    Faults(u8),
}

/// What happened. Adding a kind: see `format` (new kinds use the sized tag range so
/// older readers skip them as [`EventKind::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// About to acquire (may spin or sleep before `LockAcquired`).
    LockAttempt {
        /// The lock.
        lock: LockRef,
        /// The API used.
        flavor: LockFlavor,
    },
    /// The lock is now held (after `LockAttempt`).
    LockAcquired {
        /// The lock.
        lock: LockRef,
        /// The API used.
        flavor: LockFlavor,
    },
    /// The lock is released.
    LockRelease {
        /// The lock.
        lock: LockRef,
        /// The API used.
        flavor: LockFlavor,
    },
    /// A trylock and whether it took the lock.
    Trylock {
        /// The lock.
        lock: LockRef,
        /// The API used.
        flavor: LockFlavor,
        /// Whether the lock is now held.
        acquired: bool,
    },
    /// `lockdep_assert_held(lock)`.
    AssertHeld {
        /// The lock.
        lock: LockRef,
    },
    /// DAIF.I changed from `old` to `new` (`true` = IRQs masked).
    IrqMask {
        /// Masked before.
        old: bool,
        /// Masked after.
        new: bool,
        /// What changed it.
        cause: IrqMaskCause,
    },
    /// The CPU takes a hard interrupt.
    HardIrqEnter {
        /// The interrupt (the GIC's INTID; RISC-V: the `scause` code).
        intid: u32,
    },
    /// The hard interrupt's handler returns.
    HardIrqExit {
        /// The interrupt, as on entry.
        intid: u32,
    },
    /// The CPU switches tasks.
    ContextSwitch {
        /// The task switched away from.
        from: TaskId,
        /// The task now running.
        to: TaskId,
    },
    /// The running task blocks.
    Sleep,
    /// The running task makes `task` runnable.
    Wake {
        /// The task woken.
        task: TaskId,
    },
    /// A `might_sleep()` point.
    MightSleep,
    /// `preempt_disable()`: the task's preemption count is now `count`.
    PreemptDisable {
        /// The count after.
        count: u32,
    },
    /// `preempt_enable()`: the task's preemption count is now `count`.
    PreemptEnable {
        /// The count after.
        count: u32,
    },
    /// Page allocator: `order`, Linux GFP bits ([`gfp`]), resulting physical address (0 = failed).
    PageAlloc {
        /// Pages allocated: 2^order.
        order: u8,
        /// The GFP flags.
        gfp: u32,
        /// The first page's physical address, 0 on failure.
        pa: u64,
    },
    /// Page allocator: pages freed.
    PageFree {
        /// The first page's physical address.
        pa: u64,
        /// Pages freed: 2^order.
        order: u8,
    },
    /// The task enters direct reclaim.
    ReclaimEnter,
    /// The task leaves direct reclaim.
    ReclaimExit,
    /// Per-CPU allocation; `addr` 0 = failed.
    PercpuAlloc {
        /// Bytes asked for.
        size: u64,
        /// Alignment asked for.
        align: u64,
        /// The per-CPU address returned, 0 on failure.
        addr: u64,
    },
    /// A per-CPU area is freed.
    PercpuFree {
        /// The per-CPU address freed.
        addr: u64,
    },
    /// A store to a page-table descriptor at physical address `desc_pa`.
    PageTableWrite {
        /// The descriptor's physical address.
        desc_pa: u64,
        /// Its value before.
        old: u64,
        /// Its value after.
        new: u64,
    },
    /// The simulated MMU walked the tables on a TLB miss of the event's CPU: its TLB
    /// now holds this translation (until a TLBI removes it, whatever the tables do).
    TlbFill(TlbFill),
    /// A page found to hold `level` descriptors, the first of which maps `va_base`
    /// (found on a walk, or when a table descriptor pointing to it is stored).
    PageTablePage {
        /// The page's physical address.
        pa: u64,
        /// The level of its descriptors (0 to 3).
        level: u8,
        /// The first address it maps.
        va_base: u64,
    },
    /// Page `pa` stopped being a page table: no CPU's translation registers reach it
    /// and no TLB entry was filled through it, so stores to it (a freed table
    /// reused as data) change no translation.
    PageTableRetired {
        /// The page's physical address.
        pa: u64,
    },
    /// The first access, after its CPU's TLB entry for the page of `va` went stale,
    /// that the machine saw go through it (Unicorn's own TLB was flushed when it went
    /// stale, so this moment is fixed by the guest); `now` is what the tables give
    /// this access (a permission they no longer grant is a fault).
    StaleTlbUse {
        /// The address accessed.
        va: u64,
        /// What the access did.
        access: Access,
        /// What the tables give it now.
        now: WalkResult,
        /// The ASID the access was made under (`None` in traces older than 1.7,
        /// which held one entry per page).
        asid: Option<u16>,
    },
    /// A TLB invalidation by meaning, as an ISA without Arm's TLBI records it
    /// (RISC-V's `sfence.vma`, and the SBI remote fences the host runs for the
    /// guest): on the CPUs whose bits are set in `cpus`, of `len` bytes from `start`
    /// (`len` 0: every address), for `asid` (`None`: every ASID; one ASID leaves
    /// global entries alone).
    TlbInvalidate {
        /// The CPUs reached, a bit each.
        cpus: u64,
        /// First address.
        start: u64,
        /// Length in bytes; 0 for every address.
        len: u64,
        /// The ASID; `None` for every ASID.
        asid: Option<u16>,
    },
    /// `tlbi <op>[is], <operand>`; `broadcast` is the inner-shareable (`…is`) form.
    Tlbi {
        /// The operation.
        op: TlbiOp,
        /// The inner-shareable form.
        broadcast: bool,
        /// The register operand (VA and ASID fields, as the instruction has them).
        operand: u64,
    },
    /// `dsb <option>`.
    Dsb {
        /// Its domain and access types (CRm).
        option: BarrierOption,
    },
    /// `dmb <option>`.
    Dmb {
        /// Its domain and access types (CRm).
        option: BarrierOption,
    },
    /// `isb`.
    Isb,
    /// The host scheduler runs `cpu` for up to `slice` instructions.
    SchedDecision {
        /// The CPU that runs next.
        cpu: CpuId,
        /// The most instructions it runs before the next decision.
        slice: u64,
    },
    /// The host raises interrupt `intid` on `cpu`.
    IrqInject {
        /// The CPU.
        cpu: CpuId,
        /// The interrupt.
        intid: u32,
    },
    /// Free-form marker: a label and a value.
    Marker {
        /// The label.
        label: StrId,
        /// The value.
        value: u64,
    },
    /// The backtrace of this CPU's events from here until its next `Stack`: the
    /// string `frames` holds the return addresses, innermost first ([`backtrace`]).
    /// The recorder emits one before a probed event whose stack differs from the
    /// CPU's current one.
    Stack {
        /// The return addresses ([`backtrace`]).
        frames: StrId,
    },
    /// The task waits (spinning) until CPU `target` has run the cross-CPU call
    /// `csd` it queued and sent an IPI for (Linux's `csd_lock_wait`, recorded only
    /// if the call has not run yet): until that call's [`EventKind::CsdUnlock`].
    CsdWait {
        /// The CPU that is to run the call.
        target: CpuId,
        /// The call's `call_single_data` address.
        csd: u64,
    },
    /// The cross-CPU call `csd` has run on this CPU: its sender may go on
    /// (Linux's `csd_unlock`).
    CsdUnlock {
        /// The call's `call_single_data` address.
        csd: u64,
    },
    /// This CPU sends IPI message `msg` to CPU `target` (one event per target).
    /// `msg` numbers the messages as Linux does on arm64 and RISC-V alike for the two
    /// the allocator's kernel sends: 0 reschedule, 1 call-function (see
    /// [`ipi_message_name`]). The target takes it as a `HardIrqEnter` of `intid`
    /// (arm64: the SGI; RISC-V: the supervisor software interrupt, 1, for every
    /// message), once for all the IPIs sent while one was pending.
    IpiSend {
        /// The CPU sent to.
        target: CpuId,
        /// The message.
        msg: u32,
        /// The interrupt the target takes for it.
        intid: u32,
    },
    /// Lock class `class` is a `local_lock_t` (lockdep's `LD_LOCK_PERCPU`): a
    /// per-CPU lock that is no real lock for IRQ-inversion purposes (recorded once,
    /// before the class's first lock event).
    LocalLockClass {
        /// The class.
        class: StrId,
    },
    /// Memory `[addr, addr+len)` is freed or re-initialised (lockdep's
    /// `debug_check_no_locks_freed`): a lock the task holds in it is a bug.
    LockMemoryFreed {
        /// First byte.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `lock` acquired for reading (lockdep's `lock_acquire` with `read` 1, or 2 for
    /// a `recursive` reader, which may nest in another reader of its class); a
    /// `trylock` is recorded only once it succeeded. An ordinary `LockRelease`
    /// releases it.
    ReadLock {
        /// The lock.
        lock: LockRef,
        /// A recursive reader.
        recursive: bool,
        /// Taken by a trylock.
        trylock: bool,
    },
    /// The task enters softirq context (Linux's lockdep: `softirq_context` up).
    SoftIrqEnter,
    /// The task leaves softirq context.
    SoftIrqExit,
    /// The task enables softirqs (lockdep's `lockdep_softirqs_on`).
    SoftirqsOn,
    /// The task disables softirqs (`local_bh_disable`).
    SoftirqsOff,
    /// A kind this reader does not know (written by a newer writer); its payload was
    /// skipped. `tag` is its record tag (0x80..=0xff). Writing it back stores an empty
    /// payload.
    Unknown {
        /// The record tag.
        tag: u8,
    },
}

impl EventKind {
    /// A short stable name (for reports and exporters).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::LockAttempt { .. } => "lock-attempt",
            EventKind::LockAcquired { .. } => "lock-acquired",
            EventKind::LockRelease { .. } => "lock-release",
            EventKind::Trylock { .. } => "trylock",
            EventKind::AssertHeld { .. } => "assert-held",
            EventKind::IrqMask { .. } => "irq-mask",
            EventKind::HardIrqEnter { .. } => "hardirq-enter",
            EventKind::HardIrqExit { .. } => "hardirq-exit",
            EventKind::ContextSwitch { .. } => "context-switch",
            EventKind::Sleep => "sleep",
            EventKind::Wake { .. } => "wake",
            EventKind::MightSleep => "might-sleep",
            EventKind::PreemptDisable { .. } => "preempt-disable",
            EventKind::PreemptEnable { .. } => "preempt-enable",
            EventKind::PageAlloc { .. } => "page-alloc",
            EventKind::PageFree { .. } => "page-free",
            EventKind::ReclaimEnter => "reclaim-enter",
            EventKind::ReclaimExit => "reclaim-exit",
            EventKind::PercpuAlloc { .. } => "percpu-alloc",
            EventKind::PercpuFree { .. } => "percpu-free",
            EventKind::PageTableWrite { .. } => "pt-write",
            EventKind::TlbFill(_) => "tlb-fill",
            EventKind::PageTablePage { .. } => "pt-page",
            EventKind::PageTableRetired { .. } => "pt-retired",
            EventKind::TlbInvalidate { .. } => "tlb-invalidate",
            EventKind::StaleTlbUse { .. } => "stale-tlb-use",
            EventKind::Stack { .. } => "stack",
            EventKind::CsdWait { .. } => "csd-wait",
            EventKind::CsdUnlock { .. } => "csd-unlock",
            EventKind::IpiSend { .. } => "ipi-send",
            EventKind::LocalLockClass { .. } => "local-lock-class",
            EventKind::LockMemoryFreed { .. } => "lock-memory-freed",
            EventKind::ReadLock { .. } => "read-lock",
            EventKind::SoftIrqEnter => "softirq-enter",
            EventKind::SoftIrqExit => "softirq-exit",
            EventKind::SoftirqsOn => "softirqs-on",
            EventKind::SoftirqsOff => "softirqs-off",
            EventKind::Tlbi { .. } => "tlbi",
            EventKind::Dsb { .. } => "dsb",
            EventKind::Dmb { .. } => "dmb",
            EventKind::Isb => "isb",
            EventKind::SchedDecision { .. } => "sched",
            EventKind::IrqInject { .. } => "irq-inject",
            EventKind::Marker { .. } => "marker",
            EventKind::Unknown { .. } => "unknown",
        }
    }

    /// The lock this event is about, if any.
    pub fn lock(&self) -> Option<LockRef> {
        match *self {
            EventKind::LockAttempt { lock, .. }
            | EventKind::LockAcquired { lock, .. }
            | EventKind::LockRelease { lock, .. }
            | EventKind::Trylock { lock, .. }
            | EventKind::ReadLock { lock, .. }
            | EventKind::AssertHeld { lock } => Some(lock),
            _ => None,
        }
    }

    /// Every string id the payload refers to (at most one today).
    pub fn string_ref(&self) -> Option<StrId> {
        match *self {
            EventKind::Marker { label, .. }
            | EventKind::Stack { frames: label }
            | EventKind::LocalLockClass { class: label } => Some(label),
            _ => self.lock().map(|lock| lock.class),
        }
    }
}

/// The name of IPI message `msg` of [`EventKind::IpiSend`], for the two messages
/// whose number Linux's arm64 and RISC-V share.
pub fn ipi_message_name(msg: u32) -> Option<&'static str> {
    match msg {
        0 => Some("reschedule"),
        1 => Some("call-function"),
        _ => None,
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task{}", self.0)
    }
}

impl TlbiOp {
    /// The mnemonic, with `is` appended for the broadcast form (`vaae1is`).
    pub fn mnemonic(self, broadcast: bool) -> String {
        let base = match self {
            TlbiOp::Vmalle1 => "vmalle1",
            TlbiOp::Vae1 => "vae1",
            TlbiOp::Vale1 => "vale1",
            TlbiOp::Vaae1 => "vaae1",
            TlbiOp::Vaale1 => "vaale1",
            TlbiOp::Aside1 => "aside1",
            TlbiOp::Other(encoding) => return format!("sys#{encoding:#x}"),
        };
        format!("{base}{}", if broadcast { "is" } else { "" })
    }
}

impl IrqMaskCause {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            IrqMaskCause::Instruction => "instruction",
            IrqMaskCause::ExceptionEntry => "exception entry",
            IrqMaskCause::Eret => "eret",
        }
    }
}

impl Event {
    /// One line describing the event, with strings looked up in `strings`, e.g.
    /// `t=322 cpu0 task2 pc=0x1060 caller=0x2004 lock-acquired pcpu_lock@0x80801040 (spin_irqsave)`.
    pub fn display<'a>(&'a self, strings: &'a StringTable) -> EventDisplay<'a> {
        EventDisplay {
            event: self,
            strings,
            header: true,
        }
    }

    /// What [`Event::display`] says after the time, CPU, task and addresses: the
    /// kind's name and fields, e.g. `lock-acquired pcpu_lock@0x80801040 (spin_irqsave)`.
    pub fn display_kind<'a>(&'a self, strings: &'a StringTable) -> EventDisplay<'a> {
        EventDisplay {
            event: self,
            strings,
            header: false,
        }
    }
}

/// See [`Event::display`].
pub struct EventDisplay<'a> {
    event: &'a Event,
    strings: &'a StringTable,
    /// Whether the time, CPU, task and addresses come first.
    header: bool,
}

impl fmt::Display for EventDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Event {
            time,
            cpu,
            task,
            pc,
            caller,
            kind,
        } = self.event;
        let text = |id: StrId| self.strings.get(id).unwrap_or("<undefined string>");
        let lock = |lock: &LockRef| format!("{}@{:#x}", text(lock.class), lock.addr);
        if self.header {
            write!(f, "t={time} {cpu} {task} pc={pc:#x} caller={caller:#x} ")?;
        }
        f.write_str(kind.name())?;
        match kind {
            EventKind::LockAttempt { lock: l, flavor }
            | EventKind::LockAcquired { lock: l, flavor }
            | EventKind::LockRelease { lock: l, flavor } => {
                write!(f, " {} ({})", lock(l), flavor.name())
            }
            EventKind::Trylock {
                lock: l,
                flavor,
                acquired,
            } => {
                let result = if *acquired { "acquired" } else { "failed" };
                write!(f, " {} ({}) {result}", lock(l), flavor.name())
            }
            EventKind::AssertHeld { lock: l } => write!(f, " {}", lock(l)),
            EventKind::IrqMask { old, new, cause } => {
                let state = |masked: bool| if masked { "masked" } else { "unmasked" };
                write!(f, " {} -> {} ({})", state(*old), state(*new), cause.name())
            }
            EventKind::HardIrqEnter { intid } | EventKind::HardIrqExit { intid } => {
                write!(f, " intid={intid}")
            }
            EventKind::ContextSwitch { from, to } => write!(f, " {from} -> {to}"),
            EventKind::Wake { task } => write!(f, " {task}"),
            EventKind::PreemptDisable { count } | EventKind::PreemptEnable { count } => {
                write!(f, " count={count}")
            }
            EventKind::PageAlloc { order, gfp, pa } => {
                write!(f, " order={order} gfp={gfp:#x} pa={pa:#x}")
            }
            EventKind::PageFree { pa, order } => write!(f, " pa={pa:#x} order={order}"),
            EventKind::PercpuAlloc { size, align, addr } => {
                write!(f, " size={size} align={align} addr={addr:#x}")
            }
            EventKind::PercpuFree { addr } => write!(f, " addr={addr:#x}"),
            EventKind::PageTableWrite { desc_pa, old, new } => {
                write!(f, " desc={desc_pa:#x} {old:#x} -> {new:#x}")
            }
            EventKind::TlbFill(fill) => {
                let perms = Perms {
                    read: true,
                    write: fill.write,
                    exec: fill.exec,
                }
                .letters();
                let user = fill.user.letters();
                let scope = if fill.global { "global" } else { "asid" };
                write!(
                    f,
                    " va={:#x} pa={:#x} level={} {perms} el0={user} {scope}={} walk={:x?}",
                    fill.va,
                    fill.pa,
                    fill.level,
                    fill.asid,
                    fill.descriptors()
                )
            }
            EventKind::PageTablePage { pa, level, va_base } => {
                write!(f, " pa={pa:#x} level={level} va_base={va_base:#x}")
            }
            EventKind::PageTableRetired { pa } => write!(f, " pa={pa:#x}"),
            EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid,
            } => {
                write!(f, " cpus={cpus:#x}")?;
                if *len == 0 {
                    write!(f, " all")?;
                } else {
                    write!(f, " va={start:#x} len={len:#x}")?;
                }
                match asid {
                    Some(asid) => write!(f, " asid={asid}"),
                    None => Ok(()),
                }
            }
            EventKind::StaleTlbUse {
                va,
                access,
                now,
                asid,
            } => {
                write!(f, " va={va:#x} {access:?} now ")?;
                match now {
                    WalkResult::Maps(pa) => write!(f, "pa={pa:#x}")?,
                    WalkResult::Faults(status) => write!(f, "faults status={status:#x}")?,
                }
                match asid {
                    Some(asid) => write!(f, " asid={asid}"),
                    None => Ok(()),
                }
            }
            EventKind::Tlbi {
                op,
                broadcast,
                operand,
            } => {
                write!(f, " {}, {operand:#x}", op.mnemonic(*broadcast))
            }
            EventKind::Dsb { option } | EventKind::Dmb { option } => {
                write!(f, " {}", option.name())
            }
            EventKind::SchedDecision { cpu, slice } => write!(f, " {cpu} slice={slice}"),
            EventKind::IrqInject { cpu, intid } => write!(f, " {cpu} intid={intid}"),
            EventKind::Marker { label, value } => write!(f, " {}={value}", text(*label)),
            EventKind::Stack { frames } => write!(f, " {}", text(*frames)),
            EventKind::CsdWait { target, csd } => write!(f, " {target} csd={csd:#x}"),
            EventKind::CsdUnlock { csd } => write!(f, " csd={csd:#x}"),
            EventKind::IpiSend { target, msg, intid } => match ipi_message_name(*msg) {
                Some(name) => write!(f, " {target} {name} intid={intid}"),
                None => write!(f, " {target} msg={msg} intid={intid}"),
            },
            EventKind::LocalLockClass { class } => write!(f, " {}", text(*class)),
            EventKind::LockMemoryFreed { addr, len } => {
                write!(f, " {addr:#x}..{:#x}", addr.wrapping_add(*len))
            }
            EventKind::ReadLock {
                lock: l,
                recursive,
                trylock,
            } => {
                write!(f, " {}", lock(l))?;
                if *recursive {
                    write!(f, " recursive")?;
                }
                if *trylock {
                    write!(f, " trylock")?;
                }
                Ok(())
            }
            EventKind::Unknown { tag } => write!(f, " tag={tag:#04x}"),
            EventKind::Sleep
            | EventKind::MightSleep
            | EventKind::ReclaimEnter
            | EventKind::ReclaimExit
            | EventKind::Isb
            | EventKind::SoftIrqEnter
            | EventKind::SoftIrqExit
            | EventKind::SoftirqsOn
            | EventKind::SoftirqsOff => Ok(()),
        }
    }
}

/// Backtraces as the trace stores them: one string of hexadecimal return
/// addresses, innermost first, separated by spaces (so the string table interns
/// each distinct stack once).
pub mod backtrace {
    /// The string for `frames`.
    pub fn encode(frames: &[u64]) -> String {
        let mut text = String::with_capacity(frames.len() * 9);
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&format!("{frame:x}"));
        }
        text
    }

    /// The frames of `text`, or `None` if it is not a backtrace string.
    pub fn decode(text: &str) -> Option<Vec<u64>> {
        text.split(' ')
            .filter(|word| !word.is_empty())
            .map(|word| u64::from_str_radix(word, 16).ok())
            .collect()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_and_rejects_other_strings() {
            let frames = [0xffff_ff80_0008_1234, 0x4008_0010, 0];
            assert_eq!(super::decode(&super::encode(&frames)).unwrap(), frames);
            assert_eq!(super::decode("").unwrap(), Vec::<u64>::new());
            assert_eq!(super::decode("pcpu_lock"), None);
        }

        /// The stored form: the string table interns these bytes.
        #[test]
        fn frames_are_separated_by_one_space() {
            assert_eq!(super::encode(&[0x4008_0010, 0xabc]), "40080010 abc");
            assert_eq!(super::encode(&[]), "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_text(kind: EventKind) -> String {
        let event = Event {
            time: 0,
            cpu: CpuId(0),
            task: TaskId(0),
            pc: 0,
            caller: 0,
            kind,
        };
        event.display_kind(&StringTable::new()).to_string()
    }

    /// An invalidation of everything (length 0) reads as such, a range as its
    /// bounds.
    #[test]
    fn an_invalidation_shows_all_or_its_range() {
        let all = kind_text(EventKind::TlbInvalidate {
            cpus: 0b11,
            start: 0,
            len: 0,
            asid: None,
        });
        assert!(all.contains(" all") && !all.contains("len="), "{all}");
        let range = kind_text(EventKind::TlbInvalidate {
            cpus: 1,
            start: 0x4000,
            len: 0x1000,
            asid: Some(3),
        });
        assert!(range.contains("va=0x4000 len=0x1000 asid=3"), "{range}");
    }
}
