//! The workloads selected by `scenario=` in the bootargs.
//!
//! `PERCPU_LAB_SCENARIOS` lists them for the host (`name<TAB>summary<LF>` per line),
//! built at compile time from the same lists the kernel dispatches from, so the two
//! cannot drift.
//! Every line a scenario prints has content that depends only on the bootargs and
//! the CPU count, never on timing or interleaving.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use crate::arch;
use crate::bootinfo::boot_info;
use crate::config::{MAX_CPUS, TICK_COUNTS};
use crate::irq;
use crate::mutex::Mutex;
use crate::page_alloc::{self, Gfp, Shrinker};
use crate::percpu::{cpu_id, timer_irqs};
use crate::println;
use crate::rand::Rng;
use crate::sched::{self, Completion, WaitQueue};
use crate::smp::{online_cpus, smp_call_function_single};
use crate::sync::{self, SpinLock};
use crate::workqueue::{self, Work};

/// A workload `scenario=NAME` selects, and its one-line summary (`percpu-lab
/// scenarios`). The self-test modules keep lists of their own;
/// [`PERCPU_LAB_SCENARIOS`] is built from all three, so a scenario is named in one place only.
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    /// The scenario thread's function (on CPU 0, argument 0).
    pub main: fn(usize),
}

/// The kernel's own workloads.
const WORKLOADS: &[Scenario] = &[
    Scenario {
        name: "smoke",
        summary: "every CPU boots, locks, sends IPIs, uses a mutex and a workqueue, powers off",
        main: smoke_main,
    },
    Scenario {
        name: "panic",
        summary: "CPU 1 (or the only CPU) panics on purpose after boot",
        main: panic_main,
    },
    Scenario {
        name: "fault",
        summary: "CPU 1 (or the only CPU) loads from an unmapped address",
        main: fault_main,
    },
    Scenario {
        name: "hang",
        summary: "every CPU spins forever with IRQs on (for the host's watchdog)",
        main: hang_main,
    },
    Scenario {
        name: "irqmask",
        summary: "a masked timer IRQ is not taken until IRQs are unmasked",
        main: irqmask_main,
    },
    Scenario {
        name: "storm",
        summary: "all CPUs alloc/free per-CPU areas of random size and alignment, IRQs and IPIs on",
        main: crate::alloc_scenarios::storm_main,
    },
    Scenario {
        name: "irq-free",
        summary: "IRQ handlers (tick, call-function IPI) free per-CPU areas threads allocated",
        main: crate::alloc_scenarios::irq_free_main,
    },
    Scenario {
        name: "irq-race",
        summary: "threads free per-CPU areas while their own CPU's tick frees others: frees meet their interrupts",
        main: crate::alloc_scenarios::irq_race_main,
    },
    Scenario {
        name: "fs-reclaim",
        summary: "an FS path frees under fs_lock while allocations enter direct reclaim",
        main: crate::alloc_scenarios::fs_reclaim_main,
    },
    Scenario {
        name: "reclaim",
        summary: "chunks grow, are freed, reclaimed and their addresses reused while CPUs use theirs",
        main: crate::alloc_scenarios::reclaim_main,
    },
    Scenario {
        name: "reclaim-reuse",
        summary: "reclaim with the page freed last allocated first: reclaimed pages are reused at once",
        main: crate::alloc_scenarios::reclaim_reuse_main,
    },
    Scenario {
        name: "map-grow",
        summary: "one chunk's area map grows past 2048 entries while IRQ handlers free some of its areas",
        main: crate::alloc_scenarios::map_grow_main,
    },
    Scenario {
        name: "map-race",
        summary: "workers on all CPUs fill and drain chunks in rounds under memory pressure: frees and reclaim race map extensions",
        main: crate::alloc_scenarios::map_race_main,
    },
];

/// Every scenario, in the order `percpu-lab scenarios` lists them.
const LISTS: [&[Scenario]; 3] = [
    WORKLOADS,
    crate::mmu_selftest::CASES,
    crate::lock_selftest::CASES,
];

/// The length of `name<TAB>summary<LF>` for every scenario.
///
/// CONTEXT: compile time.
const fn table_len() -> usize {
    let mut len = 0;
    let mut list = 0;
    while list < LISTS.len() {
        let mut i = 0;
        while i < LISTS[list].len() {
            len += LISTS[list][i].name.len() + LISTS[list][i].summary.len() + 2;
            i += 1;
        }
        list += 1;
    }
    len
}

const TABLE_LEN: usize = table_len();

/// Copies `text` into `out` at `at`; returns where it ends.
///
/// CONTEXT: compile time.
const fn put(out: &mut [u8; TABLE_LEN], at: usize, text: &[u8]) -> usize {
    let mut i = 0;
    while i < text.len() {
        out[at + i] = text[i];
        i += 1;
    }
    at + text.len()
}

