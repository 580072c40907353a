//! The per-CPU allocator scenarios (DESIGN.md, "Scenarios"): `storm`,
//! `irq-free`, `fs-reclaim`, `reclaim`, `map-grow` and `map-race`.
//!
//! Integrity checks shared by all four: every CPU's copy of every live area
//! carries a pattern identifying (area, cpu). The allocating thread checks
//! that every copy is zeroed, then writes the patterns; whoever frees the area
//! verifies every copy first; other CPUs verify their own copy of published
//! areas while they are live. A mismatch (corruption, an overlap with another
//! area, a stale translation) panics the guest.
//!
//! Each scenario ends with one line on the boot CPU,
//! `cpu0: NAME: allocs=A frees=F chunks_created=C chunks_reclaimed=R` (the
//! allocator's counters), then powers off with status 0. `allocs` and `frees`
//! depend only on the seed and the CPU count; the chunk counts of `storm`,
//! `irq-free` and `fs-reclaim` also depend on the interleaving (reclaim runs
//! asynchronously), those of `reclaim` do not.
//!
//! A guest watchdog (the tick hook on CPU 0) panics when no allocation or free
//! completes for `WATCHDOG_COUNTS` counter ticks, naming what each worker was doing:
//! that is how a deadlocked variant ends (exit 3) instead of idling until the
//! host's instruction limit.
//!
//! Synchronization rules — the locks this file adds:
//! - `storm_live` (spinlock, irqsave; also taken in call-function IPI
//!   handlers): the table of published storm areas. An area's owner
//!   unpublishes it under the lock before freeing it, so a CPU verifying its
//!   own copy under the lock never sees the area freed.
//! - `irq_free_queue` (one per CPU, spinlock, irqsave; taken by threads and by
//!   that CPU's IRQ handlers): areas waiting to be freed in IRQ context.
//!   Never held while freeing.
//! - `fs_lock` (mutex): the "file system" and its page cache. Held by the FS
//!   thread while it frees per-CPU areas; taken by the page-cache shrinker
//!   from direct reclaim. Order: fs_reclaim -> shrinker_list -> fs_lock, and
//!   fs_lock -> pcpu_lock (fine, irq) / pcpu_mutex (mutex: the deadlock).
//! - `fs_handoff` (spinlock, irqsave): areas allocated by the allocating
//!   threads for the FS thread to free. Never held while freeing.
//! - `reclaim_grown` (spinlock, irqsave): the table of areas the `reclaim`
//!   grower published for the other CPUs to check. Same rule as storm_live.
//! - `mapg_live` (spinlock, irqsave): the `map-grow` grower's live areas
//!   (only it uses them; a lock so the table can be a static). Never held
//!   while freeing.
//! - `mapr_live` (spinlock, irqsave): the `map-race` workers' published small
//!   areas. Any worker takes one out under the lock, then frees it with the
//!   lock released (so it is freed once, by whoever took it). Never held
//!   while allocating or freeing.
//! - `mapr_ballast` (spinlock, irqsave): the areas that fill the first chunk
//!   during `map-race` (only its main thread uses them).
//! - `mapr_barrier`, `mapr_tick` (wait queues, their spinlocks irqsave): the
//!   `map-race` workers' end-of-round barrier, and direct reclaims sleeping
//!   for writeback (woken by every tick, whose hook takes the lock in
//!   hard-IRQ context). Their conditions read atomics and the counter only.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

use allocator::{PcpuPtr, MIN_UNIT_SIZE, PAGE_SIZE};

use crate::arch;
use crate::config::{MAX_CPUS, TICK_COUNTS};
use crate::irq;
use crate::mutex::{self, Mutex, RawMutex};
use crate::page_alloc::{self, Gfp, Shrinker};
use crate::pcpu_platform::{self, pcpu};
use crate::percpu::cpu_id;
use crate::println;
use crate::rand::Rng;
use crate::sched::{self, Completion, WaitQueue};
use crate::smp::{online_cpus, smp_call_function_single};
use crate::sync::{self, SpinLock};

// ---------------------------------------------------------------------------
// Areas and their patterns.

/// A live per-CPU area as its owner knows it.
#[derive(Clone, Copy)]
struct Area {
    ptr: PcpuPtr,
    size: usize,
    /// Unique per allocation; the patterns derive from it.
    tag: u64,
}

/// SplitMix64's finaliser.
///
/// CONTEXT: any; pure.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Step between consecutive pattern words (odd, so words never repeat).
const PATTERN_STEP: u64 = 0x9e37_79b9_7f4a_7c15;
/// Every pattern byte has its top bit set, so no pattern byte is zero (a
/// zeroed copy never passes for a pattern).
const PATTERN_MASK: u64 = 0x8080_8080_8080_8080;

/// What a copy should hold: zeroes, or the pattern of (tag, cpu).
#[derive(Clone, Copy)]
enum Expect {
    Zero,
    Pattern(u64, usize),
}

impl Expect {
    /// (first word, step, mask): word `k` of the copy (counting from the
    /// 8-aligned word holding its first byte) is `(first + k * step) | mask`.
    ///
    /// CONTEXT: any; pure.
    fn sequence(self) -> (u64, u64, u64) {
        match self {
            Expect::Zero => (0, 0, 0),
            Expect::Pattern(tag, cpu) => (
                mix(mix(tag) ^ ((cpu as u64 + 1) << 48)),
                PATTERN_STEP,
                PATTERN_MASK,
            ),
        }
    }
}

/// Writes the pattern of (`tag`, `cpu`) into `start..start + size`: whole
/// words where aligned, bytes at the ends.
///
/// CONTEXT: any; the caller owns the copy.
fn fill_copy(start: usize, size: usize, tag: u64, cpu: usize) {
    let (first, step, mask) = Expect::Pattern(tag, cpu).sequence();
    let end = start + size;
    let word_at = |addr: usize| {
        (first.wrapping_add(step.wrapping_mul(((addr - (start & !7)) / 8) as u64))) | mask
    };
    let body = start.next_multiple_of(8).min(end);
    let body_end = (end & !7).max(body);
    for byte in (start..body).chain(body_end..end) {
        // SAFETY: one byte of a live area copy the caller owns.
        unsafe { (byte as *mut u8).write_volatile((word_at(byte & !7) >> ((byte % 8) * 8)) as u8) };
    }
    let mut raw = first.wrapping_add(step.wrapping_mul(((body - (start & !7)) / 8) as u64));
    let mut addr = body;
    // Whole lines first: one emulated block per line rather than per word.
    while addr + LINE_BYTES <= body_end {
        for word in 0..LINE_BYTES / 8 {
            // SAFETY: an aligned word of the copy (the line lies inside it).
            unsafe { ((addr + word * 8) as *mut u64).write_volatile(raw | mask) };
            raw = raw.wrapping_add(step);
        }
        addr += LINE_BYTES;
    }
    while addr < body_end {
        // SAFETY: an aligned word of the copy.
        unsafe { (addr as *mut u64).write_volatile(raw | mask) };
        raw = raw.wrapping_add(step);
        addr += 8;
    }
}

/// Keeps the CPU busy for `units` steps of three instructions (a stand-in for
/// work outside the allocator; its length sets the race windows). The steps run
/// eight to a loop pass: a `spin_loop` hint per step (an `isb` on arm64) would end
/// an emulated block at every step, and per-block cost dominates emulating them.
///
/// CONTEXT: any.
fn busy_work(units: u64) {
    let step = || {
        // SAFETY: `nop` has no effect.
        unsafe {
            core::arch::asm!(
                "nop",
                "nop",
                "nop",
                options(nomem, nostack, preserves_flags)
            )
        }
    };
    for _ in 0..units / 8 {
        for _ in 0..8 {
            step();
        }
    }
    for _ in 0..units % 8 {
        step();
    }
}

/// Bytes the pattern loops handle per unrolled step: a cache line's worth of
/// words, so that the emulator runs one block per line instead of one per word
/// (per-block cost dominates emulation of such tight loops).
const LINE_BYTES: usize = 64;

