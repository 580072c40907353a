//! The byte layout documented in `traces::format`, written out by hand: the reader
//! decodes it, and the writer produces exactly these bytes.

mod common;

use traces::aarch64::Access;
use traces::varint::{put_uleb, zigzag};
use traces::{
    read_trace, CpuId, ElfHash, Event, EventKind, IrqMaskCause, LockFlavor, LockRef, Perms, StrId,
    StringTable, TaskId, TlbFill, TraceConfig, TraceWriter, WalkResult, WriterOptions,
};

fn uleb(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uleb(&mut out, value);
    out
}

fn zz(delta: i64) -> Vec<u8> {
    uleb(zigzag(delta))
}

fn config() -> TraceConfig {
    TraceConfig {
        guest_elf: ElfHash([0xab; 32]),
        cpus: 2,
        variant: "fine".into(),
        scenario: "smoke".into(),
        seed: 3,
        scheduler: "rr".into(),
        quantum: 1000,
        extra: [("inject".to_string(), "skip-tlb-flush".to_string())].into(),
    }
}

fn hand_header() -> Vec<u8> {
    let mut body = vec![0xab; 32];
    body.push(2); // cpus
    body.extend(b"\x04fine\x05smoke");
    body.push(3); // seed
    body.extend(b"\x02rr");
    body.extend([0xe8, 0x07]); // quantum 1000
    body.push(1); // one extra pair
    body.extend(b"\x06inject\x0eskip-tlb-flush");
    let mut out = b"\x89PCPUTR\n".to_vec();
    out.extend([1, 0, 8, 0]); // version 1.8
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(crc32fast::hash(&body).to_le_bytes());
    out.extend(body);
    out
}

const LOCK_ADDR: u64 = 0x4010_0000;
const PERCPU_ADDR: u64 = 0xffff_8000_2000_0040;
/// A cross-CPU call on a kernel stack.
const CSD_ADDR: u64 = 0xffff_0000_0081_3f40;

