//! The Linux profile's second way to see locking, for kernels built without
//! lockdep (or when asked, [`LinuxLocks::Primitives`](super::LinuxLocks)): the
//! out-of-line lock primitives themselves, each hooked at its entry and where it
//! returns.
//!
//! # What is hooked
//! [`PRIMITIVES`] lists them: `_raw_{spin,read,write}_*` (spinlocks and rwlocks,
//! with their `_bh`, `_irq` and `_irqsave` forms), `mutex_*` and the rwsem's
//! `down_*`/`up_*`. A kernel has some of them: a lockdep kernel the `_nested`
//! forms (its `mutex_lock` is a macro), others the plain ones; a kernel built
//! with `CONFIG_INLINE_SPIN_*` inlines some spinlock forms, which are then not
//! seen at all. The coverage marker (`recorder:lock-coverage:…`) names every
//! family of the list none of whose entry points the kernel has.
//!
//! - An exclusive acquisition that cannot fail: `LockAttempt` at the entry (before
//!   any wait), `LockAcquired` where it returns. The `_irq`/`_irqsave` forms mask
//!   IRQs before they wait: an `IrqMask` comes first.
//! - One that can fail (`mutex_lock_interruptible`, `down_write_killable`…): both
//!   events where it returns, if it succeeded (its wait is not seen).
//! - A trylock: `Trylock` where it returns, with its result.
//! - A shared acquisition: `ReadLock` where it returns, if it succeeded; an
//!   rwlock's is recursive in interrupt context only (Linux's
//!   `read_lock_is_recursive()` with queued rwlocks), an rwsem's never.
//! - A release: `LockRelease` at the entry. `downgrade_write`: the write lock
//!   released, the read lock taken.
//! - An init (`__mutex_init`, `__init_rwsem`, and on kernels with
//!   `CONFIG_DEBUG_SPINLOCK` `__raw_spin_lock_init` and `__rwlock_init`): no
//!   event; the lock at its address is a new one from there on (see below).
//! - A primitive entered inside another of the same task on the same lock, in
//!   the same hard-IRQ and softirq context (`mutex_lock_io` calls `mutex_lock`),
//!   is the outer one's business.
//!
//! Returns: each `ret` of the primitive's code, and when it ends in a tail call
//! (`b __mutex_lock_slowpath`), each `ret` of the function it jumps to (which
//! returns to the primitive's caller with SP back at the primitive's entry value):
//! a call is matched to its return by task and SP. A primitive whose result
//! matters but whose tail call cannot be followed is not hooked (and so listed as
//! not seen).
//!
//! # Lock classes
//! Without lockdep there are no lock keys: a class is one lock, named by the
//! kernel symbol it is (`pcpu_alloc_mutex`) or lies in (`init_mm+0x58`), else by
//! the name its init gave it and its address (`&mm->mmap_lock@0xffffff80…`),
//! else by its kind and address (`spinlock@0xffffff80…`). Locks of one type are
//! not folded into one class.
//!
//! Memory is reused: the `mm_struct` whose `mmap_lock` was at an address is freed,
//! and another object's spinlock lands there. One class for both would join
//! their lock orders into cycles no kernel has. So a class is one lock of one
//! kind (spinlock, rwlock, mutex, rwsem) at one address, from one init seen
//! there to the next: a later lifetime's name takes a `#n` suffix. What stays
//! joined: locks whose init is inline (spinlocks and rwlocks without
//! `CONFIG_DEBUG_SPINLOCK`), and objects a slab constructor initialises once for
//! many lifetimes (`anon_vma`), of one kind at one address.
//!
//! # IRQ state and context
//! No lockdep means no `lockdep_hardirqs_on/off` to hook: at every hooked call
//! the profile samples PSTATE.I and `current`'s preemption count (its offset from
//! DWARF), and records what changed since: `IrqMask`, `HardIrqEnter/Exit` (its
//! `HARDIRQ` bits), `SoftIrqEnter/Exit` (serving a softirq, `SOFTIRQ_OFFSET`) and
//! `SoftirqsOff/On` (any softirq count). So the state is right at every lock
//! event; a change that comes and goes between two of them is not seen.

use traces::fx::FxHashMap;
use traces::{EventKind, IrqMaskCause, LockFlavor, LockRef, StrId, StringTable, TaskId};
use unicorn_engine::RegisterARM64;

use super::linux_shared::{read_c_string, sync_context, task_of, LinuxSite, NAME_MAX};
use super::{ProbedCore, Recorder, Site, State};
use crate::arch::aarch64::core_regs::read_xreg;
use crate::error::EmuError;
use crate::kernel::KernelImage;