/// The first byte of `start..start + size` that differs from `expect`:
/// (address, found byte, expected byte).
///
/// CONTEXT: any; the copy must stay mapped (the caller owns it or holds the
/// lock that keeps it live).
fn check_copy(start: usize, size: usize, expect: Expect) -> Option<(usize, u8, u8)> {
    let (first, step, mask) = expect.sequence();
    let end = start + size;
    let word_at = |addr: usize| {
        (first.wrapping_add(step.wrapping_mul(((addr - (start & !7)) / 8) as u64))) | mask
    };
    let check_byte = |byte: usize| {
        // SAFETY: one byte of the copy.
        let found = unsafe { (byte as *const u8).read_volatile() };
        let wanted = (word_at(byte & !7) >> ((byte % 8) * 8)) as u8;
        (found != wanted).then_some((byte, found, wanted))
    };
    let body = start.next_multiple_of(8).min(end);
    let body_end = (end & !7).max(body);
    if let Some(bad) = (start..body).find_map(check_byte) {
        return Some(bad);
    }
    let mut raw = first.wrapping_add(step.wrapping_mul(((body - (start & !7)) / 8) as u64));
    let mut addr = body;
    // Whole lines while they match; a line with a difference is searched word by
    // word below.
    while addr + LINE_BYTES <= body_end {
        let mut differ = 0;
        let mut expected = raw;
        for word in 0..LINE_BYTES / 8 {
            // SAFETY: an aligned word of the copy (the line lies inside it).
            differ |=
                unsafe { ((addr + word * 8) as *const u64).read_volatile() } ^ (expected | mask);
            expected = expected.wrapping_add(step);
        }
        // Opaque to the optimiser, which would otherwise test each word with its
        // own branch, one emulated block per word again.
        // SAFETY: an empty asm statement; it only launders the value.
        unsafe {
            core::arch::asm!("/* {0} */", inout(reg) differ, options(pure, nomem, nostack, preserves_flags))
        };
        if differ != 0 {
            break;
        }
        raw = expected;
        addr += LINE_BYTES;
    }
    while addr < body_end {
        // SAFETY: an aligned word of the copy.
        if unsafe { (addr as *const u64).read_volatile() } != raw | mask {
            return (addr..addr + 8).find_map(check_byte);
        }
        raw = raw.wrapping_add(step);
        addr += 8;
    }
    (body_end..end).find_map(check_byte)
}

/// Panics unless `cpu`'s copy of `area` holds what `expect` says.
///
/// CONTEXT: as check_copy.
fn verify_copy(what: &str, area: &Area, cpu: usize, expect: Expect) {
    let start = pcpu().per_cpu_ptr(area.ptr, cpu) as usize;
    if let Some((addr, found, wanted)) = check_copy(start, area.size, expect) {
        panic!(
            "{}: cpu{} copy of area 0x{:x} (size {}, tag 0x{:x}) is {} at +0x{:x} (0x{:x}): found 0x{:02x}, expected 0x{:02x} (checked on cpu{})",
            what,
            cpu,
            area.ptr.0,
            area.size,
            area.tag,
            match expect {
                Expect::Zero => "not zeroed",
                Expect::Pattern(..) => "corrupted",
            },
            addr - start,
            addr,
            found,
            wanted,
            cpu_id()
        );
    }
}

/// Allocations and frees completed by the scenario (the watchdog's measure).
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// Source of area tags.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// Allocates an area (from the reserved chunk if `reserved`), checks every
/// CPU's copy is zeroed, writes every CPU's pattern. Panics if the allocator
/// fails: the scenarios size their workloads so that it never has to.
///
/// CONTEXT: process context; may sleep (the allocator does GFP_KERNEL
/// allocations).
fn alloc_checked(what: &str, size: usize, align: usize, reserved: bool) -> Area {
    let pcpu = pcpu();
    let raw = if reserved {
        pcpu_platform::__alloc_reserved_percpu(size, align)
    } else {
        pcpu_platform::__alloc_percpu(size, align)
    };
    let Some(ptr) = (raw != 0).then_some(PcpuPtr(raw)) else {
        panic!(
            "{}: alloc of {} bytes aligned {} failed{}",
            what,
            size,
            align,
            if reserved { " (reserved)" } else { "" }
        );
    };
    let area = Area {
        ptr,
        size,
        tag: NEXT_TAG.fetch_add(1, Relaxed),
    };
    for cpu in 0..pcpu.nr_cpus() {
        let start = pcpu.per_cpu_ptr(ptr, cpu) as usize;
        if start % align != 0 {
            panic!(
                "{}: area 0x{:x} cpu{} copy at 0x{:x} is not aligned to {}",
                what, ptr.0, cpu, start, align
            );
        }
        verify_copy(what, &area, cpu, Expect::Zero);
        fill_copy(start, size, area.tag, cpu);
    }
    PROGRESS.fetch_add(1, Relaxed);
    area
}

/// Verifies every CPU's copy of `area`, then frees it.
///
/// CONTEXT: the area's owner. `fine`, `fixed`: any context, hard-IRQ
/// included; `irq`, `irq-plain`: IRQs on or a hard-IRQ handler (their bugs);
/// `mutex`: process context.
fn free_checked(what: &str, area: Area) {
    let pcpu = pcpu();
    for cpu in 0..pcpu.nr_cpus() {
        verify_copy(what, &area, cpu, Expect::Pattern(area.tag, cpu));
    }
    pcpu_platform::free_percpu(area.ptr.0);
    PROGRESS.fetch_add(1, Relaxed);
}

/// A random size (mostly small, sometimes up to 64 KiB) and alignment.
///
/// CONTEXT: any.
fn random_size_align(rng: &mut Rng, largest: usize) -> (usize, usize) {
    let size = match rng.below(10) {
        0..=6 => 4 + rng.below(253) as usize,
        7 | 8 => 257 + rng.below(4096 - 256) as usize,
        _ => 4097 + rng.below((MIN_UNIT_SIZE - 4096) as u64) as usize,
    };
    let align_shift = if rng.below(5) == 0 {
        rng.below(13)
    } else {
        rng.below(5)
    };
    (size.min(largest), 1 << align_shift)
}

/// Prints the scenario's counts line and powers off with status 0.
///
/// CONTEXT: the scenario's main thread on the boot CPU, after every worker
/// finished; may sleep.
fn finish(name: &str) -> ! {
    irq::set_tick_hook(None);
    check_index(name);
    let stats = pcpu().stats();
    if stats.allocs != stats.frees {
        panic!(
            "{}: allocs {} != frees {} at the end",
            name, stats.allocs, stats.frees
        );
    }
    println!(
        "cpu{}: {}: allocs={} frees={} chunks_created={} chunks_reclaimed={}",
        cpu_id(),
        name,
        stats.allocs,
        stats.frees,
        stats.chunks_created,
        stats.chunks_reclaimed
    );
    crate::arch::system_off(0)
}

/// Panics unless the allocator's index (slot lists, address tree, every
/// chunk's area map) is sound: changes that raced, or skipped pcpu_lock,
/// break it.
///
/// CONTEXT: as free_checked (takes pcpu_lock irqsave, or pcpu_mutex).
fn check_index(what: &str) {
    if let Err(problem) = pcpu().check() {
        panic!(
            "{}: percpu index corrupted (checked on cpu{}): {}",
            what,
            cpu_id(),
            problem
        );
    }
}

/// CONTEXT: may sleep (see sched::spawn_on).
fn spawn_or_panic(cpu: usize, name: &str, entry: fn(usize), arg: usize) {
    if sched::spawn_on(cpu, name, entry, arg).is_none() {
        panic!("no memory for thread {} on cpu{}", name, cpu);
    }
}

// ---------------------------------------------------------------------------
// The watchdog and the tick hook.

/// Counter ticks (CNTVCT_EL0, 62.5 MHz: 0.2 s, or 200 timer ticks) without
/// an allocation or free after which the watchdog declares the scenario stuck.
/// Measured on the counter, not by counting tick interrupts, so that a tick
/// delivered more than once does not shorten it.
const WATCHDOG_COUNTS: u64 = 200 * TICK_COUNTS;

/// What each worker is doing, for the watchdog's report (index = worker).
const MAX_WORKERS: usize = MAX_CPUS + 1;
/// The worker index of the FS thread, or of a scenario's main thread while
/// it works (the others are their CPU's number).
const AUX_WORKER: usize = MAX_CPUS;
static WORKER_STATE: [AtomicUsize; MAX_WORKERS] = [const { AtomicUsize::new(0) }; MAX_WORKERS];
const STATE_NAMES: [&str; 9] = [
    "-",
    "alloc",
    "free",
    "wait",
    "holds fs_lock",
    "free under fs_lock",
    "checking",
    "done",
    "wait for reclaim",
];
const IDLE: usize = 0;
const ALLOC: usize = 1;
const FREE: usize = 2;
const WAIT: usize = 3;
const FS_LOCKED: usize = 4;
const FS_FREE: usize = 5;
const CHECKING: usize = 6;
const DONE: usize = 7;
const WAIT_RECLAIM: usize = 8;

/// CONTEXT: any.
fn set_state(worker: usize, state: usize) {
    WORKER_STATE[worker].store(state, Relaxed);
}

/// PROGRESS as the watchdog last saw it, and the counter value then.
static WATCH_LAST: AtomicU64 = AtomicU64::new(0);
static WATCH_SINCE: AtomicU64 = AtomicU64::new(0);
/// Runs each tick on every CPU besides the watchdog (the irq-free drain).
static TICK_EXTRA: AtomicBool = AtomicBool::new(false);
/// Each tick wakes map-race's writeback waiters.
static TICK_WRITEBACK: AtomicBool = AtomicBool::new(false);