/// The records, each as documented, with the events they stand for.
fn records() -> Vec<(Vec<u8>, Option<Event>)> {
    let lock = LockRef {
        addr: LOCK_ADDR,
        class: StrId(0),
    };
    let flavor = LockFlavor::SpinIrqSave;
    let event = |time, pc, caller, kind| Event {
        time,
        cpu: CpuId(1),
        task: TaskId(5),
        pc,
        caller,
        kind,
    };
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        (cat(&[b"\x01\x09pcpu_lock"]), None),
        (vec![0x02, 0x01], None), // current CPU 1
        (vec![0x03, 0x05], None), // its task 5
        (
            // lock acquired (op 1), spin_irqsave (flavor 2): tag 0x40 + 8 + 2; pc and caller
            // mode 2 (delta from the tag's last value, 0), lock mode 3 (literal).
            cat(&[
                &[0x4a, 0x3a, 100],
                &zz(0x1000),
                &zz(0x2000),
                &zz(LOCK_ADDR as i64),
                &[0],
            ]),
            Some(event(
                100,
                0x1000,
                0x2000,
                EventKind::LockAcquired { lock, flavor },
            )),
        ),
        (
            // release: pc mode 3 (+0x10 from the previous pc), caller mode 1, lock slot 0.
            cat(&[&[0x52, 0x07, 20], &zz(0x10)]),
            Some(event(
                120,
                0x1010,
                0x2000,
                EventKind::LockRelease { lock, flavor },
            )),
        ),
        (
            // IRQ mask: pc mode 1, caller mode 0 (the tag's last caller: 0);
            // bits 4-7: old 1, new 0, cause 2 (eret).
            vec![0x10, 0x91, 0],
            Some(event(
                120,
                0x1010,
                0,
                EventKind::IrqMask {
                    old: true,
                    new: false,
                    cause: IrqMaskCause::Eret,
                },
            )),
        ),
        (
            cat(&[&[0x1b, 0x01, 7, 64, 8], &zz(PERCPU_ADDR as i64)]),
            Some(event(
                127,
                0x1010,
                0,
                EventKind::PercpuAlloc {
                    size: 64,
                    align: 8,
                    addr: PERCPU_ADDR,
                },
            )),
        ),
        (cat(&[b"\x01\x11", STACK.as_bytes()]), None),
        (
            // stack (sized, 1.3): pc mode 1, caller mode 0; body: the string id.
            vec![0x83, 0x01, 0, 1, 1],
            Some(event(127, 0x1010, 0, EventKind::Stack { frames: StrId(1) })),
        ),
        (
            // csd wait (sized, 1.4): pc mode 1, caller mode 0; body: target 2, zz csd.
            cat(&[
                &[0x84, 0x01, 3],
                &uleb(1 + zz(CSD_ADDR as i64).len() as u64),
                &[2],
                &zz(CSD_ADDR as i64),
            ]),
            Some(event(
                130,
                0x1010,
                0,
                EventKind::CsdWait {
                    target: CpuId(2),
                    csd: CSD_ADDR,
                },
            )),
        ),
        (
            // csd unlock (sized, 1.4): body zz csd.
            cat(&[
                &[0x85, 0x01, 2],
                &uleb(zz(CSD_ADDR as i64).len() as u64),
                &zz(CSD_ADDR as i64),
            ]),
            Some(event(
                132,
                0x1010,
                0,
                EventKind::CsdUnlock { csd: CSD_ADDR },
            )),
        ),
        (
            // local-lock class (sized, 1.5): body: the class's string id.
            vec![0x86, 0x01, 1, 1, 0],
            Some(event(
                133,
                0x1010,
                0,
                EventKind::LocalLockClass { class: StrId(0) },
            )),
        ),
        (
            // lock memory freed (sized, 1.5): body: zz addr, uleb len (64).
            cat(&[
                &[0x87, 0x01, 1],
                &uleb(zz(LOCK_ADDR as i64).len() as u64 + 1),
                &zz(LOCK_ADDR as i64),
                &[64],
            ]),
            Some(event(
                134,
                0x1010,
                0,
                EventKind::LockMemoryFreed {
                    addr: LOCK_ADDR,
                    len: 64,
                },
            )),
        ),
        (
            // read lock (sized, 1.5): body: zz addr, class 0, bits 1 (recursive).
            cat(&[
                &[0x88, 0x01, 1],
                &uleb(zz(LOCK_ADDR as i64).len() as u64 + 2),
                &zz(LOCK_ADDR as i64),
                &[0, 1],
            ]),
            Some(event(
                135,
                0x1010,
                0,
                EventKind::ReadLock {
                    lock,
                    recursive: true,
                    trylock: false,
                },
            )),
        ),
        (
            // page-table page retired (sized, 1.6), at the same time: body: uleb pa.
            cat(&[
                &[0x8d, 0x01, 0],
                &uleb(uleb(RETIRED_PA).len() as u64),
                &uleb(RETIRED_PA),
            ]),
            Some(event(
                135,
                0x1010,
                0,
                EventKind::PageTableRetired { pa: RETIRED_PA },
            )),
        ),
        (
            // TLB invalidate (sized, 1.6): CPUs 0 and 2, one page at zz VA, every ASID.
            cat(&[
                &[0x8e, 0x01, 0],
                &uleb(zz(INVALIDATED_VA as i64).len() as u64 + 4),
                &[0b101],
                &zz(INVALIDATED_VA as i64),
                &[0x80, 0x20, 0],
            ]),
            Some(event(
                135,
                0x1010,
                0,
                EventKind::TlbInvalidate {
                    cpus: 0b101,
                    start: INVALIDATED_VA,
                    len: 4096,
                    asid: None,
                },
            )),
        ),
        (
            // TLB fill (sized, 1.2; its EL0 permissions since 1.7): a user page of
            // ASID 5, level 3, writable at EL1, one descriptor, EL0 rw-.
            cat(&[
                &[0x80, 0x01, 0],
                &uleb(
                    zz(USER_VA as i64).len() as u64
                        + uleb(USER_PA).len() as u64
                        + 3
                        + uleb(USER_PTE).len() as u64
                        + 1,
                ),
                &zz(USER_VA as i64),
                &uleb(USER_PA),
                &[0b0111, 5, 1],
                &uleb(USER_PTE),
                &[0b011],
            ]),
            Some(event(
                135,
                0x1010,
                0,
                EventKind::TlbFill(TlbFill {
                    va: USER_VA,
                    pa: USER_PA,
                    level: 3,
                    write: true,
                    exec: false,
                    user: Perms {
                        read: true,
                        write: true,
                        exec: false,
                    },
                    global: false,
                    asid: 5,
                    walk: [USER_PTE, 0, 0, 0],
                    walk_len: 1,
                }),
            )),
        ),
        (
            // stale TLB use (sized, 1.2; its ASID + 1 since 1.7): a write of the user
            // page, which the tables now map to another page.
            cat(&[
                &[0x82, 0x01, 0],
                &uleb(
                    zz(USER_VA as i64).len() as u64 + 2 + uleb(USER_PA + 0x1000).len() as u64 + 1,
                ),
                &zz(USER_VA as i64),
                &[1, 0],
                &uleb(USER_PA + 0x1000),
                &[6],
            ]),
            Some(event(
                135,
                0x1010,
                0,
                EventKind::StaleTlbUse {
                    va: USER_VA,
                    access: Access::Write,
                    now: WalkResult::Maps(USER_PA + 0x1000),
                    asid: Some(5),
                },
            )),
        ),
        (
            // IPI send (sized, 1.8): same time, pc mode 1, caller mode 0; body: target
            // 3, message 0 (reschedule), taken as interrupt 1 (RISC-V's software
            // interrupt).
            vec![0x8f, 0x01, 0, 3, 3, 0, 1],
            Some(event(
                135,
                0x1010,
                0,
                EventKind::IpiSend {
                    target: CpuId(3),
                    msg: 0,
                    intid: 1,
                },
            )),
        ),
    ]
}

