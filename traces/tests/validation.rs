//! Every validation error of the decoder, each from a hand-built input that breaks
//! exactly that rule, next to the nearest input that is still valid (so an off-by-one
//! in either direction fails a test).
//!
//! The header comes from the real writer; chunks and trailers are encoded by hand
//! ([`Records`], [`frame`]) with correct CRCs, so only the rule under test is broken.

mod common;

use traces::format::{FRAME_CHUNK, FRAME_TRAILER, MAX_CPUS, MAX_PAYLOAD, MAX_STRING_LEN};
use traces::varint::{put_uleb, zigzag};
use traces::{
    read_trace, read_trace_from, CpuId, DamageCause, EventKind, LockFlavor, LockRef, StrId, TaskId,
    Trace, TraceWriter, WriterOptions,
};

// Record tags and flag layouts from `traces::format` (kept private there).
const DEFINE_STRING: u8 = 0x01;
const SET_CPU: u8 = 0x02;
const SET_TASK: u8 = 0x03;
const IRQ_MASK: u8 = 0x10;
const HARDIRQ_ENTER: u8 = 0x11;
const SLEEP: u8 = 0x14;
const PAGE_ALLOC: u8 = 0x17;
const TLBI: u8 = 0x1e;
const SCHED: u8 = 0x22;
const ASSERT_HELD: u8 = 0x24;
const MARKER: u8 = 0x25;
const LOCK_ACQUIRED_SPIN: u8 = 0x40 + 8;
const LITERAL_LOCK: u8 = 3;

/// The header of a real trace (no frames).
fn header() -> Vec<u8> {
    let writer = TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    let len = writer.bytes_written() as usize;
    let (bytes, _) = writer.finish().unwrap();
    bytes[..len].to_vec()
}

/// A frame with a correct CRC.
fn frame(kind: u8, payload: &[u8], event_count: u32) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&event_count.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out);
    hasher.update(payload);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A trailer frame claiming these totals.
fn trailer(events: u64, chunks: u64, strings: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    for n in [events, chunks, strings] {
        put_uleb(&mut payload, n);
    }
    frame(FRAME_TRAILER, &payload, 0)
}

/// Hand-encoded chunk records. Every event uses pc/caller mode 0 (the value of this
/// CPU's last event with the same tag, 0 at first) and a time delta of 1.
#[derive(Default, Clone)]
struct Records {
    bytes: Vec<u8>,
    events: u32,
}

