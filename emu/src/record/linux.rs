//! The recorder's profile for Linux kernels: instead of our guest's lock
//! functions and data layout, it hooks the kernel's own. On a kernel built with
//! lockdep it hooks lockdep's entry points, so every lock type the kernel
//! annotates is seen the way lockdep sees it (below). On a kernel without
//! lockdep (or when asked, [`LinuxLocks::Primitives`]) it hooks the out-of-line
//! lock primitives instead: see [`super::linux_primitives`].
//!
//! # What is hooked with lockdep
//! - `lock_acquire(map, subclass, trylock, read, check, nest_lock, ip)`: an
//!   exclusive acquisition becomes `LockAttempt` + `LockAcquired` (lockdep is told
//!   before the lock is waited for), a trylock (only reported once it succeeded) a
//!   `Trylock`, a read acquisition a `ReadLock` (recursive when `read` is 2).
//!   Those with a `nest_lock` (ww_mutex) have no counterpart in the event model:
//!   they become an `unmodelled:nest-lock` marker instead. Those lockdep does not
//!   validate, `check` 0 (RCU's) or a map of the `__lockdep_no_validate__` key
//!   (`dev->mutex`), are not recorded, nor are their releases. A subclass-0
//!   acquisition takes the subclass of the class in the map's `class_cache[0]`, as
//!   lockdep does after `lockdep_set_subclass` (the workqueue's unbound pools).
//! - `lock_release(map, ip)`: `LockRelease` of the class the map was acquired as.
//! - `debug_check_no_locks_freed(from, len)` (memory freed or a lock
//!   re-initialised): `LockMemoryFreed`.
//! - A class whose map says `lock_type` = `LD_LOCK_PERCPU` (a `local_lock_t`) is
//!   announced once by `LocalLockClass`.
//! - `lockdep_hardirqs_on/off`: lockdep's own IRQ state, as `IrqMask` events (only
//!   changes are recorded).
//! - `lockdep_softirqs_on/off`: `SoftirqsOn`/`SoftirqsOff` (lockdep's
//!   `softirqs_enabled` of the task).
//! - The locking self-test: `dotest(fn, expected, mask)` starts a case (marker
//!   `selftest:case:<fn>`, value `expected | mask << 1`); the return from its call
//!   of `fn` (the instruction after `dotest`'s first `blr`) ends it (marker
//!   `selftest:end`, value: the kernel's `debug_locks` there, 0 once lockdep
//!   reported: what `dotest` itself compares); the return of `locking_selftest`
//!   is `selftest:done`. So a case's window holds the case alone, not `dotest`'s
//!   printing of its verdict.
//!
//! - `lockdep_free_key_range` and `lockdep_reset_lock` (lockdep forgets the
//!   classes of those keys): the next acquisition of such a lock starts a new
//!   class (its name gets a `#n` suffix).
//! - `__set_task_comm` (exec renames the task): a new `task:<comm>` marker for it.
//! - `__ipi_send_mask(desc, mask)` (arm64's `smp_cross_call` sends every IPI
//!   through it): an `IpiSend` per CPU in the mask when `desc` is one of
//!   `ipi_desc[nr_ipi]`, its index being the message (Linux's `ipi_msg_type`) and
//!   the SGI the target takes it as.
//! - `lockdep_reset` (which forgets the calling task's held locks): a
//!   `lockdep:reset` marker. The first hooked call also records the
//!   `recorder:lockdep-only` marker: lockdep hears of an acquisition before the
//!   lock is waited for and of no sleep, so neither the wait-for graph nor the
//!   sleep checks apply.
//!
//! Hard-IRQ context is lockdep's too: the per-CPU `hardirq_context` counter (what
//! `lockdep_hardirq_enter()` raises, for real interrupts and for the self-test's
//! simulated ones), read at every hooked call; a change becomes
//! `HardIrqEnter`/`HardIrqExit`, with the interrupt the host entered last on that
//! CPU if its exception has not returned yet (every `eret` is hooked for that;
//! 0 for a context no interrupt was entered for). Softirq context likewise is the task's
//! `softirq_context` (`SoftIrqEnter`/`SoftIrqExit`). The task is `current`
//! (SP_EL0), named once by a `task:<comm>` marker.
//!
//! # Layouts
//! `lockdep_map`'s `key`, `name`, `wait_type_inner` and `lock_type` and
//! `task_struct`'s `comm` are read at the offsets the kernel's DWARF gives
//! ([`crate::dwarf`]), and compared with the values of `LD_WAIT_SLEEP` (a sleeping
//! lock; its value depends on the kernel's configuration) and `LD_LOCK_PERCPU`
//! that the DWARF gives too. A lock
//! class is its key (and subclass, as a `/n` suffix), named by the map's name; two
//! keys with one name get `#2`, `#3`… so that they stay two classes. A static
//! lock's map has no key until lockdep first sees it: its key is then the map's own
//! address, as lockdep makes it.