/// `name<TAB>summary<LF>` for every scenario.
///
/// CONTEXT: compile time.
const fn table_bytes() -> [u8; TABLE_LEN] {
    let mut out = [0u8; TABLE_LEN];
    let mut at = 0;
    let mut list = 0;
    while list < LISTS.len() {
        let mut i = 0;
        while i < LISTS[list].len() {
            let scenario = &LISTS[list][i];
            at = put(&mut out, at, scenario.name.as_bytes());
            at = put(&mut out, at, b"\t");
            at = put(&mut out, at, scenario.summary.as_bytes());
            at = put(&mut out, at, b"\n");
            i += 1;
        }
        list += 1;
    }
    out
}

/// The scenario table the host reads from the ELF.
#[no_mangle]
#[used]
pub static PERCPU_LAB_SCENARIOS: [u8; TABLE_LEN] = table_bytes();

/// Starts the scenario named in the bootargs as a thread on CPU 0.
///
/// CONTEXT: the kinit thread after bring-up; may sleep.
pub fn start() {
    let name = boot_info().scenario.as_str();
    let main = match WORKLOADS.iter().find(|s| s.name == name) {
        Some(scenario) => scenario.main,
        None => {
            match crate::mmu_selftest::lookup(name).or_else(|| crate::lock_selftest::lookup(name)) {
                Some(main) => main,
                None => panic!("unknown scenario '{}'", name),
            }
        }
    };
    if sched::spawn_on(0, name, main, 0).is_none() {
        panic!("no memory for the scenario thread");
    }
}

/// The CPU that misbehaves in the panic and fault scenarios.
///
/// CONTEXT: any, after bring-up.
fn victim_cpu() -> usize {
    if online_cpus() > 1 {
        1
    } else {
        0
    }
}

/// CONTEXT: may sleep (see sched::spawn_on).
fn spawn_or_panic(cpu: usize, name: &str, entry: fn(usize), arg: usize) {
    if sched::spawn_on(cpu, name, entry, arg).is_none() {
        panic!("no memory for thread {} on cpu{}", name, cpu);
    }
}

// ---------------------------------------------------------------------------
// panic, fault, hang

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn panic_main(_: usize) {
    spawn_or_panic(
        victim_cpu(),
        "panicker",
        |cpu| panic!("cpu{}: panic scenario, on purpose", cpu),
        victim_cpu(),
    );
}

