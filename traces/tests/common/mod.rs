//! Shared helpers for the integration tests: configs, event strategies, trace building.
#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use traces::aarch64::Access;
use traces::{
    BarrierOption, CpuId, ElfHash, Event, EventKind, IrqMaskCause, LockFlavor, LockRef, Perms,
    StrId, StringTable, TaskId, TlbFill, TlbiOp, TraceConfig, TraceWriter, WalkResult,
    WriteSummary, WriterOptions,
};

pub fn config() -> TraceConfig {
    let mut extra = BTreeMap::new();
    extra.insert("max-insns".to_string(), "1000000".to_string());
    extra.insert("inject".to_string(), "none".to_string());
    TraceConfig {
        guest_elf: ElfHash::of(b"not really an ELF"),
        cpus: 4,
        variant: "fine".into(),
        scenario: "storm".into(),
        seed: 7,
        scheduler: "rr".into(),
        quantum: 10_000,
        extra,
    }
}

/// Writes `events` using the table of `strings` (ids in order) with the given chunk size.
pub fn write_trace(
    strings: &[String],
    events: &[Event],
    chunk_bytes: usize,
) -> (Vec<u8>, WriteSummary) {
    let mut writer =
        TraceWriter::new(Vec::new(), &config(), WriterOptions { chunk_bytes }).unwrap();
    let table: StringTable = strings.iter().collect();
    assert_eq!(table.len(), strings.len(), "strings must be distinct");
    for event in events {
        writer.write(event, &table).unwrap();
    }
    writer.finish().unwrap()
}

/// A few addresses that repeat (so the "same as before" codings get used) or any value.
fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            0xffff_8000_1008_0040,
            0xffff_8000_1008_0100,
            0xffff_8000_1009_2200,
            0x4008_1234,
        ]),
        1 => any::<u64>(),
    ]
}

fn flavor() -> impl Strategy<Value = LockFlavor> {
    prop::sample::select(LockFlavor::ALL.to_vec())
}

fn lock(strings: u32) -> impl Strategy<Value = LockRef> {
    (address(), 0..strings).prop_map(|(addr, class)| LockRef {
        addr,
        class: StrId(class),
    })
}

fn task() -> impl Strategy<Value = TaskId> {
    prop_oneof![3 => (0u32..4).prop_map(TaskId), 1 => any::<u32>().prop_map(TaskId)]
}

fn tlbi_op() -> impl Strategy<Value = TlbiOp> {
    prop_oneof![
        Just(TlbiOp::Vmalle1),
        Just(TlbiOp::Vae1),
        Just(TlbiOp::Vale1),
        Just(TlbiOp::Vaae1),
        Just(TlbiOp::Vaale1),
        Just(TlbiOp::Aside1),
        any::<u16>().prop_map(TlbiOp::Other),
    ]
}

fn cause() -> impl Strategy<Value = IrqMaskCause> {
    prop::sample::select(vec![
        IrqMaskCause::Instruction,
        IrqMaskCause::ExceptionEntry,
        IrqMaskCause::Eret,
    ])
}

/// Any event kind whose string ids are below `strings` (which must be ≥ 1).
fn tlb_fill() -> impl Strategy<Value = TlbFill> {
    (
        (
            any::<u64>(),
            address(),
            1u8..4,
            any::<[bool; 3]>(),
            any::<u16>(),
        ),
        proptest::collection::vec(address(), 1..=4),
        0u64..8,
    )
        .prop_map(
            |((va, pa, level, [write, exec, global], asid), descs, user)| {
                let mut walk = [0; 4];
                walk[..descs.len()].copy_from_slice(&descs);
                TlbFill {
                    va,
                    pa,
                    level,
                    write,
                    exec,
                    user: Perms::from_bits(user),
                    global,
                    asid,
                    walk,
                    walk_len: descs.len() as u8,
                }
            },
        )
}