use traces::fx::{FxHashMap, FxHashSet};
use traces::{CpuId, EventKind, IrqMaskCause, LockFlavor, LockRef, StrId, TaskId};
use unicorn_engine::{RegisterARM64, Unicorn};

use super::linux_shared::{read_c_string, sync_context, task_of, LinuxSite, NAME_MAX};
use super::{LinuxLocks, ProbedCore, Recorder, Site, State};
use crate::arch::aarch64::core_regs::read_xreg;
use crate::error::EmuError;
use crate::kernel::KernelImage;

/// What the coverage marker says of a lockdep kernel's locking.
const LOCKDEP_COVERAGE: &str =
    "lockdep's lock_acquire/lock_release: every lock type the kernel annotates";

/// `task_struct::comm` is `char[TASK_COMM_LEN]`.
const TASK_COMM_LEN: usize = 16;

/// An address to hook and what it is.
type HookedSite = (u64, Site);

/// Where the profile reads the kernel's data (link addresses and offsets).
#[derive(Debug, Clone)]
pub(super) struct LinuxProfile {
    /// `task_struct::comm` (from DWARF; tasks are unnamed without it).
    task_comm: Option<u64>,
    /// `task_struct::pid` (from DWARF).
    task_pid: Option<u64>,
    /// arm64's `ipi_desc` array and its length `nr_ipi`: the descriptor of each
    /// IPI message.
    ipi_desc: Option<(u64, u64)>,
    /// `debug_locks` (the self-test's verdict on each case).
    debug_locks: Option<u64>,
    /// Where the kernel's locking is seen.
    pub(super) locks: LockSource,
}

/// Where the Linux profile sees the kernel's locking.
#[derive(Debug, Clone)]
pub(super) enum LockSource {
    Lockdep(LockdepLayout),
    Primitives(super::linux_primitives::Primitives),
}

/// What the profile reads of lockdep's data.
#[derive(Debug, Clone)]
pub(super) struct LockdepLayout {
    map_key: u64,
    map_name: u64,
    map_wait_inner: u64,
    map_lock_type: u64,
    /// `LD_WAIT_SLEEP` and `LD_LOCK_PERCPU` in this kernel.
    wait_sleep: u8,
    lock_percpu: u8,
    /// `lockdep_map::class_cache` and `lock_class::subclass`: the class a map's
    /// subclass-0 acquisitions take (`lockdep_set_subclass` makes it another).
    map_class_cache: Option<u64>,
    class_subclass: Option<u64>,
    /// `__lockdep_no_validate__`: the key of locks lockdep does not validate.
    no_validate_key: Option<u64>,
    /// `task_struct::softirq_context`, if the kernel traces IRQ flags.
    task_softirq_context: Option<u64>,
    /// The per-CPU `hardirq_context` (its link address; add the CPU's offset).
    hardirq_context: Option<u64>,
}