impl Records {
    fn new() -> Self {
        Self::default()
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    fn uleb(mut self, value: u64) -> Self {
        put_uleb(&mut self.bytes, value);
        self
    }

    fn define_bytes(self, text: &[u8]) -> Self {
        self.raw(&[DEFINE_STRING]).uleb(text.len() as u64).raw(text)
    }

    fn define(self, text: &str) -> Self {
        self.define_bytes(text.as_bytes())
    }

    fn chain(mut self, more: Records) -> Self {
        self.events += more.events;
        self.raw(&more.bytes)
    }

    fn set_cpu(self, cpu: u64) -> Self {
        self.raw(&[SET_CPU]).uleb(cpu)
    }

    fn set_task(self, task: u64) -> Self {
        self.raw(&[SET_TASK]).uleb(task)
    }

    /// The common part of an event record: tag, flags (kind bits in 4–7), time delta.
    fn event_with_delta(mut self, tag: u8, kind_bits: u8, time_delta: u64) -> Self {
        self.events += 1;
        self.raw(&[tag, kind_bits << 4]).uleb(time_delta)
    }

    fn event(self, tag: u8, kind_bits: u8) -> Self {
        self.event_with_delta(tag, kind_bits, 1)
    }

    fn marker(self, label: u64) -> Self {
        self.event(MARKER, 0).uleb(label).uleb(42)
    }

    fn sleep(self) -> Self {
        self.event(SLEEP, 0)
    }

    /// A spin-lock acquisition naming its lock by literal: address delta, class id.
    fn lock_literal(self, class: u64) -> Self {
        self.event(LOCK_ACQUIRED_SPIN, LITERAL_LOCK)
            .uleb(zigzag(0x4000))
            .uleb(class)
    }

    fn chunk(&self) -> Vec<u8> {
        self.chunk_claiming(self.events)
    }

    fn chunk_claiming(&self, event_count: u32) -> Vec<u8> {
        frame(FRAME_CHUNK, &self.bytes, event_count)
    }
}

/// Header, then `frames` as given.
fn file(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = header();
    for f in frames {
        bytes.extend_from_slice(f);
    }
    bytes
}

/// Reads `bytes` with both readers, checks they agree, returns the slice reader's view.
fn read(bytes: &[u8]) -> Trace {
    let trace = read_trace(bytes).unwrap();
    let streamed = read_trace_from(bytes).unwrap();
    assert_eq!(trace, streamed, "slice and stream readers disagree");
    trace
}

/// A file of `good` chunks (each read whole), then a chunk of `bad`, then a trailer.
/// Asserts the good chunks were kept and everything from the bad one dropped, with
/// the right offsets and counts; returns the cause.
fn cause_after(good: &[Records], bad: &Records) -> DamageCause {
    let mut frames: Vec<Vec<u8>> = good.iter().map(Records::chunk).collect();
    let bad_start = header().len() + frames.iter().map(Vec::len).sum::<usize>();
    frames.push(bad.chunk());
    frames.push(trailer(0, 0, 0));
    let bytes = file(&frames);
    let trace = read(&bytes);
    let kept: u32 = good.iter().map(|r| r.events).sum();
    assert_eq!(trace.events.len(), kept as usize);
    assert_eq!(trace.trailer, None);
    let damage = trace.damage.expect("the bad chunk is reported");
    assert_eq!(damage.offset, bad_start as u64);
    assert_eq!(damage.frame_index, good.len() as u64);
    assert_eq!(damage.dropped_bytes, (bytes.len() - bad_start) as u64);
    assert_eq!(damage.dropped_events, Some(u64::from(bad.events)));
    assert_eq!(damage.events_kept, u64::from(kept));
    assert_eq!(damage.chunks_kept, good.len() as u64);
    assert!(!damage.is_benign());
    damage.cause
}

/// The reason a single chunk of `bad` is rejected with.
fn malformed_reason(bad: &Records) -> &'static str {
    match cause_after(&[], bad) {
        DamageCause::Malformed { reason, .. } => reason,
        other => panic!("expected a malformed record, got {other:?}"),
    }
}

/// `records` as the only chunk of a finished trace: must read clean.
fn read_clean(records: &Records) -> Trace {
    let strings = count_defined(records);
    let bytes = file(&[records.chunk(), trailer(records.events.into(), 1, strings)]);
    let trace = read(&bytes);
    assert_eq!(trace.damage, None);
    assert_eq!(trace.events.len(), records.events as usize);
    trace
}

/// Strings a hand-built chunk defines (only `define*` emits tag 0x01 at record starts in
/// the chunks of these tests, so counting via a decode is simplest).
fn count_defined(records: &Records) -> u64 {
    let bytes = file(&[records.chunk()]);
    read_trace(&bytes).unwrap().strings.len() as u64
}

#[test]
fn hand_built_records_decode_to_the_events_they_say() {
    let records = Records::new()
        .define("a")
        .define("b")
        .set_cpu(3)
        .set_task(9)
        .marker(1)
        .lock_literal(0)
        .sleep();
    let trace = read_clean(&records);
    let e = &trace.events;
    assert_eq!(e[0].cpu, CpuId(3));
    assert_eq!(e[0].task, TaskId(9));
    assert_eq!(e[0].time, 1);
    assert_eq!(
        e[0].kind,
        EventKind::Marker {
            label: StrId(1),
            value: 42
        }
    );
    assert_eq!(
        e[1].kind,
        EventKind::LockAcquired {
            lock: LockRef {
                addr: 0x4000,
                class: StrId(0)
            },
            flavor: LockFlavor::Spin
        }
    );
    assert_eq!((e[2].kind, e[2].time), (EventKind::Sleep, 3));
    assert_eq!(trace.strings.get(StrId(1)), Some("b"));
}