/// What a primitive does to its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Acquires it, waiting as long as it takes.
    Acquire,
    /// Acquires it unless interrupted: acquired when the result is 0.
    AcquireOrFail,
    /// Acquires it if it is free (and `atomic_dec_and_mutex_lock`, which takes it
    /// only when the count drops to 0): acquired when the result is 1.
    Trylock,
    Release,
    /// `downgrade_write`: from held for writing to held for reading.
    Downgrade,
    /// Initialises the lock (its name is the second argument): a new lock.
    Init,
}

/// The lock type, and whether the primitive takes it shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spin,
    Rwlock { read: bool },
    Mutex,
    Rwsem { read: bool },
}

/// What a primitive does to the IRQ mask and softirqs besides the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqEffect {
    Keep,
    /// `_bh`: softirqs off (seen through the preemption count).
    Bh,
    /// `_irq`: masks IRQs (unmasks at unlock).
    Off,
    /// `_irqsave`: masks IRQs (restores the saved state at unlock).
    Save,
}

/// One lock primitive: its symbol, and what it does.
#[derive(Debug, Clone, Copy)]
struct Primitive {
    name: &'static str,
    op: Op,
    kind: Kind,
    irq: IrqEffect,
    /// The family it belongs to in the coverage list (the lockdep-only `_nested`
    /// forms count as their plain form).
    family: &'static str,
}

const fn prim(
    name: &'static str,
    family: &'static str,
    op: Op,
    kind: Kind,
    irq: IrqEffect,
) -> Primitive {
    Primitive {
        name,
        op,
        kind,
        irq,
        family,
    }
}

use IrqEffect::{Bh, Keep, Off, Save};
use Op::{Acquire, AcquireOrFail, Downgrade, Init, Release, Trylock};
const SPIN: Kind = Kind::Spin;
const READ: Kind = Kind::Rwlock { read: true };
const WRITE: Kind = Kind::Rwlock { read: false };
const MUTEX: Kind = Kind::Mutex;
const DOWN_READ: Kind = Kind::Rwsem { read: true };
const DOWN_WRITE: Kind = Kind::Rwsem { read: false };