/// Per-CPU and per-lock state of the Linux profile.
#[derive(Debug, Default)]
pub(super) struct LinuxState {
    /// lockdep's `hardirq_context` last seen per CPU.
    pub(super) hardirq: Vec<u32>,
    /// Each task's `softirq_context` last seen.
    pub(super) softirq: FxHashMap<TaskId, u32>,
    /// lockdep's IRQ state last seen per CPU (`None`: not yet seen).
    pub(super) masked: Vec<Option<bool>>,
    /// (key, subclass) → class.
    classes: FxHashMap<(u64, u32), StrId>,
    /// Keys seen per class name, in order, with their generation (the first
    /// keeps the bare name).
    keys_named: FxHashMap<String, Vec<(u64, u32)>>,
    /// How often each key's classes were zapped (a zapped key's next class is a
    /// new one, as lockdep registers it afresh).
    generation: FxHashMap<u64, u32>,
    /// The class each map was last acquired as (releases do not say the subclass).
    acquired_as: FxHashMap<u64, StrId>,
    /// Maps lockdep does not validate (acquired with `check` 0, as RCU's are, or of
    /// the no-validate key, as `dev->mutex`): their acquisitions and releases are
    /// not recorded.
    unchecked: FxHashSet<u64>,
    /// The interrupt the host entered last on each CPU and the SP it entered
    /// with, until a hard-IRQ context takes it or its exception returns.
    pub(super) injected: Vec<Option<(u32, u64)>>,
    /// The interrupt of each hard-IRQ context each CPU is in, innermost last.
    pub(super) irq_contexts: Vec<Vec<u32>>,
    /// The pid each task was last seen with.
    pids: FxHashMap<TaskId, u32>,
    /// The lock primitives' state (when they are what is hooked).
    pub(super) primitives: super::linux_primitives::PrimitiveState,
    /// The `recorder:lockdep-only` marker has been recorded.
    announced: bool,
}

impl LinuxProfile {
    /// The profile and its hooked addresses for a Linux kernel, its locking seen
    /// where `wanted` says; `None` when the kernel has no symbols (nothing of its
    /// locking can be seen then).
    pub(super) fn detect(
        kernel: &KernelImage,
        wanted: LinuxLocks,
    ) -> Result<Option<(Self, Vec<HookedSite>)>, EmuError> {
        if !kernel.has_symbols() {
            tracing::warn!(
                "the kernel has no symbols (give a bare Image's vmlinux as --symbols): its locking is not recorded"
            );
            return Ok(None);
        }
        let has_lockdep = kernel.symbol_address("lock_acquire").is_some()
            && kernel.symbol_address("lock_release").is_some();
        let elf = kernel.debug_elf();
        let use_lockdep = match wanted {
            LinuxLocks::Primitives => false,
            LinuxLocks::Lockdep if !has_lockdep => {
                return Err(EmuError::Config(
                    "--lock-hooks lockdep: the kernel was built without lockdep (no lock_acquire)"
                        .into(),
                ))
            }
            LinuxLocks::Lockdep if elf.is_none() => {
                return Err(EmuError::Config(
                    "--lock-hooks lockdep: the kernel's DWARF is not here (give its vmlinux as --symbols)"
                        .into(),
                ))
            }
            LinuxLocks::Lockdep => true,
            LinuxLocks::Auto if has_lockdep && elf.is_none() => {
                tracing::warn!(
                    "the kernel has lockdep but no DWARF here (give its vmlinux as --symbols): its locking is seen through its lock primitives only"
                );
                false
            }
            LinuxLocks::Auto => has_lockdep,
        };
        let layouts = elf
            .map(|elf| {
                crate::dwarf::struct_layouts(
                    elf,
                    &["lockdep_map", "task_struct", "lock_class", "thread_info"],
                )
            })
            .unwrap_or_default();
        let optional = |ty: &str, name: &str| layouts.get(ty).and_then(|l| l.offset(name));
        let task_comm = optional("task_struct", "comm");
        if elf.is_none() {
            tracing::warn!(
                "no DWARF for the kernel here: tasks are not named, IRQ and softirq context are not recorded"
            );
        } else if task_comm.is_none() {
            tracing::warn!("the kernel's DWARF gives no task_struct::comm: tasks are not named");
        }
        let mut sites = Vec::new();
        let entry_of = |name: &str, site: LinuxSite| -> Result<Option<HookedSite>, EmuError> {
            Ok(kernel
                .function_code(name)?
                .map(|(entry, _)| (entry, Site::Linux(site))))
        };
        sites.extend(entry_of("__set_task_comm", LinuxSite::SetTaskComm)?);
        let abi = kernel.isa().arch().abi();
        sites.extend(
            kernel
                .code_words()
                .filter(|&(_, word)| abi.mask_write(word).is_some_and(|w| w.exception_return))
                .map(|(addr, _)| (addr, Site::Linux(LinuxSite::ExceptionReturn))),
        );
        sites.extend(entry_of("__ipi_send_mask", LinuxSite::IpiSendMask)?);
        // The locking self-test (a lockdep kernel's only): its cases, and the
        // reset between them.
        sites.extend(entry_of("lockdep_reset", LinuxSite::LockdepReset)?);
        sites.extend(entry_of("dotest", LinuxSite::SelftestCase)?);
        if let Some((entry, code)) = kernel.function_code("dotest")? {
            if let Some(off) = first_indirect_call(code) {
                sites.push((entry + off + 4, Site::Linux(LinuxSite::SelftestCaseEnd)));
            }
        }
        if let Some((entry, code)) = kernel.function_code("locking_selftest")? {
            for off in kernel.isa().arch().abi().exit_offsets(code) {
                sites.push((entry + off, Site::Linux(LinuxSite::SelftestDone)));
            }
        }
        let locks = if use_lockdep {
            let layout = LockdepLayout::read(kernel, elf.expect("checked above"), &optional)?;
            for (name, site) in [
                ("lock_acquire", LinuxSite::LockAcquire),
                ("lock_release", LinuxSite::LockRelease),
                ("debug_check_no_locks_freed", LinuxSite::MemoryFreed),
                ("lockdep_hardirqs_on", LinuxSite::HardirqsOn),
                ("lockdep_hardirqs_off", LinuxSite::HardirqsOff),
                ("lockdep_softirqs_on", LinuxSite::SoftirqsOn),
                ("lockdep_softirqs_off", LinuxSite::SoftirqsOff),
                ("lockdep_free_key_range", LinuxSite::FreeKeyRange),
                ("lockdep_reset_lock", LinuxSite::ResetLock),
            ] {
                sites.extend(entry_of(name, site)?);
            }
            LockSource::Lockdep(layout)
        } else {
            // `current_thread_info()` is the start of `current` (arm64's
            // THREAD_INFO_IN_TASK): its preemption count is at the sum of the offsets.
            let preempt_count = optional("task_struct", "thread_info")
                .zip(optional("thread_info", "preempt_count"))
                .map(|(info, count)| info + count);
            let (primitives, primitive_sites) =
                super::linux_primitives::Primitives::hook(kernel, preempt_count)?;
            sites.extend(entry_of("cpu_switch_to", LinuxSite::ContextSwitch)?);
            sites.extend(primitive_sites);
            LockSource::Primitives(primitives)
        };
        let profile = LinuxProfile {
            task_comm,
            task_pid: optional("task_struct", "pid"),
            ipi_desc: kernel
                .symbol_address("ipi_desc")
                .zip(kernel.symbol_address("nr_ipi")),
            debug_locks: kernel.symbol_address("debug_locks"),
            locks,
        };
        Ok(Some((profile, sites)))
    }
}