/// The scenarios' tick hook: the watchdog on CPU 0, and in `irq-free` a
/// drain of this CPU's free queue.
///
/// CONTEXT: hard-IRQ (timer tick) on any CPU, IRQs masked.
fn tick_hook() {
    if TICK_EXTRA.load(Acquire) {
        irq_free_drain(IRQ_DRAIN_PER_TICK);
    }
    if TICK_WRITEBACK.load(Acquire) {
        MAPR_TICK.wake_all();
    }
    if cpu_id() != 0 {
        return;
    }
    let now = PROGRESS.load(Relaxed);
    let counter = arch::counter();
    if now != WATCH_LAST.swap(now, Relaxed) {
        WATCH_SINCE.store(counter, Relaxed);
        return;
    }
    let stalled = counter.saturating_sub(WATCH_SINCE.load(Relaxed));
    if stalled >= WATCHDOG_COUNTS {
        let cpus = online_cpus().min(MAX_CPUS);
        let mut states = [""; MAX_WORKERS];
        for (worker, state) in WORKER_STATE.iter().enumerate() {
            states[worker] = STATE_NAMES[state.load(Relaxed).min(STATE_NAMES.len() - 1)];
        }
        for lock in [
            &pcpu_platform::pcpu_mutex,
            &pcpu_platform::pcpu_alloc_mutex,
            FS_LOCK.raw(),
        ] {
            println!("cpu0: watchdog: {}", Owner(lock));
        }
        println!(
            "cpu0: watchdog: {} direct reclaims, {} shrinker calls, {} free pages",
            page_alloc::reclaim_runs(),
            FS_SHRINKER_CALLS.load(Relaxed),
            page_alloc::free_page_count()
        );
        panic!(
            "watchdog: no per-CPU alloc or free for {} timer ticks (deadlock?); {} done; variant={}; workers by cpu: {:?}, aux: {}",
            stalled / TICK_COUNTS,
            now,
            pcpu_platform::variant().name(),
            &states[..cpus],
            states[AUX_WORKER],
        );
    }
}

/// A mutex and its owner, for the watchdog's report.
struct Owner(&'static RawMutex);

impl fmt::Display for Owner {
    /// CONTEXT: any (a racy snapshot).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.owner_info() {
            Some((name, id, cpu)) => write!(
                f,
                "{} held by {} (thread {}, cpu{})",
                self.0.name(),
                name,
                id,
                cpu
            ),
            None => write!(f, "{} free", self.0.name()),
        }
    }
}

/// Starts the watchdog (and the tick work of `irq-free` if `irq_drain`).
///
/// CONTEXT: the scenario's main thread, before the workers start.
fn start_tick_hook(irq_drain: bool) {
    WATCH_LAST.store(PROGRESS.load(Relaxed), Relaxed);
    WATCH_SINCE.store(arch::counter(), Relaxed);
    TICK_EXTRA.store(irq_drain, Release);
    irq::set_tick_hook(Some(tick_hook));
}

/// `rounds` times the workload size the bootargs ask for (`scale=`).
///
/// CONTEXT: any, after boot; pure.
fn scaled(rounds: usize) -> usize {
    rounds.saturating_mul(crate::bootinfo::boot_info().scale as usize)
}

// ---------------------------------------------------------------------------
// storm

/// Operations per storm thread, live areas per thread at most.
const STORM_OPS: usize = 120;
const STORM_LIVE: usize = 8;
const STORM_STREAM: u64 = 0x5707_0001;

/// STORM_LIVE_TABLE: storm thread `c`'s live area `i` is published at
/// `c * STORM_LIVE + i` while it is live (see the Synchronization rules).
static STORM_LIVE_TABLE: SpinLock<[Option<Area>; MAX_CPUS * STORM_LIVE]> =
    SpinLock::new("storm_live", [None; MAX_CPUS * STORM_LIVE]);
static STORM_DONE: Completion = Completion::new();

/// Verifies this CPU's copy of the published area in `slot` (if any).
///
/// CONTEXT: any, call-function IPI handlers included; takes storm_live
/// (irqsave).
fn storm_check_own_copy(slot: usize) {
    let table = STORM_LIVE_TABLE.lock_irqsave();
    sync::lockdep_assert_held(table.raw());
    if let Some(area) = table[slot % table.len()] {
        verify_copy(
            "storm",
            &area,
            cpu_id(),
            Expect::Pattern(area.tag, cpu_id()),
        );
    }
}

