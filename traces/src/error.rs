//! Errors and recovery warnings.

use std::{fmt, io};

use crate::event::{CpuId, StrId};

/// A trace that cannot be opened at all (the header is unusable). One-line `Display`.
#[derive(Debug)]
pub enum OpenError {
    /// The file could not be read.
    Io(io::Error),
    /// The file does not start with the trace magic.
    BadMagic {
        /// The file's first bytes.
        found: Vec<u8>,
    },
    /// A format major version this reader does not know.
    UnsupportedVersion {
        /// The file's major version.
        major: u16,
        /// The file's minor version.
        minor: u16,
    },
    /// The file ends inside the header.
    HeaderTruncated {
        /// The file's length.
        len: u64,
        /// The length the header needs.
        needed: u64,
    },
    /// The header's length or CRC is wrong, or its body does not parse.
    HeaderCorrupt {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(err) => write!(f, "cannot read trace: {err}"),
            OpenError::BadMagic { found } => {
                write!(f, "not a percpu-lab trace (starts with")?;
                for byte in found {
                    write!(f, " {byte:02x}")?;
                }
                write!(f, ")")
            }
            OpenError::UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported trace format version {major}.{minor} (this build reads {}.x)",
                crate::format::VERSION_MAJOR
            ),
            OpenError::HeaderTruncated { len, needed } => write!(
                f,
                "trace header truncated: file has {len} bytes, header needs {needed}"
            ),
            OpenError::HeaderCorrupt { reason } => write!(f, "corrupt trace header: {reason}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(err: io::Error) -> Self {
        OpenError::Io(err)
    }
}

/// An event the writer refuses, or an I/O failure while writing.
#[derive(Debug)]
pub enum WriteError {
    /// The output could not be written.
    Io(io::Error),
    /// The event's time is before the previous event of the same CPU.
    TimeWentBackwards {
        /// The CPU.
        cpu: CpuId,
        /// Its previous event's time.
        previous: u64,
        /// The refused event's time.
        time: u64,
    },
    /// The event names a string id that was never interned.
    UndefinedString {
        /// The id.
        id: StrId,
    },
    /// CPU number at or above [`crate::format::MAX_CPUS`].
    CpuOutOfRange {
        /// The CPU.
        cpu: CpuId,
    },
    /// `EventKind::Unknown` with a tag outside the sized range, or one of a sized
    /// kind this crate knows (its body could not be written).
    NotAnExtensionTag {
        /// The tag.
        tag: u8,
    },
    /// A barrier option or TLBI encoding that does not fit its field.
    FieldOutOfRange {
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Io(err) => write!(f, "cannot write trace: {err}"),
            WriteError::TimeWentBackwards {
                cpu,
                previous,
                time,
            } => write!(
                f,
                "event time went backwards on {cpu}: {time} after {previous}"
            ),
            WriteError::UndefinedString { id } => {
                write!(f, "event uses string id {} that was never interned", id.0)
            }
            WriteError::CpuOutOfRange { cpu } => write!(
                f,
                "{cpu} out of range (a trace holds at most {} CPUs)",
                crate::format::MAX_CPUS
            ),
            WriteError::NotAnExtensionTag { tag } => {
                write!(
                    f,
                    "unknown event tag {tag:#04x} is not in the sized range 0x80..=0xff \
                     or names a kind this crate knows"
                )
            }
            WriteError::FieldOutOfRange { field } => write!(f, "event field {field} out of range"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for WriteError {
    fn from(err: io::Error) -> Self {
        WriteError::Io(err)
    }
}

/// Why reading stopped early or what was odd at the end of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageCause {
    /// The file ends inside a frame.
    Truncated,
    /// A frame's CRC does not match its bytes.
    CrcMismatch,
    /// A frame header with an impossible kind or length.
    BadFrameHeader {
        /// What is impossible about it.
        reason: &'static str,
    },
    /// A chunk whose CRC is right but whose records do not decode (a writer bug or a
    /// newer major version's record).
    Malformed {
        /// Where in the chunk's payload decoding failed.
        offset_in_payload: usize,
        /// What did not decode.
        reason: &'static str,
    },
    /// The file ends after whole chunks but without the trailer (writer killed?).
    MissingTrailer,
    /// Bytes after the trailer.
    TrailingBytes,
    /// The trailer's totals disagree with the chunks read.
    TrailerMismatch,
    /// The underlying reader failed.
    Io {
        /// The reader's error.
        message: String,
    },
}

/// What a reader could not use, reported once it stops. Every event before `offset` was
/// delivered; nothing at or after it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// What was wrong.
    pub cause: DamageCause,
    /// File offset of the first frame not used.
    pub offset: u64,
    /// Index of that frame (0 = first frame after the header).
    pub frame_index: u64,
    /// Bytes from `offset` to the end of the input.
    pub dropped_bytes: u64,
    /// Events the damaged frame's header claims (`None` if its header was unreadable).
    /// Frames after it are not examined.
    pub dropped_events: Option<u64>,
    /// Events delivered before the damage.
    pub events_kept: u64,
    /// Whole chunks delivered before the damage.
    pub chunks_kept: u64,
}

impl Damage {
    /// `true` when no event was lost (only the trailer is missing or odd).
    pub fn is_benign(&self) -> bool {
        matches!(
            self.cause,
            DamageCause::MissingTrailer | DamageCause::TrailingBytes | DamageCause::TrailerMismatch
        ) && self.dropped_events.unwrap_or(0) == 0
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = format!(
            "{} events from {} whole chunks",
            self.events_kept, self.chunks_kept
        );
        let damaged = |f: &mut fmt::Formatter<'_>, what: &str| {
            write!(
                f,
                "trace damaged at byte {} (frame {}): {what}; kept {kept}, dropped the last {} bytes",
                self.offset, self.frame_index, self.dropped_bytes
            )?;
            match self.dropped_events {
                Some(n) => write!(f, " (the damaged frame claims {n} events)"),
                None => write!(f, " (event count unknown)"),
            }
        };
        match &self.cause {
            DamageCause::MissingTrailer => write!(
                f,
                "trace has no trailer (the writer did not finish: crash or kill?); kept all {kept}"
            ),
            DamageCause::TrailingBytes => write!(
                f,
                "ignored {} unexpected bytes after the trailer at byte {}; kept all {kept}",
                self.dropped_bytes, self.offset
            ),
            DamageCause::TrailerMismatch => write!(
                f,
                "trailer at byte {} disagrees with the chunks read; kept all {kept}",
                self.offset
            ),
            DamageCause::Truncated => damaged(f, "file truncated inside a frame"),
            DamageCause::CrcMismatch => damaged(f, "CRC mismatch"),
            DamageCause::BadFrameHeader { reason } => {
                damaged(f, &format!("bad frame header ({reason})"))
            }
            DamageCause::Malformed {
                offset_in_payload,
                reason,
            } => damaged(
                f,
                &format!("undecodable record at payload byte {offset_in_payload} ({reason})"),
            ),
            DamageCause::Io { message } => damaged(f, &format!("read error ({message})")),
        }
    }
}