#[test]
fn a_string_id_equal_to_the_table_size_is_undefined() {
    // Ids 0 and 1 exist: 1 is the last valid id, 2 (the table's size) is undefined.
    let defs = Records::new().define("a").define("b");
    read_clean(&defs.clone().marker(1).lock_literal(1));
    assert_eq!(
        malformed_reason(&defs.clone().marker(2)),
        "undefined string id"
    );
    assert_eq!(
        malformed_reason(&defs.clone().lock_literal(2)),
        "undefined string id"
    );
    // Nothing defined yet: even id 0 is undefined.
    assert_eq!(
        malformed_reason(&Records::new().marker(0)),
        "undefined string id"
    );
}

#[test]
fn strings_carry_over_chunks_and_a_rejected_chunk_defines_none() {
    let first = Records::new().define("a").marker(0);
    // The table has 1 string after the first chunk: id 0 is usable later, id 1 is not.
    let second_ok = Records::new().marker(0);
    let bytes = file(&[first.chunk(), second_ok.chunk(), trailer(2, 2, 1)]);
    let trace = read(&bytes);
    assert_eq!(trace.damage, None);
    assert_eq!(trace.events.len(), 2);

    let bad = Records::new().define("b").define("c").marker(3);
    assert_eq!(
        cause_after(std::slice::from_ref(&first), &bad),
        DamageCause::Malformed {
            offset_in_payload: 6,
            reason: "undefined string id"
        }
    );
    // The strings the rejected chunk defined are gone again.
    let bytes = file(&[first.chunk(), bad.chunk()]);
    assert_eq!(read(&bytes).strings.len(), 1);
}

#[test]
fn an_event_count_that_differs_from_the_frame_header_rejects_the_chunk() {
    let records = Records::new().sleep().sleep();
    for claimed in [1, 3, 0] {
        let bytes = file(&[records.chunk_claiming(claimed), trailer(2, 1, 0)]);
        let trace = read(&bytes);
        assert!(trace.events.is_empty(), "claimed {claimed}");
        let damage = trace.damage.unwrap();
        assert_eq!(
            damage.cause,
            DamageCause::Malformed {
                offset_in_payload: records.bytes.len(),
                reason: "event count differs from the frame header"
            }
        );
        assert_eq!(damage.dropped_events, Some(u64::from(claimed)));
    }
    // Non-event records do not count.
    read_clean(&Records::new().define("x").set_cpu(1).set_task(2).sleep());
}

#[test]
fn a_trailer_that_disagrees_with_the_chunks_is_a_mismatch_but_keeps_every_event() {
    let a = Records::new().define("a").marker(0).sleep();
    let b = Records::new().define("b").sleep();
    let chunks = [a.chunk(), b.chunk()];
    let body_len: usize = header().len() + chunks.iter().map(Vec::len).sum::<usize>();
    let with = |t: Vec<u8>| {
        let mut frames = chunks.to_vec();
        frames.push(t);
        read(&file(&frames))
    };
    // The true totals: 3 events, 2 chunks, 2 strings.
    let clean = with(trailer(3, 2, 2));
    assert_eq!(clean.damage, None);
    assert_eq!(
        clean.trailer.map(|t| (t.events, t.chunks, t.strings)),
        Some((3, 2, 2))
    );

    let mut extra = Vec::new();
    for n in [3, 2, 2, 0] {
        put_uleb(&mut extra, n);
    }
    let undecodable = frame(FRAME_TRAILER, &[0x80], 0);
    for bad in [
        trailer(2, 2, 2),
        trailer(4, 2, 2),
        trailer(3, 1, 2),
        trailer(3, 3, 2),
        trailer(3, 2, 1),
        trailer(3, 2, 3),
        frame(FRAME_TRAILER, &extra, 0),
        undecodable,
    ] {
        let trace = with(bad);
        assert_eq!(trace.events.len(), 3);
        assert_eq!(trace.trailer, None);
        let damage = trace.damage.unwrap();
        assert_eq!(damage.cause, DamageCause::TrailerMismatch);
        assert_eq!(damage.offset, body_len as u64);
        assert_eq!(damage.frame_index, 2);
        assert_eq!(damage.dropped_events, Some(0));
        assert_eq!((damage.events_kept, damage.chunks_kept), (3, 2));
        assert!(damage.is_benign());
    }
}