/// A storm thread: random allocs and frees, publishing its areas for the other
/// CPUs to check, checks of theirs, and call-function IPIs.
///
/// CONTEXT: thread on CPU `cpu`; may sleep.
fn storm_thread(cpu: usize) {
    let cpus = online_cpus();
    let mut rng = Rng::new(STORM_STREAM, cpu);
    let mut live: [Option<Area>; STORM_LIVE] = [None; STORM_LIVE];
    let mut reserved_live: Option<Area> = None;
    let slots = cpus * STORM_LIVE;
    for _ in 0..scaled(STORM_OPS) {
        let count = live.iter().flatten().count();
        let grow = count == 0 || (count < STORM_LIVE && rng.below(100) < 55);
        if rng.below(16) == 0 {
            // The reserved chunk: small areas, at most one live per thread.
            set_state(cpu, ALLOC);
            match reserved_live.take() {
                Some(area) => free_checked("storm", area),
                None => {
                    let size = 4 + rng.below(253) as usize;
                    let align = 1 << rng.below(7);
                    reserved_live = Some(alloc_checked("storm", size, align, true));
                }
            }
        } else if grow {
            set_state(cpu, ALLOC);
            let (size, align) = random_size_align(&mut rng, MIN_UNIT_SIZE);
            let area = alloc_checked("storm", size, align, false);
            let index = live.iter().position(Option::is_none).expect("a free slot");
            live[index] = Some(area);
            STORM_LIVE_TABLE.lock_irqsave()[cpu * STORM_LIVE + index] = Some(area);
        } else {
            set_state(cpu, FREE);
            let nth = rng.below(count as u64) as usize;
            let index = (0..STORM_LIVE)
                .filter(|&i| live[i].is_some())
                .nth(nth)
                .expect("a live area");
            STORM_LIVE_TABLE.lock_irqsave()[cpu * STORM_LIVE + index] = None;
            free_checked("storm", live[index].take().expect("live"));
        }
        set_state(cpu, CHECKING);
        if rng.below(4) == 0 {
            storm_check_own_copy(rng.below(slots as u64) as usize);
        }
        if cpus > 1 && rng.below(8) == 0 {
            let target = (cpu + 1 + rng.below(cpus as u64 - 1) as usize) % cpus;
            smp_call_function_single(
                target,
                storm_check_own_copy,
                rng.below(slots as u64) as usize,
            );
        }
        if rng.below(8) == 0 {
            sched::yield_now();
        }
    }
    set_state(cpu, FREE);
    for index in 0..STORM_LIVE {
        if let Some(area) = live[index].take() {
            STORM_LIVE_TABLE.lock_irqsave()[cpu * STORM_LIVE + index] = None;
            free_checked("storm", area);
        }
    }
    if let Some(area) = reserved_live.take() {
        free_checked("storm", area);
    }
    set_state(cpu, DONE);
    STORM_DONE.complete();
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn storm_main(_: usize) {
    let cpus = online_cpus();
    start_tick_hook(false);
    for cpu in 0..cpus {
        spawn_or_panic(cpu, "storm", storm_thread, cpu);
    }
    STORM_DONE.wait_n(cpus);
    finish("storm")
}

// ---------------------------------------------------------------------------
// irq-free

const IRQF_OPS: usize = 100;
const IRQF_QUEUE: usize = 16;
const IRQ_DRAIN_PER_TICK: usize = 4;
const IRQ_DRAIN_PER_IPI: usize = 4;
const IRQF_STREAM: u64 = 0x19f2_ee01;
/// Yields the main thread waits, with every queue empty, for frees already popped
/// by handlers on other CPUs to be counted.
const IRQF_SETTLE_ROUNDS: usize = 10_000;

/// A bounded FIFO of areas.
struct AreaRing<const N: usize> {
    slots: [Option<Area>; N],
    head: usize,
    len: usize,
}

impl<const N: usize> AreaRing<N> {
    /// CONTEXT: any (const).
    const fn new() -> Self {
        AreaRing {
            slots: [None; N],
            head: 0,
            len: 0,
        }
    }

    /// CONTEXT: the ring's lock held.
    fn push(&mut self, area: Area) -> Result<(), Area> {
        if self.len == N {
            return Err(area);
        }
        self.slots[(self.head + self.len) % N] = Some(area);
        self.len += 1;
        Ok(())
    }

    /// CONTEXT: the ring's lock held.
    fn pop(&mut self) -> Option<Area> {
        if self.len == 0 {
            return None;
        }
        let area = self.slots[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        area
    }
}

/// IRQ_FREE_QUEUES: per CPU, areas that CPU's IRQ handlers will free.
static IRQ_FREE_QUEUES: [SpinLock<AreaRing<IRQF_QUEUE>>; MAX_CPUS] =
    [const { SpinLock::new("irq_free_queue", AreaRing::new()) }; MAX_CPUS];
/// Areas freed from IRQ context, and how many of those frees returned with
/// IRQs enabled inside the handler.
static IRQ_FREES: AtomicU64 = AtomicU64::new(0);
static IRQS_ON_IN_HARDIRQ: AtomicU64 = AtomicU64::new(0);
static IRQF_DONE: Completion = Completion::new();

/// Frees up to `max` areas queued for this CPU, in IRQ context.
///
/// CONTEXT: hard-IRQ (tick or call-function IPI) on this CPU; takes this
/// CPU's irq_free_queue (irqsave), releases it, then frees (pcpu_lock in
/// fine/irq, pcpu_mutex in mutex: the latter sleeps in atomic context).
fn irq_free_drain(max: usize) {
    for _ in 0..max {
        let area = {
            let mut queue = IRQ_FREE_QUEUES[cpu_id()].lock_irqsave();
            sync::lockdep_assert_held(queue.raw());
            queue.pop()
        };
        let Some(area) = area else {
            return;
        };
        free_checked("irq-free", area);
        IRQ_FREES.fetch_add(1, Relaxed);
        // The irq variant's free ends with spin_unlock_irq: IRQs are on now,
        // inside this handler (the bug). Counted, and left as the bug left it.
        if sync::irqs_enabled() {
            IRQS_ON_IN_HARDIRQ.fetch_add(1, Relaxed);
        }
    }
}

/// Call-function IPI handler: drain some of this CPU's queue.
///
/// CONTEXT: hard-IRQ on the target CPU.
fn irq_free_ipi(max: usize) {
    irq_free_drain(max);
}

/// An irq-free thread: allocates areas and queues them for some CPU's IRQ
/// handlers (its tick, or a call-function IPI sent now) to free.
///
/// CONTEXT: thread on CPU `cpu`; may sleep.
fn irq_free_thread(cpu: usize) {
    let cpus = online_cpus();
    let mut rng = Rng::new(IRQF_STREAM, cpu);
    for _ in 0..scaled(IRQF_OPS) {
        set_state(cpu, ALLOC);
        let (size, align) = random_size_align(&mut rng, MIN_UNIT_SIZE);
        let mut area = alloc_checked("irq-free", size, align, false);
        let target = rng.below(cpus as u64) as usize;
        set_state(cpu, WAIT);
        loop {
            let pushed = IRQ_FREE_QUEUES[target].lock_irqsave().push(area);
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    area = back;
                    if target != cpu {
                        smp_call_function_single(target, irq_free_ipi, IRQ_DRAIN_PER_IPI);
                    } else {
                        sched::yield_now();
                    }
                }
            }
        }
        if target != cpu && rng.below(3) == 0 {
            smp_call_function_single(target, irq_free_ipi, IRQ_DRAIN_PER_IPI);
        }
        if rng.below(4) == 0 {
            sched::yield_now();
        }
    }
    set_state(cpu, DONE);
    IRQF_DONE.complete();
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn irq_free_main(_: usize) {
    let cpus = online_cpus();
    start_tick_hook(true);
    for cpu in 0..cpus {
        spawn_or_panic(cpu, "irq-free", irq_free_thread, cpu);
    }
    IRQF_DONE.wait_n(cpus);
    // What is still queued is freed by the ticks (and IPIs for the others).
    // Empty queues are not the end: a handler on another CPU may have popped the
    // last areas and still be freeing them. Wait for every free to be counted; an
    // area that never is (lost by the allocator or the queues) ends in a panic.
    set_state(AUX_WORKER, WAIT);
    let allocated = (scaled(IRQF_OPS) * cpus) as u64;
    let mut rounds_without_queued = 0;
    loop {
        let mut pending = 0;
        for target in 0..cpus {
            let queued = IRQ_FREE_QUEUES[target].lock_irqsave().len;
            if queued != 0 && target != cpu_id() {
                smp_call_function_single(target, irq_free_ipi, IRQF_QUEUE);
            }
            pending += queued;
        }
        let freed = IRQ_FREES.load(Relaxed);
        if pending == 0 && freed == allocated {
            break;
        }
        rounds_without_queued = if pending == 0 {
            rounds_without_queued + 1
        } else {
            0
        };
        if rounds_without_queued > IRQF_SETTLE_ROUNDS {
            panic!("irq-free: {freed} areas freed in IRQ context, {allocated} allocated");
        }
        sched::yield_now();
    }
    TICK_EXTRA.store(false, Release);
    let irqs_on = IRQS_ON_IN_HARDIRQ.load(Relaxed);
    if irqs_on != 0 {
        println!(
            "cpu0: irq-free: {} of {} frees in IRQ handlers returned with IRQs enabled",
            irqs_on,
            IRQ_FREES.load(Relaxed)
        );
    }
    finish("irq-free")
}

// ---------------------------------------------------------------------------
// irq-race

/// Areas per irq-race thread; one in IRQR_QUEUE_ONE_IN goes to its CPU's
/// tick, the others it frees itself.
const IRQR_OPS: usize = 48;
const IRQR_QUEUE_ONE_IN: u64 = 4;
/// How long (spin-loop iterations, at most) a thread uses an area, outside
/// every lock, before freeing it: most of the run, so a tick left to the
/// clock seldom lands inside a free.
const IRQR_USE_SPINS: u64 = 6_000;
const IRQR_STREAM: u64 = 0x1_4ace;
static IRQR_DONE: Completion = Completion::new();

/// An irq-race thread: allocates areas, uses each a while, and frees most
/// itself, in process context with IRQs on; the rest it queues for its own
/// CPU's tick, whose handler frees them. Frees from a thread and from the
/// hard-IRQ handler that interrupts it meet on pcpu_lock on one CPU: with
/// `irq-plain`'s plain `spin_lock`, a tick that lands while the thread holds
/// pcpu_lock deadlocks the CPU on its own lock.
///
/// CONTEXT: thread on CPU `cpu`; may sleep.
fn irq_race_thread(cpu: usize) {
    let mut rng = Rng::new(IRQR_STREAM, cpu);
    for _ in 0..scaled(IRQR_OPS) {
        set_state(cpu, ALLOC);
        let (size, align) = random_size_align(&mut rng, MIN_UNIT_SIZE);
        let mut area = alloc_checked("irq-race", size, align, false);
        busy_work(rng.below(IRQR_USE_SPINS));
        if rng.below(IRQR_QUEUE_ONE_IN) != 0 {
            set_state(cpu, FREE);
            free_checked("irq-race", area);
            continue;
        }
        set_state(cpu, WAIT);
        loop {
            let pushed = IRQ_FREE_QUEUES[cpu].lock_irqsave().push(area);
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    area = back;
                    sched::yield_now();
                }
            }
        }
        IRQR_QUEUED.fetch_add(1, Relaxed);
    }
    set_state(cpu, DONE);
    IRQR_DONE.complete();
}

/// Areas the irq-race threads queued for their ticks.
static IRQR_QUEUED: AtomicU64 = AtomicU64::new(0);

/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn irq_race_main(_: usize) {
    let cpus = online_cpus();
    start_tick_hook(true);
    for cpu in 0..cpus {
        spawn_or_panic(cpu, "irq-race", irq_race_thread, cpu);
    }
    IRQR_DONE.wait_n(cpus);
    set_state(AUX_WORKER, WAIT);
    // What is still queued goes at the next ticks of its CPU.
    let mut rounds = 0;
    while IRQ_FREES.load(Relaxed) < IRQR_QUEUED.load(Relaxed) {
        rounds += 1;
        if rounds > IRQF_SETTLE_ROUNDS {
            panic!(
                "irq-race: {} areas freed in IRQ context, {} queued",
                IRQ_FREES.load(Relaxed),
                IRQR_QUEUED.load(Relaxed)
            );
        }
        sched::yield_now();
    }
    TICK_EXTRA.store(false, Release);
    println!("cpu0: irq-race: {} freed by ticks", IRQ_FREES.load(Relaxed));
    finish("irq-race")
}

// ---------------------------------------------------------------------------
// fs-reclaim

/// Areas each allocating thread allocates. With the spin counts below this keeps
/// the `mutex` variant's ABBA deadlock on most schedules (52 of 60 random ones)
/// at a third of the instructions the scenario once took (36 areas, 40,000
/// spins: 22 M a run), for exploration's sake.
const FS_OPS: usize = 24;
const FS_HANDOFF: usize = 8;
const FS_CACHE_PAGES: usize = 1024;
/// Pages the FS keeps in its cache below the low watermark.
const FS_PRESSURE: usize = 8;
/// How far below the free count at start the low watermark goes.
const FS_WATERMARK_DROP: usize = 512;
const FS_STREAM: u64 = 0xf5_4ec1;
/// The FS thread sleeps under fs_lock (before a free) one time in
/// FS_IO_ONE_IN. These set how often the `mutex`
/// variant's ABBA window is hit (a real deadlock on some seeds).
const FS_IO_ONE_IN: u64 = 8;
/// The FS thread refills its page cache one time in FS_READ_ONE_IN.
const FS_READ_ONE_IN: u64 = 16;
/// Allocating threads at most, and how long (spin-loop iterations, at
/// most) each uses an area outside the allocator before the next alloc.
const FS_PRODUCERS: usize = 2;
const FS_USE_SPINS: u64 = 5_000;
/// How long (spin-loop iterations, at most) the FS thread works outside
/// fs_lock between frees.
const FS_WORK_SPINS: u64 = 5_000;
/// The shrinker frees up to FS_SHRINK_BATCH times what reclaim asks for, so
/// one reclaim lifts the free count well above the watermark.
const FS_SHRINK_BATCH: usize = 4;