/// The user page of the TLB fill, where it maps and its descriptor.
const USER_VA: u64 = 0x40_0000;
const USER_PA: u64 = 0x4020_3000;
const USER_PTE: u64 = 0x4030_0010;

/// The page of the TLB invalidate.
const INVALIDATED_VA: u64 = 0xffff_ffc0_0004_1000;

/// The physical page of the retired page-table page.
const RETIRED_PA: u64 = 0x4031_0000;

/// The backtrace string of the stack record.
const STACK: &str = "4008e980 4008d78c";

/// A kind from a later minor version (tag 0x90, own flag bits 5, body 01 02 03) and an
/// event after it, to show the deltas stay in step.
fn future_records() -> Vec<(Vec<u8>, Option<Event>)> {
    let event = |time, pc, kind| Event {
        time,
        cpu: CpuId(1),
        task: TaskId(5),
        pc,
        caller: 0,
        kind,
    };
    vec![
        (
            vec![0x90, 0x51, 1, 3, 1, 2, 3],
            Some(event(136, 0x1010, EventKind::Unknown { tag: 0x90 })),
        ),
        (
            vec![0x21, 0x03, 2, 8],
            Some(event(138, 0x1014, EventKind::Isb)),
        ),
    ]
}

fn hand_file(records: &[(Vec<u8>, Option<Event>)]) -> (Vec<u8>, Vec<Event>) {
    let payload: Vec<u8> = records
        .iter()
        .flat_map(|(bytes, _)| bytes.clone())
        .collect();
    let events: Vec<Event> = records.iter().filter_map(|(_, event)| *event).collect();
    let mut file = hand_header();
    file.extend(common::frame(b'C', events.len() as u32, &payload));
    file.extend(common::frame(b'T', 0, &[events.len() as u8, 1, 2]));
    (file, events)
}

