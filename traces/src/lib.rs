//! Events recorded from the percpu-lab guest and the binary trace format that stores them.
//!
//! - [`event`]: the typed event model ([`Event`], [`EventKind`]).
//! - [`TraceWriter`]: header, then events packed into CRC-framed, delta-coded chunks.
//! - [`TraceReader`]: iterates the events of a file in memory or a `Read`, recovering
//!   every whole chunk of a truncated or damaged file ([`Damage`]).
//! - [`format`]: the byte layout, precise enough to write a reader in another language.
//!
//! This crate does not depend on the emulator: a trace file alone is enough to analyse.

mod codec;
pub mod error;
pub mod event;
pub mod format;
pub mod header;
pub mod reader;
pub mod strings;
pub mod varint;
pub mod writer;

pub use error::{Damage, DamageCause, OpenError, WriteError};
pub use event::{
    BarrierOption, CpuId, Event, EventDisplay, EventKind, IrqMaskCause, LockFlavor, LockRef, StrId,
    TaskId, TlbiOp,
};
pub use header::{ElfHash, Header, TraceConfig};
pub use reader::{read_trace, read_trace_from, Trace, TraceReader, Trailer};
pub use strings::StringTable;
pub use writer::{TraceWriter, WriteSummary, WriterOptions};