impl LockdepLayout {
    /// lockdep's layouts and constants in `kernel`, from its DWARF `elf`.
    fn read(
        kernel: &KernelImage,
        elf: &[u8],
        optional: &dyn Fn(&str, &str) -> Option<u64>,
    ) -> Result<Self, EmuError> {
        let member = |ty: &str, name: &str| {
            optional(ty, name).ok_or_else(|| {
                EmuError::Config(format!(
                    "the kernel has lockdep but its DWARF gives no {ty}::{name} (build it with debug info)"
                ))
            })
        };
        let enums = crate::dwarf::enumerator_values(elf, &["LD_WAIT_SLEEP", "LD_LOCK_PERCPU"]);
        let enumerator = |name: &str| {
            enums.get(name).map(|&v| v as u8).ok_or_else(|| {
                EmuError::Config(format!(
                    "the kernel has lockdep but its DWARF gives no {name}"
                ))
            })
        };
        Ok(LockdepLayout {
            wait_sleep: enumerator("LD_WAIT_SLEEP")?,
            lock_percpu: enumerator("LD_LOCK_PERCPU")?,
            map_key: member("lockdep_map", "key")?,
            map_name: member("lockdep_map", "name")?,
            map_wait_inner: member("lockdep_map", "wait_type_inner")?,
            map_lock_type: member("lockdep_map", "lock_type")?,
            map_class_cache: optional("lockdep_map", "class_cache"),
            class_subclass: optional("lock_class", "subclass"),
            no_validate_key: kernel.symbol_address("__lockdep_no_validate__"),
            task_softirq_context: optional("task_struct", "softirq_context"),
            hardirq_context: kernel.symbol_address("hardirq_context"),
        })
    }

