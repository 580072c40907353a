//! Damaged files: truncation, flipped bits, bad headers, missing or odd trailers.

mod common;

use traces::format::{FRAME_HEADER_LEN, HEADER_FIXED_LEN};
use traces::{
    read_trace, CpuId, DamageCause, Event, EventKind, LockFlavor, LockRef, OpenError, StrId,
    StringTable, TaskId, TraceReader, TraceWriter, WriterOptions,
};

/// A small trace of several chunks, with the byte offset where each chunk ends and the
/// number of events written up to there.
struct Sample {
    bytes: Vec<u8>,
    events: Vec<Event>,
    header_len: usize,
    /// (end offset of chunk k, events in chunks 0..=k)
    chunk_ends: Vec<(usize, usize)>,
}

fn sample() -> Sample {
    let mut writer =
        TraceWriter::new(Vec::new(), &common::config(), WriterOptions::default()).unwrap();
    let header_len = writer.bytes_written() as usize;
    let mut events = Vec::new();
    let mut chunk_ends = Vec::new();
    let mut strings = StringTable::new();
    for chunk in 0..4u64 {
        // A string first defined in each chunk, used by the chunk's events.
        let class = strings.intern(&format!("lock_{chunk}"));
        for i in 0..5u64 {
            let lock = LockRef {
                addr: 0x4010_0000 + chunk * 64,
                class,
            };
            let kind = match i % 3 {
                0 => EventKind::LockAcquired {
                    lock,
                    flavor: LockFlavor::SpinIrqSave,
                },
                1 => EventKind::PercpuAlloc {
                    size: 8 << i,
                    align: 8,
                    addr: 0x8000 + i * 16,
                },
                _ => EventKind::LockRelease {
                    lock,
                    flavor: LockFlavor::SpinIrqSave,
                },
            };
            let event = Event {
                time: chunk * 1000 + i * 10,
                cpu: CpuId((i % 2) as u16),
                task: TaskId(chunk as u32),
                pc: 0xffff_8000_1000_0000 + i * 4,
                caller: 0xffff_8000_1000_2000,
                kind,
            };
            writer.write(&event, &strings).unwrap();
            events.push(event);
        }
        writer.flush_chunk().unwrap();
        chunk_ends.push((writer.bytes_written() as usize, events.len()));
    }
    let (bytes, _) = writer.finish().unwrap();
    Sample {
        bytes,
        events,
        header_len,
        chunk_ends,
    }
}

#[test]
fn truncation_at_every_offset_keeps_exactly_the_whole_chunks_before_the_cut() {
    let sample = sample();
    for cut in 0..sample.bytes.len() {
        let bytes = &sample.bytes[..cut];
        if cut < sample.header_len {
            let err = read_trace(bytes).unwrap_err();
            assert!(
                matches!(err, OpenError::HeaderTruncated { len, .. } if len == cut as u64),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().starts_with("trace header truncated"));
            continue;
        }
        let trace = read_trace(bytes).unwrap();
        let whole = sample.chunk_ends.iter().rfind(|(end, _)| *end <= cut);
        let (kept_end, kept_events) = whole.copied().unwrap_or((sample.header_len, 0));
        assert_eq!(trace.events, sample.events[..kept_events], "cut {cut}");
        let damage = trace.damage.expect("a cut file is always reported");
        assert_eq!(damage.events_kept, kept_events as u64);
        if cut == kept_end {
            // Cut exactly between frames: nothing lost, only the trailer is missing.
            assert_eq!(damage.cause, DamageCause::MissingTrailer, "cut {cut}");
            assert!(damage.is_benign());
            assert!(damage.to_string().contains("no trailer"), "{damage}");
        } else {
            assert_eq!(damage.cause, DamageCause::Truncated, "cut {cut}");
            assert_eq!(damage.offset, kept_end as u64);
            assert_eq!(damage.dropped_bytes, (cut - kept_end) as u64);
            let claims_known = cut - kept_end >= FRAME_HEADER_LEN;
            assert_eq!(damage.dropped_events.is_some(), claims_known, "cut {cut}");
            assert!(damage.to_string().contains("truncated"), "{damage}");
        }
    }
}

#[test]
fn full_file_reads_clean() {
    let sample = sample();
    let trace = read_trace(&sample.bytes).unwrap();
    assert_eq!(trace.events, sample.events);
    assert!(trace.damage.is_none());
    let trailer = trace.trailer.unwrap();
    assert_eq!(
        (trailer.events, trailer.chunks, trailer.strings),
        (20, 4, 4)
    );
}

