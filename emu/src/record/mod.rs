//! Recording: guest execution turned into [`traces::Event`]s by the host, with code
//! hooks on a few addresses only (no per-instruction hook, nothing in the guest).
//!
//! # What is hooked
//! - The guest's stable probe symbols (docs/machine.md): the entry of `spin_lock`,
//!   `spin_trylock`, `spin_unlock`, `mutex_lock`, `mutex_trylock`, `mutex_unlock`,
//!   `lockdep_assert_held`, `lockdep_assert_mutex_held`, `might_sleep`,
//!   `cpu_switch_to`, `wake_up_thread`, `alloc_pages`, `free_pages`, `direct_reclaim`,
//!   `fs_reclaim_acquire`, `fs_reclaim_release`, `__alloc_percpu`,
//!   `__alloc_reserved_percpu`, `free_percpu`, `debug_check_no_locks_freed`,
//!   `csd_lock_wait`, `csd_unlock`, `smp_cross_call` (every IPI sent: an
//!   `IpiSend` with the interrupt the ISA delivers it as), and the exits (`ret`, or a
//!   `b` out of the function: a tail call) of those whose result matters. A return is matched to its call by (CPU, stack pointer, function): a
//!   function returns with the SP it was entered with, and each thread has its own
//!   stack, so a call that sleeps (a mutex) is matched when its thread comes back.
//!   Symbols a guest does not have are skipped (the compiler drops calls to an empty
//!   `fs_reclaim_release`: then the pseudo-lock is released where `direct_reclaim`,
//!   its only user, returns).
//! - Where a spin lock's word changes: the `cbnz` on the status of `spin_lock`'s
//!   ticket store-exclusive (the ticket is taken when the status is 0) and
//!   `spin_unlock`'s store-release. A spin lock's `LockAttempt` and `LockRelease`
//!   are decided at the function's entry (lock, flavour, caller, backtrace) and
//!   recorded there, so an IRQ taken before the ticket sees no attempt and one
//!   taken before the releasing store sees the lock still held, as the hardware
//!   has it (an IRQ taken between the store-exclusive and its `cbnz` records the
//!   attempt at the exception entry). A guest without those instructions gets
//!   both events at the entry.
//! - Every instruction that can change the IRQ mask, found by scanning the kernel's
//!   executable segments (the ISA's `IsaAbi::mask_write`): arm64's
//!   `msr daif, xN`, `msr daifset/daifclr, #imm` (which never reach Unicorn's MSR
//!   hook) and `eret`; RISC-V's CSR writes to `sstatus` and `sret`. The hook runs
//!   before the instruction and computes the new mask from the register, the
//!   immediate or what the exception saved. Exception entry done by the host is
//!   reported by the machine; an interrupt the engine enters itself (RISC-V) by a
//!   probe on the guest's trap vector. A CPU powers on masked.
//! - The host's own decisions: each slice the scheduler hands out
//!   ([`EventKind::SchedDecision`]) and each IRQ it delivers ([`EventKind::IrqInject`],
//!   then `HardIrqEnter`); the `eret` that leaves an IRQ is `HardIrqExit` (matched by
//!   the SP the exception was entered with).
//! - The simulated MMU's own view (when the machine has it): TLBIs, the barriers it
//!   hooks, page-table writes and what its TLB model did, which it queues as it sees
//!   them (`Recorder::queue`; what and when: the module doc of `simmu.rs`). Queued
//!   events enter the stream, in the order queued, before the recorder's next event
//!   and at the end of the slice; a queued event's time is kept unless that would
//!   make time go back on its CPU.
//!
//! # Spinlock flavours
//! `spin_lock_irq`/`spin_lock_irqsave` and the unlock forms call the plain primitives
//! (docs/machine.md). A plain primitive whose return address lies inside one of those
//! wrappers gets the wrapper's flavour, the wrapper's entry as `pc`, and as `caller`
//! the wrapper's own return address, read from its frame record at x29. A wrapper
//! that ends in a tail call to the primitive (`b spin_lock`) leaves no trace in x30:
//! its entry is hooked too, and the primitive entered with the SP the wrapper was
//! entered with (and the same lock) is that call.
//!
//! # Task
//! The running task of a CPU is read once from the guest's per-CPU data
//! (TPIDR_EL1 → `PerCpu::current` at +24 → `Thread::id` at +184, checked against the
//! thread's stack canary at +192), then followed through `cpu_switch_to(prev, next)`.
//! A pointer that does not check out gives the thread's address >> 4 as its id.
//! Before a task's first context switch, a `task:NAME` marker (value: the task's
//! number) records its name (`Thread::name`, 16 bytes at +104).
//!
//! # Time and order
//! An event's time is the machine's total instruction count when it happened (all
//! CPUs): the instructions before this slice plus those this CPU retired in the slice
//! before the hooked one. Events are recorded in the order the host ran them, which
//! the deterministic scheduler fixes, and handed to the sink after each slice.

pub(crate) mod abi;
mod linux;
mod linux_primitives;
mod linux_shared;
mod probed;

pub(crate) use probed::ProbedCore;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};
use traces::fx::{FxHashMap, FxHashSet};

use traces::{
    CpuId, Event, EventKind, IrqMaskCause, LockFlavor, LockRef, StrId, StringTable, TaskId,
};
use unicorn_engine::Unicorn;

use abi::{IsaAbi, MaskWrite};

use crate::block_start::always_starts_block;
use crate::core_mmu::CoreMmu;
use crate::cpu::Core;
use crate::error::{uc_err, EmuError};
use crate::kernel::KernelImage;
use crate::observe::{EventQueue, RunObserver};
use crate::slice_counter::SliceCounter;
use crate::unwind::{frame_chain_into, frames_above, StackWindow};

/// Receives the events of each slice, in order, with the run's string table.
pub type EventSink = Box<dyn FnMut(&[Event], &StringTable)>;

/// Asked at each scheduling point of the running CPU (an event
/// [`crate::sched::is_point`] accepts) whether to end its slice there.
pub(crate) type PointGate = Box<dyn Fn(usize, &EventKind) -> bool>;

/// Where the recorder sees a Linux kernel's locking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinuxLocks {
    /// lockdep's entry points if the kernel has them (and DWARF), else the lock
    /// primitives.
    #[default]
    Auto,
    /// lockdep's entry points (an error on a kernel without lockdep).
    Lockdep,
    /// The out-of-line lock primitives, as on a kernel without lockdep: partial
    /// (see `record/linux_primitives.rs`), but on any kernel.
    Primitives,
}

