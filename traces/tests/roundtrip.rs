//! Writing then reading gives back exactly the events, strings and config.

mod common;

use proptest::prelude::*;
use traces::{
    read_trace, read_trace_from, CpuId, Event, EventKind, TaskId, TraceWriter, WriteError,
    WriterOptions,
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
        let read_strings: Vec<&str> = trace.strings.iter().map(|(_, text)| text).collect();
        prop_assert_eq!(read_strings, strings.iter().map(String::as_str).collect::<Vec<_>>());

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
    let mut writer =
        TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    writer.write(&event(0, 100, EventKind::Isb)).unwrap();
    let backwards = writer.write(&event(0, 99, EventKind::Isb)).unwrap_err();
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
        label: traces::StrId(0),
        value: 1,
    };
    assert!(matches!(
        writer.write(&event(1, 5, undefined)),
        Err(WriteError::UndefinedString { .. })
    ));
    assert!(matches!(
        writer.write(&event(2000, 5, EventKind::Isb)),
        Err(WriteError::CpuOutOfRange { .. })
    ));
    assert!(matches!(
        writer.write(&event(1, 5, EventKind::Unknown { tag: 0x30 })),
        Err(WriteError::NotAnExtensionTag { tag: 0x30 })
    ));
    let bad_option = EventKind::Dsb {
        option: traces::BarrierOption(16),
    };
    assert!(matches!(
        writer.write(&event(1, 5, bad_option)),
        Err(WriteError::FieldOutOfRange { .. })
    ));
    // Refused events leave no trace: the rest still round-trips.
    writer.write(&event(1, 6, EventKind::Sleep)).unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    assert_eq!(summary.events, 2);
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(
        trace.events,
        vec![event(0, 100, EventKind::Isb), event(1, 6, EventKind::Sleep)]
    );
}

#[test]
fn strings_are_interned_once_and_long_ones_cut() {
    let mut writer =
        TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    let a = writer.intern("pcpu_lock").unwrap();
    let b = writer.intern("pcpu_alloc_mutex").unwrap();
    assert_eq!(writer.intern("pcpu_lock").unwrap(), a);
    assert_ne!(a, b);
    let long = "é".repeat(40_000); // 80 000 bytes: cut to ≤ 64 KiB on a char boundary
    let c = writer.intern(&long).unwrap();
    let (bytes, _) = writer.finish().unwrap();
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(trace.strings.get(a), Some("pcpu_lock"));
    assert_eq!(trace.strings.get(b), Some("pcpu_alloc_mutex"));
    let cut = trace.strings.get(c).unwrap();
    assert_eq!(cut.len(), 65_536);
    assert!(long.starts_with(cut));
}