#[test]
fn a_flipped_bit_stops_recovery_at_that_chunk() {
    let sample = sample();
    // Flip one bit in each frame in turn (in its header and in its payload).
    let mut frame_start = sample.header_len;
    for (index, &(frame_end, _)) in sample.chunk_ends.iter().enumerate() {
        let events_before = if index == 0 {
            0
        } else {
            sample.chunk_ends[index - 1].1
        };
        for offset in [
            frame_start + 3,
            frame_start + 10,
            frame_start + FRAME_HEADER_LEN + 2,
            frame_end - 1,
        ] {
            for bit in [0, 5] {
                let mut bytes = sample.bytes.clone();
                bytes[offset] ^= 1 << bit;
                let trace = read_trace(&bytes).unwrap();
                assert_eq!(
                    trace.events,
                    sample.events[..events_before],
                    "offset {offset} bit {bit}"
                );
                let damage = trace.damage.unwrap();
                assert_eq!(damage.offset, frame_start as u64);
                assert_eq!(damage.frame_index, index as u64);
                assert!(
                    matches!(
                        damage.cause,
                        DamageCause::CrcMismatch
                            | DamageCause::Truncated
                            | DamageCause::BadFrameHeader { .. }
                    ),
                    "offset {offset}: {damage}"
                );
                assert_eq!(damage.dropped_bytes, (bytes.len() - frame_start) as u64);
            }
        }
        frame_start = frame_end;
    }
    // A bit flipped in a payload (not a length) is exactly a CRC mismatch.
    let mut bytes = sample.bytes.clone();
    let second_payload = sample.chunk_ends[0].0 + FRAME_HEADER_LEN + 4;
    bytes[second_payload] ^= 0x10;
    let damage = read_trace(&bytes).unwrap().damage.unwrap();
    assert_eq!(damage.cause, DamageCause::CrcMismatch);
    assert_eq!(damage.dropped_events, Some(5));
    assert_eq!(
        damage.to_string(),
        format!(
            "trace damaged at byte {} (frame 1): CRC mismatch; kept 5 events from 1 whole chunks, \
             dropped the last {} bytes (the damaged frame claims 5 events)",
            sample.chunk_ends[0].0,
            bytes.len() - sample.chunk_ends[0].0
        )
    );
}

#[test]
fn header_errors_are_typed_with_one_line_messages() {
    let sample = sample();
    let one_line = |err: OpenError| {
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.is_empty(), "{text:?}");
        (err, text)
    };

    let (err, text) =
        one_line(read_trace(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap_err());
    assert!(matches!(err, OpenError::BadMagic { .. }));
    assert_eq!(
        text,
        "not a percpu-lab trace (starts with 7f 45 4c 46 02 01 01 00)"
    );
    let (err, _) = one_line(read_trace(b"PK").unwrap_err());
    assert!(matches!(err, OpenError::BadMagic { .. }));

    let mut newer = sample.bytes.clone();
    newer[8] = 2;
    newer[10] = 0;
    let (err, text) = one_line(read_trace(&newer).unwrap_err());
    assert!(matches!(
        err,
        OpenError::UnsupportedVersion { major: 2, minor: 0 }
    ));
    assert_eq!(
        text,
        "unsupported trace format version 2.0 (this build reads 1.x)"
    );

    // A newer minor version is fine.
    let mut minor = sample.bytes.clone();
    minor[10] = 9;
    let trace = read_trace(&minor).unwrap();
    assert_eq!((trace.header.major, trace.header.minor), (1, 9));
    assert_eq!(trace.events, sample.events);

    let mut corrupt = sample.bytes.clone();
    corrupt[HEADER_FIXED_LEN + 40] ^= 1;
    let (err, text) = one_line(read_trace(&corrupt).unwrap_err());
    assert!(matches!(err, OpenError::HeaderCorrupt { .. }));
    assert_eq!(text, "corrupt trace header: CRC mismatch");

    let mut huge = sample.bytes.clone();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let (err, _) = one_line(read_trace(&huge).unwrap_err());
    assert!(matches!(err, OpenError::HeaderCorrupt { .. }));

    let (err, _) = one_line(read_trace(&[]).unwrap_err());
    assert!(matches!(err, OpenError::HeaderTruncated { len: 0, .. }));
}

