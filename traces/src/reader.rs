//! Reading a trace back: over a byte slice (no copies) or any `Read` (one chunk buffer).
//!
//! The reader hands out the events of every whole, CRC-checked, decodable chunk in file
//! order and stops at the first frame that is not; [`TraceReader::damage`] then says
//! what was dropped and why. Only an unusable header is an error.

use std::io::{self, Read};

use crate::codec::ChunkState;
use crate::error::{Damage, DamageCause, OpenError};
use crate::event::Event;
use crate::format::{FRAME_CHUNK, FRAME_HEADER_LEN, FRAME_TRAILER, HEADER_FIXED_LEN, MAX_PAYLOAD};
use crate::header::{parse_body, parse_fixed, Header};
use crate::strings::StringTable;
use crate::varint::ByteCursor;

/// Bytes pulled from a [`ByteSource`]: possibly fewer than asked for at the end of input.
pub struct Taken<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// Whether they are all that was asked for.
    pub complete: bool,
}

/// Where a reader gets its bytes. Implemented for slices and for any `Read`.
pub trait ByteSource {
    /// Consumes up to `len` bytes; `complete` is false if the input ended (or failed)
    /// first.
    fn take(&mut self, len: usize) -> Taken<'_>;
    /// Bytes consumed so far.
    fn position(&self) -> u64;
    /// Consumes the rest of the input and returns how many bytes that was.
    fn drain(&mut self) -> u64;
    /// The read error that ended the input early, if any.
    fn io_error(&self) -> Option<String>;
}

/// A [`ByteSource`] over bytes in memory.
pub struct SliceSource<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteSource for SliceSource<'a> {
    fn take(&mut self, len: usize) -> Taken<'_> {
        let end = self.pos.saturating_add(len).min(self.bytes.len());
        let bytes = &self.bytes[self.pos..end];
        self.pos = end;
        Taken {
            bytes,
            complete: bytes.len() == len,
        }
    }

    fn position(&self) -> u64 {
        self.pos as u64
    }

    fn drain(&mut self) -> u64 {
        let rest = self.bytes.len() - self.pos;
        self.pos = self.bytes.len();
        rest as u64
    }

    fn io_error(&self) -> Option<String> {
        None
    }
}

/// A [`ByteSource`] over a `Read`, reusing one buffer (wrap slow readers in a `BufReader`).
pub struct StreamSource<R> {
    reader: R,
    buf: Vec<u8>,
    pos: u64,
    error: Option<String>,
}

impl<R: Read> StreamSource<R> {
    fn fill(&mut self, len: usize) -> usize {
        self.buf.resize(len, 0);
        let mut filled = 0;
        while filled < len && self.error.is_none() {
            match self.reader.read(&mut self.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => self.error = Some(err.to_string()),
            }
        }
        self.pos += filled as u64;
        filled
    }
}

impl<R: Read> ByteSource for StreamSource<R> {
    fn take(&mut self, len: usize) -> Taken<'_> {
        let filled = self.fill(len);
        Taken {
            bytes: &self.buf[..filled],
            complete: filled == len,
        }
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn drain(&mut self) -> u64 {
        let before = self.pos;
        while self.error.is_none() && self.fill(64 << 10) > 0 {}
        self.pos - before
    }

    fn io_error(&self) -> Option<String> {
        self.error.clone()
    }
}

/// Totals from the trailer of a cleanly finished trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Events written.
    pub events: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Strings defined.
    pub strings: u64,
}

/// Iterates the events of a trace. Create with [`TraceReader::from_slice`] or
/// [`TraceReader::from_reader`].
pub struct TraceReader<S> {
    source: S,
    header: Header,
    strings: StringTable,
    chunk_events: Vec<Event>,
    next_in_chunk: usize,
    frame_index: u64,
    events_kept: u64,
    chunks_kept: u64,
    finished: bool,
    trailer: Option<Trailer>,
    damage: Option<Damage>,
}

impl<'a> TraceReader<SliceSource<'a>> {
    /// Opens a trace held in memory.
    pub fn from_slice(bytes: &'a [u8]) -> Result<Self, OpenError> {
        Self::open(SliceSource { bytes, pos: 0 })
    }
}

