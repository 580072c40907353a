//! What the Linux profile's two ways of seeing the kernel's locking share
//! (lockdep's hooks in [`super::linux`], the lock primitives' in
//! [`super::linux_primitives`]): the sites they hook, how tasks are numbered,
//! names read from the guest, and the IRQ and softirq contexts entered.

use traces::{EventKind, TaskId};

use super::{ProbedCore, State};

/// Longest lock class or task name read from the guest.
pub(super) const NAME_MAX: usize = 64;

/// A hooked address of the Linux profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinuxSite {
    LockAcquire,
    LockRelease,
    MemoryFreed,
    HardirqsOn,
    HardirqsOff,
    SoftirqsOn,
    SoftirqsOff,
    LockdepReset,
    FreeKeyRange,
    ResetLock,
    SelftestCase,
    SelftestCaseEnd,
    SelftestDone,
    SetTaskComm,
    IpiSendMask,
    /// The entry of lock primitive number n (see [`super::linux_primitives`]).
    PrimitiveEntry(u16),
    /// Where a lock primitive's call returns (its own `ret`s and those of the
    /// functions it tail-calls).
    PrimitiveReturn,
    /// `cpu_switch_to(prev, next)` (when the primitives are hooked).
    ContextSwitch,
    /// An `eret`: the exception the host entered last on this CPU may be over.
    ExceptionReturn,
}

/// The task whose `task_struct` is at `addr` (as [`super::linux::current_task`]
/// numbers them).
pub(super) fn task_of(addr: u64) -> TaskId {
    TaskId((addr >> 4) as u32)
}

/// A NUL-terminated string of guest virtual memory (at most `max` bytes).
pub(super) fn read_c_string(uc: &ProbedCore<'_, '_>, addr: u64, max: usize) -> Option<String> {
    let mut buf = vec![0; max];
    uc.read(addr, &mut buf).then_some(())?;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(max);
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Deepest hard-IRQ or softirq nesting believed (a deeper count read is not the
/// kernel's: ignored rather than turned into that many events).
const MAX_CONTEXT_DEPTH: u32 = 64;

/// Records the hard-IRQ context (`hardirq`: the CPU's depth now) and the task's
/// softirq context (`softirq`: its depth now) entered or left since the last look,
/// when known.
pub(super) fn sync_context(
    st: &mut State,
    (cpu, task, pc, now): (usize, TaskId, u64, u64),
    hardirq: Option<u32>,
    softirq: Option<u32>,
) {
    let plausible = |depth: Option<u32>| depth.filter(|&d| d <= MAX_CONTEXT_DEPTH);
    let (hardirq, softirq) = (plausible(hardirq), plausible(softirq));
    if let Some(depth) = hardirq {
        let seen = std::mem::replace(&mut st.linux.hardirq[cpu], depth);
        for _ in seen..depth {
            // The interrupt the host entered, if this context is its; 0 for one
            // the kernel only says it is in (the self-test's simulated ones).
            let intid = st.linux.injected[cpu].take().map_or(0, |(intid, _)| intid);
            st.linux.irq_contexts[cpu].push(intid);
            st.push(now, cpu, task, pc, 0, EventKind::HardIrqEnter { intid });
        }
        for _ in depth..seen {
            let intid = st.linux.irq_contexts[cpu].pop().unwrap_or(0);
            st.push(now, cpu, task, pc, 0, EventKind::HardIrqExit { intid });
        }
    }
    if let Some(depth) = softirq {
        let seen = st.linux.softirq.insert(task, depth).unwrap_or(0);
        for _ in seen..depth {
            st.push(now, cpu, task, pc, 0, EventKind::SoftIrqEnter);
        }
        for _ in depth..seen {
            st.push(now, cpu, task, pc, 0, EventKind::SoftIrqExit);
        }
    }
}
