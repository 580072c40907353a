//! Events recorded from the percpu-lab guest and the binary trace format that stores them.
//!
//! - [`event`]: the typed event model ([`Event`], [`EventKind`]).
//! - [`TraceWriter`]: header, then events packed into CRC-framed, delta-coded chunks.
//! - [`TraceReader`]: iterates the events of a file in memory or a `Read`, recovering
//!   every whole chunk of a truncated or damaged file ([`Damage`]).
//! - [`ending`]: how a recorded run ended (the two events a finished trace ends with).
//! - [`maintenance`]: TLB maintenance and barriers by meaning, the same for every ISA.
//! - [`format`](mod@format): the byte layout, precise enough to write a reader in another language.
//!
//! This crate does not depend on the emulator: a trace file alone is enough to analyse.
//!
//! ```
//! use traces::{
//!     read_trace, CpuId, Event, EventKind, LockFlavor, LockRef, StringTable, TaskId,
//!     TraceConfig, TraceWriter, WriterOptions,
//! };
//!
//! // The probes intern lock classes into one table for the run…
//! let mut strings = StringTable::new();
//! let pcpu_lock = LockRef { addr: 0xffff_8000_1080_1040, class: strings.intern("pcpu_lock") };
//! let config = TraceConfig { cpus: 4, variant: "fine".into(), ..TraceConfig::default() };
//!
//! // …and hand each event to the writer with that table.
//! let mut writer = TraceWriter::new(Vec::new(), &config, WriterOptions::default())?;
//! let acquired = Event {
//!     time: 1200,
//!     cpu: CpuId(1),
//!     task: TaskId(7),
//!     pc: 0xffff_8000_1001_2340,
//!     caller: 0xffff_8000_1003_1010,
//!     kind: EventKind::LockAcquired { lock: pcpu_lock, flavor: LockFlavor::SpinIrqSave },
//! };
//! writer.write(&acquired, &strings)?;
//! let (bytes, _summary) = writer.finish()?;
//!
//! // Reading back gives the same events and the same string ids.
//! let trace = read_trace(&bytes)?;
//! assert_eq!(trace.events, [acquired]);
//! assert_eq!(trace.strings.get(pcpu_lock.class), Some("pcpu_lock"));
//! assert!(trace.damage.is_none()); // `Some` for a truncated or corrupt file: a warning
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Pure functions of events and bytes: nothing here needs unsafe code.
#![forbid(unsafe_code)]
// The crate is the seam between the recorder, the trace file and the analyses:
// everything it exports says what it is.
#![deny(missing_docs)]

pub mod aarch64;
pub mod analysis;
mod codec;
pub mod ending;
pub mod error;
pub mod event;
pub mod finding;
pub mod format;
pub mod fx;
pub mod header;
pub mod lockdep;
pub mod maintenance;
pub mod reader;
pub mod riscv64;
pub mod strings;
pub mod tlb;
pub mod varint;
pub mod writer;

pub use analysis::Analysis;
pub use ending::{ConsoleDigest, Ending, RunTail, TailTracker};
pub use error::{Damage, DamageCause, OpenError, WriteError};
pub use event::{
    BarrierOption, CpuId, Event, EventDisplay, EventKind, IrqMaskCause, LockFlavor, LockRef, Perms,
    StrId, TaskId, TlbFill, TlbiOp, WalkResult,
};
pub use finding::{Finding, FindingKind, FindingLock, FindingSite, FindingTask, Findings};
pub use header::{ElfHash, Header, TraceConfig};
pub use lockdep::Validator;
pub use reader::{read_trace, read_trace_from, Trace, TraceReader, Trailer};
pub use strings::StringTable;
pub use writer::{TraceWriter, WriteSummary, WriterOptions};