impl<R: Read> TraceReader<StreamSource<R>> {
    /// Opens a trace from a reader.
    pub fn from_reader(reader: R) -> Result<Self, OpenError> {
        Self::open(StreamSource {
            reader,
            buf: Vec::new(),
            pos: 0,
            error: None,
        })
    }
}

impl<S: ByteSource> TraceReader<S> {
    fn open(mut source: S) -> Result<Self, OpenError> {
        let fixed = {
            let taken = source.take(HEADER_FIXED_LEN);
            parse_fixed(taken.bytes)
        };
        let fixed = match (fixed, source.io_error()) {
            (Err(OpenError::HeaderTruncated { .. }), Some(message)) => {
                return Err(OpenError::Io(io::Error::other(message)))
            }
            (result, _) => result?,
        };
        let header = {
            let taken = source.take(fixed.body_len);
            if !taken.complete {
                let len = (HEADER_FIXED_LEN + taken.bytes.len()) as u64;
                let needed = (HEADER_FIXED_LEN + fixed.body_len) as u64;
                return Err(match source.io_error() {
                    Some(message) => OpenError::Io(io::Error::other(message)),
                    None => OpenError::HeaderTruncated { len, needed },
                });
            }
            parse_body(&fixed, taken.bytes)?
        };
        Ok(TraceReader {
            source,
            header,
            strings: StringTable::default(),
            chunk_events: Vec::new(),
            next_in_chunk: 0,
            frame_index: 0,
            events_kept: 0,
            chunks_kept: 0,
            finished: false,
            trailer: None,
            damage: None,
        })
    }

    /// The trace's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Strings defined so far (all of them once iteration has ended).
    pub fn strings(&self) -> &StringTable {
        &self.strings
    }

    /// Why reading stopped early, or what was odd at the end; meaningful once the
    /// iterator has returned `None`.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The trailer, if the trace was finished cleanly and read to the end.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Stops reading and records why; `frame_start` is where the unusable part begins.
    fn stop(&mut self, frame_start: u64, cause: DamageCause, dropped_events: Option<u64>) {
        let cause = match self.source.io_error() {
            Some(message) => DamageCause::Io { message },
            None => cause,
        };
        let consumed = self.source.position() - frame_start;
        let dropped_bytes = consumed + self.source.drain();
        self.damage = Some(Damage {
            cause,
            offset: frame_start,
            frame_index: self.frame_index,
            dropped_bytes,
            dropped_events,
            events_kept: self.events_kept,
            chunks_kept: self.chunks_kept,
        });
        self.finished = true;
    }

    /// Reads the next frame: fills `chunk_events`, or finishes.
    fn advance(&mut self) {
        let frame_start = self.source.position();
        let taken = self.source.take(FRAME_HEADER_LEN);
        let (head_len, complete) = (taken.bytes.len(), taken.complete);
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[..head_len].copy_from_slice(taken.bytes);
        if head_len == 0 && self.source.io_error().is_none() {
            self.finished = true;
            if self.trailer.is_none() {
                self.damage = Some(Damage {
                    cause: DamageCause::MissingTrailer,
                    offset: frame_start,
                    frame_index: self.frame_index,
                    dropped_bytes: 0,
                    dropped_events: Some(0),
                    events_kept: self.events_kept,
                    chunks_kept: self.chunks_kept,
                });
            }
            return;
        }
        if self.trailer.is_some() {
            return self.stop(frame_start, DamageCause::TrailingBytes, Some(0));
        }
        if !complete {
            return self.stop(frame_start, DamageCause::Truncated, None);
        }
        let kind = head[0];
        let payload_len = u32::from_le_bytes(head[1..5].try_into().unwrap());
        let event_count = u32::from_le_bytes(head[5..9].try_into().unwrap());
        let crc = u32::from_le_bytes(head[9..13].try_into().unwrap());
        let claimed = Some(u64::from(event_count));
        if kind != FRAME_CHUNK && kind != FRAME_TRAILER {
            let cause = DamageCause::BadFrameHeader {
                reason: "unknown frame kind",
            };
            return self.stop(frame_start, cause, None);
        }
        if payload_len > MAX_PAYLOAD {
            let cause = DamageCause::BadFrameHeader {
                reason: "frame length too large",
            };
            return self.stop(frame_start, cause, None);
        }
        let payload = self.source.take(payload_len as usize);
        if !payload.complete {
            return self.stop(frame_start, DamageCause::Truncated, claimed);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[..9]);
        hasher.update(payload.bytes);
        if hasher.finalize() != crc {
            return self.stop(frame_start, DamageCause::CrcMismatch, claimed);
        }
        if kind == FRAME_TRAILER {
            let trailer = parse_trailer(payload.bytes);
            return match trailer {
                Some(trailer)
                    if trailer.events == self.events_kept
                        && trailer.chunks == self.chunks_kept
                        && trailer.strings == self.strings.len() as u64 =>
                {
                    self.trailer = Some(trailer);
                    self.frame_index += 1;
                }
                _ => self.stop(frame_start, DamageCause::TrailerMismatch, Some(0)),
            };
        }
        let decoded = decode_chunk(
            payload.bytes,
            event_count,
            &mut self.strings,
            &mut self.chunk_events,
        );
        match decoded {
            Ok(()) => {
                self.next_in_chunk = 0;
                self.frame_index += 1;
                self.chunks_kept += 1;
                self.events_kept += u64::from(event_count);
            }
            Err((offset_in_payload, reason)) => {
                let cause = DamageCause::Malformed {
                    offset_in_payload,
                    reason,
                };
                self.stop(frame_start, cause, claimed)
            }
        }
    }
}