    /// The subclass a subclass-0 acquisition of `map` takes: that of the class in
    /// the map's `class_cache[0]`, which `lockdep_init_map` with a subclass (what
    /// `lockdep_set_subclass` calls) points at its subclass's class.
    fn cached_subclass(&self, uc: &ProbedCore<'_, '_>, map: u64) -> u32 {
        let (Some(cache), Some(subclass)) = (self.map_class_cache, self.class_subclass) else {
            return 0;
        };
        match uc.read_u64(map + cache) {
            Some(class) if class != 0 => uc.read_u32(class + subclass).unwrap_or(0),
            _ => 0,
        }
    }
}

impl LinuxProfile {
    /// The pid in the `task_struct` at `tsk`, if the DWARF says where it is.
    fn pid_of(&self, uc: &ProbedCore<'_, '_>, tsk: u64) -> Option<u32> {
        self.task_pid.and_then(|offset| uc.read_u32(tsk + offset))
    }

    /// The IPI message whose descriptor is `desc` (its index in `ipi_desc`).
    fn ipi_message(&self, uc: &ProbedCore<'_, '_>, desc: u64) -> Option<u32> {
        let (table, count) = self.ipi_desc?;
        let count = uc.read_u32(count)?.min(16);
        (0..count).find(|&i| uc.read_u64(table + 8 * u64::from(i)) == Some(desc))
    }
}

/// The offset of the first `blr xN` (an indirect call) in `code`.
fn first_indirect_call(code: &[u8]) -> Option<u64> {
    const BLR_MASK: u32 = 0xffff_fc1f;
    const BLR: u32 = 0xd63f_0000;
    code.chunks_exact(4)
        .position(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & BLR_MASK == BLR)
        .map(|i| 4 * i as u64)
}

/// A general or system register of the core (0 where it cannot be read).
fn reg(uc: &Unicorn<'_, ()>, r: RegisterARM64) -> u64 {
    uc.reg_read(r).unwrap_or(0)
}

/// The running task: arm64 Linux keeps `current` in SP_EL0 (its `task_struct`,
/// 16-byte aligned, so shifted to fit a task id).
pub(super) fn current_task(uc: &Unicorn<'_, ()>) -> TaskId {
    task_of(reg(uc, RegisterARM64::SP_EL0))
}

impl Recorder {
    /// The running task: `current`, which arm64 Linux keeps in SP_EL0; named by a
    /// `task:<comm>` marker the first time it is seen.
    pub(super) fn linux_task(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        profile: &LinuxProfile,
        cpu: usize,
        now: u64,
    ) -> TaskId {
        let current = reg(uc, RegisterARM64::SP_EL0);
        let task = current_task(uc);
        st.tasks[cpu] = Some(task);
        if current == 0 {
            return task;
        }
        // A task is new the first time it is seen, or when its `task_struct` now
        // holds another pid (freed and given to a new task).
        let pid = profile.pid_of(uc, current);
        let new = match pid {
            Some(pid) => st.linux.pids.insert(task, pid) != Some(pid),
            None => st.named.insert(task.0),
        };
        if new {
            st.named.insert(task.0);
            let comm = profile
                .task_comm
                .and_then(|offset| read_c_string(uc, current + offset, TASK_COMM_LEN))
                .unwrap_or_else(|| "?".into());
            name_task(st, (cpu, task, 0, now), current, &comm, pid);
        }
        task
    }