/// The FS's page cache: pages it can give back under memory pressure.
struct PageCache {
    pages: [usize; FS_CACHE_PAGES],
    len: usize,
}

/// FS_LOCK (`fs_lock`): the file system and its page cache.
static FS_LOCK: Mutex<PageCache> = Mutex::new(
    "fs_lock",
    PageCache {
        pages: [0; FS_CACHE_PAGES],
        len: 0,
    },
);
/// FS_HANDOFF_RING (`fs_handoff`): areas for the FS thread to free.
static FS_HANDOFF_RING: SpinLock<AreaRing<FS_HANDOFF>> =
    SpinLock::new("fs_handoff", AreaRing::new());
static FS_PRODUCERS_LEFT: AtomicUsize = AtomicUsize::new(0);
static FS_SHRINKER_PAGES: AtomicU64 = AtomicU64::new(0);
static FS_SHRINKER_CALLS: AtomicU64 = AtomicU64::new(0);
static FS_WATERMARK: AtomicUsize = AtomicUsize::new(0);
static FS_DONE: Completion = Completion::new();

/// The page-cache shrinker: takes fs_lock and frees cached pages.
///
/// CONTEXT: direct reclaim (fs_reclaim and shrinker_list held); sleeps on
/// fs_lock.
fn fs_shrink(nr_to_scan: usize) -> usize {
    FS_SHRINKER_CALLS.fetch_add(1, Relaxed);
    let mut cache = FS_LOCK.lock();
    mutex::lockdep_assert_mutex_held(FS_LOCK.raw());
    let mut freed = 0;
    while freed < nr_to_scan * FS_SHRINK_BATCH && cache.len > 0 {
        cache.len -= 1;
        let page = cache.pages[cache.len];
        page_alloc::free_pages(page, 0);
        freed += 1;
    }
    FS_SHRINKER_PAGES.fetch_add(freed as u64, Relaxed);
    freed
}

static FS_SHRINKER: Shrinker = Shrinker {
    name: "fs_page_cache",
    scan: fs_shrink,
};

/// Fills the page cache (without reclaim, like GFP_NOFS) until the free count
/// is `FS_PRESSURE` pages below the watermark.
///
/// CONTEXT: fs_lock held (through `cache`); does not sleep.
fn fs_refill(cache: &mut PageCache) {
    mutex::lockdep_assert_mutex_held(FS_LOCK.raw());
    let floor = FS_WATERMARK.load(Relaxed).saturating_sub(FS_PRESSURE);
    while cache.len < FS_CACHE_PAGES && page_alloc::free_page_count() > floor {
        let Some(page) = page_alloc::alloc_pages(0, Gfp::Atomic) else {
            break;
        };
        cache.pages[cache.len] = page;
        cache.len += 1;
    }
}

/// The FS path: under fs_lock it refills its cache, does some "I/O"
/// (sleeps), and frees the per-CPU areas the allocating threads handed over.
///
/// CONTEXT: thread; may sleep; takes fs_lock, then pcpu_lock (or pcpu_mutex).
fn fs_thread(worker: usize) {
    let mut rng = Rng::new(FS_STREAM, MAX_CPUS);
    loop {
        let finished = FS_PRODUCERS_LEFT.load(Acquire) == 0;
        // A "read" fills the page cache now and then, pushing the free count
        // below the low watermark again.
        if rng.below(FS_READ_ONE_IN) == 0 {
            let mut cache = FS_LOCK.lock();
            set_state(worker, FS_LOCKED);
            fs_refill(&mut cache);
        }
        set_state(worker, IDLE);
        // Work outside fs_lock (the FS is not always in the free path).
        busy_work(rng.below(FS_WORK_SPINS));
        let area = FS_HANDOFF_RING.lock_irqsave().pop();
        match area {
            Some(area) => {
                let cache = FS_LOCK.lock();
                set_state(worker, FS_LOCKED);
                // "I/O" under fs_lock now and then: sleeps while holding it.
                if rng.below(FS_IO_ONE_IN) == 0 {
                    sched::yield_now();
                }
                set_state(worker, FS_FREE);
                free_checked("fs-reclaim", area);
                drop(cache);
                set_state(worker, IDLE);
            }
            None if finished => break,
            None => sched::yield_now(),
        }
    }
    set_state(worker, DONE);
    FS_DONE.complete();
}

/// An allocating thread: allocates page-sized and larger areas (so the
/// allocator keeps populating pages below the watermark) and hands them to the
/// FS thread.
///
/// CONTEXT: thread on CPU `cpu`; may sleep.
fn fs_alloc_thread(cpu: usize) {
    let mut rng = Rng::new(FS_STREAM, cpu);
    for _ in 0..scaled(FS_OPS) {
        set_state(cpu, ALLOC);
        let size = PAGE_SIZE / 2 + rng.below((4 * PAGE_SIZE) as u64) as usize;
        let align = 1 << rng.below(13);
        let mut area = alloc_checked("fs-reclaim", size, align, false);
        set_state(cpu, WAIT);
        loop {
            let pushed = FS_HANDOFF_RING.lock_irqsave().push(area);
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    area = back;
                    sched::yield_now();
                }
            }
        }
        // Use the area a while (outside the allocator's locks).
        busy_work(rng.below(FS_USE_SPINS));
        sched::yield_now();
    }
    set_state(cpu, DONE);
    FS_PRODUCERS_LEFT.fetch_sub(1, AcqRel);
    FS_DONE.complete();
}

/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn fs_reclaim_main(_: usize) {
    let cpus = online_cpus();
    let producers: usize = cpus.saturating_sub(1).clamp(1, FS_PRODUCERS);
    let first_producer_cpu = if cpus > 1 { 1 } else { 0 };
    let watermark = page_alloc::free_page_count().saturating_sub(FS_WATERMARK_DROP);
    FS_WATERMARK.store(watermark, Relaxed);
    page_alloc::register_shrinker(&FS_SHRINKER);
    page_alloc::set_low_watermark(watermark);
    let reclaim_runs_before = page_alloc::reclaim_runs();

    // Before the FS path runs: one allocation that needs a new chunk under
    // memory pressure, so that on every seed the allocator's mutex is held
    // while direct reclaim takes fs_reclaim and the shrinker takes fs_lock.
    fs_refill(&mut FS_LOCK.lock());
    let shrinks_before = FS_SHRINKER_CALLS.load(Relaxed);
    let area = alloc_checked("fs-reclaim", MIN_UNIT_SIZE, PAGE_SIZE, false);
    if FS_SHRINKER_CALLS.load(Relaxed) == shrinks_before {
        panic!("fs-reclaim: a new chunk under memory pressure did not reclaim");
    }
    free_checked("fs-reclaim", area);

    start_tick_hook(false);
    FS_PRODUCERS_LEFT.store(producers, Release);
    spawn_or_panic(0, "fs", fs_thread, AUX_WORKER);
    for cpu in first_producer_cpu..first_producer_cpu + producers {
        spawn_or_panic(cpu, "fs-alloc", fs_alloc_thread, cpu);
    }
    FS_DONE.wait_n(producers + 1);

    page_alloc::set_low_watermark(32);
    page_alloc::unregister_shrinker(&FS_SHRINKER);
    {
        let mut cache = FS_LOCK.lock();
        while cache.len > 0 {
            cache.len -= 1;
            let page = cache.pages[cache.len];
            page_alloc::free_pages(page, 0);
        }
    }
    if page_alloc::reclaim_runs() == reclaim_runs_before
        || FS_SHRINKER_CALLS.load(Relaxed) == 0
        || FS_SHRINKER_PAGES.load(Relaxed) == 0
    {
        panic!(
            "fs-reclaim: no memory pressure: {} direct reclaims, {} shrinker calls, {} pages shrunk",
            page_alloc::reclaim_runs() - reclaim_runs_before,
            FS_SHRINKER_CALLS.load(Relaxed),
            FS_SHRINKER_PAGES.load(Relaxed)
        );
    }
    finish("fs-reclaim")
}

// ---------------------------------------------------------------------------
// reclaim

/// Chunks grown per round, rounds, small areas per user thread.
const RECLAIM_GROW: usize = 3;
const RECLAIM_ROUNDS: usize = 2;
const RECLAIM_USER_AREAS: usize = 4;
const RECLAIM_STREAM: u64 = 0x2ec1_a140;

