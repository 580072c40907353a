//! Bytes per event on a synthetic stream shaped like the `storm` scenario.

mod common;

use traces::{
    read_trace, CpuId, Event, EventKind, IrqMaskCause, LockFlavor, LockRef, TaskId, WriterOptions,
};

/// Small deterministic PRNG (xorshift64*), so the stream is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KERNEL: u64 = 0xffff_8000_1000_0000;
// Hooked entry points and the call sites inside the allocator (made-up but plausible).
const SPIN_LOCK_IRQSAVE: u64 = KERNEL + 0x1_2340;
const SPIN_UNLOCK_IRQRESTORE: u64 = KERNEL + 0x1_23c0;
const MUTEX_LOCK: u64 = KERNEL + 0x1_4000;
const MUTEX_UNLOCK: u64 = KERNEL + 0x1_40a0;
const PCPU_ALLOC_RET: u64 = KERNEL + 0x3_1000;
const FREE_PERCPU_RET: u64 = KERNEL + 0x3_2800;
const VECTOR_IRQ: u64 = KERNEL + 0x800 + 0x280;
const PCPU_BASE: u64 = 0xffff_8000_2000_0000;

/// Emits the events of one core of `storm`: alloc/free under `pcpu_alloc_mutex` and
/// the irq-safe `pcpu_lock`, timer interrupts, and host scheduling decisions.
struct Core {
    cpu: CpuId,
    task: TaskId,
    time: u64,
    live: Vec<u64>,
}

struct Storm {
    rng: Rng,
    events: Vec<Event>,
    mutex: LockRef,
    spin: LockRef,
}

impl Storm {
    fn emit(&mut self, core: &mut Core, pc: u64, caller: u64, kind: EventKind) {
        core.time += 8 + self.rng.below(120);
        self.events.push(Event {
            time: core.time,
            cpu: core.cpu,
            task: core.task,
            pc,
            caller,
            kind,
        });
    }

    fn irq_mask(
        &mut self,
        core: &mut Core,
        pc: u64,
        caller: u64,
        old: bool,
        new: bool,
        cause: IrqMaskCause,
    ) {
        self.emit(core, pc, caller, EventKind::IrqMask { old, new, cause });
    }

    fn spin_section(&mut self, core: &mut Core, site: u64, inside: Option<EventKind>) {
        let (lock, flavor) = (self.spin, LockFlavor::SpinIrqSave);
        self.irq_mask(
            core,
            SPIN_LOCK_IRQSAVE + 4,
            site,
            false,
            true,
            IrqMaskCause::Instruction,
        );
        self.emit(
            core,
            SPIN_LOCK_IRQSAVE,
            site,
            EventKind::LockAttempt { lock, flavor },
        );
        self.emit(
            core,
            SPIN_LOCK_IRQSAVE + 0x30,
            site,
            EventKind::LockAcquired { lock, flavor },
        );
        if let Some(kind) = inside {
            self.emit(core, site + 0x40, site - 0x200, kind);
        }
        self.emit(
            core,
            SPIN_UNLOCK_IRQRESTORE,
            site + 0x60,
            EventKind::LockRelease { lock, flavor },
        );
        self.irq_mask(
            core,
            SPIN_UNLOCK_IRQRESTORE + 8,
            site + 0x60,
            true,
            false,
            IrqMaskCause::Instruction,
        );
    }

    fn alloc(&mut self, core: &mut Core) {
        let (lock, flavor) = (self.mutex, LockFlavor::Mutex);
        let site = PCPU_ALLOC_RET + 0x10 * self.rng.below(4);
        self.emit(core, MUTEX_LOCK, site, EventKind::MightSleep);
        self.emit(
            core,
            MUTEX_LOCK,
            site,
            EventKind::LockAttempt { lock, flavor },
        );
        self.emit(
            core,
            MUTEX_LOCK + 0x20,
            site,
            EventKind::LockAcquired { lock, flavor },
        );
        let size = 4 << self.rng.below(15);
        let align = 4 << self.rng.below(4);
        let addr = PCPU_BASE + self.rng.below(1 << 16) * 8;
        self.spin_section(core, site + 0x100, None);
        self.emit(
            core,
            site,
            site + 0x400,
            EventKind::PercpuAlloc { size, align, addr },
        );
        self.emit(
            core,
            MUTEX_UNLOCK,
            site + 0x180,
            EventKind::LockRelease { lock, flavor },
        );
        core.live.push(addr);
    }