    pub(super) fn on_linux_site(
        &self,
        uc: &ProbedCore<'_, '_>,
        profile: &LinuxProfile,
        cpu: usize,
        site: LinuxSite,
        pc: u64,
        now: u64,
    ) {
        let x = |n| read_xreg(uc, n);
        let mut st = self.state.borrow_mut();
        if site == LinuxSite::ExceptionReturn {
            // Before anything reads `current`: an `eret` to user space has SP_EL0
            // back at the user's stack. The interrupt entered last, if its
            // exception (or one it interrupted) is returning, was not seen in
            // hard-IRQ context.
            let sp = self.abi.sp(uc);
            if st.linux.injected[cpu].is_some_and(|(_, entry_sp)| sp >= entry_sp) {
                st.linux.injected[cpu] = None;
            }
            return;
        }
        let task = self.linux_task(uc, &mut st, profile, cpu, now);
        let marker = |st: &mut State, label: &str, value: u64| {
            let label = st.strings.intern(label);
            st.push(now, cpu, task, pc, 0, EventKind::Marker { label, value });
        };
        match &profile.locks {
            LockSource::Lockdep(lockdep) => {
                self.sync_lockdep_context(uc, &mut st, lockdep, cpu, task, pc, now)
            }
            LockSource::Primitives(primitives) => {
                self.sync_sampled_context(uc, &mut st, primitives, cpu, task, pc, now)
            }
        }
        if !std::mem::replace(&mut st.linux.announced, true) {
            marker(&mut st, traces::lockdep::LOCKDEP_ONLY_MARKER, 0);
            let coverage = match &profile.locks {
                LockSource::Lockdep(_) => LOCKDEP_COVERAGE.to_string(),
                LockSource::Primitives(primitives) => primitives.coverage(),
            };
            let label = format!("{}{coverage}", traces::lockdep::COVERAGE_MARKER_PREFIX);
            marker(&mut st, &label, 0);
        }
        match site {
            LinuxSite::PrimitiveEntry(n) => {
                self.on_primitive_entry(uc, &mut st, n, (cpu, task, pc, now))
            }
            LinuxSite::PrimitiveReturn => {
                if let LockSource::Primitives(primitives) = &profile.locks {
                    self.on_primitive_return(uc, &mut st, primitives, (cpu, task, now));
                }
            }
            LinuxSite::ContextSwitch => self.on_context_switch(uc, &mut st, (cpu, pc, now)),
            LinuxSite::ExceptionReturn => {}
            LinuxSite::SelftestCase => {
                let case = self
                    .kernel
                    .symbolize(x(0))
                    .map(|name| name.trim_end_matches("+0x0").to_string())
                    .unwrap_or_else(|| format!("{:#x}", x(0)));
                let (expected, mask) = (x(1) & 1, x(2) & 0xffff_ffff);
                marker(
                    &mut st,
                    &format!("selftest:case:{case}"),
                    expected | mask << 1,
                );
            }
            LinuxSite::SelftestCaseEnd => {
                let debug_locks = profile
                    .debug_locks
                    .and_then(|addr| uc.read_u32(addr))
                    .unwrap_or(1);
                marker(&mut st, "selftest:end", u64::from(debug_locks));
            }
            LinuxSite::SelftestDone => marker(&mut st, "selftest:done", 0),
            LinuxSite::LockdepReset => {
                // The task's locks are forgotten (the self-test leaves some held).
                st.linux.primitives.forget(task);
                marker(&mut st, traces::lockdep::LOCKDEP_RESET_MARKER, 0)
            }
            LinuxSite::IpiSendMask => {
                let Some(msg) = profile.ipi_message(uc, x(0)) else {
                    return;
                };
                // Our machine has at most 64 CPUs: the mask's first word.
                let mask = uc.read_u64(x(1)).unwrap_or(0);
                for target in (0..64u16).filter(|&cpu| mask >> cpu & 1 != 0) {
                    let kind = EventKind::IpiSend {
                        target: CpuId(target),
                        msg,
                        intid: msg,
                    };
                    st.push(now, cpu, task, pc, x(30), kind);
                }
            }
            LinuxSite::SetTaskComm => {
                // `__set_task_comm(tsk, buf, exec)`: a task renamed (by exec, as a
                // forked shell becomes `mount`) is named again.
                let (tsk, buf) = (x(0), x(1));
                if let Some(comm) = read_c_string(uc, buf, TASK_COMM_LEN - 1) {
                    let named = task_of(tsk);
                    st.named.insert(named.0);
                    // Its pid too, if this is the first word of it.
                    let pid = profile
                        .pid_of(uc, tsk)
                        .filter(|&pid| st.linux.pids.insert(named, pid) != Some(pid));
                    name_task(&mut st, (cpu, task, pc, now), tsk, &comm, pid);
                }
            }
            _ => {
                if let LockSource::Lockdep(lockdep) = &profile.locks {
                    self.on_lockdep_site(uc, &mut st, lockdep, site, (cpu, task, pc, now));
                }
            }
        }
    }