/// RECLAIM_GROWN (`reclaim_grown`): the grower's live areas, for the users to
/// check their own copies.
static RECLAIM_GROWN: SpinLock<[Option<Area>; RECLAIM_GROW]> =
    SpinLock::new("reclaim_grown", [None; RECLAIM_GROW]);
/// Round number the grower published; the round each user has checked.
static RECLAIM_ROUND: AtomicUsize = AtomicUsize::new(0);
static RECLAIM_SEEN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static RECLAIM_SEEN_WAIT: WaitQueue = WaitQueue::new("reclaim_seen");
static RECLAIM_STOP: AtomicBool = AtomicBool::new(false);
/// `reclaim-reuse`: after each reclaim, other kernel users take the freed pages.
static RECLAIM_REUSE: AtomicBool = AtomicBool::new(false);
/// Pages the other kernel users of `reclaim-reuse` take (and write) per round.
const RECLAIM_REUSE_PAGES: usize = 16;
static RECLAIM_READY: Completion = Completion::new();
static RECLAIM_DONE: Completion = Completion::new();

/// A user: keeps using its own small areas (rewriting and checking them) and
/// checks its own copy of every grown area each round, so its TLB holds
/// translations of the chunks that reclaim later releases.
///
/// CONTEXT: thread on CPU `cpu`; may sleep.
fn reclaim_user(cpu: usize) {
    let mut rng = Rng::new(RECLAIM_STREAM, cpu);
    let mut mine = [None; RECLAIM_USER_AREAS];
    for slot in mine.iter_mut() {
        let size = 4 + rng.below(509) as usize;
        let align = 1 << rng.below(6);
        *slot = Some(alloc_checked("reclaim", size, align, false));
    }
    RECLAIM_READY.complete();
    while !RECLAIM_STOP.load(Acquire) {
        set_state(cpu, CHECKING);
        // This CPU's copies of its own areas: check, then rewrite.
        for area in mine.iter().flatten() {
            verify_copy("reclaim", area, cpu, Expect::Pattern(area.tag, cpu));
            let start = pcpu().per_cpu_ptr(area.ptr, cpu) as usize;
            fill_copy(start, area.size, area.tag, cpu);
        }
        // Once per round: this CPU's copy of every grown area.
        let round = RECLAIM_ROUND.load(Acquire);
        if RECLAIM_SEEN[cpu].load(Acquire) != round {
            {
                let grown = RECLAIM_GROWN.lock_irqsave();
                for area in grown.iter().flatten() {
                    verify_copy("reclaim", area, cpu, Expect::Pattern(area.tag, cpu));
                }
            }
            RECLAIM_SEEN[cpu].store(round, Release);
            RECLAIM_SEEN_WAIT.wake_all();
        }
        set_state(cpu, IDLE);
        sched::yield_now();
    }
    set_state(cpu, FREE);
    for area in mine.iter_mut() {
        if let Some(area) = area.take() {
            free_checked("reclaim", area);
        }
    }
    set_state(cpu, DONE);
    RECLAIM_DONE.complete();
}

/// The grower (the scenario thread): each round allocates RECLAIM_GROW areas
/// of a whole unit (each needs a chunk of its own), lets every user check
/// them, frees them all and waits until reclaim has released all fully free
/// chunks but one. The next round's chunks reuse the released addresses.
///
/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn reclaim_main(_: usize) {
    let cpus = online_cpus();
    let grower = 0;
    let mut rng = Rng::new(RECLAIM_STREAM, MAX_CPUS);
    start_tick_hook(false);
    let users = 1..cpus;
    for cpu in users.clone() {
        spawn_or_panic(cpu, "reclaim-user", reclaim_user, cpu);
    }
    RECLAIM_READY.wait_n(users.len());
    let before = pcpu().stats();
    // Chunk addresses (CPU 0's copy of a whole-unit area starts its chunk)
    // of the previous round: reclaim releases all but one of them, and the
    // next round's chunks must get exactly those addresses back.
    let mut previous = [0usize; RECLAIM_GROW];
    let rounds = scaled(RECLAIM_ROUNDS);
    for round in 1..=rounds {
        set_state(grower, ALLOC);
        let mut bases = [0usize; RECLAIM_GROW];
        for slot in 0..RECLAIM_GROW {
            let align = 1 << rng.below(13);
            let area = alloc_checked("reclaim", MIN_UNIT_SIZE, align, false);
            bases[slot] = pcpu().per_cpu_ptr(area.ptr, 0) as usize;
            RECLAIM_GROWN.lock_irqsave()[slot] = Some(area);
        }
        if round > 1 && bases.iter().any(|base| !previous.contains(base)) {
            panic!(
                "reclaim: round {} chunks at {:x?}, released ones were at {:x?}",
                round, bases, previous
            );
        }
        previous = bases;
        RECLAIM_ROUND.store(round, Release);
        set_state(grower, WAIT);
        for cpu in users.clone() {
            RECLAIM_SEEN_WAIT.wait_until(|| RECLAIM_SEEN[cpu].load(Acquire) >= round);
        }
        set_state(grower, FREE);
        for slot in 0..RECLAIM_GROW {
            let area = RECLAIM_GROWN.lock_irqsave()[slot].take();
            free_checked("reclaim", area.expect("grown area"));
        }
        set_state(grower, WAIT_RECLAIM);
        let reclaimed = before.chunks_reclaimed + (round * (RECLAIM_GROW - 1)) as u64;
        pcpu_platform::wait_for_chunks_reclaimed(reclaimed);
        if RECLAIM_REUSE.load(Relaxed) {
            reuse_freed_pages();
        }
    }
    let stats = pcpu().stats();
    let created = (RECLAIM_GROW + (rounds - 1) * (RECLAIM_GROW - 1)) as u64;
    if stats.chunks_created - before.chunks_created != created {
        panic!(
            "reclaim: {} chunks created, expected {}",
            stats.chunks_created - before.chunks_created,
            created
        );
    }
    // vmalloc's lazy purge at the end: areas released in the last round are
    // flushed only now (the seed's reclaim left them to it).
    pcpu_platform::purge_lazy_vm_areas();
    let (released, flushed) = pcpu_platform::vm_release_counts();
    if released == 0 || (flushed != released) != pcpu_platform::skip_tlb_flush_injected() {
        panic!(
            "reclaim: {} chunk areas released, {} flushed",
            released, flushed
        );
    }
    let freed_mapped = pcpu_platform::freed_while_mapped();
    if freed_mapped != 0 {
        println!(
            "cpu0: reclaim: {} pages freed while still mapped, their TLB flush left to the lazy purge",
            freed_mapped
        );
    }
    RECLAIM_STOP.store(true, Release);
    RECLAIM_DONE.wait_n(users.len());
    set_state(grower, DONE);
    finish("reclaim")
}

/// `reclaim` under memory reuse: the page allocator hands out the page freed last
/// first, so the next round's chunks are populated with the pages reclaim just freed
/// (on the seed, while other CPUs' TLBs may still map them at the old addresses).
///
/// CONTEXT: thread on the boot CPU; may sleep.
pub fn reclaim_reuse_main(arg: usize) {
    page_alloc::reuse_freed_first();
    RECLAIM_REUSE.store(true, Relaxed);
    reclaim_main(arg);
}

/// Other kernel memory users: take the pages freed last (reclaim's), fill them with
/// their own data and give them back.
///
/// CONTEXT: thread; may sleep (GFP_KERNEL allocations).
fn reuse_freed_pages() {
    let mut pages = [0usize; RECLAIM_REUSE_PAGES];
    for page in pages.iter_mut() {
        *page = page_alloc::alloc_pages(0, Gfp::Kernel)
            .unwrap_or_else(|| panic!("reclaim-reuse: out of pages"));
        // SAFETY: a page just allocated, identity-mapped, owned by this thread.
        unsafe { core::ptr::write_bytes(*page as *mut u8, 0x5a, PAGE_SIZE) };
    }
    for page in pages {
        page_alloc::free_pages(page, 0);
    }
}

// ---------------------------------------------------------------------------
// map-grow

/// Small areas the grower allocates in the first chunk, and one in how many
/// of them is freed from IRQ context while it goes on. Enough stay live for
/// the first chunk's area map to pass 2048 entries: its 8 KiB map (vmalloc'ed,
/// more than a page) is then replaced and freed.
const MAPG_AREAS: usize = 2400;
const MAPG_IRQ_FREE_ONE_IN: u64 = 16;
const MAPG_STREAM: u64 = 0x3a9_9e0e;

/// Live areas of the grower, freed at the end (those not freed by IRQs).
static MAPG_LIVE: SpinLock<[Option<Area>; MAPG_AREAS]> =
    SpinLock::new("mapg_live", [None; MAPG_AREAS]);

/// Set when the grower has allocated everything: the window watcher stops.
static MAPG_STOP: AtomicBool = AtomicBool::new(false);
static MAPG_WATCHER_DONE: Completion = Completion::new();