#[test]
fn a_cpu_number_at_or_above_the_limit_is_rejected() {
    let last = u64::from(MAX_CPUS) - 1;
    let trace = read_clean(&Records::new().set_cpu(last).sleep());
    assert_eq!(trace.events[0].cpu, CpuId(MAX_CPUS - 1));
    assert_eq!(
        malformed_reason(&Records::new().set_cpu(last + 1).sleep()),
        "CPU number out of range"
    );
    // A CPU named in a scheduler decision's body is a u16.
    let sched = |cpu| Records::new().event(SCHED, 0).uleb(cpu).uleb(100);
    let trace = read_clean(&sched(u64::from(u16::MAX)));
    assert!(matches!(
        trace.events[0].kind,
        EventKind::SchedDecision {
            cpu: CpuId(u16::MAX),
            slice: 100
        }
    ));
    assert_eq!(
        malformed_reason(&sched(u64::from(u16::MAX) + 1)),
        "CPU number out of range"
    );
}

#[test]
fn out_of_range_fields_are_rejected_and_the_largest_valid_ones_accepted() {
    let u32_max = u64::from(u32::MAX);
    let task = |t| Records::new().set_task(t).sleep();
    let intid = |i| Records::new().event(HARDIRQ_ENTER, 0).uleb(i);
    let alloc = |order, gfp| {
        Records::new()
            .event(PAGE_ALLOC, 0)
            .uleb(order)
            .uleb(gfp)
            .uleb(0)
    };
    let tlbi_other = |encoding| Records::new().event(TLBI, 6).uleb(encoding).uleb(0);
    let cases: [(Records, Records, &str); 5] = [
        (task(u32_max), task(u32_max + 1), "task id out of range"),
        (
            intid(u32_max),
            intid(u32_max + 1),
            "interrupt number out of range",
        ),
        (alloc(255, 0), alloc(256, 0), "page order out of range"),
        (
            alloc(0, u32_max),
            alloc(0, u32_max + 1),
            "gfp flags out of range",
        ),
        (
            tlbi_other(u64::from(u16::MAX)),
            tlbi_other(u64::from(u16::MAX) + 1),
            "TLBI encoding out of range",
        ),
    ];
    for (good, bad, reason) in cases {
        read_clean(&good);
        assert_eq!(malformed_reason(&bad), reason);
    }
}

#[test]
fn strings_too_long_or_not_utf8_are_rejected() {
    let longest = "x".repeat(MAX_STRING_LEN);
    let trace = read_clean(&Records::new().define(&longest).marker(0));
    assert_eq!(
        trace.strings.get(StrId(0)).map(str::len),
        Some(MAX_STRING_LEN)
    );
    assert_eq!(
        malformed_reason(&Records::new().define(&format!("{longest}x"))),
        "string too long"
    );
    assert_eq!(
        malformed_reason(&Records::new().define_bytes(b"\xff\xfe")),
        "string is not UTF-8"
    );
}