/// What to record besides the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// Where a Linux kernel's locking is seen (no effect on our guest).
    pub linux_locks: LinuxLocks,
    /// Test aid: sample PSTATE.I at every translation-block boundary (slow: a PSTATE
    /// read per block), see [`MaskSample`]; but at the vector where the engine
    /// enters interrupts itself (RISC-V), whose events come after the sample.
    pub sample_irq_mask: bool,
}

/// PSTATE.I read at a block boundary: `events_before` events had been recorded
/// (all CPUs) when `cpu` started the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskSample {
    /// The CPU.
    pub cpu: usize,
    /// Events recorded before the block started.
    pub events_before: u64,
    /// The block's address.
    pub pc: u64,
    /// PSTATE.I: IRQs masked.
    pub masked: bool,
}

// Guest data layout (docs/machine.md and guest/src/{percpu,sched}.rs).
const PERCPU_CURRENT: u64 = 24;
const THREAD_NAME: u64 = 104;
const THREAD_NAME_LEN: usize = 16;
const THREAD_STATE: u64 = 128;
const THREAD_QUEUED: u64 = 132;
const THREAD_ID: u64 = 184;
const THREAD_CANARY: u64 = 192;
const STACK_CANARY: u64 = 0x57ac_c0de_57ac_c0de;
const THREAD_SLEEPING: u32 = 1;
const SPIN_NAME: u64 = 16;
/// `CallRequest.done` (a byte; docs/machine.md).
const CSD_DONE: u64 = 16;
const MUTEX_NAME: u64 = 56;

/// A probed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Func {
    SpinLock,
    SpinTrylock,
    SpinUnlock,
    MutexLock,
    MutexTrylock,
    MutexUnlock,
    AssertHeld,
    AssertMutexHeld,
    MightSleep,
    CpuSwitchTo,
    WakeUpThread,
    AllocPages,
    FreePages,
    DirectReclaim,
    FsReclaimAcquire,
    FsReclaimRelease,
    AllocPercpu,
    AllocReservedPercpu,
    FreePercpu,
    CsdLockWait,
    CsdUnlock,
    SmpCrossCall,
    CheckNoLocksFreed,
}

impl Func {
    /// Whether the event at its return needs the function's result.
    fn result_matters(self) -> bool {
        matches!(
            self,
            Func::SpinTrylock
                | Func::MutexTrylock
                | Func::WakeUpThread
                | Func::AllocPages
                | Func::AllocPercpu
                | Func::AllocReservedPercpu
        )
    }

    const ALL: [(Func, &'static str, bool); 23] = [
        (Func::SpinLock, "spin_lock", true),
        (Func::SpinTrylock, "spin_trylock", true),
        (Func::SpinUnlock, "spin_unlock", false),
        (Func::MutexLock, "mutex_lock", true),
        (Func::MutexTrylock, "mutex_trylock", true),
        (Func::MutexUnlock, "mutex_unlock", false),
        (Func::AssertHeld, "lockdep_assert_held", false),
        (Func::AssertMutexHeld, "lockdep_assert_mutex_held", false),
        (Func::MightSleep, "might_sleep", false),
        (Func::CpuSwitchTo, "cpu_switch_to", false),
        (Func::WakeUpThread, "wake_up_thread", true),
        (Func::AllocPages, "alloc_pages", true),
        (Func::FreePages, "free_pages", false),
        (Func::DirectReclaim, "direct_reclaim", true),
        (Func::FsReclaimAcquire, "fs_reclaim_acquire", false),
        (Func::FsReclaimRelease, "fs_reclaim_release", false),
        // docs/machine.md: C ABI, size, align -> per-CPU pointer (0: failed).
        (Func::AllocPercpu, "__alloc_percpu", true),
        (Func::AllocReservedPercpu, "__alloc_reserved_percpu", true),
        (Func::FreePercpu, "free_percpu", false),
        // docs/machine.md: C ABI, (request, target cpu) and (request).
        (Func::CsdLockWait, "csd_lock_wait", false),
        (Func::CsdUnlock, "csd_unlock", false),
        // docs/machine.md: C ABI, (target cpu, IPI message).
        (Func::SmpCrossCall, "smp_cross_call", false),
        // docs/machine.md: C ABI, (address, length).
        (Func::CheckNoLocksFreed, "debug_check_no_locks_freed", false),
    ];
}

/// What a hooked address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Entry(Func),
    Return(Func),
    /// An instruction that can change the IRQ mask; `framed`: its function's
    /// frame record is set up there.
    Mask {
        write: MaskWrite,
        framed: bool,
    },
    /// RISC-V: the trap vector's first instruction (the guest's `trap_entry`),
    /// where QEMU enters the interrupts it takes.
    TrapEntry,
    /// A lock wrapper that tail-calls its primitive.
    WrapperEntry {
        flavor: LockFlavor,
    },
    /// Right after the instruction of `spin_lock` that takes a ticket: arm64's
    /// `cbnz wS` after the store-exclusive, the ticket taken when `wS` (the
    /// store's status) is 0; RISC-V's instruction after the `amoadd.w`, which
    /// always takes it (`status` None).
    TicketTaken {
        status: Option<u32>,
    },
    /// `spin_unlock`'s store that hands the lock on (arm64's store-release,
    /// RISC-V's store after `fence rw, w`).
    ReleaseStore,
    /// A hooked address of the Linux profile.
    Linux(linux_shared::LinuxSite),
}

fn is_attempt(kind: &EventKind) -> bool {
    matches!(kind, EventKind::LockAttempt { .. })
}

fn is_release(kind: &EventKind) -> bool {
    matches!(kind, EventKind::LockRelease { .. })
}

/// A call still open at its entry: what the return needs.
#[derive(Debug, Clone, Copy)]
struct OpenCall {
    stack: StrId,
    pc: u64,
    caller: u64,
    arg: u64,
    arg2: u64,
    flavor: LockFlavor,
}

/// Where the irq wrappers live: (start, end, flavour, wrapper entry).
#[derive(Debug, Clone, Default)]
struct Wrappers {
    ranges: Vec<(u64, u64, LockFlavor)>,
}

impl Wrappers {
    fn find(&self, ret: u64) -> Option<(u64, LockFlavor)> {
        self.ranges
            .iter()
            .find(|&&(start, end, _)| ret > start && ret < end)
            .map(|&(start, _, flavor)| (start, flavor))
    }
}

/// An event queued by another part of the machine, with its task if known.
struct Queued {
    event: Event,
    task_known: bool,
}