#[test]
fn trailing_garbage_is_reported_but_keeps_every_event() {
    let sample = sample();
    let mut bytes = sample.bytes.clone();
    bytes.extend_from_slice(b"junk");
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(trace.events, sample.events);
    assert!(trace.trailer.is_some());
    let damage = trace.damage.unwrap();
    assert_eq!(damage.cause, DamageCause::TrailingBytes);
    assert_eq!(damage.dropped_bytes, 4);
    assert!(damage.is_benign());
}

#[test]
fn an_unknown_frame_kind_stops_reading() {
    let sample = sample();
    let mut bytes = sample.bytes.clone();
    let second = sample.chunk_ends[0].0;
    bytes[second] = b'Z';
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(trace.events.len(), 5);
    let damage = trace.damage.unwrap();
    assert_eq!(
        damage.cause,
        DamageCause::BadFrameHeader {
            reason: "unknown frame kind"
        }
    );
    assert_eq!(damage.dropped_events, None);
}

#[test]
fn the_stream_reader_recovers_like_the_slice_reader() {
    let sample = sample();
    let cut = sample.chunk_ends[2].0 + 20;
    let bytes = &sample.bytes[..cut];
    let from_slice = read_trace(bytes).unwrap();
    let mut reader = TraceReader::from_reader(bytes).unwrap();
    let events: Vec<Event> = reader.by_ref().collect();
    assert_eq!(events, from_slice.events);
    assert_eq!(reader.damage(), from_slice.damage.as_ref());
    assert_eq!(reader.strings().get(StrId(2)), Some("lock_2"));
    assert_eq!(
        reader.strings().get(StrId(3)),
        None,
        "the lost chunk's string is not kept"
    );
}

/// A file shared with the writer, like a file on disk the writer process had open.
#[derive(Clone, Default)]
struct SharedFile(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_that_dies_loses_only_the_chunk_being_filled() {
    let file = SharedFile::default();
    let strings = StringTable::new();
    let mut writer = TraceWriter::new(
        file.clone(),
        &common::config(),
        WriterOptions { chunk_bytes: 64 },
    )
    .unwrap();
    let events: Vec<Event> = (0..100u64)
        .map(|i| Event {
            time: i * 50,
            cpu: CpuId((i % 3) as u16),
            task: TaskId(1),
            pc: 0x1000 + i * 4,
            caller: 0x2000,
            kind: EventKind::HardIrqEnter { intid: i as u32 },
        })
        .collect();
    for event in &events {
        writer.write(event, &strings).unwrap();
    }
    let flushed = writer.events_written() as usize;
    assert!(
        flushed > 0 && flushed < events.len(),
        "some events still in the open chunk"
    );
    drop(writer); // killed: no finish(), no trailer

    let bytes = file.0.borrow().clone();
    let trace = read_trace(&bytes).unwrap();
    assert_eq!(trace.events, events[..flushed]);
    let damage = trace.damage.unwrap();
    assert_eq!(damage.cause, DamageCause::MissingTrailer);
    assert_eq!(damage.dropped_bytes, 0);
}

/// A reader that fails after `ok_bytes`.
struct FailingReader<'a> {
    bytes: &'a [u8],
    ok_bytes: usize,
}

impl std::io::Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ok_bytes == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok_bytes).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.ok_bytes -= n;
        Ok(n)
    }
}

#[test]
fn a_read_error_is_reported_as_damage_after_the_whole_chunks() {
    let sample = sample();
    let ok_bytes = sample.chunk_ends[1].0 + 5;
    let trace = traces::read_trace_from(FailingReader {
        bytes: &sample.bytes,
        ok_bytes,
    })
    .unwrap();
    assert_eq!(trace.events, sample.events[..sample.chunk_ends[1].1]);
    let damage = trace.damage.unwrap();
    assert_eq!(
        damage.cause,
        DamageCause::Io {
            message: "disk on fire".into()
        }
    );
    assert!(
        damage.to_string().contains("read error (disk on fire)"),
        "{damage}"
    );

    // Failing inside the header is an open error, not damage.
    let err = traces::read_trace_from(FailingReader {
        bytes: &sample.bytes,
        ok_bytes: 10,
    })
    .unwrap_err();
    assert!(matches!(err, OpenError::Io(_)), "{err}");
}