    /// A hooked lockdep entry point (or the self-test's).
    fn on_lockdep_site(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        profile: &LockdepLayout,
        site: LinuxSite,
        (cpu, task, pc, now): (usize, TaskId, u64, u64),
    ) {
        let x = |n| read_xreg(uc, n);
        let marker = |st: &mut State, label: &str, value: u64| {
            let label = st.strings.intern(label);
            st.push(now, cpu, task, pc, 0, EventKind::Marker { label, value });
        };
        match site {
            LinuxSite::LockAcquire => {
                let (map, subclass, trylock, read, check, nest_lock, ip) = (
                    x(0),
                    x(1) as u32,
                    x(2) as u32,
                    x(3) as u32,
                    x(4),
                    x(5),
                    x(6),
                );
                let no_validate = profile.no_validate_key.is_some()
                    && uc.read_u64(map + profile.map_key) == profile.no_validate_key;
                if check == 0 || no_validate {
                    st.linux.unchecked.insert(map);
                    return;
                }
                if nest_lock != 0 {
                    return marker(st, "unmodelled:nest-lock", map);
                }
                let subclass = if subclass == 0 {
                    profile.cached_subclass(uc, map)
                } else {
                    subclass
                };
                let lock = self.linux_lock(uc, st, profile, (cpu, now), map, subclass);
                st.linux.acquired_as.insert(map, lock.class);
                let mut wait_inner = [0u8];
                let sleeps = uc.read(map + profile.map_wait_inner, &mut wait_inner)
                    && wait_inner[0] == profile.wait_sleep;
                let flavor = if sleeps {
                    LockFlavor::Mutex
                } else {
                    LockFlavor::Spin
                };
                let stack = self.stack_id(uc, st, ip, x(29));
                let lr = x(30);
                if read != 0 {
                    let kind = EventKind::ReadLock {
                        lock,
                        recursive: read == 2,
                        trylock: trylock != 0,
                    };
                    return st.push_stacked(stack, now, cpu, task, lr, ip, kind);
                }
                if trylock != 0 {
                    let kind = EventKind::Trylock {
                        lock,
                        flavor,
                        acquired: true,
                    };
                    return st.push_stacked(stack, now, cpu, task, lr, ip, kind);
                }
                for kind in [
                    EventKind::LockAttempt { lock, flavor },
                    EventKind::LockAcquired { lock, flavor },
                ] {
                    st.push_stacked(stack, now, cpu, task, lr, ip, kind);
                }
            }
            LinuxSite::LockRelease => {
                let (map, ip) = (x(0), x(1));
                if st.linux.unchecked.contains(&map) {
                    return;
                }
                let class = match st.linux.acquired_as.get(&map) {
                    Some(&class) => class,
                    None => self.linux_lock(uc, st, profile, (cpu, now), map, 0).class,
                };
                let lock = LockRef { addr: map, class };
                let flavor = LockFlavor::Spin;
                let stack = self.stack_id(uc, st, ip, x(29));
                let kind = EventKind::LockRelease { lock, flavor };
                st.push_stacked(stack, now, cpu, task, x(30), ip, kind);
            }
            LinuxSite::MemoryFreed => {
                let kind = EventKind::LockMemoryFreed {
                    addr: x(0),
                    len: x(1),
                };
                st.push(now, cpu, task, x(30), x(30), kind);
            }
            LinuxSite::HardirqsOn | LinuxSite::HardirqsOff => {
                let new = site == LinuxSite::HardirqsOff;
                let old = st.linux.masked[cpu].unwrap_or(!new);
                st.linux.masked[cpu] = Some(new);
                if old != new {
                    let kind = EventKind::IrqMask {
                        old,
                        new,
                        cause: IrqMaskCause::Instruction,
                    };
                    let ip = x(0);
                    let stack = self.stack_id(uc, st, ip, x(29));
                    st.push_stacked(stack, now, cpu, task, x(30), ip, kind);
                }
            }
            LinuxSite::SoftirqsOn => st.push(now, cpu, task, pc, 0, EventKind::SoftirqsOn),
            LinuxSite::SoftirqsOff => st.push(now, cpu, task, pc, 0, EventKind::SoftirqsOff),
            LinuxSite::FreeKeyRange => {
                let (start, end) = (x(0), x(0).saturating_add(x(1)));
                st.linux.zap(|key| (start..end).contains(&key));
            }
            LinuxSite::ResetLock => {
                let map = x(0);
                let key = uc.read_u64(map + profile.map_key).unwrap_or(0);
                st.linux.zap(|k| k == key || k == map);
            }
            _ => {}
        }
    }