struct State {
    pending: Vec<Event>,
    /// Shared with [`Recorder::queue`], which may run while `State` is borrowed.
    queued: Rc<RefCell<Vec<Queued>>>,
    /// The time of each CPU's last event in `pending` or handed to the sink.
    last_time: Vec<u64>,
    recorded: u64,
    strings: StringTable,
    slice_base: u64,
    tasks: Vec<Option<TaskId>>,
    /// Tasks whose name was recorded (a `task:NAME` marker with the task number,
    /// before the first context switch from or to it).
    named: FxHashSet<u32>,
    open: FxHashMap<(usize, u64, Func), OpenCall>,
    /// Exceptions entered and not yet returned from: (CPU, SP after entry) → IRQ number
    /// (`None`: synchronous).
    exceptions: FxHashMap<(usize, u64), Option<u32>>,
    /// (lock address, name pointer, name length) → class.
    classes: FxHashMap<(u64, u64, u64), StrId>,
    /// Exact symbol at an address (static locks), looked up once.
    symbols: FxHashMap<u64, Option<String>>,
    samples: Vec<MaskSample>,
    /// Tail-calling wrappers entered: (CPU, SP) -> (flavour, wrapper entry, caller).
    wrapped: FxHashMap<(usize, u64), (LockFlavor, u64, u64)>,
    /// Each distinct backtrace seen, as its interned string.
    stacks: FxHashMap<Vec<u64>, StrId>,
    /// The buffer [`Recorder::stack_id`] walks each frame chain into.
    chain: Vec<u64>,
    /// The backtrace each CPU's last `Stack` event named.
    cpu_stack: Vec<Option<StrId>>,
    /// Spin lock events decided at a function's entry and recorded at the
    /// instruction that makes them true (a ticket taken, the releasing store), per
    /// task, innermost (an IRQ handler's) last.
    deferred: FxHashMap<TaskId, Vec<Deferred>>,
    /// The Linux profile's state (unused with a percpu-lab guest).
    linux: linux::LinuxState,
}

impl State {
    /// What a recorder knows before its first event.
    fn fresh(cpus: usize, queued: Rc<RefCell<Vec<Queued>>>) -> Self {
        let mut strings = StringTable::new();
        strings.intern("fs_reclaim");
        State {
            pending: Vec::new(),
            queued,
            last_time: vec![0; cpus],
            recorded: 0,
            strings,
            slice_base: 0,
            tasks: vec![None; cpus],
            open: FxHashMap::default(),
            exceptions: FxHashMap::default(),
            classes: FxHashMap::default(),
            symbols: FxHashMap::default(),
            samples: Vec::new(),
            wrapped: FxHashMap::default(),
            stacks: FxHashMap::default(),
            chain: Vec::new(),
            cpu_stack: vec![None; cpus],
            named: FxHashSet::default(),
            deferred: FxHashMap::default(),
            linux: linux::LinuxState::new(cpus),
        }
    }
}

/// A spin lock event waiting for its instruction.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    stack: StrId,
    pc: u64,
    caller: u64,
    kind: EventKind,
}

/// The recording state of a machine.
pub(crate) struct Recorder {
    /// Registers and conventions of the cores' instruction set.
    abi: &'static dyn IsaAbi,
    state: RefCell<State>,
    queued: Rc<RefCell<Vec<Queued>>>,
    sink: RefCell<EventSink>,
    gate: PointGate,
    kernel: KernelImage,
    /// Set for a Linux kernel: what it hooks instead of our guest's functions.
    linux: Option<linux::LinuxProfile>,
    wrappers: Wrappers,
    fs_reclaim: u64,
    release_fs_reclaim_at_reclaim_exit: bool,
    /// `spin_lock`'s [`Site::TicketTaken`] (address, status register), if found:
    /// its `LockAttempt` waits there.
    ticket_taken_at: Option<(u64, Option<u32>)>,
    /// Whether `spin_unlock` has a [`Site::ReleaseStore`]: its `LockRelease` waits
    /// there.
    release_store: bool,
    /// The engine's target page size (the unit of its TLB), for [`StackWindow`].
    target_page: Cell<u64>,
    /// Each core's simulated MMU, if it has one: guest memory is read through it
    /// ([`ProbedCore`]). Weak: each of them holds this recorder.
    mmus: OnceCell<Vec<Option<Weak<CoreMmu>>>>,
}

/// The two u64s at `addr` (each 0 if unreadable), in one read where it can.
fn read_u64_pair(core: &ProbedCore<'_, '_>, addr: u64) -> [u64; 2] {
    let mut buf = [0; 16];
    if core.read(addr, &mut buf) {
        crate::unwind::words(&buf)
    } else {
        [addr, addr + 8].map(|at| core.read_u64(at).unwrap_or(0))
    }
}