pub fn kind(strings: u32) -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (lock(strings), flavor())
            .prop_map(|(lock, flavor)| EventKind::LockAttempt { lock, flavor }),
        (lock(strings), flavor())
            .prop_map(|(lock, flavor)| EventKind::LockAcquired { lock, flavor }),
        (lock(strings), flavor())
            .prop_map(|(lock, flavor)| EventKind::LockRelease { lock, flavor }),
        (lock(strings), flavor(), any::<bool>()).prop_map(|(lock, flavor, acquired)| {
            EventKind::Trylock {
                lock,
                flavor,
                acquired,
            }
        }),
        lock(strings).prop_map(|lock| EventKind::AssertHeld { lock }),
        (any::<bool>(), any::<bool>(), cause()).prop_map(|(old, new, cause)| EventKind::IrqMask {
            old,
            new,
            cause
        }),
        any::<u32>().prop_map(|intid| EventKind::HardIrqEnter { intid }),
        any::<u32>().prop_map(|intid| EventKind::HardIrqExit { intid }),
        (task(), task()).prop_map(|(from, to)| EventKind::ContextSwitch { from, to }),
        Just(EventKind::Sleep),
        task().prop_map(|task| EventKind::Wake { task }),
        Just(EventKind::MightSleep),
        any::<u32>().prop_map(|count| EventKind::PreemptDisable { count }),
        any::<u32>().prop_map(|count| EventKind::PreemptEnable { count }),
        (any::<u8>(), any::<u32>(), address()).prop_map(|(order, gfp, pa)| EventKind::PageAlloc {
            order,
            gfp,
            pa
        }),
        (address(), any::<u8>()).prop_map(|(pa, order)| EventKind::PageFree { pa, order }),
        Just(EventKind::ReclaimEnter),
        Just(EventKind::ReclaimExit),
        (any::<u64>(), any::<u64>(), address())
            .prop_map(|(size, align, addr)| EventKind::PercpuAlloc { size, align, addr }),
        address().prop_map(|addr| EventKind::PercpuFree { addr }),
        (address(), any::<u64>(), any::<u64>())
            .prop_map(|(desc_pa, old, new)| EventKind::PageTableWrite { desc_pa, old, new }),
        (tlbi_op(), any::<bool>(), any::<u64>()).prop_map(|(op, broadcast, operand)| {
            EventKind::Tlbi {
                op,
                broadcast,
                operand,
            }
        }),
        (0u8..16).prop_map(|o| EventKind::Dsb {
            option: BarrierOption(o)
        }),
        (0u8..16).prop_map(|o| EventKind::Dmb {
            option: BarrierOption(o)
        }),
        Just(EventKind::Isb),
        (any::<u16>(), any::<u64>()).prop_map(|(cpu, slice)| EventKind::SchedDecision {
            cpu: CpuId(cpu),
            slice
        }),
        (any::<u16>(), any::<u32>()).prop_map(|(cpu, intid)| EventKind::IrqInject {
            cpu: CpuId(cpu),
            intid
        }),
        (0..strings, any::<u64>()).prop_map(|(label, value)| EventKind::Marker {
            label: StrId(label),
            value
        }),
        tlb_fill().prop_map(EventKind::TlbFill),
        (any::<u16>(), any::<u64>()).prop_map(|(cpu, csd)| EventKind::CsdWait {
            target: CpuId(cpu),
            csd
        }),
        any::<u64>().prop_map(|csd| EventKind::CsdUnlock { csd }),
        (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(cpu, msg, intid)| {
            EventKind::IpiSend {
                target: CpuId(cpu),
                msg,
                intid,
            }
        }),
        (0..strings).prop_map(|class| EventKind::LocalLockClass {
            class: StrId(class)
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(addr, len)| EventKind::LockMemoryFreed { addr, len }),
        (address(), 0..strings, any::<bool>(), any::<bool>()).prop_map(
            |(addr, class, recursive, trylock)| EventKind::ReadLock {
                lock: LockRef {
                    addr,
                    class: StrId(class)
                },
                recursive,
                trylock
            }
        ),
        (address(), 0u8..4, any::<u64>())
            .prop_map(|(pa, level, va_base)| { EventKind::PageTablePage { pa, level, va_base } }),
        (
            any::<u64>(),
            0usize..3,
            any::<bool>(),
            any::<u64>(),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(va, access, faults, now, asid)| EventKind::StaleTlbUse {
                va,
                access: Access::ALL[access],
                now: if faults {
                    WalkResult::Faults(now as u8)
                } else {
                    WalkResult::Maps(now)
                },
                asid,
            }),
        (0..strings).prop_map(|frames| EventKind::Stack {
            frames: StrId(frames)
        }),
        address().prop_map(|pa| EventKind::PageTableRetired { pa }),
        (any::<u64>(), address(), any::<u64>(), any::<Option<u16>>()).prop_map(
            |(cpus, start, len, asid)| EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid
            }
        ),
        // Sized tags this crate does not know (0x80..=0x82 and 0x8d..=0x8e are the
        // TLB model's, 0x83 the stack, 0x84..=0x85 the cross-CPU calls', 0x86..=0x8c
        // lockdep's facts, 0x8f an IPI sent).
        (0x90u8..=0xff).prop_map(|tag| EventKind::Unknown { tag }),
        Just(EventKind::SoftIrqEnter),
        Just(EventKind::SoftIrqExit),
        Just(EventKind::SoftirqsOn),
        Just(EventKind::SoftirqsOff),
    ]
}

/// Strings to intern and a valid event sequence using them (times non-decreasing per CPU).
pub fn trace_contents(max_events: usize) -> impl Strategy<Value = (Vec<String>, Vec<Event>)> {
    prop::collection::vec("[a-z_]{0,12}", 1..6)
        .prop_map(|mut strings| {
            // Interning returns the first id for a repeated string: keep them distinct.
            strings.sort();
            strings.dedup();
            strings
        })
        .prop_flat_map(move |strings| {
            let count = strings.len() as u32;
            let raw_event = (
                prop_oneof![4 => 0u16..4, 1 => 0u16..1024],
                prop_oneof![3 => 0u64..200, 1 => any::<u64>().prop_map(|t| t >> 8)],
                task(),
                address(),
                address(),
                kind(count),
            );
            (
                Just(strings),
                prop::collection::vec(raw_event, 0..max_events),
            )
        })
        .prop_map(|(strings, raw)| {
            let mut clock = BTreeMap::<u16, u64>::new();
            let events = raw
                .into_iter()
                .map(|(cpu, dt, task, pc, caller, kind)| {
                    let time = clock.entry(cpu).or_insert(0);
                    *time = time.saturating_add(dt);
                    Event {
                        time: *time,
                        cpu: CpuId(cpu),
                        task,
                        pc,
                        caller,
                        kind,
                    }
                })
                .collect();
            (strings, events)
        })
}

/// A frame laid out by hand from the documented format (kind, length, count, CRC, payload).
pub fn frame(kind: u8, event_count: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&event_count.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header bytes of [`config`].
pub fn header_bytes() -> Vec<u8> {
    traces::header::encode_header(&config())
}