#[test]
fn invalid_tags_flags_and_enumerations_are_rejected() {
    let cases = [
        (Records::new().raw(&[0x00]), "invalid record tag"),
        (Records::new().raw(&[0x04]), "invalid record tag"),
        (Records::new().raw(&[0x0f]), "invalid record tag"),
        (Records::new().event(0x26, 0), "invalid record tag"),
        (Records::new().event(0x7f, 0), "invalid record tag"),
        // Lock ops 0-3 × flavors 0-4 only.
        (Records::new().event(0x45, 0), "invalid lock flavor"),
        (Records::new().event(0x60, 0), "invalid record tag"),
        // Kind bits on a kind that has none, and the unused lock bit.
        (Records::new().event(SLEEP, 1), "reserved flag bits set"),
        (
            Records::new().event(LOCK_ACQUIRED_SPIN, 8),
            "reserved flag bits set",
        ),
        // The trylock-result bit on a lock op that is not a trylock.
        (
            Records::new().event(LOCK_ACQUIRED_SPIN, 4),
            "reserved flag bits set",
        ),
        (
            Records::new().event(ASSERT_HELD, 4),
            "reserved flag bits set",
        ),
        (
            Records::new().event(IRQ_MASK, 3 << 2),
            "invalid IRQ mask cause",
        ),
        (Records::new().event(TLBI, 7).uleb(0), "invalid TLBI op"),
        // An MRU slot that holds no lock yet.
        (
            Records::new().event(LOCK_ACQUIRED_SPIN, 0),
            "lock slot is empty",
        ),
        (
            Records::new().lock_literal(0).event(LOCK_ACQUIRED_SPIN, 1),
            "lock slot is empty",
        ),
    ];
    let defined = Records::new().define("a");
    for (records, reason) in cases {
        let records = defined
            .clone()
            .raw(&records.bytes)
            .with_events(records.events);
        assert_eq!(malformed_reason(&records), reason, "{:02x?}", records.bytes);
    }
    // The valid neighbours of the cases above.
    read_clean(&Records::new().event(IRQ_MASK, 2 << 2 | 3));
    // A successful trylock (op 3, flavor 4) naming its lock by literal.
    read_clean(
        &defined
            .clone()
            .event(0x44 + 8 * 3, 4 | LITERAL_LOCK)
            .uleb(0)
            .uleb(0),
    );
    read_clean(&defined.clone().lock_literal(0).event(LOCK_ACQUIRED_SPIN, 0));
    read_clean(&Records::new().event(0x90, 0xf).uleb(2).raw(&[1, 2]));
}

/// A sized record of a kind this reader knows, with `body` as its body.
fn sized(tag: u8, kind_bits: u8, body: &[u8]) -> Records {
    Records::new()
        .event(tag, kind_bits)
        .uleb(body.len() as u64)
        .raw(body)
}

#[test]
fn tlb_model_records_with_invalid_fields_are_rejected() {
    const TLB_FILL: u8 = 0x80;
    const PT_PAGE: u8 = 0x81;
    const STALE_TLB_USE: u8 = 0x82;
    const TLB_INVALIDATE: u8 = 0x8e;
    // cpus 0b11, start 0, one page (4096), ASID 5 (stored + 1); then ASID 65537.
    read_clean(&sized(TLB_INVALIDATE, 0, &[3, 0, 0x80, 0x20, 6]));
    let invalidate_asid_too_big = [3, 0, 0x80, 0x20, 0x82, 0x80, 0x04];
    // va 0, pa 0, bits (level 3, write), asid 5, one descriptor at 8.
    let fill = [0, 0, 3 | 4, 5, 1, 8];
    read_clean(&sized(TLB_FILL, 0, &fill));
    read_clean(&sized(PT_PAGE, 0, &[8, 3, 0]));
    read_clean(&sized(STALE_TLB_USE, 0, &[0, 2, 1, 0x3f]));
    // Later fields of a newer minor after the known ones are skipped.
    read_clean(&sized(PT_PAGE, 0, &[8, 3, 0, 42]));
    let asid_too_big = [0, 0, 3, 0x80, 0x80, 0x04, 1, 8];
    let cases = [
        (sized(TLB_FILL, 1, &fill), "reserved flag bits set"),
        (
            sized(TLB_FILL, 0, &[0, 0, 4, 5, 1, 8]),
            "invalid TLB fill attributes",
        ),
        (
            sized(TLB_FILL, 0, &[0, 0, 0x23, 5, 1, 8]),
            "invalid TLB fill attributes",
        ),
        (sized(TLB_FILL, 0, &asid_too_big), "ASID out of range"),
        (
            sized(TLB_INVALIDATE, 0, &invalidate_asid_too_big),
            "ASID out of range",
        ),
        (
            sized(TLB_FILL, 0, &[0, 0, 3, 5, 0]),
            "table walk length out of range",
        ),
        (
            sized(TLB_FILL, 0, &[0, 0, 3, 5, 5, 1, 2, 3, 4, 5]),
            "table walk length out of range",
        ),
        // The body ends before its last descriptor.
        (
            sized(TLB_FILL, 0, &[0, 0, 3, 5, 2, 8]),
            "record runs past the chunk",
        ),
        (
            sized(PT_PAGE, 0, &[8, 4, 0]),
            "page-table level out of range",
        ),
        (
            sized(STALE_TLB_USE, 0, &[0, 3, 0, 0]),
            "invalid access kind",
        ),
        (
            sized(STALE_TLB_USE, 0, &[0, 0, 2, 0]),
            "invalid walk result",
        ),
        (
            sized(STALE_TLB_USE, 0, &[0, 0, 1, 0x80, 0x02]),
            "fault status out of range",
        ),
    ];
    for (records, reason) in cases {
        assert_eq!(malformed_reason(&records), reason, "{:02x?}", records.bytes);
    }
}

