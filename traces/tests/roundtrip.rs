//! Writing then reading gives back exactly the events, strings and config.

mod common;

use proptest::prelude::*;
use traces::{
    read_trace, read_trace_from, BarrierOption, CpuId, Event, EventKind, LockFlavor, LockRef,
    StrId, StringTable, TaskId, TraceWriter, WriteError, WriterOptions,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn events_round_trip((strings, events) in common::trace_contents(300), chunk_bytes in 1usize..3000) {
        let (bytes, summary) = common::write_trace(&strings, &events, chunk_bytes);
        prop_assert_eq!(summary.events, events.len() as u64);
        prop_assert_eq!(summary.bytes, bytes.len() as u64);

        let trace = read_trace(&bytes).unwrap();
        prop_assert_eq!(&trace.header.config, &common::config());
        prop_assert!(trace.damage.is_none(), "{:?}", trace.damage);
        prop_assert_eq!(trace.trailer.map(|t| t.chunks), Some(summary.chunks));
        prop_assert_eq!(&trace.events, &events);
        // Strings are defined up to the highest id used, in id order.
        let used = events.iter().filter_map(|e| e.kind.string_ref()).map(|id| id.0 as usize + 1).max();
        let read_strings: Vec<&str> = trace.strings.iter().map(|(_, text)| text).collect();
        let expected: Vec<&str> = strings[..used.unwrap_or(0)].iter().map(String::as_str).collect();
        prop_assert_eq!(read_strings, expected);

        // The streaming reader sees the same thing, even fed a few bytes at a time.
        let streamed = read_trace_from(TrickleReader { bytes: &bytes, step: 7 }).unwrap();
        prop_assert_eq!(streamed, trace);

        // Same input, same bytes.
        prop_assert_eq!(common::write_trace(&strings, &events, chunk_bytes).0, bytes);
    }
}

/// A `Read` that hands out at most `step` bytes per call.
struct TrickleReader<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl std::io::Read for TrickleReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn event(cpu: u16, time: u64, kind: EventKind) -> Event {
    Event {
        time,
        cpu: CpuId(cpu),
        task: TaskId(1),
        pc: 0x1000,
        caller: 0x2000,
        kind,
    }
}

#[test]
fn writer_refuses_invalid_events_and_stays_usable() {
    let mut strings = StringTable::new();
    let mut writer =
        TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    writer
        .write(&event(0, 100, EventKind::Isb), &strings)
        .unwrap();
    let backwards = writer
        .write(&event(0, 99, EventKind::Isb), &strings)
        .unwrap_err();
    assert!(matches!(
        backwards,
        WriteError::TimeWentBackwards {
            previous: 100,
            time: 99,
            ..
        }
    ));
    assert_eq!(
        backwards.to_string(),
        "event time went backwards on cpu0: 99 after 100"
    );
    let undefined = EventKind::Marker {
        label: StrId(0),
        value: 1,
    };
    assert!(matches!(
        writer.write(&event(1, 5, undefined), &strings),
        Err(WriteError::UndefinedString { .. })
    ));
    let label = strings.intern("phase");
    let refused = [
        (
            event(2000, 5, EventKind::Marker { label, value: 1 }),
            "cpu2000 out of range",
        ),
        (
            event(1, 5, EventKind::Unknown { tag: 0x30 }),
            "0x30 is not in the sized range",
        ),
        (
            event(1, 5, EventKind::Unknown { tag: 0x80 }),
            "0x80 is not in the sized range 0x80..=0xff or names a kind this crate knows",
        ),
        (
            event(
                1,
                5,
                EventKind::Dsb {
                    option: BarrierOption(16),
                },
            ),
            "barrier option out of range",
        ),
    ];
    for (bad, message) in refused {
        let err = writer.write(&bad, &strings).unwrap_err();
        assert!(err.to_string().contains(message), "{err}");
    }
    // Refused events leave nothing behind (not even the string one of them defined):
    // the rest still round-trips.
    writer
        .write(&event(1, 6, EventKind::Sleep), &strings)
        .unwrap();
    writer
        .write(
            &event(1, 7, EventKind::Marker { label, value: 9 }),
            &strings,
        )
        .unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    assert_eq!((summary.events, summary.strings), (3, 1));
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(
        trace.events,
        vec![
            event(0, 100, EventKind::Isb),
            event(1, 6, EventKind::Sleep),
            event(1, 7, EventKind::Marker { label, value: 9 })
        ]
    );
    assert_eq!(trace.strings, strings);
}

#[test]
fn strings_are_defined_in_the_chunk_of_their_first_use() {
    let mut strings = StringTable::new();
    let lock = LockRef {
        addr: 0x10,
        class: strings.intern("pcpu_lock"),
    };
    let unused = strings.intern("never used");
    let mutex = LockRef {
        addr: 0x20,
        class: strings.intern("pcpu_alloc_mutex"),
    };
    let mut writer =
        TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    let flavor = LockFlavor::Spin;
    writer
        .write(
            &event(0, 1, EventKind::LockAcquired { lock, flavor }),
            &strings,
        )
        .unwrap();
    writer.flush_chunk().unwrap();
    let after_first_chunk = writer.bytes_written() as usize;
    writer
        .write(
            &event(
                0,
                2,
                EventKind::LockAcquired {
                    lock: mutex,
                    flavor,
                },
            ),
            &strings,
        )
        .unwrap();
    let (bytes, _) = writer.finish().unwrap();

    let first = read_trace(&bytes[..after_first_chunk]).unwrap();
    assert_eq!(first.strings.len(), 1, "only the string used so far");
    let whole = read_trace(&bytes).unwrap();
    assert_eq!(
        whole.strings.get(unused),
        Some("never used"),
        "defined to keep ids dense"
    );
    assert_eq!(whole.strings.lookup("pcpu_alloc_mutex"), Some(mutex.class));
    assert_eq!(
        whole.events[1].display(&whole.strings).to_string(),
        "t=2 cpu0 task1 pc=0x1000 caller=0x2000 lock-acquired pcpu_alloc_mutex@0x20 (spin)"
    );
}