/// The window watcher (CPU 1): whenever an allocation has dropped pcpu_lock
/// to allocate a new area map, it interrupts the grower's CPU with a
/// call-function IPI whose handler frees the areas queued there, so frees
/// from hard-IRQ context land inside the extension's window.
///
/// CONTEXT: thread on CPU 1; may sleep.
fn map_grow_watcher(grower: usize) {
    while !MAPG_STOP.load(Acquire) {
        if pcpu_platform::mem_alloc_in_flight() && IRQ_FREE_QUEUES[grower].lock_irqsave().len != 0 {
            smp_call_function_single(grower, irq_free_ipi, IRQ_DRAIN_PER_IPI);
        }
        sched::yield_now();
    }
    MAPG_WATCHER_DONE.complete();
}

/// The grower (the scenario thread): many 4-byte areas in one chunk, so the
/// area map is extended again and again (pcpu_lock dropped around each new
/// map, the old map freed: with `vfree` once it is above a page); every few
/// allocations one area is queued for this CPU's IRQ handlers, which free it
/// at a tick or when the watcher's IPI arrives during a map extension.
///
/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn map_grow_main(_: usize) {
    let cpus = online_cpus();
    let me = cpu_id();
    let mut rng = Rng::new(MAPG_STREAM, 0);
    start_tick_hook(true);
    let watchers = usize::from(cpus > 1);
    if watchers != 0 {
        spawn_or_panic(1, "map-grow-watch", map_grow_watcher, me);
    }
    let before = pcpu().stats();
    let mut queued = 0u64;
    set_state(me, ALLOC);
    for slot in 0..MAPG_AREAS {
        let mut area = alloc_checked("map-grow", 4, 4, false);
        if rng.below(MAPG_IRQ_FREE_ONE_IN) != 0 {
            MAPG_LIVE.lock_irqsave()[slot] = Some(area);
            continue;
        }
        loop {
            let pushed = IRQ_FREE_QUEUES[me].lock_irqsave().push(area);
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    area = back;
                    sched::yield_now();
                }
            }
        }
        queued += 1;
    }
    MAPG_STOP.store(true, Release);
    MAPG_WATCHER_DONE.wait_n(watchers);
    let extensions = pcpu().stats().map_extensions - before.map_extensions;
    set_state(me, WAIT);
    // The rest of the queue goes at the next ticks.
    while IRQ_FREES.load(Relaxed) < queued {
        sched::yield_now();
    }
    TICK_EXTRA.store(false, Release);
    set_state(me, FREE);
    for slot in 0..MAPG_AREAS {
        let area = MAPG_LIVE.lock_irqsave()[slot].take();
        if let Some(area) = area {
            free_checked("map-grow", area);
        }
    }
    set_state(me, DONE);
    println!(
        "cpu{}: map-grow: {} freed in IRQ context ({} while an allocation had pcpu_lock dropped), {} map extensions",
        me,
        queued,
        pcpu_platform::frees_during_mem_alloc(),
        extensions
    );
    finish("map-grow")
}

// ---------------------------------------------------------------------------
// map-race

/// Worker threads per CPU, rounds, small allocations per worker and round,
/// and the round's late grower's small allocations after the others are
/// done.
const MAPR_WORKERS_PER_CPU: usize = 2;
const MAPR_ROUNDS: usize = 6;
const MAPR_GROW_OPS: usize = 12;
const MAPR_LATE_OPS: usize = 24;
const MAPR_STREAM: u64 = 0x3a9_2ace;
/// Each worker's anchor per round: too large to share a chunk, and covering
/// the chunk's last page boundary (61440), so page-aligned requests never
/// fit in the chunk's rest while its anchor lives.
const MAPR_ANCHOR_MIN: usize = (60 << 10) + 1;
const MAPR_ANCHOR_MAX: usize = 62 << 10;
/// One step of a worker's growing in how many frees a published area
/// instead, and how many yields that free waits for a window at most.
const MAPR_FREE_ONE_IN: u64 = 3;
const MAPR_AIM_YIELDS: usize = 50;
/// Published areas at most: every worker's small allocations of a round.
const MAPR_STACK: usize = MAX_CPUS * MAPR_WORKERS_PER_CPU * MAPR_GROW_OPS + MAPR_LATE_OPS;
/// Ballast areas that fill the first chunk, largest sizes first.
const MAPR_BALLAST: usize = 64;
const MAPR_BALLAST_SIZES: [usize; 4] = [4096, 512, 64, 4];
/// Counter ticks a direct reclaim waits for writeback when the workers
/// dirtied pages since the last wait (see map_race_writeback).
const MAPR_WRITEBACK_COUNTS: u64 = 200_000;

/// The published small areas, in no particular order.
struct AreaPool {
    areas: [Option<Area>; MAPR_STACK],
    len: usize,
}

/// MAPR_LIVE (`mapr_live`): every worker's published small areas; any worker
/// takes a random one out to free it.
static MAPR_LIVE: SpinLock<AreaPool> = SpinLock::new(
    "mapr_live",
    AreaPool {
        areas: [None; MAPR_STACK],
        len: 0,
    },
);
/// MAPR_BALLAST_AREAS (`mapr_ballast`): what fills the first chunk.
static MAPR_BALLAST_AREAS: SpinLock<[Option<Area>; MAPR_BALLAST]> =
    SpinLock::new("mapr_ballast", [None; MAPR_BALLAST]);
static MAPR_DONE: Completion = Completion::new();
/// The workers' two-step barrier at the end of each round.
static MAPR_ARRIVED: AtomicUsize = AtomicUsize::new(0);
static MAPR_LEFT: AtomicUsize = AtomicUsize::new(0);
static MAPR_BARRIER: WaitQueue = WaitQueue::new("mapr_barrier");
/// Workers still growing in this round.
static MAPR_GROWING: AtomicUsize = AtomicUsize::new(0);
/// Whether the workers dirtied pages since the last writeback wait.
static MAPR_DIRTY: AtomicBool = AtomicBool::new(false);
/// Direct reclaims waiting for writeback: every tick wakes them.
static MAPR_TICK: WaitQueue = WaitQueue::new("mapr_tick");

/// The map-race shrinker: nothing to free at once; if the workers dirtied
/// pages since the last time, it sleeps until their writeback is done (as
/// direct reclaim did in congestion_wait). The first of a burst of page
/// allocations waits, and so does an allocation of an area map while the
/// workers are busy: pcpu_lock stays dropped that long.
///
/// CONTEXT: direct reclaim (fs_reclaim, shrinker_list held); sleeps.
fn map_race_writeback(_nr_to_scan: usize) -> usize {
    if MAPR_DIRTY.swap(false, AcqRel) {
        let deadline = arch::counter() + MAPR_WRITEBACK_COUNTS;
        MAPR_TICK.wait_until(|| arch::counter() >= deadline);
    }
    0
}

static MAPR_SHRINKER: Shrinker = Shrinker {
    name: "mapr_writeback",
    scan: map_race_writeback,
};

/// A small map-race area: half of them page aligned, which never fit in the
/// rest of a chunk whose anchor lives (see MAPR_ANCHOR_MIN) although its
/// `contig_hint` may say there is room, so the search tries such a chunk
/// (extending its map if full) and walks on.
///
/// CONTEXT: any.
fn map_race_size_align(rng: &mut Rng) -> (usize, usize) {
    match rng.below(2) {
        0 => (64 + rng.below(960) as usize, PAGE_SIZE),
        _ => (4 + rng.below(508) as usize, 1 << rng.below(6)),
    }
}

/// A worker. Every round each worker allocates an anchor, which takes a
/// chunk of its own, then MAPR_GROW_OPS small areas, which fill the fullest
/// chunks' rest (extending their new, small area maps) or, page aligned, a
/// chunk without an anchor; one step in MAPR_FREE_ONE_IN instead frees a
/// random published area, aimed at a window (map_race_wait_window). The
/// round's late grower then allocates MAPR_LATE_OPS more once the others
/// are done. Each worker then drains: it waits for a window of a worker
/// still growing (if there is one), frees random published areas until none
/// is left, then its anchor, and meets the others at a barrier. So frees
/// land while an allocation has pcpu_lock dropped to extend the map of the
/// chunk they are in, and the round's chunks empty (and are reclaimed)
/// while the late grower is extending the map of one of them. The
/// allocator's index is checked after every operation.
///
/// CONTEXT: thread on CPU `worker % cpus`; may sleep.
fn map_race_worker(worker: usize) {
    let cpu = cpu_id();
    let workers = online_cpus() * MAPR_WORKERS_PER_CPU;
    let mut rng = Rng::new(MAPR_STREAM, worker);
    for round in 1..=scaled(MAPR_ROUNDS) {
        set_state(cpu, ALLOC);
        let anchor_size =
            MAPR_ANCHOR_MIN + rng.below((MAPR_ANCHOR_MAX - MAPR_ANCHOR_MIN) as u64) as usize;
        let anchor = alloc_anchor(anchor_size);
        for _ in 0..MAPR_GROW_OPS {
            while rng.below(MAPR_FREE_ONE_IN) == 0 {
                set_state(cpu, WAIT);
                map_race_wait_window(MAPR_AIM_YIELDS);
                set_state(cpu, FREE);
                map_race_free_one(&mut rng);
            }
            map_race_alloc_small(cpu, &mut rng);
            if rng.below(8) == 0 {
                sched::yield_now();
            }
        }
        if worker == round % workers {
            set_state(cpu, WAIT);
            while MAPR_GROWING.load(Acquire) > 1 {
                sched::yield_now();
            }
            for _ in 0..MAPR_LATE_OPS {
                map_race_alloc_small(cpu, &mut rng);
            }
        }
        set_state(cpu, WAIT);
        MAPR_GROWING.fetch_sub(1, AcqRel);
        map_race_wait_window(usize::MAX);
        set_state(cpu, FREE);
        while map_race_free_one(&mut rng) {}
        free_anchor(anchor);
        set_state(cpu, WAIT);
        MAPR_ARRIVED.fetch_add(1, AcqRel);
        MAPR_BARRIER.wake_all();
        MAPR_BARRIER.wait_until(|| MAPR_ARRIVED.load(Acquire) >= round * workers);
        // Nobody grows again before everyone has seen the drain end.
        MAPR_GROWING.fetch_add(1, AcqRel);
        MAPR_LEFT.fetch_add(1, AcqRel);
        MAPR_BARRIER.wake_all();
        MAPR_BARRIER.wait_until(|| MAPR_LEFT.load(Acquire) >= round * workers);
    }
    set_state(cpu, DONE);
    MAPR_DONE.complete();
}