/// An address no page table maps (TTBR0 level-1 slot 64).
const UNMAPPED_ADDRESS: usize = 0x10_0000_0000;

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn fault_main(_: usize) {
    spawn_or_panic(
        victim_cpu(),
        "faulter",
        |cpu| {
            println!("cpu{}: loading from unmapped 0x{:x}", cpu, UNMAPPED_ADDRESS);
            // SAFETY: deliberately unsound: the load must fault.
            let value = unsafe { (UNMAPPED_ADDRESS as *const u64).read_volatile() };
            panic!("load from an unmapped address returned 0x{:x}", value);
        },
        victim_cpu(),
    );
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn hang_main(_: usize) {
    for cpu in 0..online_cpus() {
        spawn_or_panic(
            cpu,
            "hang",
            |cpu| {
                println!("cpu{}: spinning forever", cpu);
                loop {
                    core::hint::spin_loop();
                }
            },
            cpu,
        );
    }
}

// ---------------------------------------------------------------------------
// irqmask

/// CONTEXT: scenario thread on CPU 0, IRQs on at entry; masks them itself.
fn irqmask_main(_: usize) {
    let flags = sync::local_irq_save();
    let before = timer_irqs();
    let deadline = arch::counter() + 1_000;
    irq::arm_timer_at(deadline);
    while arch::counter() < deadline + 20 * TICK_COUNTS {
        core::hint::spin_loop();
    }
    if timer_irqs() != before {
        panic!("irqmask: a timer IRQ was taken with IRQs masked");
    }
    if !irq::timer_condition_met() {
        panic!("irqmask: the timer did not fire at its deadline");
    }
    sync::local_irq_restore(flags);
    // Unmasked: the pending IRQ must be taken at once (the emulator takes it right
    // after the unmasking instruction; QEMU once a host-timer callback raised it).
    let unmasked_at = arch::counter();
    while timer_irqs() == before {
        if arch::counter() - unmasked_at > 10 * TICK_COUNTS {
            panic!("irqmask: the pending timer IRQ was not taken after unmasking");
        }
        core::hint::spin_loop();
    }
    println!("cpu0: irqmask: ok");
    crate::arch::system_off(0);
}

// ---------------------------------------------------------------------------
// smoke

const SPIN_ROUNDS: u64 = 300;
const MUTEX_ROUNDS: u64 = 50;

/// SMOKE_COUNTER_LOCK: protects the shared spinlock counter (taken in all three
/// IRQ flavours to exercise them).
static SMOKE_COUNTER_LOCK: SpinLock<u64> = SpinLock::new("smoke_counter", 0);
/// SMOKE_MUTEX: protects the shared mutex counter; held across a yield so that
/// other threads really sleep on it.
static SMOKE_MUTEX: Mutex<u64> = Mutex::new("smoke_mutex", 0);
/// Call-function IPIs received, per receiving CPU (bit per sender).
static IPI_SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static SMOKE_DONE: Completion = Completion::new();
static WORK_DONE: Completion = Completion::new();

/// A barrier for the smoke threads: each phase starts when all have arrived.
static BARRIER_ARRIVED: AtomicUsize = AtomicUsize::new(0);
static BARRIER_WAIT: WaitQueue = WaitQueue::new("smoke_barrier");

/// CONTEXT: smoke thread; may sleep; takes the smoke_barrier wait-queue lock.
fn barrier(generation: usize) {
    let cpus = online_cpus();
    BARRIER_ARRIVED.fetch_add(1, AcqRel);
    BARRIER_WAIT.wake_all();
    BARRIER_WAIT.wait_until(|| BARRIER_ARRIVED.load(Acquire) >= generation * cpus);
}

static SMOKE_WORK: [Work; MAX_CPUS] = [const { Work::new(smoke_work) }; MAX_CPUS];

/// CONTEXT: the kworker of its CPU; may sleep.
fn smoke_work(work: &'static Work) {
    let index = SMOKE_WORK
        .iter()
        .position(|w| core::ptr::eq(w, work))
        .expect("a smoke work item");
    if index != cpu_id() {
        panic!("work item for cpu{} ran on cpu{}", index, cpu_id());
    }
    println!("cpu{}: work item ran", cpu_id());
    WORK_DONE.complete();
}

/// CONTEXT: hard-IRQ (call-function IPI) on the receiving CPU.
fn record_ipi(sender: usize) {
    IPI_SEEN[cpu_id()].fetch_or(1 << sender, AcqRel);
}

static SHRINKER_CALLS: AtomicUsize = AtomicUsize::new(0);
static SMOKE_SHRINKER: Shrinker = Shrinker {
    name: "smoke",
    scan: |_| {
        SHRINKER_CALLS.fetch_add(1, Relaxed);
        0
    },
};

/// CONTEXT: smoke thread on CPU `cpu`; may sleep; takes smoke_counter (all three ways) and
/// smoke_mutex.
fn smoke_thread(cpu: usize) {
    let cpus = online_cpus();
    println!("cpu{}: smoke thread running", cpu);

    // The seed varies how long locks are held and who yields inside the mutex,
    // which varies the interleaving but never what is printed.
    let mut rng = Rng::new(0x5307e, cpu);
    for round in 0..SPIN_ROUNDS {
        let mut counter = match round % 3 {
            0 => SMOKE_COUNTER_LOCK.lock(),
            1 => SMOKE_COUNTER_LOCK.lock_irq(),
            _ => SMOKE_COUNTER_LOCK.lock_irqsave(),
        };
        sync::lockdep_assert_held(counter.raw());
        *counter += 1;
        for _ in 0..rng.below(8) {
            core::hint::spin_loop();
        }
    }
    barrier(1);

    for target in (0..cpus).filter(|&t| t != cpu) {
        smp_call_function_single(target, record_ipi, cpu);
    }
    barrier(2);
    let expected = ((1u64 << cpus) - 1) & !(1 << cpu);
    if IPI_SEEN[cpu].load(Acquire) != expected {
        panic!(
            "cpu{}: call-function IPIs seen 0x{:x}, expected 0x{:x}",
            cpu,
            IPI_SEEN[cpu].load(Acquire),
            expected
        );
    }
    println!("cpu{}: received an IPI from every other CPU", cpu);

    for _ in 0..MUTEX_ROUNDS {
        let mut counter = SMOKE_MUTEX.lock();
        crate::mutex::lockdep_assert_mutex_held(SMOKE_MUTEX.raw());
        let seen = *counter;
        if rng.below(2) == 0 {
            sched::yield_now();
        }
        *counter = seen + 1;
    }
    println!("cpu{}: mutex rounds done", cpu);

    // The tick reaches every CPU.
    let ticks = timer_irqs();
    while timer_irqs() == ticks {
        sched::yield_now();
    }
    println!("cpu{}: timer tick seen", cpu);

    workqueue::queue_work_on(cpu, &SMOKE_WORK[cpu]);
    SMOKE_DONE.complete();
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
fn smoke_main(_: usize) {
    let cpus = online_cpus();
    println!("cpu0: smoke: {} cpus online", cpus);
    for cpu in 0..cpus {
        spawn_or_panic(cpu, "smoke", smoke_thread, cpu);
    }
    SMOKE_DONE.wait_n(cpus);
    WORK_DONE.wait_n(cpus);

    let spins = *SMOKE_COUNTER_LOCK.lock_irqsave();
    if spins != SPIN_ROUNDS * cpus as u64 {
        panic!(
            "smoke: spinlock counter {} != {}",
            spins,
            SPIN_ROUNDS * cpus as u64
        );
    }
    println!("cpu0: smoke: spinlock counter exact");
    let mutexed = *SMOKE_MUTEX.lock();
    if mutexed != MUTEX_ROUNDS * cpus as u64 {
        panic!(
            "smoke: mutex counter {} != {}",
            mutexed,
            MUTEX_ROUNDS * cpus as u64
        );
    }
    println!("cpu0: smoke: mutex counter exact");

    smoke_page_allocator();
    println!("cpu0: smoke: done");
    crate::arch::system_off(0);
}

/// Pages come and go, a vmalloc range is reserved, mapped, used, unmapped,
/// flushed and released, and a sleeping allocation under the watermark calls the
/// shrinkers.
///
/// CONTEXT: scenario thread; may sleep (Gfp::Kernel, shrinker_list).
fn smoke_page_allocator() {
    use crate::config::PAGE_SIZE;
    use crate::vmalloc;

    let before = page_alloc::free_page_count();
    let pages = [
        page_alloc::alloc_pages(0, Gfp::Kernel).expect("a page"),
        page_alloc::alloc_pages(0, Gfp::Kernel).expect("a page"),
    ];
    let area = vmalloc::vm_reserve(2 * PAGE_SIZE).expect("vmalloc space");
    vmalloc::map_pages(area, &pages).expect("vmalloc map");
    for (index, &page) in pages.iter().enumerate() {
        let va = area + index * PAGE_SIZE;
        // SAFETY: `va` maps `page`, which we own.
        unsafe { (va as *mut u64).write_volatile(0x5eed + index as u64) };
        // SAFETY: the identity view of the same page.
        let seen = unsafe { (page as *const u64).read_volatile() };
        if seen != 0x5eed + index as u64 || crate::mmu::translate(va) != Some(page) {
            panic!("smoke: vmalloc page {} does not reach its frame", index);
        }
    }
    vmalloc::unmap_range_noflush(area, 2 * PAGE_SIZE);
    crate::mmu::flush_tlb_kernel_range(area, area + 2 * PAGE_SIZE);
    if crate::mmu::translate(area).is_some() {
        panic!("smoke: vmalloc page still mapped after unmap");
    }
    vmalloc::vm_release(area, 2 * PAGE_SIZE);
    for page in pages {
        page_alloc::free_pages(page, 0);
    }

    let buffer = page_alloc::kzalloc(3 * PAGE_SIZE, Gfp::Kernel).expect("kzalloc");
    // SAFETY: kzalloc returned at least 3 zeroed pages.
    if unsafe { core::slice::from_raw_parts(buffer.as_ptr(), 3 * PAGE_SIZE) }
        .iter()
        .any(|&b| b != 0)
    {
        panic!("smoke: kzalloc memory is not zeroed");
    }
    page_alloc::kfree(buffer, 3 * PAGE_SIZE);

    page_alloc::register_shrinker(&SMOKE_SHRINKER);
    // Well above the free count, so that pages other CPUs free meanwhile (their
    // smoke threads, work items) cannot lift it back over the watermark before
    // the allocation looks: with a margin of one page, QEMU's parallel vCPUs
    // once skipped the reclaim.
    page_alloc::set_low_watermark(page_alloc::free_page_count() + 64);
    let page = page_alloc::alloc_pages(0, Gfp::Kernel).expect("a page under pressure");
    page_alloc::free_pages(page, 0);
    page_alloc::set_low_watermark(32);
    page_alloc::unregister_shrinker(&SMOKE_SHRINKER);
    if SHRINKER_CALLS.load(Relaxed) == 0 || page_alloc::reclaim_runs() == 0 {
        panic!("smoke: direct reclaim did not call the shrinker");
    }
    // The vmalloc area keeps its level-3 table; nothing else may leak.
    if page_alloc::free_page_count() + 1 < before {
        panic!(
            "smoke: pages leaked: {} free before, {} after",
            before,
            page_alloc::free_page_count()
        );
    }
    println!("cpu0: smoke: page allocator, vmalloc area and reclaim ok");
}