/// The lock primitives of Linux 6.1 (`kernel/locking/spinlock.c`, `mutex.c`,
/// `rwsem.c`) the profile hooks where the kernel has them.
#[rustfmt::skip]
const PRIMITIVES: &[Primitive] = &[
    prim("_raw_spin_lock", "spin_lock", Acquire, SPIN, Keep),
    prim("_raw_spin_lock_nested", "spin_lock", Acquire, SPIN, Keep),
    prim("_raw_spin_lock_nest_lock", "spin_lock", Acquire, SPIN, Keep),
    prim("_raw_spin_lock_bh", "spin_lock_bh", Acquire, SPIN, Bh),
    prim("_raw_spin_lock_irq", "spin_lock_irq", Acquire, SPIN, Off),
    prim("_raw_spin_lock_irqsave", "spin_lock_irqsave", Acquire, SPIN, Save),
    prim("_raw_spin_lock_irqsave_nested", "spin_lock_irqsave", Acquire, SPIN, Save),
    prim("_raw_spin_trylock", "spin_trylock", Trylock, SPIN, Keep),
    prim("_raw_spin_trylock_bh", "spin_trylock_bh", Trylock, SPIN, Bh),
    prim("_raw_spin_unlock", "spin_unlock", Release, SPIN, Keep),
    prim("_raw_spin_unlock_bh", "spin_unlock_bh", Release, SPIN, Bh),
    prim("_raw_spin_unlock_irq", "spin_unlock_irq", Release, SPIN, Off),
    prim("_raw_spin_unlock_irqrestore", "spin_unlock_irqrestore", Release, SPIN, Save),
    prim("_raw_read_lock", "read_lock", Acquire, READ, Keep),
    prim("_raw_read_lock_bh", "read_lock_bh", Acquire, READ, Bh),
    prim("_raw_read_lock_irq", "read_lock_irq", Acquire, READ, Off),
    prim("_raw_read_lock_irqsave", "read_lock_irqsave", Acquire, READ, Save),
    prim("_raw_read_trylock", "read_trylock", Trylock, READ, Keep),
    prim("_raw_read_unlock", "read_unlock", Release, READ, Keep),
    prim("_raw_read_unlock_bh", "read_unlock_bh", Release, READ, Bh),
    prim("_raw_read_unlock_irq", "read_unlock_irq", Release, READ, Off),
    prim("_raw_read_unlock_irqrestore", "read_unlock_irqrestore", Release, READ, Save),
    prim("_raw_write_lock", "write_lock", Acquire, WRITE, Keep),
    prim("_raw_write_lock_nested", "write_lock", Acquire, WRITE, Keep),
    prim("_raw_write_lock_bh", "write_lock_bh", Acquire, WRITE, Bh),
    prim("_raw_write_lock_irq", "write_lock_irq", Acquire, WRITE, Off),
    prim("_raw_write_lock_irqsave", "write_lock_irqsave", Acquire, WRITE, Save),
    prim("_raw_write_trylock", "write_trylock", Trylock, WRITE, Keep),
    prim("_raw_write_unlock", "write_unlock", Release, WRITE, Keep),
    prim("_raw_write_unlock_bh", "write_unlock_bh", Release, WRITE, Bh),
    prim("_raw_write_unlock_irq", "write_unlock_irq", Release, WRITE, Off),
    prim("_raw_write_unlock_irqrestore", "write_unlock_irqrestore", Release, WRITE, Save),
    prim("mutex_lock", "mutex_lock", Acquire, MUTEX, Keep),
    prim("mutex_lock_nested", "mutex_lock", Acquire, MUTEX, Keep),
    prim("_mutex_lock_nest_lock", "mutex_lock", Acquire, MUTEX, Keep),
    prim("mutex_lock_io", "mutex_lock_io", Acquire, MUTEX, Keep),
    prim("mutex_lock_io_nested", "mutex_lock_io", Acquire, MUTEX, Keep),
    prim("mutex_lock_interruptible", "mutex_lock_interruptible", AcquireOrFail, MUTEX, Keep),
    prim("mutex_lock_interruptible_nested", "mutex_lock_interruptible", AcquireOrFail, MUTEX, Keep),
    prim("mutex_lock_killable", "mutex_lock_killable", AcquireOrFail, MUTEX, Keep),
    prim("mutex_lock_killable_nested", "mutex_lock_killable", AcquireOrFail, MUTEX, Keep),
    prim("mutex_trylock", "mutex_trylock", Trylock, MUTEX, Keep),
    prim("atomic_dec_and_mutex_lock", "atomic_dec_and_mutex_lock", Trylock, MUTEX, Keep),
    prim("mutex_unlock", "mutex_unlock", Release, MUTEX, Keep),
    prim("down_read", "down_read", Acquire, DOWN_READ, Keep),
    prim("down_read_nested", "down_read", Acquire, DOWN_READ, Keep),
    prim("down_read_non_owner", "down_read", Acquire, DOWN_READ, Keep),
    prim("down_read_interruptible", "down_read_interruptible", AcquireOrFail, DOWN_READ, Keep),
    prim("down_read_killable", "down_read_killable", AcquireOrFail, DOWN_READ, Keep),
    prim("down_read_killable_nested", "down_read_killable", AcquireOrFail, DOWN_READ, Keep),
    prim("down_read_trylock", "down_read_trylock", Trylock, DOWN_READ, Keep),
    prim("up_read", "up_read", Release, DOWN_READ, Keep),
    prim("up_read_non_owner", "up_read", Release, DOWN_READ, Keep),
    prim("down_write", "down_write", Acquire, DOWN_WRITE, Keep),
    prim("down_write_nested", "down_write", Acquire, DOWN_WRITE, Keep),
    prim("_down_write_nest_lock", "down_write", Acquire, DOWN_WRITE, Keep),
    prim("down_write_killable", "down_write_killable", AcquireOrFail, DOWN_WRITE, Keep),
    prim("down_write_killable_nested", "down_write_killable", AcquireOrFail, DOWN_WRITE, Keep),
    prim("down_write_trylock", "down_write_trylock", Trylock, DOWN_WRITE, Keep),
    prim("up_write", "up_write", Release, DOWN_WRITE, Keep),
    prim("downgrade_write", "downgrade_write", Downgrade, DOWN_WRITE, Keep),
    prim("__raw_spin_lock_init", "spin_lock_init", Init, SPIN, Keep),
    prim("__rwlock_init", "rwlock_init", Init, WRITE, Keep),
    prim("__mutex_init", "mutex_init", Init, MUTEX, Keep),
    prim("__init_rwsem", "init_rwsem", Init, DOWN_WRITE, Keep),
];

/// `preempt_count`'s fields (include/linux/preempt.h).
const SOFTIRQ_SHIFT: u32 = 8;
const HARDIRQ_SHIFT: u32 = 16;
const SOFTIRQ_OFFSET: u32 = 1 << SOFTIRQ_SHIFT;
const SOFTIRQ_MASK: u32 = 0xff << SOFTIRQ_SHIFT;
const HARDIRQ_MASK: u32 = 0xf << HARDIRQ_SHIFT;

/// The primitives a kernel has, and where the profile reads its context.
#[derive(Debug, Clone)]
pub(crate) struct Primitives {
    /// Index in [`PRIMITIVES`] of each hooked primitive (a site's number).
    hooked: Vec<usize>,
    /// The offset of `current`'s preemption count (`thread_info.preempt_count`),
    /// if the kernel's DWARF gives it.
    preempt_count: Option<u64>,
    /// `force_read_lock_recursive` (the locking self-test's, which makes every
    /// rwlock reader recursive while it runs), if the kernel has it.
    force_read_recursive: Option<u64>,
}