/// Waits (yielding, at most `yields` times) for a window: an allocation
/// with pcpu_lock dropped to allocate metadata. Stops waiting when no
/// worker is growing any more (no window will come).
///
/// CONTEXT: a map-race worker; may sleep.
fn map_race_wait_window(yields: usize) {
    for _ in 0..yields {
        if pcpu_platform::mem_alloc_in_flight() || MAPR_GROWING.load(Acquire) == 0 {
            return;
        }
        sched::yield_now();
    }
}

/// One small allocation (map_race_size_align), published on MAPR_LIVE for
/// anyone to free.
///
/// CONTEXT: a map-race worker; may sleep.
fn map_race_alloc_small(cpu: usize, rng: &mut Rng) {
    set_state(cpu, ALLOC);
    let (size, align) = map_race_size_align(rng);
    let area = alloc_checked("map-race", size, align, false);
    MAPR_DIRTY.store(true, Release);
    {
        let mut live = MAPR_LIVE.lock_irqsave();
        let top = live.len;
        live.areas[top] = Some(area);
        live.len += 1;
    }
    set_state(cpu, CHECKING);
    check_index("map-race");
}

/// An anchor: a large area with the pattern checks at its ends only (its
/// job is to take most of a chunk, cheaply).
#[derive(Clone, Copy)]
struct Anchor {
    ptr: PcpuPtr,
    size: usize,
    tag: u64,
}

/// The ends of an anchor: its first and last 64 bytes, as areas of their
/// own for the pattern checks.
///
/// CONTEXT: any.
fn anchor_ends(anchor: &Anchor) -> [Area; 2] {
    let end = |offset: usize| Area {
        ptr: PcpuPtr(anchor.ptr.0 + offset),
        size: 64,
        tag: anchor.tag ^ offset as u64,
    };
    [end(0), end(anchor.size - 64)]
}

/// Allocates an anchor of `size` bytes (page aligned), checks that the ends
/// of every CPU's copy are zeroed and writes their patterns.
///
/// CONTEXT: process context; may sleep.
fn alloc_anchor(size: usize) -> Anchor {
    let raw = pcpu_platform::__alloc_percpu(size, PAGE_SIZE);
    if raw == 0 {
        panic!("map-race: anchor alloc of {} bytes failed", size);
    }
    let anchor = Anchor {
        ptr: PcpuPtr(raw),
        size,
        tag: NEXT_TAG.fetch_add(1, Relaxed),
    };
    for cpu in 0..pcpu().nr_cpus() {
        for end in anchor_ends(&anchor) {
            verify_copy("map-race", &end, cpu, Expect::Zero);
            fill_copy(
                pcpu().per_cpu_ptr(end.ptr, cpu) as usize,
                end.size,
                end.tag,
                cpu,
            );
        }
    }
    PROGRESS.fetch_add(1, Relaxed);
    anchor
}

/// Verifies the ends of every CPU's copy of `anchor`, then frees it.
///
/// CONTEXT: as free_checked.
fn free_anchor(anchor: Anchor) {
    for cpu in 0..pcpu().nr_cpus() {
        for end in anchor_ends(&anchor) {
            verify_copy("map-race", &end, cpu, Expect::Pattern(end.tag, cpu));
        }
    }
    pcpu_platform::free_percpu(anchor.ptr.0);
    PROGRESS.fetch_add(1, Relaxed);
    check_index("map-race");
}

/// Frees a random published area, if any (returns whether there was one),
/// and checks the index.
///
/// CONTEXT: thread; may sleep.
fn map_race_free_one(rng: &mut Rng) -> bool {
    MAPR_DIRTY.store(true, Release);
    let Some(area) = map_race_pop(rng.next_u64()) else {
        return false;
    };
    free_checked("map-race", area);
    check_index("map-race");
    true
}

/// A published area taken off MAPR_LIVE: the one at `pick` modulo their
/// number.
///
/// CONTEXT: any; takes mapr_live (irqsave).
fn map_race_pop(pick: u64) -> Option<Area> {
    let mut live = MAPR_LIVE.lock_irqsave();
    if live.len == 0 {
        return None;
    }
    let at = (pick % live.len as u64) as usize;
    live.len -= 1;
    let last = live.len;
    let area = live.areas[at].take();
    live.areas[at] = live.areas[last].take();
    area
}

/// Fills the first chunk with ballast, so that the workers' areas live in
/// chunks created (and reclaimed) as they go, whose maps start small and are
/// extended again and again: every size of MAPR_BALLAST_SIZES is allocated
/// until it no longer lands in the first chunk.
///
/// CONTEXT: the scenario thread; may sleep.
fn map_race_ballast() {
    let first = pcpu().base_addr();
    let unit = pcpu().unit_size();
    let mut count = 0;
    for size in MAPR_BALLAST_SIZES {
        while count < MAPR_BALLAST {
            let area = alloc_checked("map-race", size, 4, false);
            let at = pcpu().per_cpu_ptr(area.ptr, 0) as usize;
            if at.wrapping_sub(first) >= unit {
                free_checked("map-race", area);
                break;
            }
            MAPR_BALLAST_AREAS.lock_irqsave()[count] = Some(area);
            count += 1;
        }
    }
}

/// Every CPU runs MAPR_WORKERS_PER_CPU workers that fill chunks and drain
/// them in rounds (see map_race_worker), under memory pressure (page
/// allocations enter direct reclaim, which waits for writeback while the
/// workers dirty pages): frees land while an allocation has pcpu_lock
/// dropped to extend a chunk's area map, chunks empty and are reclaimed
/// meanwhile, and frees race with other CPUs' allocations for the index:
/// what the seed's synchronization rules are about. The first chunk is
/// filled with ballast first, so all of it happens in chunks created as the
/// rounds go, whose maps start small.
///
/// CONTEXT: scenario thread on CPU 0; may sleep.
pub fn map_race_main(_: usize) {
    let cpus = online_cpus();
    let workers = cpus * MAPR_WORKERS_PER_CPU;
    start_tick_hook(false);
    set_state(AUX_WORKER, ALLOC);
    map_race_ballast();
    let before = pcpu().stats();
    let reclaims_before = page_alloc::reclaim_runs();
    TICK_WRITEBACK.store(true, Release);
    page_alloc::register_shrinker(&MAPR_SHRINKER);
    page_alloc::set_low_watermark(usize::MAX / 2);
    set_state(AUX_WORKER, WAIT);
    MAPR_GROWING.store(workers, Release);
    for worker in 0..workers {
        spawn_or_panic(worker % cpus, "map-race", map_race_worker, worker);
    }
    MAPR_DONE.wait_n(workers);
    page_alloc::set_low_watermark(32);
    page_alloc::unregister_shrinker(&MAPR_SHRINKER);
    TICK_WRITEBACK.store(false, Release);
    let reclaims = page_alloc::reclaim_runs() - reclaims_before;
    set_state(AUX_WORKER, FREE);
    for slot in 0..MAPR_BALLAST {
        let area = MAPR_BALLAST_AREAS.lock_irqsave()[slot].take();
        if let Some(area) = area {
            free_checked("map-race", area);
        }
    }
    set_state(AUX_WORKER, DONE);
    let stats = pcpu().stats();
    println!(
        "cpu{}: map-race: {} map extensions, {} search restarts, {} frees while pcpu_lock was dropped for an allocation, {} direct reclaims",
        cpu_id(),
        stats.map_extensions - before.map_extensions,
        stats.search_restarts - before.search_restarts,
        pcpu_platform::frees_during_mem_alloc(),
        reclaims
    );
    finish("map-race")
}