impl Recorder {
    /// Hooks every core; events go to `sink`.
    pub(crate) fn install(
        cores: &mut [Core],
        kernel: &KernelImage,
        options: RecordOptions,
        sink: EventSink,
        gate: PointGate,
    ) -> Result<Rc<Recorder>, EmuError> {
        if kernel.is_boot_protocol_image() {
            let (profile, sites) = match linux::LinuxProfile::detect(kernel, options.linux_locks)? {
                Some((profile, sites)) => (Some(profile), sites),
                None => (None, Vec::new()),
            };
            let recorder = Rc::new(Self::new(cores.len(), kernel, profile, sink, gate));
            recorder.hook(cores, &sites, options)?;
            return Ok(recorder);
        }
        let abi = kernel.isa().arch().abi();
        let mut sites: Vec<(u64, Site)> = Vec::new();
        let have = |name: &str| kernel.symbol_address(name).is_some();
        let release_fs_reclaim_at_reclaim_exit =
            !have("fs_reclaim_release") && have("fs_reclaim_acquire");
        for (func, name, needs_return) in Func::ALL {
            let Some((entry, code)) = kernel.function_code(name)? else {
                continue;
            };
            sites.push((entry, Site::Entry(func)));
            let returns =
                needs_return || (func == Func::DirectReclaim && release_fs_reclaim_at_reclaim_exit);
            if returns {
                for off in abi.exit_offsets(code) {
                    let word = u32::from_le_bytes(code[off as usize..][..4].try_into().unwrap());
                    let tail_call = !abi.is_return(word);
                    if tail_call && func.result_matters() {
                        // Its result is not in x0 yet at the branch: say so rather
                        // than record a wrong one (no guest function does this today).
                        tracing::warn!(
                            "{name} ends in a tail call: its result is not recorded there"
                        );
                        continue;
                    }
                    sites.push((entry + off, Site::Return(func)));
                }
            }
        }
        // A spin lock is waited for from its ticket on, and free from the store
        // that hands it on: events there, not at the functions' entries, so that an
        // IRQ taken in between sees the lock as the hardware has it.
        let mut ticket_taken_at = None;
        if let Some((entry, code)) = kernel.function_code("spin_lock")? {
            if let Some(site) = abi.ticket_taken_site(code) {
                let at = entry + site.offset;
                sites.push((
                    at,
                    Site::TicketTaken {
                        status: site.status,
                    },
                ));
                ticket_taken_at = Some((at, site.status));
            }
        }
        let mut release_store = false;
        if let Some((entry, code)) = kernel.function_code("spin_unlock")? {
            if let Some(off) = abi.release_store_site(code) {
                sites.push((entry + off, Site::ReleaseStore));
                release_store = true;
            }
        }
        for (addr, word) in kernel.code_words() {
            if let Some(write) = abi.mask_write(word) {
                let framed = kernel
                    .function_containing(addr)
                    .is_some_and(|(start, code)| {
                        abi.frame_set_up_at(code, (addr - start) as usize)
                    });
                sites.push((addr, Site::Mask { write, framed }));
            }
        }
        if let Some(vector) = abi
            .interrupt_vector_symbol()
            .and_then(|name| kernel.symbol_address(name))
        {
            sites.push((vector, Site::TrapEntry));
        }
        let mut wrappers = Wrappers::default();
        for (name, flavor, primitive) in [
            ("spin_lock_irq", LockFlavor::SpinIrq, "spin_lock"),
            ("spin_unlock_irq", LockFlavor::SpinIrq, "spin_unlock"),
            ("spin_lock_irqsave", LockFlavor::SpinIrqSave, "spin_lock"),
            (
                "spin_unlock_irqrestore",
                LockFlavor::SpinIrqSave,
                "spin_unlock",
            ),
        ] {
            let Some((start, code)) = kernel.function_code(name)? else {
                continue;
            };
            wrappers
                .ranges
                .push((start, start + code.len() as u64, flavor));
            let primitive = kernel.symbol_address(primitive);
            let tail_calls = abi.exit_offsets(code).into_iter().any(|off| {
                abi.jump_target(code, off)
                    .is_some_and(|t| Some(start.wrapping_add_signed(t)) == primitive)
            });
            if tail_calls {
                sites.push((start, Site::WrapperEntry { flavor }));
            }
        }
        let recorder = Rc::new(Recorder {
            wrappers,
            fs_reclaim: kernel.symbol_address("fs_reclaim_acquire").unwrap_or(0),
            release_fs_reclaim_at_reclaim_exit,
            ticket_taken_at,
            release_store,
            ..Self::new(cores.len(), kernel, None, sink, gate)
        });
        recorder.hook(cores, &sites, options)?;
        Ok(recorder)
    }

    fn new(
        cpus: usize,
        kernel: &KernelImage,
        linux: Option<linux::LinuxProfile>,
        sink: EventSink,
        gate: PointGate,
    ) -> Self {
        let queued = Rc::new(RefCell::new(Vec::new()));
        Recorder {
            abi: kernel.isa().arch().abi(),
            queued: queued.clone(),
            state: RefCell::new(State::fresh(cpus, queued)),
            sink: RefCell::new(sink),
            gate,
            kernel: kernel.clone(),
            linux,
            wrappers: Wrappers::default(),
            fs_reclaim: 0,
            release_fs_reclaim_at_reclaim_exit: false,
            ticket_taken_at: None,
            release_store: false,
            target_page: Cell::new(0),
            mmus: OnceCell::new(),
        }
    }

    /// Starts recording afresh into `sink`, as a recorder attached now would (its
    /// hooks stay where they are): for a machine put back to a snapshot.
    pub(crate) fn restart(&self, sink: EventSink) {
        let cpus = self.state.borrow().last_time.len();
        self.queued.borrow_mut().clear();
        *self.state.borrow_mut() = State::fresh(cpus, self.queued.clone());
        *self.sink.borrow_mut() = sink;
    }

