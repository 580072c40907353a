//! Writing a trace: header, then events packed into CRC-framed chunks.

use std::io::Write;

use crate::codec::{ChunkState, EncodeRefusal};
use crate::error::WriteError;
use crate::event::{Event, StrId};
use crate::format::{
    tag, FRAME_CHUNK, FRAME_HEADER_LEN, FRAME_TRAILER, HEADER_FIXED_LEN, MAX_HEADER_BODY,
};
use crate::header::{encode_header, TraceConfig};
use crate::strings::StringTable;
use crate::varint::put_uleb;

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// A chunk is emitted once its payload reaches this many bytes (clamped to
    /// 64 B … 4 MiB). Smaller chunks lose less on a crash and cost 13 bytes each.
    pub chunk_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_bytes: 64 << 10,
        }
    }
}

/// Totals of a finished trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteSummary {
    /// Events written.
    pub events: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Strings defined.
    pub strings: u64,
    /// File size including header and trailer.
    pub bytes: u64,
}

/// Streams events into a trace.
///
/// Each chunk goes to `out` with one `write_all` followed by `flush` (so a plain `File`
/// needs no `BufWriter`), and a process that dies loses at most the chunk being filled.
/// The same calls in the same order always produce the same bytes. After an I/O error the
/// writer should be dropped.
pub struct TraceWriter<W: Write> {
    out: W,
    chunk_bytes: usize,
    payload: Vec<u8>,
    payload_events: u32,
    state: ChunkState,
    /// Strings `0..strings_defined` of the run's table are defined in the file.
    strings_defined: usize,
    totals: WriteSummary,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header for `config` and returns a writer for the events.
    pub fn new(
        mut out: W,
        config: &TraceConfig,
        options: WriterOptions,
    ) -> Result<Self, WriteError> {
        let header = encode_header(config);
        if header.len() - HEADER_FIXED_LEN > MAX_HEADER_BODY as usize {
            return Err(WriteError::FieldOutOfRange {
                field: "header config (over 1 MiB)",
            });
        }
        out.write_all(&header)?;
        out.flush()?;
        let chunk_bytes = options.chunk_bytes.clamp(64, 4 << 20);
        Ok(TraceWriter {
            out,
            chunk_bytes,
            payload: Vec::with_capacity(chunk_bytes + 256),
            payload_events: 0,
            state: ChunkState::new(),
            strings_defined: 0,
            totals: WriteSummary {
                bytes: header.len() as u64,
                ..WriteSummary::default()
            },
        })
    }

    /// Appends one event; emits the chunk when it is full.
    ///
    /// `strings` is the run's string table (the same one, only ever appended to, for the
    /// whole trace): any string the event uses that the file does not define yet is
    /// defined first, in this chunk.
    pub fn write(&mut self, event: &Event, strings: &StringTable) -> Result<(), WriteError> {
        if let Some(id) = event.kind.string_ref() {
            if id.0 as usize >= strings.len() {
                return Err(WriteError::UndefinedString { id });
            }
        }
        let mark = self.payload.len();
        let defined_before = self.strings_defined;
        if let Some(id) = event.kind.string_ref() {
            self.define_strings_through(id, strings);
        }
        if let Err(refusal) = self.state.encode(event, &mut self.payload) {
            // Leave no half-written definitions behind a refused event.
            self.payload.truncate(mark);
            self.strings_defined = defined_before;
            return Err(refusal_to_error(refusal, event));
        }
        self.payload_events += 1;
        if self.payload.len() >= self.chunk_bytes {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Defines, in order, every string up to and including `id` not yet in the file.
    fn define_strings_through(&mut self, id: StrId, strings: &StringTable) {
        while self.strings_defined <= id.0 as usize {
            let text = strings.get(StrId(self.strings_defined as u32)).unwrap();
            self.payload.push(tag::DEFINE_STRING);
            put_uleb(&mut self.payload, text.len() as u64);
            self.payload.extend_from_slice(text.as_bytes());
            self.strings_defined += 1;
        }
    }

    /// Emits the chunk being filled now (if it holds anything).
    pub fn flush_chunk(&mut self) -> Result<(), WriteError> {
        if self.payload.is_empty() {
            return Ok(());
        }
        self.emit_frame(FRAME_CHUNK, self.payload_events)?;
        self.totals.events += u64::from(self.payload_events);
        self.totals.chunks += 1;
        self.payload.clear();
        self.payload_events = 0;
        self.state = ChunkState::new();
        Ok(())
    }

    /// Bytes handed to the output so far (header and whole frames).
    pub fn bytes_written(&self) -> u64 {
        self.totals.bytes
    }

    /// Events in frames handed to the output so far.
    pub fn events_written(&self) -> u64 {
        self.totals.events
    }

    /// Emits the last chunk and the trailer; returns the output and the totals.
    pub fn finish(mut self) -> Result<(W, WriteSummary), WriteError> {
        self.flush_chunk()?;
        self.totals.strings = self.strings_defined as u64;
        put_uleb(&mut self.payload, self.totals.events);
        put_uleb(&mut self.payload, self.totals.chunks);
        put_uleb(&mut self.payload, self.totals.strings);
        self.emit_frame(FRAME_TRAILER, 0)?;
        Ok((self.out, self.totals))
    }

    fn emit_frame(&mut self, kind: u8, event_count: u32) -> Result<(), WriteError> {
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + self.payload.len());
        frame.push(kind);
        frame.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&event_count.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&frame);
        crc.update(&self.payload);
        frame.extend_from_slice(&crc.finalize().to_le_bytes());
        frame.extend_from_slice(&self.payload);
        self.out.write_all(&frame)?;
        self.out.flush()?;
        self.totals.bytes += frame.len() as u64;
        Ok(())
    }
}

fn refusal_to_error(refusal: EncodeRefusal, event: &Event) -> WriteError {
    match refusal {
        EncodeRefusal::TimeWentBackwards { previous } => WriteError::TimeWentBackwards {
            cpu: event.cpu,
            previous,
            time: event.time,
        },
        EncodeRefusal::CpuOutOfRange => WriteError::CpuOutOfRange { cpu: event.cpu },
        EncodeRefusal::NotAnExtensionTag { tag } => WriteError::NotAnExtensionTag { tag },
        EncodeRefusal::FieldOutOfRange { field } => WriteError::FieldOutOfRange { field },
    }
}