/// A primitive's call between its entry and its return.
#[derive(Debug, Clone, Copy)]
struct OpenCall {
    primitive: usize,
    lock: u64,
    /// The hard-IRQ depth of the CPU and the softirq depth of the task at the
    /// entry (an interrupt handler's call on the same lock is not nested in the
    /// call it interrupted).
    context: (u32, u32),
    stack: StrId,
    pc: u64,
    caller: u64,
}

/// The primitives' state in a run.
#[derive(Debug, Default)]
pub(super) struct PrimitiveState {
    /// Calls in flight, by task and SP at the entry.
    open: FxHashMap<(TaskId, u64), OpenCall>,
    /// The class of the lock of each kind at each address, in its current
    /// lifetime (an init ends it).
    classes: FxHashMap<LockAt, StrId>,
    /// What was seen of each address's lock of each kind.
    lives: FxHashMap<LockAt, Lifetimes>,
    /// Whether each task had softirqs off at its last look.
    softirqs_off: FxHashMap<TaskId, bool>,
    /// The spinlocks and rwlocks each task holds, in order (a context switch
    /// hands them on).
    held_spinning: FxHashMap<TaskId, Vec<HeldSpin>>,
}

/// The most spinlocks and rwlocks a task is taken to hold: lockdep's
/// `MAX_LOCK_DEPTH`, beyond which it stops validating.
const MAX_HELD_SPINNING: usize = 48;