impl<S: ByteSource> Iterator for TraceReader<S> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(&event) = self.chunk_events.get(self.next_in_chunk) {
                self.next_in_chunk += 1;
                return Some(event);
            }
            if self.finished {
                return None;
            }
            self.chunk_events.clear();
            self.advance();
        }
    }
}

fn parse_trailer(payload: &[u8]) -> Option<Trailer> {
    let mut cursor = ByteCursor::new(payload);
    let trailer = Trailer {
        events: cursor.uleb().ok()?,
        chunks: cursor.uleb().ok()?,
        strings: cursor.uleb().ok()?,
    };
    cursor.is_empty().then_some(trailer)
}

/// Decodes a whole chunk into `events`; on failure leaves `strings` as it was, `events`
/// empty, and returns the failing record's payload offset and the reason.
fn decode_chunk(
    payload: &[u8],
    event_count: u32,
    strings: &mut StringTable,
    events: &mut Vec<Event>,
) -> Result<(), (usize, &'static str)> {
    let strings_before = strings.len();
    let mut state = ChunkState::new();
    let mut cursor = ByteCursor::new(payload);
    events.clear();
    let fail = |at, reason, strings: &mut StringTable, events: &mut Vec<Event>| {
        strings.truncate(strings_before);
        events.clear();
        Err((at, reason))
    };
    while !cursor.is_empty() {
        let at = cursor.position();
        match state.decode(&mut cursor, strings) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(malformed) => return fail(at, malformed.reason, strings, events),
        }
    }
    if events.len() as u64 != u64::from(event_count) {
        return fail(
            payload.len(),
            "event count differs from the frame header",
            strings,
            events,
        );
    }
    Ok(())
}

/// A whole trace read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// What was run.
    pub header: Header,
    /// Every string the events refer to.
    pub strings: StringTable,
    /// The events, in the order they were written.
    pub events: Vec<Event>,
    /// The totals, if the trace was finished cleanly.
    pub trailer: Option<Trailer>,
    /// What could not be read, if anything.
    pub damage: Option<Damage>,
}

/// Reads every recoverable event of the trace in `bytes`.
pub fn read_trace(bytes: &[u8]) -> Result<Trace, OpenError> {
    collect(TraceReader::from_slice(bytes)?)
}

/// Reads every recoverable event of the trace `reader` yields.
pub fn read_trace_from<R: Read>(reader: R) -> Result<Trace, OpenError> {
    collect(TraceReader::from_reader(reader)?)
}

fn collect<S: ByteSource>(mut reader: TraceReader<S>) -> Result<Trace, OpenError> {
    let events = reader.by_ref().collect();
    Ok(Trace {
        header: reader.header.clone(),
        strings: std::mem::take(&mut reader.strings),
        events,
        trailer: reader.trailer,
        damage: reader.damage,
    })
}
