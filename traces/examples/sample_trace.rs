//! Writes a small trace with every event kind, reads it back and prints it.
//!
//! `cargo run -p traces --example sample_trace -- OUT.trace [CHUNK_BYTES]`
//! (also how the fuzz corpus is seeded: see `fuzz/README.md`).

use std::fs::File;
use std::io::BufWriter;

use traces::{
    read_trace, BarrierOption, CpuId, ElfHash, Event, EventKind, IrqMaskCause, LockFlavor, LockRef,
    StringTable, TaskId, TlbiOp, TraceConfig, TraceWriter, WriterOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: sample_trace OUT.trace [CHUNK_BYTES]")?;
    let chunk_bytes = args.next().map(|n| n.parse()).transpose()?.unwrap_or(256);
    let config = TraceConfig {
        guest_elf: ElfHash::of(b"sample"),
        cpus: 2,
        variant: "fine".into(),
        scenario: "storm".into(),
        seed: 1,
        scheduler: "rr".into(),
        quantum: 5000,
        extra: Default::default(),
    };
    let out = BufWriter::new(File::create(&path)?);
    let mut writer = TraceWriter::new(out, &config, WriterOptions { chunk_bytes })?;
    let mut strings = StringTable::new();
    let lock = LockRef {
        addr: 0xffff_8000_1080_1040,
        class: strings.intern("pcpu_lock"),
    };
    let mutex = LockRef {
        addr: 0xffff_8000_1080_1000,
        class: strings.intern("pcpu_alloc_mutex"),
    };
    let fs_reclaim = LockRef {
        addr: 0,
        class: strings.intern("fs_reclaim"),
    };
    let label = strings.intern("phase");
    let kinds = [
        EventKind::SchedDecision {
            cpu: CpuId(0),
            slice: 5000,
        },
        EventKind::MightSleep,
        EventKind::LockAttempt {
            lock: mutex,
            flavor: LockFlavor::Mutex,
        },
        EventKind::LockAcquired {
            lock: mutex,
            flavor: LockFlavor::Mutex,
        },
        EventKind::IrqMask {
            old: false,
            new: true,
            cause: IrqMaskCause::Instruction,
        },
        EventKind::LockAttempt {
            lock,
            flavor: LockFlavor::SpinIrqSave,
        },
        EventKind::LockAcquired {
            lock,
            flavor: LockFlavor::SpinIrqSave,
        },
        EventKind::AssertHeld { lock },
        EventKind::PageAlloc {
            order: 0,
            gfp: 0xcc0,
            pa: 0x4123_4000,
        },
        EventKind::PageTableWrite {
            desc_pa: 0x4100_2008,
            old: 0,
            new: 0x4123_4703,
        },
        EventKind::Dsb {
            option: BarrierOption::ISHST,
        },
        EventKind::Tlbi {
            op: TlbiOp::Vaae1,
            broadcast: true,
            operand: 0xffff_8000_2000_0000 >> 12,
        },
        EventKind::Dsb {
            option: BarrierOption::ISH,
        },
        EventKind::Isb,
        EventKind::LockRelease {
            lock,
            flavor: LockFlavor::SpinIrqSave,
        },
        EventKind::IrqMask {
            old: true,
            new: false,
            cause: IrqMaskCause::Instruction,
        },
        EventKind::PercpuAlloc {
            size: 64,
            align: 8,
            addr: 0xffff_8000_2000_0040,
        },
        EventKind::LockRelease {
            lock: mutex,
            flavor: LockFlavor::Mutex,
        },
        EventKind::IrqInject {
            cpu: CpuId(1),
            intid: 1,
        },
        EventKind::IrqMask {
            old: false,
            new: true,
            cause: IrqMaskCause::ExceptionEntry,
        },
        EventKind::HardIrqEnter { intid: 1 },
        EventKind::Trylock {
            lock,
            flavor: LockFlavor::Spin,
            acquired: true,
        },
        EventKind::PercpuFree {
            addr: 0xffff_8000_2000_0040,
        },
        EventKind::LockRelease {
            lock,
            flavor: LockFlavor::Spin,
        },
        EventKind::Wake { task: TaskId(3) },
        EventKind::HardIrqExit { intid: 1 },
        EventKind::IrqMask {
            old: true,
            new: false,
            cause: IrqMaskCause::Eret,
        },
        EventKind::ReclaimEnter,
        EventKind::LockAcquired {
            lock: fs_reclaim,
            flavor: LockFlavor::Pseudo,
        },
        EventKind::PageFree {
            pa: 0x4123_4000,
            order: 0,
        },
        EventKind::ReclaimExit,
        EventKind::Marker { label, value: 2 },
        EventKind::Sleep,
        EventKind::ContextSwitch {
            from: TaskId(2),
            to: TaskId(3),
        },
        EventKind::Dmb {
            option: BarrierOption::SY,
        },
    ];
    let mut task = TaskId(2);
    for (i, kind) in kinds.into_iter().enumerate() {
        let i = i as u64;
        let cpu = CpuId(u16::from(i >= 19));
        let event = Event {
            time: 100 + 37 * i,
            cpu,
            task,
            pc: 0xffff_8000_1001_0000 + 16 * i,
            caller: 0xffff_8000_1003_0000 + 4 * (i % 5),
            kind,
        };
        writer.write(&event, &strings)?;
        if let EventKind::ContextSwitch { to, .. } = kind {
            task = to;
        }
    }
    let (_, summary) = writer.finish()?;
    println!("wrote {path}: {summary:?}");

    let bytes = std::fs::read(&path)?;
    let trace = read_trace(&bytes)?;
    for event in &trace.events {
        println!("{}", event.display(&trace.strings));
    }
    if let Some(damage) = trace.damage {
        println!("warning: {damage}");
    }
    Ok(())
}