#[test]
fn a_stack_record_must_name_a_defined_string() {
    const STACK: u8 = 0x83;
    let trace = read_clean(&Records::new().define("4008e980 4008d78c").chain(sized(
        STACK,
        0,
        &[0],
    )));
    assert!(matches!(
        trace.events[0].kind,
        traces::EventKind::Stack { frames } if frames.0 == 0
    ));
    let cases = [
        (sized(STACK, 0, &[0]), "undefined string id"),
        (
            Records::new().define("1").chain(sized(STACK, 2, &[0])),
            "reserved flag bits set",
        ),
        (sized(STACK, 0, &[]), "record runs past the chunk"),
    ];
    for (records, reason) in cases {
        assert_eq!(malformed_reason(&records), reason, "{:02x?}", records.bytes);
    }
}

#[test]
fn records_running_past_the_chunk_or_past_64_bits_are_rejected() {
    let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    let cases = [
        (Records::new().raw(&[SET_CPU]), "record runs past the chunk"),
        (
            Records::new().raw(&[SET_CPU, 0x80]),
            "record runs past the chunk",
        ),
        (Records::new().raw(&[SLEEP]), "record runs past the chunk"),
        (
            Records::new().define("a").event(MARKER, 0).uleb(0),
            "record runs past the chunk",
        ),
        (
            Records::new().define("abc").raw(&[DEFINE_STRING, 5, b'x']),
            "record runs past the chunk",
        ),
        (
            Records::new().event(0x90, 0).uleb(3).raw(&[1, 2]),
            "record runs past the chunk",
        ),
        (
            Records::new().raw(&[SET_CPU]).raw(&overflow),
            "integer overflows 64 bits",
        ),
    ];
    for (records, reason) in cases {
        assert_eq!(malformed_reason(&records), reason, "{:02x?}", records.bytes);
    }
}

#[test]
fn a_time_that_overflows_is_rejected() {
    let at_max = Records::new()
        .event_with_delta(SLEEP, 0, u64::MAX - 1)
        .sleep();
    assert_eq!(read_clean(&at_max).events[1].time, u64::MAX);
    assert_eq!(malformed_reason(&at_max.sleep()), "time overflows");
}