/// A lock's address and its kind's name.
type LockAt = (u64, &'static str);

/// The lifetimes of the lock of one kind at one address.
#[derive(Debug, Default)]
struct Lifetimes {
    /// The classes made for it so far (one per lifetime in which it was used).
    classes: u32,
    /// The name its last init gave it.
    name: Option<String>,
}

/// A spinlock or rwlock held, and how it was taken.
#[derive(Debug, Clone, Copy)]
struct HeldSpin {
    lock: LockRef,
    flavor: LockFlavor,
    /// Held for reading (an rwlock's reader), and then recursively.
    read: Option<bool>,
}

impl PrimitiveState {
    /// An init of the lock at `addr` by `primitive`, named `name`: the lock there
    /// is a new one.
    fn renew(&mut self, addr: u64, primitive: &Primitive, name: Option<String>) {
        let at = (addr, primitive.kind_name());
        self.classes.remove(&at);
        self.lives.entry(at).or_default().name = name.filter(|n| !n.is_empty());
    }

    /// The class of the lock `at`, in its current lifetime; `symbol` names
    /// what lies at its address.
    fn class(
        &mut self,
        strings: &mut StringTable,
        at: LockAt,
        symbol: impl FnOnce() -> Option<String>,
    ) -> StrId {
        let (addr, kind) = at;
        *self.classes.entry(at).or_insert_with(|| {
            let life = self.lives.entry(at).or_default();
            let mut name = match (symbol(), &life.name) {
                (Some(symbol), _) => symbol.trim_end_matches("+0x0").to_string(),
                (None, Some(name)) => format!("{name}@{addr:#x}"),
                (None, None) => format!("{kind}@{addr:#x}"),
            };
            life.classes += 1;
            if life.classes > 1 {
                name += &format!("#{}", life.classes);
            }
            strings.intern(&name)
        })
    }

    /// Forgets the locks `task` holds (`lockdep_reset`).
    pub(super) fn forget(&mut self, task: TaskId) {
        self.held_spinning.remove(&task);
    }

    /// Keeps [`Self::held_spinning`] up to date with `kind`, an event of `task`
    /// about a lock of `primitive`. A task's list keeps its last
    /// [`MAX_HELD_SPINNING`] locks: on a kernel that inlines its unlocks
    /// (`CONFIG_INLINE_SPIN_UNLOCK`) no release is seen, and an unbounded list
    /// would be handed on whole, and longer, at every context switch.
    fn track(&mut self, task: TaskId, primitive: &Primitive, kind: &EventKind) {
        if !matches!(primitive.kind, Kind::Spin | Kind::Rwlock { .. }) {
            return;
        }
        let held = self.held_spinning.entry(task).or_default();
        match *kind {
            EventKind::LockAcquired { lock, flavor }
            | EventKind::Trylock {
                lock,
                flavor,
                acquired: true,
            } => held.push(HeldSpin {
                lock,
                flavor,
                read: None,
            }),
            EventKind::ReadLock {
                lock, recursive, ..
            } => held.push(HeldSpin {
                lock,
                flavor: primitive.flavor(),
                read: Some(recursive),
            }),
            EventKind::LockRelease { lock, .. } => {
                if let Some(at) = held.iter().rposition(|h| h.lock.addr == lock.addr) {
                    held.remove(at);
                }
            }
            _ => {}
        }
        if held.len() > MAX_HELD_SPINNING {
            held.remove(0);
        }
    }
}

impl Primitives {
    /// Finds `kernel`'s primitives and the addresses to hook for them.
    pub(super) fn hook(
        kernel: &KernelImage,
        preempt_count: Option<u64>,
    ) -> Result<(Self, Vec<(u64, Site)>), EmuError> {
        let mut sites = Vec::new();
        let mut returns = std::collections::BTreeSet::new();
        let mut hooked = Vec::new();
        for (n, primitive) in PRIMITIVES.iter().enumerate() {
            let Some((entry, code)) = kernel.function_code(primitive.name)? else {
                continue;
            };
            let mut exits = Vec::new();
            if primitive.op != Op::Init
                && !return_sites(kernel, entry, code, 2, &mut exits)
                && primitive.result_matters()
            {
                tracing::warn!(
                    "{}: its tail call cannot be followed to its result: not recorded",
                    primitive.name
                );
                continue;
            }
            hooked.push(n);
            sites.push((entry, Site::Linux(LinuxSite::PrimitiveEntry(n as u16))));
            returns.extend(exits);
        }
        sites.extend(
            returns
                .into_iter()
                .map(|at| (at, Site::Linux(LinuxSite::PrimitiveReturn))),
        );
        if preempt_count.is_none() && kernel.debug_elf().is_some() {
            tracing::warn!(
                "the kernel's DWARF gives no thread_info::preempt_count: IRQ and softirq context are not recorded"
            );
        }
        let primitives = Primitives {
            hooked,
            preempt_count,
            force_read_recursive: kernel.symbol_address("force_read_lock_recursive"),
        };
        tracing::info!(
            "Linux locking from its primitives: {}",
            primitives.coverage()
        );
        Ok((primitives, sites))
    }

    /// What the profile sees of the kernel's locking, for the coverage marker.
    pub(super) fn coverage(&self) -> String {
        let mut families: Vec<&str> = PRIMITIVES.iter().map(|p| p.family).collect();
        families.dedup();
        let unseen: Vec<&str> = families
            .into_iter()
            .filter(|&family| !self.hooked.iter().any(|&n| PRIMITIVES[n].family == family))
            .collect();
        let mut text = format!(
            "lock primitives ({} entry points; no lockdep: a class is one lock, from one init to the next; IRQ state sampled at lock calls)",
            self.hooked.len()
        );
        if !unseen.is_empty() {
            text += &format!("; not seen (inlined or absent): {}", unseen.join(", "));
        }
        text
    }
}

impl Primitive {
    /// Whether the event at its return needs the primitive's result.
    fn result_matters(&self) -> bool {
        matches!(self.op, Op::AcquireOrFail | Op::Trylock)
    }

    fn flavor(&self) -> LockFlavor {
        match (self.kind, self.irq) {
            (Kind::Mutex | Kind::Rwsem { .. }, _) => LockFlavor::Mutex,
            (_, IrqEffect::Off) => LockFlavor::SpinIrq,
            (_, IrqEffect::Save) => LockFlavor::SpinIrqSave,
            _ => LockFlavor::Spin,
        }
    }

    fn shared(&self) -> bool {
        matches!(
            self.kind,
            Kind::Rwlock { read: true } | Kind::Rwsem { read: true }
        )
    }

    /// What a lock of its kind is called when no symbol names it.
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Spin => "spinlock",
            Kind::Rwlock { .. } => "rwlock",
            Kind::Mutex => "mutex",
            Kind::Rwsem { .. } => "rwsem",
        }
    }
}

/// Adds to `out` where a call of the function at `entry` (code `code`) returns to
/// its caller: its `ret`s, and those of the functions it tail-calls, followed
/// `depth` deep. False if some tail call could not be followed (its site is
/// added instead: the call is over there, though its result is not yet known).
fn return_sites(
    kernel: &KernelImage,
    entry: u64,
    code: &[u8],
    depth: u32,
    out: &mut Vec<u64>,
) -> bool {
    let abi = kernel.isa().arch().abi();
    let mut followed = true;
    for off in abi.exit_offsets(code) {
        let word = super::abi::word_at(code, off).unwrap_or(0);
        if abi.is_return(word) {
            out.push(entry + off);
            continue;
        }
        let target = abi
            .jump_target(code, off)
            .map(|rel| (entry + off).wrapping_add_signed(rel));
        let callee = target.filter(|_| depth > 0).and_then(|t| {
            kernel
                .function_containing(t)
                .filter(|&(start, _)| start == t)
        });
        match callee {
            Some((start, callee_code)) => {
                followed &= return_sites(kernel, start, callee_code, depth - 1, out);
            }
            None => {
                out.push(entry + off);
                followed = false;
            }
        }
    }
    followed
}

