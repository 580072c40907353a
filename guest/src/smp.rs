//! Secondary CPU bring-up and cross-CPU function calls over SGIs.
//!
//! Synchronization rules: each CPU's `IpiMailbox` queue is protected by its
//! `ipi_mailbox` spinlock, taken irqsave by senders and by the target's IRQ
//! handler. A request lives on the sender's stack; the sender does not return
//! before the target has set `done`, so the target may use it until then.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use crate::arch::irqchip;
use crate::bootinfo::boot_info;
use crate::config::MAX_CPUS;
use crate::irq::IpiMessage;
use crate::percpu::{cpu, this_cpu};
use crate::sync::{irqs_enabled, SpinLock};

/// A function to run on another CPU, in its IRQ handler. `repr(C)`: the host
/// reads `done` at +16 when the sender starts waiting (docs/machine.md).
#[repr(C)]
pub struct CallRequest {
    func: fn(usize),
    arg: usize,
    done: AtomicBool,
    next: *const CallRequest,
}

const _: () = assert!(core::mem::offset_of!(CallRequest, done) == 16);

struct CallQueue {
    head: *const CallRequest,
}

// SAFETY: the raw pointers are only followed under the mailbox lock (see module doc).
unsafe impl Send for CallQueue {}

pub struct IpiMailbox {
    queue: SpinLock<CallQueue>,
}

impl IpiMailbox {
    /// CONTEXT: any (const).
    pub const fn new() -> Self {
        IpiMailbox {
            queue: SpinLock::new(
                "ipi_mailbox",
                CallQueue {
                    head: core::ptr::null(),
                },
            ),
        }
    }
}

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ONLINE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Number of CPUs running the kernel.
///
/// CONTEXT: any.
pub fn online_cpus() -> usize {
    ONLINE_COUNT.load(Acquire)
}

/// Records that the running CPU is up.
///
/// CONTEXT: each CPU once at the end of bring-up.
pub fn mark_online() {
    ONLINE[this_cpu().id].store(true, Release);
    ONLINE_COUNT.fetch_add(1, AcqRel);
    // Wakes the boot CPU, waiting for this flag in `bring_up_secondaries`.
    crate::arch::send_event();
}

/// How long (counter ticks, one virtual second) the boot CPU waits for a secondary.
const BRING_UP_TIMEOUT: u64 = crate::arch::COUNTER_HZ;

/// Starts every secondary CPU with PSCI CPU_ON and waits until each is online.
///
/// CONTEXT: boot CPU, once; does not sleep (waits on the online flags, which are
/// set by the secondaries themselves, not by an IRQ: with WFE between checks on
/// arm64, so that an emulator runs the secondary meanwhile rather than the wait).
pub fn bring_up_secondaries() {
    let info = boot_info();
    let entry = crate::arch::secondary_entry_address();
    for id in 1..info.cpu_count {
        let status = crate::arch::cpu_on(info.cpu_mpidr[id], entry, id as u64);
        if status != 0 {
            panic!(
                "PSCI CPU_ON for cpu{} (MPIDR 0x{:x}) failed: {}",
                id, info.cpu_mpidr[id], status
            );
        }
        let start = crate::arch::counter();
        while !ONLINE[id].load(Acquire) {
            if crate::arch::counter() - start > BRING_UP_TIMEOUT {
                panic!("cpu{} did not come online", id);
            }
            crate::arch::wait_for_event();
        }
    }
}

/// Sends a reschedule IPI to `target`.
///
/// CONTEXT: any; does not sleep.
pub fn send_reschedule(target: usize) {
    smp_cross_call(target, IpiMessage::Reschedule);
}

/// Sends IPI `msg` to CPU `target`: every IPI the kernel sends goes through here
/// (Linux's arm64 `smp_cross_call`). Stores before this call are visible to the
/// target's handler. The host probes its entry and records an `ipi-send`
/// (docs/machine.md: C ABI, (target cpu, message number)).
///
/// CONTEXT: any; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn smp_cross_call(target: usize, msg: IpiMessage) {
    irqchip::send_ipi(target, msg);
}

/// Runs `func(arg)` on CPU `target` (in its IRQ handler, IRQs masked there) and
/// waits until it has run. On the running CPU it simply runs it with IRQs masked.
///
/// CONTEXT: thread context with IRQs on (the wait spins until the target's IRQ
/// handler runs, and the target may be calling us at the same time); no spinlock
/// held. Does not sleep.
#[no_mangle]
#[inline(never)]
pub fn smp_call_function_single(target: usize, func: fn(usize), arg: usize) {
    if target == this_cpu().id {
        let flags = crate::sync::local_irq_save();
        func(arg);
        crate::sync::local_irq_restore(flags);
        return;
    }
    assert!(
        irqs_enabled(),
        "smp_call_function_single with IRQs masked would deadlock"
    );
    call_and_wait(target, func, arg);
}

/// [`smp_call_function_single`] to another CPU without its check that IRQs are
/// on: only for `inject=ipi-flush-irqs-off`, the porting bug of an IPI-based
/// TLB flush issued with IRQs off, which deadlocks when the target waits with
/// IRQs masked for something the caller holds (the host reports the cycle).
///
/// CONTEXT: any but hard-IRQ; may be called with IRQs masked and spinlocks
/// held (that is the bug). Does not sleep.
pub fn smp_call_function_single_unchecked(target: usize, func: fn(usize), arg: usize) {
    call_and_wait(target, func, arg);
}

/// Queues the call for `target`, sends it the IPI and waits for it.
///
/// CONTEXT: `target` is not this CPU; does not sleep.
fn call_and_wait(target: usize, func: fn(usize), arg: usize) {
    let mut request = CallRequest {
        func,
        arg,
        done: AtomicBool::new(false),
        next: core::ptr::null(),
    };
    {
        let mut queue = cpu(target).ipi.queue.lock_irqsave();
        // Requests run in any order; pushing at the head keeps this O(1).
        request.next = queue.head;
        queue.head = &request;
    }
    smp_cross_call(target, IpiMessage::CallFunction);
    csd_lock_wait(&request, target);
}

/// Spins until `target` has run `request` (Linux's `csd_lock_wait`). The host
/// probes its entry: unless `done` is already set there, this task waits for
/// `target` to take its IPI until `csd_unlock` of the same request.
///
/// CONTEXT: the sender of `request`; does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn csd_lock_wait(request: &CallRequest, target: usize) {
    // Only the host's probe reads it (x1): keep it passed.
    core::hint::black_box(target);
    while !request.done.load(Acquire) {
        core::hint::spin_loop();
    }
}

/// Marks `request` run: its sender may go on and free it (Linux's
/// `csd_unlock`). The host probes its entry.
///
/// CONTEXT: hard-IRQ on the request's target; the last touch of `request`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn csd_unlock(request: &CallRequest) {
    request.done.store(true, Release);
}

/// Runs every call request queued for this CPU.
///
/// CONTEXT: hard-IRQ on the target CPU; takes its ipi_mailbox lock.
pub fn handle_call_function_ipi() {
    loop {
        let request = {
            let mut queue = this_cpu().ipi.queue.lock_irqsave();
            let head = queue.head;
            if head.is_null() {
                return;
            }
            // SAFETY: queued requests are alive (module doc).
            queue.head = unsafe { (*head).next };
            head
        };
        // SAFETY: alive until we set done; after that we must not touch it.
        unsafe {
            ((*request).func)((*request).arg);
            csd_unlock(&*request);
        }
    }
}