    /// Records lockdep's hard-IRQ and softirq context entered or left since the
    /// CPU's last hooked call.
    #[allow(clippy::too_many_arguments)]
    fn sync_lockdep_context(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        profile: &LockdepLayout,
        cpu: usize,
        task: TaskId,
        pc: u64,
        now: u64,
    ) {
        let hardirq = profile
            .hardirq_context
            .and_then(|var| uc.read_u32(var.wrapping_add(reg(uc, RegisterARM64::TPIDR_EL1))));
        let softirq = profile
            .task_softirq_context
            .and_then(|offset| uc.read_u32(reg(uc, RegisterARM64::SP_EL0).wrapping_add(offset)));
        sync_context(st, (cpu, task, pc, now), hardirq, softirq);
    }

    /// The lock of map `map` acquired with `subclass`.
    #[allow(clippy::too_many_arguments)]
    fn linux_lock(
        &self,
        uc: &ProbedCore<'_, '_>,
        st: &mut State,
        profile: &LockdepLayout,
        (cpu, now): (usize, u64),
        map: u64,
        subclass: u32,
    ) -> LockRef {
        // A static lock's map has no key until lockdep registers it: then its key
        // is the map's own address (lockdep's `static_obj` rule).
        let key = match uc.read_u64(map + profile.map_key) {
            Some(0) | None => map,
            Some(key) => key,
        };
        if let Some(&class) = st.linux.classes.get(&(key, subclass)) {
            return LockRef { addr: map, class };
        }
        let name = uc
            .read_u64(map + profile.map_name)
            .and_then(|ptr| read_c_string(uc, ptr, NAME_MAX))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("key@{key:#x}"));
        let generation = st.linux.generation.get(&key).copied().unwrap_or(0);
        let keys = st.linux.keys_named.entry(name.clone()).or_default();
        let nth = match keys.iter().position(|&k| k == (key, generation)) {
            Some(i) => i,
            None => {
                keys.push((key, generation));
                keys.len() - 1
            }
        };
        let mut text = name;
        if nth > 0 {
            text += &format!("#{}", nth + 1);
        }
        if subclass > 0 {
            text += &format!("/{subclass}");
        }
        let class = st.strings.intern(&text);
        st.linux.classes.insert((key, subclass), class);
        let mut lock_type = [0u8];
        let local = uc.read(map + profile.map_lock_type, &mut lock_type)
            && lock_type[0] == profile.lock_percpu;
        if local {
            let task = st.tasks[cpu].unwrap_or_default();
            st.push(now, cpu, task, 0, 0, EventKind::LocalLockClass { class });
        }
        LockRef { addr: map, class }
    }
}

/// Records the name of the task whose `task_struct` is at `tsk` (a
/// `task:<comm>` marker) and its pid if given (a `task-pid:<pid>` marker).
fn name_task(
    st: &mut State,
    (cpu, task, pc, now): (usize, TaskId, u64, u64),
    tsk: u64,
    comm: &str,
    pid: Option<u32>,
) {
    let value = u64::from(task_of(tsk).0);
    let label = st.strings.intern(&format!("task:{comm}"));
    st.push(now, cpu, task, pc, 0, EventKind::Marker { label, value });
    if let Some(pid) = pid {
        let label = format!("{}{pid}", traces::lockdep::TASK_PID_MARKER_PREFIX);
        let label = st.strings.intern(&label);
        st.push(now, cpu, task, pc, 0, EventKind::Marker { label, value });
    }
}

impl LinuxState {
    /// lockdep forgets the classes of the keys `zapped` accepts
    /// (`lockdep_free_key_range`, `lockdep_reset_lock`): their locks get new
    /// classes from now on.
    fn zap(&mut self, zapped: impl Fn(u64) -> bool) {
        let generation = &mut self.generation;
        self.classes.retain(|&(key, _), _| {
            if zapped(key) {
                *generation.entry(key).or_default() += 1;
                false
            } else {
                true
            }
        });
    }

    pub(super) fn new(cpus: usize) -> Self {
        Self {
            hardirq: vec![0; cpus],
            masked: vec![None; cpus],
            injected: vec![None; cpus],
            irq_contexts: vec![Vec::new(); cpus],
            ..Self::default()
        }
    }
}