#[test]
fn the_writer_produces_the_documented_bytes() {
    let (expected, events) = hand_file(&records());
    let mut writer = TraceWriter::new(Vec::new(), &config(), WriterOptions::default()).unwrap();
    let strings: StringTable = ["pcpu_lock", STACK].into_iter().collect();
    for event in &events {
        writer.write(event, &strings).unwrap();
    }
    let (bytes, _) = writer.finish().unwrap();
    assert_eq!(bytes, expected);
}

#[test]
fn the_reader_decodes_the_documented_bytes_and_skips_future_kinds() {
    let mut all = records();
    all.extend(future_records());
    let (file, events) = hand_file(&all);
    let trace = read_trace(&file).unwrap();
    assert_eq!(trace.header.config, config());
    assert!(trace.damage.is_none(), "{:?}", trace.damage);
    assert_eq!(trace.strings.get(StrId(0)), Some("pcpu_lock"));
    assert_eq!(
        traces::event::backtrace::decode(trace.strings.get(StrId(1)).unwrap()),
        Some(vec![0x4008_e980, 0x4008_d78c])
    );
    assert_eq!(trace.events, events);
}

/// A 1.6 writer's TLB fill and stale TLB use end before the fields 1.7 appended:
/// they read as no EL0 permission and an unknown ASID; a later minor's extra bytes
/// after the 1.7 fields are skipped.
#[test]
fn bodies_without_the_appended_fields_read_as_before() {
    let cat = |parts: &[&[u8]]| parts.concat();
    let fill_16 = cat(&[
        &[0x80, 0x01, 0],
        &uleb(
            zz(USER_VA as i64).len() as u64
                + uleb(USER_PA).len() as u64
                + 3
                + uleb(USER_PTE).len() as u64,
        ),
        &zz(USER_VA as i64),
        &uleb(USER_PA),
        &[0b0111, 5, 1],
        &uleb(USER_PTE),
    ]);
    let stale_16 = cat(&[
        &[0x82, 0x01, 0],
        &uleb(zz(USER_VA as i64).len() as u64 + 3),
        &zz(USER_VA as i64),
        &[0, 1, 0x0f],
    ]);
    let stale_later = cat(&[
        &[0x82, 0x01, 0],
        &uleb(zz(USER_VA as i64).len() as u64 + 6),
        &zz(USER_VA as i64),
        &[0, 1, 0x0f, 3, 0xaa, 0xbb],
    ]);
    // After the documented records, whose last event is at the time and place
    // these share (flags 0x01).
    let mut all = records();
    let first = all.last().and_then(|(_, e)| *e).unwrap();
    let at = |kind| {
        Some(Event {
            time: first.time,
            pc: first.pc,
            caller: first.caller,
            kind,
            ..first
        })
    };
    let fill = TlbFill {
        va: USER_VA,
        pa: USER_PA,
        level: 3,
        write: true,
        exec: false,
        user: Perms::NONE,
        global: false,
        asid: 5,
        walk: [USER_PTE, 0, 0, 0],
        walk_len: 1,
    };
    let stale = |asid| EventKind::StaleTlbUse {
        va: USER_VA,
        access: Access::Read,
        now: WalkResult::Faults(0x0f),
        asid,
    };
    all.push((fill_16, at(EventKind::TlbFill(fill))));
    all.push((stale_16, at(stale(None))));
    all.push((stale_later, at(stale(Some(2)))));
    let (file, events) = hand_file(&all);
    let trace = read_trace(&file).unwrap();
    assert!(trace.damage.is_none(), "{:?}", trace.damage);
    assert_eq!(trace.events, events);
}