#[test]
fn bad_frame_headers_truncation_and_crc_errors_stop_reading() {
    let good = Records::new().sleep();
    let bad = Records::new().sleep().sleep();
    let start = header().len() + good.chunk().len();

    // A payload length above the limit (the limit itself would only be truncated).
    let mut frames = vec![good.chunk(), bad.chunk()];
    frames[1][1..5].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    let damage = read(&file(&frames)).damage.unwrap();
    assert_eq!(
        damage.cause,
        DamageCause::BadFrameHeader {
            reason: "frame length too large"
        }
    );
    assert_eq!((damage.offset, damage.dropped_events), (start as u64, None));
    frames[1][1..5].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
    let damage = read(&file(&frames)).damage.unwrap();
    assert_eq!(damage.cause, DamageCause::Truncated);
    assert_eq!(damage.dropped_events, Some(2));

    // A flipped payload bit.
    let mut frames = vec![good.chunk(), bad.chunk()];
    *frames[1].last_mut().unwrap() ^= 1;
    let trace = read(&file(&frames));
    assert_eq!(trace.events.len(), 1);
    let damage = trace.damage.unwrap();
    assert_eq!(damage.cause, DamageCause::CrcMismatch);
    assert_eq!(damage.dropped_events, Some(2));

    // A frame header cut short.
    let mut bytes = file(&[good.chunk()]);
    bytes.extend_from_slice(&bad.chunk()[..5]);
    let damage = read(&bytes).damage.unwrap();
    assert_eq!(damage.cause, DamageCause::Truncated);
    assert_eq!((damage.dropped_bytes, damage.dropped_events), (5, None));

    // Whole chunks and no trailer: benign, nothing lost.
    let damage = read(&file(&[good.chunk()])).damage.unwrap();
    assert_eq!(damage.cause, DamageCause::MissingTrailer);
    assert_eq!((damage.events_kept, damage.chunks_kept), (1, 1));
    assert!(damage.is_benign());

    // A second trailer is bytes after the trailer.
    let damage = read(&file(&[good.chunk(), trailer(1, 1, 0), trailer(1, 1, 0)]))
        .damage
        .unwrap();
    assert_eq!(damage.cause, DamageCause::TrailingBytes);
    // Frame 0 is the chunk, 1 the trailer, 2 what follows it.
    assert_eq!(damage.frame_index, 2);
}

impl Records {
    /// These bytes, counting `events` event records (for bytes built elsewhere).
    fn with_events(mut self, events: u32) -> Self {
        self.events += events;
        self
    }
}

#[test]
fn a_stream_drops_every_byte_after_the_damage_however_many() {
    // Far more than the stream reader's 64 KiB drain buffer after a bad frame.
    let good = Records::new().sleep();
    let mut bad = good.chunk();
    *bad.last_mut().unwrap() ^= 1;
    let mut bytes = file(&[good.chunk(), bad]);
    let bad_start = header().len() + good.chunk().len();
    bytes.extend(std::iter::repeat_n(0x5a, 200_000));
    let damage = read(&bytes).damage.unwrap();
    assert_eq!(damage.cause, DamageCause::CrcMismatch);
    assert_eq!(damage.dropped_bytes, (bytes.len() - bad_start) as u64);
}

/// Hands out at most 7 bytes per call and is interrupted (EINTR) before every read.
struct Choppy<'a> {
    bytes: &'a [u8],
    interrupt: bool,
}

impl std::io::Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(7).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn an_interrupted_or_short_read_loses_nothing() {
    let records = Records::new().define("a").marker(0).sleep();
    let bytes = file(&[records.chunk(), trailer(2, 1, 1)]);
    let whole = read(&bytes);
    assert_eq!(whole.damage, None);
    let choppy = read_trace_from(Choppy {
        bytes: &bytes,
        interrupt: false,
    })
    .unwrap();
    assert_eq!(choppy, whole);
}

#[test]
fn a_header_cut_inside_its_body_says_how_long_it_needed_to_be() {
    let header = header();
    let cut = header.len() - 3;
    match read_trace(&header[..cut]) {
        Err(traces::OpenError::HeaderTruncated { len, needed }) => {
            assert_eq!((len, needed), (cut as u64, header.len() as u64));
        }
        other => panic!("expected a truncated header, got {other:?}"),
    }
}

#[test]
fn the_iterating_reader_exposes_the_trailer_and_strings_once_done() {
    let records = Records::new().define("a").marker(0);
    let bytes = file(&[records.chunk(), trailer(1, 1, 1)]);
    let mut reader = traces::TraceReader::from_reader(&bytes[..]).unwrap();
    assert_eq!(reader.by_ref().count(), 1);
    let trailer = reader.trailer().copied().expect("a trailer");
    assert_eq!((trailer.events, trailer.chunks, trailer.strings), (1, 1, 1));
    assert_eq!(reader.strings().get(StrId(0)), Some("a"));
    assert!(reader.damage().is_none());
}