    fn free(&mut self, core: &mut Core) {
        let index = self.rng.below(core.live.len() as u64) as usize;
        let addr = core.live.swap_remove(index);
        self.spin_section(core, FREE_PERCPU_RET, Some(EventKind::PercpuFree { addr }));
    }

    fn timer_irq(&mut self, core: &mut Core) {
        let interrupted = KERNEL + self.rng.below(0x4_0000) * 4;
        self.irq_mask(
            core,
            VECTOR_IRQ,
            interrupted,
            false,
            true,
            IrqMaskCause::ExceptionEntry,
        );
        self.emit(
            core,
            VECTOR_IRQ + 0x80,
            interrupted,
            EventKind::HardIrqEnter { intid: 30 },
        );
        self.emit(
            core,
            VECTOR_IRQ + 0xc0,
            interrupted,
            EventKind::HardIrqExit { intid: 30 },
        );
        self.irq_mask(
            core,
            VECTOR_IRQ + 0x100,
            interrupted,
            true,
            false,
            IrqMaskCause::Eret,
        );
    }
}

fn storm_events(count: usize) -> (Vec<String>, Vec<Event>) {
    let strings = vec!["pcpu_alloc_mutex".to_string(), "pcpu_lock".to_string()];
    let mut storm = Storm {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        events: Vec::new(),
        mutex: LockRef {
            addr: KERNEL + 0x80_1000,
            class: traces::StrId(0),
        },
        spin: LockRef {
            addr: KERNEL + 0x80_1040,
            class: traces::StrId(1),
        },
    };
    let mut cores: Vec<Core> = (0..4)
        .map(|cpu| Core {
            cpu: CpuId(cpu),
            task: TaskId(cpu.into()),
            time: 0,
            live: Vec::new(),
        })
        .collect();
    let mut global = 0u64;
    while storm.events.len() < count {
        let pick = storm.rng.below(4) as usize;
        let core = &mut cores[pick];
        // The host scheduler runs this core for a quantum.
        core.time = core.time.max(global);
        let decision = EventKind::SchedDecision {
            cpu: core.cpu,
            slice: 10_000,
        };
        storm.events.push(Event {
            time: core.time,
            cpu: core.cpu,
            task: core.task,
            pc: 0,
            caller: 0,
            kind: decision,
        });
        let end = core.time + 10_000;
        while core.time < end {
            match storm.rng.below(10) {
                0 => storm.timer_irq(core),
                1..=5 => storm.alloc(core),
                _ if !core.live.is_empty() => storm.free(core),
                _ => storm.alloc(core),
            }
        }
        global = core.time;
    }
    (strings, storm.events)
}

#[test]
fn storm_like_stream_costs_at_most_8_bytes_per_event() {
    let (strings, events) = storm_events(200_000);
    let started = std::time::Instant::now();
    let (bytes, summary) =
        common::write_trace(&strings, &events, WriterOptions::default().chunk_bytes);
    let write_time = started.elapsed();
    let per_event = bytes.len() as f64 / events.len() as f64;
    println!(
        "storm-like stream: {} events, {} chunks, {} bytes, {per_event:.2} bytes/event",
        summary.events,
        summary.chunks,
        bytes.len()
    );
    assert!(per_event <= 8.0, "{per_event:.2} bytes per event");
    let started = std::time::Instant::now();
    let read_back = read_trace(&bytes).unwrap().events;
    let read_time = started.elapsed();
    assert_eq!(read_back, events);
    // Informational only (debug builds are much slower than release).
    let rate = |time: std::time::Duration| events.len() as f64 / time.as_secs_f64() / 1e6;
    println!(
        "write {:.1} M events/s, read {:.1} M events/s",
        rate(write_time),
        rate(read_time)
    );
}

#[test]
fn small_chunks_cost_little_more() {
    let (strings, events) = storm_events(20_000);
    let (big, _) = common::write_trace(&strings, &events, 64 << 10);
    let (small, _) = common::write_trace(&strings, &events, 4 << 10);
    let ratio = small.len() as f64 / big.len() as f64;
    println!("4 KiB chunks vs 64 KiB chunks: {ratio:.3}x the bytes");
    assert!(ratio < 1.10, "{ratio}");
}