impl Recorder {
    /// Records what changed of the IRQ mask and of `current`'s context since the
    /// CPU's (and task's) last hooked call.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sync_sampled_context(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        primitives: &Primitives,
        cpu: usize,
        task: TaskId,
        pc: u64,
        now: u64,
    ) {
        let count = primitives.preempt_count.and_then(|offset| {
            let current = uc.reg_read(RegisterARM64::SP_EL0).unwrap_or(0);
            uc.read_u64(current.wrapping_add(offset)).map(|v| v as u32)
        });
        let hardirq = count.map(|c| (c & HARDIRQ_MASK) >> HARDIRQ_SHIFT);
        let serving_softirq = count.map(|c| (c & SOFTIRQ_OFFSET != 0) as u32);
        sync_context(st, (cpu, task, pc, now), hardirq, serving_softirq);
        if let Some(count) = count {
            let off = count & SOFTIRQ_MASK != 0;
            let was_off = st.linux.primitives.softirqs_off.insert(task, off);
            if was_off.unwrap_or(false) != off {
                let kind = if off {
                    EventKind::SoftirqsOff
                } else {
                    EventKind::SoftirqsOn
                };
                st.push(now, cpu, task, pc, 0, kind);
            }
        }
        let masked = self.abi.irqs_masked(uc);
        self.note_mask(st, (cpu, task, pc, now), masked);
    }

    /// Records the CPU's IRQ mask as `masked` if that is news.
    fn note_mask(
        &self,
        st: &mut State,
        (cpu, task, pc, now): (usize, TaskId, u64, u64),
        masked: bool,
    ) {
        let old = st.linux.masked[cpu].replace(masked);
        if old != Some(masked) {
            let kind = EventKind::IrqMask {
                old: old.unwrap_or(!masked),
                new: masked,
                cause: IrqMaskCause::Instruction,
            };
            st.push(now, cpu, task, pc, 0, kind);
        }
    }

    /// The entry of primitive number `n`.
    pub(super) fn on_primitive_entry(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        n: u16,
        (cpu, task, pc, now): (usize, TaskId, u64, u64),
    ) {
        let Some(&primitive) = PRIMITIVES.get(usize::from(n)) else {
            return;
        };
        let (lock_addr, lr, fp) = (read_xreg(uc, 0), read_xreg(uc, 30), read_xreg(uc, 29));
        if primitive.op == Op::Init {
            let name = read_c_string(uc, read_xreg(uc, 1), NAME_MAX);
            st.linux.primitives.renew(lock_addr, &primitive, name);
            return;
        }
        let sp = self.abi.sp(uc);
        let context = (
            st.linux.hardirq[cpu],
            st.linux.softirq.get(&task).copied().unwrap_or(0),
        );
        let nested =
            st.linux.primitives.open.iter().any(|(&(t, _), call)| {
                t == task && call.lock == lock_addr && call.context == context
            });
        if nested {
            return;
        }
        let stack = self.stack_id(uc, st, lr, fp);
        let lock = self.primitive_lock(st, &primitive, lock_addr);
        let flavor = primitive.flavor();
        let push = |st: &mut State, kind: EventKind| {
            st.linux.primitives.track(task, &primitive, &kind);
            st.push_stacked(stack, now, cpu, task, pc, lr, kind)
        };
        match primitive.op {
            Op::Release => push(st, EventKind::LockRelease { lock, flavor }),
            Op::Downgrade => {
                push(st, EventKind::LockRelease { lock, flavor });
                let kind = EventKind::ReadLock {
                    lock,
                    recursive: false,
                    trylock: false,
                };
                push(st, kind);
            }
            Op::Init => {}
            Op::Acquire | Op::AcquireOrFail | Op::Trylock => {
                if primitive.op == Op::Acquire && !primitive.shared() {
                    if matches!(primitive.irq, IrqEffect::Off | IrqEffect::Save) {
                        self.note_mask(st, (cpu, task, pc, now), true);
                    }
                    push(st, EventKind::LockAttempt { lock, flavor });
                }
                let call = OpenCall {
                    primitive: usize::from(n),
                    lock: lock_addr,
                    context,
                    stack,
                    pc,
                    caller: lr,
                };
                st.linux.primitives.open.insert((task, sp), call);
            }
        }
    }

    /// A return of a hooked primitive (or of a function one tail-called).
    pub(super) fn on_primitive_return(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        primitives: &Primitives,
        (cpu, task, now): (usize, TaskId, u64),
    ) {
        let sp = self.abi.sp(uc);
        let Some(call) = st.linux.primitives.open.remove(&(task, sp)) else {
            return;
        };
        let primitive = PRIMITIVES[call.primitive];
        let result = read_xreg(uc, 0);
        let acquired = match primitive.op {
            Op::Acquire => true,
            Op::AcquireOrFail => result as u32 == 0,
            Op::Trylock => result as u32 == 1,
            Op::Release | Op::Downgrade | Op::Init => return,
        };
        let lock = self.primitive_lock(st, &primitive, call.lock);
        let flavor = primitive.flavor();
        let mut kinds = Vec::with_capacity(2);
        if primitive.shared() {
            if acquired {
                // An rwlock's reader is recursive in interrupt context only
                // (`in_interrupt()`: hard IRQ, or any softirq count), or while
                // the self-test says so: Linux's `read_lock_is_recursive()`.
                let forced = primitives
                    .force_read_recursive
                    .and_then(|addr| uc.read_u64(addr))
                    .is_some_and(|v| v as u32 != 0);
                let in_interrupt = st.linux.hardirq[cpu] > 0
                    || st.linux.primitives.softirqs_off.get(&task) == Some(&true);
                kinds.push(EventKind::ReadLock {
                    lock,
                    recursive: (forced || in_interrupt)
                        && matches!(primitive.kind, Kind::Rwlock { .. }),
                    trylock: primitive.op == Op::Trylock,
                });
            }
        } else {
            match primitive.op {
                Op::Acquire => kinds.push(EventKind::LockAcquired { lock, flavor }),
                Op::AcquireOrFail if acquired => {
                    kinds.push(EventKind::LockAttempt { lock, flavor });
                    kinds.push(EventKind::LockAcquired { lock, flavor });
                }
                Op::Trylock => kinds.push(EventKind::Trylock {
                    lock,
                    flavor,
                    acquired,
                }),
                _ => {}
            }
        }
        for kind in kinds {
            st.linux.primitives.track(task, &primitive, &kind);
            st.push_stacked(call.stack, now, cpu, task, call.pc, call.caller, kind);
        }
    }

    /// `cpu_switch_to(prev, next)`: the spinlocks `prev` holds (the run queue's
    /// lock, which `__schedule` takes and the next task's `finish_task_switch`
    /// releases) pass to `next`, as lockdep's `prepare_lock_switch` and
    /// `finish_lock_switch` hand them on.
    pub(super) fn on_context_switch(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        (cpu, pc, now): (usize, u64, u64),
    ) {
        let (prev, next) = (task_of(read_xreg(uc, 0)), task_of(read_xreg(uc, 1)));
        let Some(held) = st.linux.primitives.held_spinning.remove(&prev) else {
            return;
        };
        for h in held.iter().rev() {
            let kind = EventKind::LockRelease {
                lock: h.lock,
                flavor: h.flavor,
            };
            st.push(now, cpu, prev, pc, 0, kind);
        }
        for h in &held {
            let (lock, flavor) = (h.lock, h.flavor);
            let kinds = match h.read {
                Some(recursive) => vec![EventKind::ReadLock {
                    lock,
                    recursive,
                    trylock: false,
                }],
                None => vec![
                    EventKind::LockAttempt { lock, flavor },
                    EventKind::LockAcquired { lock, flavor },
                ],
            };
            for kind in kinds {
                st.push(now, cpu, next, pc, 0, kind);
            }
        }
        st.linux
            .primitives
            .held_spinning
            .entry(next)
            .or_default()
            .extend(held);
        st.tasks[cpu] = Some(next);
    }

    /// The lock at `addr`, taken or released by `primitive`: its class is the lock
    /// itself in its current lifetime, named by the symbol it is or lies in, else
    /// by its init's name and its address, else by its kind and address; a later
    /// lifetime's name has a `#n` suffix.
    fn primitive_lock(&self, st: &mut State, primitive: &Primitive, addr: u64) -> LockRef {
        let symbol = || self.kernel.symbolize(addr);
        let at = (addr, primitive.kind_name());
        let class = (st.linux.primitives).class(&mut st.strings, at, symbol);
        LockRef { addr, class }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_primitive_is_listed_once_and_families_are_contiguous() {
        let mut names: Vec<&str> = PRIMITIVES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a primitive is listed twice");
        // `coverage` folds families by `dedup`: one family's entries are adjacent.
        let mut seen = Vec::new();
        for pair in PRIMITIVES.windows(2) {
            if pair[0].family != pair[1].family {
                assert!(
                    !seen.contains(&pair[1].family),
                    "{} is split",
                    pair[1].family
                );
                seen.push(pair[0].family);
            }
        }
    }

    /// A kernel that inlines most spinlock forms (`CONFIG_INLINE_SPIN_*`) and
    /// has no rwsems here: the coverage names each family it lacks, once, and
    /// none it has (a `_nested` form counts for its family).
    #[test]
    fn coverage_names_the_families_a_kernel_lacks() {
        let index = |name: &str| PRIMITIVES.iter().position(|p| p.name == name).unwrap();
        let primitives = Primitives {
            hooked: vec![
                index("_raw_spin_lock_irqsave_nested"),
                index("mutex_lock"),
                index("mutex_unlock"),
            ],
            preempt_count: None,
            force_read_recursive: None,
        };
        let coverage = primitives.coverage();
        let (head, unseen) = coverage
            .split_once("; not seen (inlined or absent): ")
            .unwrap();
        assert!(
            head.starts_with("lock primitives (3 entry points;"),
            "{head}"
        );
        let unseen: Vec<&str> = unseen.split(", ").collect();
        for family in [
            "spin_lock",
            "spin_lock_bh",
            "spin_unlock",
            "down_read",
            "up_write",
        ] {
            assert_eq!(
                unseen.iter().filter(|&&f| f == family).count(),
                1,
                "{family}"
            );
        }
        for family in ["spin_lock_irqsave", "mutex_lock", "mutex_unlock"] {
            assert!(!unseen.contains(&family), "{family}");
        }
        let families: std::collections::BTreeSet<&str> =
            PRIMITIVES.iter().map(|p| p.family).collect();
        assert_eq!(unseen.len(), families.len() - 3);
    }

    /// A lock is one kind at one address from one init to the next: memory
    /// reused for a lock of another kind, or initialised again, holds another
    /// lock, even where no init is seen.
    #[test]
    fn a_class_is_one_lock_of_one_kind_from_one_init_to_the_next() {
        let by_name = |name: &str| PRIMITIVES.iter().find(|p| p.name == name).unwrap();
        let (rwsem, spin) = (by_name("__init_rwsem"), by_name("_raw_spin_lock"));
        let mut state = PrimitiveState::default();
        let mut strings = StringTable::default();
        let addr = 0xffff_ff80_019d_ba90;
        let mut class = |state: &mut PrimitiveState, p: &Primitive, symbol: Option<&str>| {
            let id = state.class(&mut strings, (addr, p.kind_name()), || {
                symbol.map(str::to_string)
            });
            strings.get(id).unwrap().to_string()
        };

        state.renew(addr, rwsem, Some("&mm->mmap_lock".into()));
        assert_eq!(
            class(&mut state, rwsem, None),
            "&mm->mmap_lock@0xffffff80019dba90"
        );
        assert_eq!(class(&mut state, spin, None), "spinlock@0xffffff80019dba90");
        assert_eq!(
            class(&mut state, rwsem, None),
            "&mm->mmap_lock@0xffffff80019dba90"
        );
        state.renew(addr, rwsem, Some("&mm->mmap_lock".into()));
        state.renew(addr, rwsem, Some("&mm->mmap_lock".into()));
        assert_eq!(
            class(&mut state, rwsem, None),
            "&mm->mmap_lock@0xffffff80019dba90#2"
        );
        // The spinlock's lifetime goes on: only its own kind's init ends it.
        assert_eq!(class(&mut state, spin, None), "spinlock@0xffffff80019dba90");
        state.renew(addr, spin, None);
        assert_eq!(
            class(&mut state, spin, Some("init_mm+0x58")),
            "init_mm+0x58#2"
        );
    }

    /// Unlocks the profile does not see (inlined) leave at most lockdep's
    /// `MAX_LOCK_DEPTH` locks on a task's list, the latest ones.
    #[test]
    fn a_task_holds_at_most_max_lock_depth_spinlocks() {
        let spin = *PRIMITIVES
            .iter()
            .find(|p| p.name == "_raw_spin_lock")
            .unwrap();
        let mut state = PrimitiveState::default();
        let task = TaskId(7);
        for n in 0..100u64 {
            let lock = LockRef {
                addr: 0x1000 + 8 * n,
                class: StrId(n as u32),
            };
            let flavor = LockFlavor::Spin;
            state.track(task, &spin, &EventKind::LockAcquired { lock, flavor });
        }
        let held = &state.held_spinning[&task];
        assert_eq!(held.len(), MAX_HELD_SPINNING);
        assert_eq!(held.last().unwrap().lock.addr, 0x1000 + 8 * 99);
        assert_eq!(
            held[0].lock.addr,
            0x1000 + 8 * (100 - MAX_HELD_SPINNING as u64)
        );
    }

    #[test]
    fn the_preempt_count_fields_do_not_overlap() {
        assert_eq!(SOFTIRQ_MASK & HARDIRQ_MASK, 0);
        assert_eq!(SOFTIRQ_OFFSET & !SOFTIRQ_MASK, 0);
    }
}