    /// Hooks `sites` on every core (and the mask sampler if asked for).
    fn hook(
        self: &Rc<Self>,
        cores: &mut [Core],
        sites: &[(u64, Site)],
        options: RecordOptions,
    ) -> Result<(), EmuError> {
        let err = uc_err("installing the recording probes");
        if let Some(core) = cores.first() {
            self.target_page
                .set(core.uc.ctl_get_page_size().map_err(&err)?.into());
        }
        let mmus = cores
            .iter()
            .map(|core| core.mmu.as_ref().map(Rc::downgrade));
        let _ = self.mmus.set(mmus.collect());
        // An interrupt the engine enters itself has masked IRQs before the vector's
        // block starts, and is recorded by the vector's own probe, which runs after
        // the block hook: a sample there would precede its events.
        let vectors: Vec<u64> = sites
            .iter()
            .filter(|(_, site)| *site == Site::TrapEntry)
            .map(|&(addr, _)| addr)
            .collect();
        // Sites where blocks always start are run from the block hook (cheaper than
        // code hooks, see `block_start`); not beside the mask sampler's block hook,
        // which must see a block start before its sites' events, nor on Linux,
        // whose code the kernel patches as it boots.
        let from_block_hook = |addr| {
            !options.sample_irq_mask
                && self.linux.is_none()
                && always_starts_block(&self.kernel, self.abi, addr)
        };
        let block_start_sites: Vec<bool> = sites.iter().map(|&(a, _)| from_block_hook(a)).collect();
        for (cpu, core) in cores.iter_mut().enumerate() {
            for (&(addr, site), &at_block_start) in sites.iter().zip(&block_start_sites) {
                let rec = self.clone();
                let on_site = move |uc: &mut Unicorn<'_, ()>, counter: &SliceCounter, pc| {
                    rec.on_site(uc, cpu, counter, site, pc)
                };
                // An `msr daif` runs the MSR hook anyway: no code hook, whose every
                // hit walks the engine's whole list of them (see `code_sites`).
                let msr_hooked = matches!(site, Site::Mask { write, .. }
                    if self.linux.is_none() && self.abi.mask_write_is_hooked(write));
                if at_block_start {
                    core.counter.block_starts.add(addr, Box::new(on_site));
                } else if msr_hooked {
                    core.counter.daif_writes.add(addr, on_site);
                } else {
                    let counter = core.counter.clone();
                    core.code_sites
                        .add(addr, move |uc, pc| on_site(uc, &counter, pc));
                }
            }
            core.code_sites.install(&mut core.uc).map_err(&err)?;
            if options.sample_irq_mask {
                let (rec, vectors) = (self.clone(), vectors.clone());
                core.uc
                    .add_block_hook(1, 0, move |uc, pc, _| {
                        if vectors.contains(&pc) {
                            return;
                        }
                        let masked = rec.abi.irqs_masked(uc);
                        let mut st = rec.state.borrow_mut();
                        let events_before = st.recorded + st.pending.len() as u64;
                        st.samples.push(MaskSample {
                            cpu,
                            events_before,
                            pc,
                            masked,
                        });
                    })
                    .map_err(&err)?;
            }
            core.uc.ctl_flush_tb().map_err(&err)?;
            if let Some(mmu) = &core.mmu {
                mmu.start_recording(self.clone());
            }
        }
        Ok(())
    }

    /// Records `task`'s innermost deferred event that `wanted` accepts, at `now`.
    fn record_deferred(&self, cpu: usize, task: TaskId, now: u64, wanted: fn(&EventKind) -> bool) {
        let mut st = self.state.borrow_mut();
        let Some(queue) = st.deferred.get_mut(&task) else {
            return;
        };
        let Some(at) = queue.iter().rposition(|d| wanted(&d.kind)) else {
            return;
        };
        let d = queue.remove(at);
        st.push_stacked(d.stack, now, cpu, task, d.pc, d.caller, d.kind);
    }

    /// `cpu`, stopped in a probe with its engine `uc`, as the recorder reads it.
    fn probed<'a, 'u>(&self, uc: &'a Unicorn<'u, ()>, cpu: usize) -> ProbedCore<'a, 'u> {
        let mmu = self
            .mmus
            .get()
            .and_then(|mmus| mmus.get(cpu)?.as_ref()?.upgrade());
        ProbedCore::new(uc, mmu)
    }

    /// The running task of `cpu` (cached; read from the guest the first time).
    fn task(&self, uc: &ProbedCore<'_, '_>, cpu: usize) -> TaskId {
        if self.linux.is_some() {
            return linux::current_task(uc);
        }
        if let Some(task) = self.state.borrow().tasks[cpu] {
            return task;
        }
        let percpu = self.abi.percpu(uc);
        if percpu == 0 {
            return TaskId(0);
        }
        match uc.read_u64(percpu + PERCPU_CURRENT) {
            Some(thread) if thread != 0 => {
                let task = self.thread_id(uc, thread);
                self.state.borrow_mut().tasks[cpu] = Some(task);
                task
            }
            _ => TaskId(0),
        }
    }

    fn on_site(
        &self,
        uc: &mut Unicorn<'_, ()>,
        cpu: usize,
        counter: &SliceCounter,
        site: Site,
        pc: u64,
    ) {
        let before = self.state.borrow().pending.len();
        self.on_site_events(&self.probed(uc, cpu), cpu, counter, site, pc);
        // The scheduler sees this CPU's new synchronisation events; ending the slice
        // is using up its budget, so it ends where the next block would start.
        let st = self.state.borrow();
        let mut preempt = false;
        for event in &st.pending[before.min(st.pending.len())..] {
            if usize::from(event.cpu.0) == cpu && crate::sched::is_point(&event.kind) {
                preempt |= (self.gate)(cpu, &event.kind);
            }
        }
        if preempt {
            counter.budget.set(0);
        }
    }

    fn on_site_events(
        &self,
        uc: &ProbedCore<'_, '_>,
        cpu: usize,
        counter: &SliceCounter,
        site: Site,
        pc: u64,
    ) {
        let now = self.state.borrow().slice_base + counter.retired_before(pc);
        if let (Site::Linux(site), Some(profile)) = (site, &self.linux) {
            return self.on_linux_site(uc, profile, cpu, site, pc, now);
        }
        let task = self.task(uc, cpu);
        let abi = self.abi;
        let sp = abi.sp(uc);
        let lr = abi.link(uc);
        match site {
            Site::Mask { write, framed } => {
                let old = abi.irqs_masked(uc);
                let new = abi.mask_after(uc, write, old);
                let exception_return = write.exception_return;
                let cause = if exception_return {
                    IrqMaskCause::Eret
                } else {
                    IrqMaskCause::Instruction
                };
                let mut st = self.state.borrow_mut();
                if exception_return {
                    if let Some(Some(intid)) = st.exceptions.remove(&(cpu, sp)) {
                        st.push(now, cpu, task, pc, 0, EventKind::HardIrqExit { intid });
                    }
                }
                if old != new {
                    let kind = EventKind::IrqMask { old, new, cause };
                    if exception_return || new {
                        // Unmasking is what reports point at; masking needs no stack.
                        st.push(now, cpu, task, pc, 0, kind);
                    } else {
                        // The caller: in the frame record once the function
                        // pushed one, else still in the link register.
                        let fp = abi.frame_pointer(uc);
                        let caller = if framed {
                            self.caller_in_frame(uc, fp)
                        } else {
                            lr
                        };
                        let stack = self.stack_id(uc, &mut st, caller, fp);
                        st.push_stacked(stack, now, cpu, task, pc, caller, kind);
                    }
                }
            }
            Site::TrapEntry => {
                // QEMU took an interrupt (scause's top bit); the host's own
                // exception entries are reported by the machine.
                if let Some((cause, epc)) = self.abi.interrupt_taken(uc) {
                    self.exception_entered(uc, cpu, Some(cause), epc, now);
                }
            }
            Site::TicketTaken { status } => {
                if status.is_none_or(|status| abi.xreg(uc, status) == 0) {
                    self.record_deferred(cpu, task, now, is_attempt);
                }
            }
            Site::ReleaseStore => self.record_deferred(cpu, task, now, is_release),
            Site::WrapperEntry { flavor } => {
                let mut st = self.state.borrow_mut();
                st.wrapped.insert((cpu, sp), (flavor, pc, lr));
            }
            Site::Entry(func) => self.on_entry(uc, cpu, func, pc, now, task, sp, lr),
            Site::Linux(_) => {}
            Site::Return(func) => {
                let Some(call) = self.state.borrow_mut().open.remove(&(cpu, sp, func)) else {
                    return;
                };
                self.on_return(uc, cpu, func, call, now, task);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_entry(
        &self,
        uc: &ProbedCore<'_, '_>,
        cpu: usize,
        func: Func,
        pc: u64,
        now: u64,
        task: TaskId,
        sp: u64,
        lr: u64,
    ) {
        let (x0, x1) = (self.abi.arg(uc, 0), self.abi.arg(uc, 1));
        let (mut pc, mut caller, mut flavor) = (pc, lr, LockFlavor::Spin);
        if matches!(func, Func::SpinLock | Func::SpinUnlock | Func::SpinTrylock) {
            let tail_called = self.state.borrow_mut().wrapped.remove(&(cpu, sp));
            if let Some((f, wrapper, wrapper_caller)) = tail_called {
                (pc, caller, flavor) = (wrapper, wrapper_caller, f);
            } else if let Some((wrapper, f)) = self.wrappers.find(lr) {
                pc = wrapper;
                flavor = f;
                caller = self.caller_in_frame(uc, self.abi.frame_pointer(uc));
            }
        }
        let spin = |st: &mut State| self.lock_ref(uc, st, x0, SPIN_NAME);
        let mutex = |st: &mut State| self.lock_ref(uc, st, x0, MUTEX_NAME);
        let mut st = self.state.borrow_mut();
        let stack = self.stack_id(uc, &mut st, caller, self.abi.frame_pointer(uc));
        let open = OpenCall {
            stack,
            pc,
            caller,
            arg: x0,
            arg2: x1,
            flavor,
        };
        let kind = match func {
            Func::SpinLock => {
                let lock = spin(&mut st);
                st.open.insert((cpu, sp, func), open);
                let kind = EventKind::LockAttempt { lock, flavor };
                if self.ticket_taken_at.is_some() {
                    return st.defer(task, stack, pc, caller, kind);
                }
                kind
            }
            Func::MutexLock => {
                let lock = mutex(&mut st);
                st.open.insert((cpu, sp, func), open);
                EventKind::LockAttempt {
                    lock,
                    flavor: LockFlavor::Mutex,
                }
            }
            Func::SpinTrylock
            | Func::MutexTrylock
            | Func::WakeUpThread
            | Func::AllocPages
            | Func::AllocPercpu
            | Func::AllocReservedPercpu => {
                st.open.insert((cpu, sp, func), open);
                return;
            }
            Func::DirectReclaim => {
                st.open.insert((cpu, sp, func), open);
                EventKind::ReclaimEnter
            }
            Func::SpinUnlock => {
                let kind = EventKind::LockRelease {
                    lock: spin(&mut st),
                    flavor,
                };
                if self.release_store {
                    return st.defer(task, stack, pc, caller, kind);
                }
                kind
            }
            Func::MutexUnlock => EventKind::LockRelease {
                lock: mutex(&mut st),
                flavor: LockFlavor::Mutex,
            },
            Func::AssertHeld => EventKind::AssertHeld {
                lock: spin(&mut st),
            },
            Func::AssertMutexHeld => EventKind::AssertHeld {
                lock: mutex(&mut st),
            },
            Func::MightSleep => EventKind::MightSleep,
            Func::CpuSwitchTo => {
                let (from, to) = (self.thread_id(uc, x0), self.thread_id(uc, x1));
                for (thread, id) in [(x0, from), (x1, to)] {
                    if st.named.insert(id.0) {
                        let label = st
                            .strings
                            .intern(&format!("task:{}", self.thread_name(uc, thread)));
                        st.push_stacked(
                            stack,
                            now,
                            cpu,
                            from,
                            pc,
                            lr,
                            EventKind::Marker {
                                label,
                                value: id.0 as u64,
                            },
                        );
                    }
                }
                // Going to sleep: SLEEPING and not left on the run queue (a thread
                // preempted right after setting SLEEPING stays queued).
                let field = |offset| x0 + offset + self.abi.thread_field_shift();
                let state = uc.read_u64(field(THREAD_STATE)).unwrap_or(0) as u32;
                let queued = uc.read_u64(field(THREAD_QUEUED)).unwrap_or(0) as u8 != 0;
                let sleeping = state == THREAD_SLEEPING && !queued;
                if sleeping {
                    st.push_stacked(stack, now, cpu, from, pc, lr, EventKind::Sleep);
                }
                st.push_stacked(
                    stack,
                    now,
                    cpu,
                    from,
                    pc,
                    lr,
                    EventKind::ContextSwitch { from, to },
                );
                st.tasks[cpu] = Some(to);
                return;
            }
            Func::FreePercpu => EventKind::PercpuFree { addr: x0 },
            Func::CsdLockWait => {
                // A call its target already ran makes no wait (its csd_unlock came
                // before this entry).
                let done = uc.read_u64(x0 + CSD_DONE).unwrap_or(0) & 0xff != 0;
                if done {
                    return;
                }
                EventKind::CsdWait {
                    target: CpuId(x1 as u16),
                    csd: x0,
                }
            }
            Func::CsdUnlock => EventKind::CsdUnlock { csd: x0 },
            Func::SmpCrossCall => EventKind::IpiSend {
                target: CpuId(x0 as u16),
                msg: x1 as u32,
                intid: self.abi.ipi_intid(x1 as u32),
            },
            Func::CheckNoLocksFreed => EventKind::LockMemoryFreed { addr: x0, len: x1 },
            Func::FreePages => EventKind::PageFree {
                pa: x0,
                order: x1 as u8,
            },
            Func::FsReclaimAcquire => {
                let lock = self.fs_reclaim_lock();
                st.push_stacked(
                    stack,
                    now,
                    cpu,
                    task,
                    pc,
                    lr,
                    EventKind::LockAttempt {
                        lock,
                        flavor: LockFlavor::Pseudo,
                    },
                );
                EventKind::LockAcquired {
                    lock,
                    flavor: LockFlavor::Pseudo,
                }
            }
            Func::FsReclaimRelease => EventKind::LockRelease {
                lock: self.fs_reclaim_lock(),
                flavor: LockFlavor::Pseudo,
            },
        };
        st.push_stacked(stack, now, cpu, task, pc, caller, kind);
    }

    fn on_return(
        &self,
        uc: &ProbedCore<'_, '_>,
        cpu: usize,
        func: Func,
        call: OpenCall,
        now: u64,
        task: TaskId,
    ) {
        let (x0, x1) = (self.abi.arg(uc, 0), self.abi.arg(uc, 1));
        let mut st = self.state.borrow_mut();
        let (pc, caller) = (call.pc, call.caller);
        let kind = match func {
            Func::SpinLock => EventKind::LockAcquired {
                lock: self.lock_ref(uc, &mut st, call.arg, SPIN_NAME),
                flavor: call.flavor,
            },
            Func::MutexLock => EventKind::LockAcquired {
                lock: self.lock_ref(uc, &mut st, call.arg, MUTEX_NAME),
                flavor: LockFlavor::Mutex,
            },
            Func::SpinTrylock => EventKind::Trylock {
                lock: self.lock_ref(uc, &mut st, call.arg, SPIN_NAME),
                flavor: call.flavor,
                acquired: x0 & 1 != 0,
            },
            Func::MutexTrylock => EventKind::Trylock {
                lock: self.lock_ref(uc, &mut st, call.arg, MUTEX_NAME),
                flavor: LockFlavor::Mutex,
                acquired: x0 & 1 != 0,
            },
            Func::WakeUpThread => {
                if x0 & 1 == 0 {
                    return;
                }
                EventKind::Wake {
                    task: self.thread_id(uc, call.arg),
                }
            }
            // Rust ABI: `Option<usize>` comes back as (discriminant, value) in x0, x1.
            Func::AllocPages => EventKind::PageAlloc {
                order: call.arg as u8,
                // The guest's `Gfp` enum (0 Kernel, 1 Atomic) as Linux's GFP bits.
                gfp: match call.arg2 as u8 {
                    0 => traces::event::gfp::KERNEL,
                    _ => traces::event::gfp::ATOMIC,
                },
                pa: if x0 & 1 != 0 { x1 } else { 0 },
            },
            Func::AllocPercpu | Func::AllocReservedPercpu => EventKind::PercpuAlloc {
                size: call.arg,
                align: call.arg2,
                addr: x0,
            },
            Func::DirectReclaim => {
                if self.release_fs_reclaim_at_reclaim_exit {
                    let lock = self.fs_reclaim_lock();
                    st.push_stacked(
                        call.stack,
                        now,
                        cpu,
                        task,
                        pc,
                        caller,
                        EventKind::LockRelease {
                            lock,
                            flavor: LockFlavor::Pseudo,
                        },
                    );
                }
                EventKind::ReclaimExit
            }
            _ => return,
        };
        st.push_stacked(call.stack, now, cpu, task, pc, caller, kind);
    }

    /// The interned backtrace above code called from `caller` (whose frame
    /// records start at `fp`): the frames after `pc` and `caller`, which the event
    /// itself carries (so events of one function share a stack).
    fn stack_id(&self, uc: &ProbedCore<'_, '_>, st: &mut State, caller: u64, fp: u64) -> StrId {
        let mut stack = StackWindow::new(
            |at, buf: &mut [u8]| uc.read(at, buf),
            self.target_page.get(),
        );
        let mut chain = std::mem::take(&mut st.chain);
        frame_chain_into(
            &mut chain,
            |at| stack.record(at),
            fp,
            self.abi.frame_record(),
        );
        let frames = frames_above(caller, &chain);
        let id = match st.stacks.get(frames) {
            Some(&id) => id,
            None => {
                let id = st.strings.intern(&traces::event::backtrace::encode(frames));
                st.stacks.insert(frames.to_vec(), id);
                id
            }
        };
        st.chain = chain;
        id
    }

    /// The return address in the frame record at `fp`.
    fn caller_in_frame(&self, uc: &ProbedCore<'_, '_>, fp: u64) -> u64 {
        let offset = self.abi.frame_record() + 8;
        uc.read_u64(fp.wrapping_add_signed(offset)).unwrap_or(0)
    }

    /// The thread's name (NUL-padded bytes in the guest).
    fn thread_name(&self, uc: &ProbedCore<'_, '_>, thread: u64) -> String {
        let mut buf = [0; THREAD_NAME_LEN];
        let at = thread + THREAD_NAME + self.abi.thread_field_shift();
        if !uc.read(at, &mut buf) {
            return "?".into();
        }
        let len = buf.iter().position(|&b| b == 0).unwrap_or(THREAD_NAME_LEN);
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    /// The guest's number for the thread at `thread`.
    fn thread_id(&self, uc: &ProbedCore<'_, '_>, thread: u64) -> TaskId {
        let shift = self.abi.thread_field_shift();
        match (
            uc.read_u64(thread + THREAD_ID + shift),
            uc.read_u64(thread + THREAD_CANARY + shift),
        ) {
            (Some(id), Some(STACK_CANARY)) if id <= u32::MAX as u64 => TaskId(id as u32),
            _ => TaskId((thread >> 4) as u32),
        }
    }

    fn fs_reclaim_lock(&self) -> LockRef {
        LockRef {
            addr: self.fs_reclaim,
            class: StrId(0),
        }
    }

    /// The lock at `addr`: its class is its symbol if it is a static lock, else its
    /// name (read through the name pointer at `name_at`).
    fn lock_ref(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        addr: u64,
        name_at: u64,
    ) -> LockRef {
        let [name_ptr, name_len] = read_u64_pair(uc, addr + name_at);
        if let Some(&class) = st.classes.get(&(addr, name_ptr, name_len)) {
            return LockRef { addr, class };
        }
        let symbol = st
            .symbols
            .entry(addr)
            .or_insert_with(|| {
                let name = self.kernel.symbolize(addr)?;
                name.strip_suffix("+0x0").map(str::to_string)
            })
            .clone();
        let text = symbol.unwrap_or_else(|| {
            let mut buf = vec![0; name_len.min(256) as usize];
            if uc.read(name_ptr, &mut buf) && name_len > 0 {
                String::from_utf8_lossy(&buf).into_owned()
            } else {
                format!("lock@{addr:#x}")
            }
        });
        let class = st.strings.intern(&text);
        st.classes.insert((addr, name_ptr, name_len), class);
        LockRef { addr, class }
    }
}

impl State {
    /// Moves the queued events into the stream, before an event of `next` (CPU,
    /// time) if given: each keeps its time unless that would make time go back on
    /// its CPU (or pass `next` on the same CPU).
    fn take_queued(&mut self, next: Option<(usize, u64)>) {
        let mut queued = std::mem::take(&mut *self.queued.borrow_mut());
        for Queued {
            mut event,
            task_known,
        } in queued.drain(..)
        {
            let cpu = usize::from(event.cpu.0);
            let last = self.last_time[cpu];
            event.time = event.time.max(last);
            if let Some((next_cpu, next_time)) = next.filter(|&(c, _)| c == cpu) {
                debug_assert_eq!(next_cpu, cpu);
                event.time = event.time.min(next_time.max(last));
            }
            if !task_known {
                event.task = self.tasks[cpu].unwrap_or_default();
            }
            self.last_time[cpu] = event.time;
            self.pending.push(event);
        }
        // The emptied buffer goes back for the next events (nothing queued meanwhile).
        let mut slot = self.queued.borrow_mut();
        if slot.capacity() == 0 {
            *slot = queued;
        }
    }

    /// [`State::push`] of a probed event whose backtrace is `stack`: names it first
    /// (a `Stack` event) unless it is already the CPU's current one.
    /// Holds `kind` until [`Recorder::record_deferred`] finds its instruction.
    fn defer(&mut self, task: TaskId, stack: StrId, pc: u64, caller: u64, kind: EventKind) {
        let deferred = Deferred {
            stack,
            pc,
            caller,
            kind,
        };
        self.deferred.entry(task).or_default().push(deferred);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_stacked(
        &mut self,
        stack: StrId,
        time: u64,
        cpu: usize,
        task: TaskId,
        pc: u64,
        caller: u64,
        kind: EventKind,
    ) {
        if !needs_stack(&kind) {
            return self.push(time, cpu, task, pc, caller, kind);
        }
        if self.cpu_stack[cpu] != Some(stack) {
            self.cpu_stack[cpu] = Some(stack);
            self.push(time, cpu, task, 0, 0, EventKind::Stack { frames: stack });
        }
        self.push(time, cpu, task, pc, caller, kind);
    }

    fn push(&mut self, time: u64, cpu: usize, task: TaskId, pc: u64, caller: u64, kind: EventKind) {
        self.take_queued(Some((cpu, time)));
        self.last_time[cpu] = self.last_time[cpu].max(time);
        self.pending.push(Event {
            time,
            cpu: CpuId(cpu as u16),
            task,
            pc,
            caller,
            kind,
        });
    }
}

/// Whether a report may point at an event of `kind`, so it is worth its backtrace:
/// the lock operations, sleep points and turning IRQs on.
fn needs_stack(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::LockAttempt { .. }
            | EventKind::LockAcquired { .. }
            | EventKind::LockRelease { .. }
            | EventKind::Trylock { .. }
            | EventKind::ReadLock { .. }
            | EventKind::AssertHeld { .. }
            | EventKind::MightSleep
            | EventKind::LockMemoryFreed { .. }
            | EventKind::PageAlloc { .. }
            | EventKind::IrqMask { new: false, .. }
    )
}

impl EventQueue for Recorder {
    /// Queues an event another part of the machine saw on `cpu` at virtual `time`
    /// (the simulated MMU's, see [`crate::simmu`]). It enters the stream before the
    /// recorder's next event, attributed to the running task; `uc` is given where
    /// guest memory may be read to find that task (not from inside a TLB fill).
    fn queue(
        &self,
        uc: Option<&Unicorn<'_, ()>>,
        cpu: usize,
        time: u64,
        pc: u64,
        caller: u64,
        kind: EventKind,
    ) {
        let task = uc.map(|uc| self.task(&self.probed(uc, cpu), cpu));
        self.queued.borrow_mut().push(Queued {
            event: Event {
                time,
                cpu: CpuId(cpu as u16),
                task: task.unwrap_or_default(),
                pc,
                caller,
                kind,
            },
            task_known: task.is_some(),
        });
    }
}

impl RunObserver for Recorder {
    /// Notes where the slice starts and records the scheduler's decision.
    fn slice_starts(&self, cpu: usize, insns: u64, total_insns: u64) {
        let mut st = self.state.borrow_mut();
        st.slice_base = total_insns;
        let task = st.tasks[cpu].unwrap_or_default();
        st.push(
            total_insns,
            cpu,
            task,
            0,
            0,
            EventKind::SchedDecision {
                cpu: CpuId(cpu as u16),
                slice: insns,
            },
        );
    }

    /// Records the entry: an IRQ's injection, IRQs masked by it (when they were
    /// on), the hard-IRQ context it opens, and a spinlock ticket the interrupted
    /// code had already taken; remembers the exception by its stack for the `eret`.
    fn exception_entered(
        &self,
        uc: &Unicorn<'_, ()>,
        cpu: usize,
        irq: Option<u32>,
        return_pc: u64,
        now: u64,
    ) {
        let was_masked = self.abi.masked_before_exception(uc);
        let sp = self.abi.sp(uc);
        let task = self.task(&self.probed(uc, cpu), cpu);
        if self.linux.is_some() {
            // Linux's IRQ state and context are the kernel's (see linux.rs); only
            // the host's own decision is recorded here, and the interrupt kept
            // for the hard-IRQ context the kernel enters for it.
            if let Some(intid) = irq {
                let cpu_id = CpuId(cpu as u16);
                let kind = EventKind::IrqInject { cpu: cpu_id, intid };
                let mut st = self.state.borrow_mut();
                st.push(now, cpu, task, return_pc, 0, kind);
                st.linux.injected[cpu] = Some((intid, sp));
            }
            return;
        }
        // Taken right after the instruction that takes spin_lock's ticket (on
        // arm64, with the store-exclusive's status still to be branched on): the
        // ticket is already taken (the general registers are the interrupted
        // code's).
        if let Some((at, status)) = self.ticket_taken_at {
            if return_pc == at && status.is_none_or(|status| self.abi.xreg(uc, status) == 0) {
                self.record_deferred(cpu, task, now, is_attempt);
            }
        }
        let mut st = self.state.borrow_mut();
        let pc = uc.pc_read().unwrap_or(0);
        if let Some(intid) = irq {
            st.push(
                now,
                cpu,
                task,
                return_pc,
                0,
                EventKind::IrqInject {
                    cpu: CpuId(cpu as u16),
                    intid,
                },
            );
        }
        if !was_masked {
            st.push(
                now,
                cpu,
                task,
                pc,
                return_pc,
                EventKind::IrqMask {
                    old: false,
                    new: true,
                    cause: IrqMaskCause::ExceptionEntry,
                },
            );
        }
        if let Some(intid) = irq {
            st.push(
                now,
                cpu,
                task,
                pc,
                return_pc,
                EventKind::HardIrqEnter { intid },
            );
        }
        st.exceptions.insert((cpu, sp), irq);
    }

    /// Hands the events recorded so far (the queued ones too) to the sink.
    fn slice_ended(&self) {
        let mut st = self.state.borrow_mut();
        st.take_queued(None);
        if st.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut st.pending);
        st.recorded += events.len() as u64;
        (self.sink.borrow_mut())(&events, &st.strings);
        let mut events = events;
        events.clear();
        st.pending = events;
    }
}

/// A recording attached with [`crate::Machine::record`]: what it keeps besides the
/// events it hands to its sink.
pub struct Recording(Rc<Recorder>);

impl Recording {
    pub(crate) fn new(recorder: Rc<Recorder>) -> Self {
        Self(recorder)
    }

    /// The PSTATE.I samples taken so far with [`RecordOptions::sample_irq_mask`].
    pub fn take_irq_mask_samples(&self) -> Vec<MaskSample> {
        std::mem::take(&mut self.0.state.borrow_mut().samples)
    }
}
