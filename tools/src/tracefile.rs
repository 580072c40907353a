//! Trace files on the CLI side: the header config of a run, streaming a recorded run
//! into a [`TraceWriter`], and opening a trace for `replay`/`export` (a damaged file
//! is recovered with a warning; an unusable one is one line and exit 2).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::rc::Rc;

use clap::ValueEnum;
use emu::{EventSink, KernelImage, Machine, RecordOptions, RunEnd, RunOutcome};
use traces::{
    CpuId, Damage, ElfHash, Ending, Event, RunTail, StringTable, TailTracker, TraceConfig,
    TraceReader, TraceWriter, WriteSummary, WriterOptions,
};

use crate::args::RunArgs;
use crate::atomic_file::{AtomicFile, Commit};
use crate::{interrupt, BadInput};

/// The `extra` header key for `--max-insns` (replay passes every extra key back to
/// `run` as `--KEY VALUE`).
pub const MAX_INSNS_KEY: &str = "max-insns";
/// The header key of the `--symbols` file's SHA-256 (replayed as the hidden
/// `--symbols-sha256`).
pub const SYMBOLS_SHA256_KEY: &str = "symbols-sha256";

/// The header config of the run `args` describes, on `kernel`.
pub fn trace_config(args: &RunArgs, kernel: &KernelImage) -> Result<TraceConfig, BadInput> {
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map(|v| v.get_name().to_string()).unwrap_or_default()
    };
    let mut extra = BTreeMap::new();
    extra.insert(MAX_INSNS_KEY.to_string(), args.max_insns.to_string());
    // Every other `run` flag that changes what the machine does (replay passes each
    // extra key back as `--KEY VALUE`).
    extra.insert("mmu".to_string(), name(args.mmu().to_possible_value()));
    for (key, value) in args.guest_flags().into_iter().chain(args.sched_flags()) {
        extra.insert(key.to_string(), value);
    }
    // The header hashes the kernel file; a bare Image's symbols are named by path,
    // so their contents are hashed too (replay refuses other symbols).
    if let Some(symbols) = &args.symbols {
        extra.insert(
            SYMBOLS_SHA256_KEY.to_string(),
            crate::kernel::symbols_digest(symbols)?,
        );
    }
    Ok(TraceConfig {
        guest_elf: ElfHash::of(kernel.file_bytes()),
        cpus: args.cpus as u32,
        variant: name(args.variant.to_possible_value()),
        scenario: args.scenario.clone(),
        seed: args.seed,
        scheduler: name(args.sched.to_possible_value()),
        quantum: args.quantum,
        extra,
    })
}

/// The `percpu-lab run` arguments that repeat the recorded run.
pub fn run_args_of(config: &TraceConfig) -> Result<RunArgs, BadInput> {
    let mut argv: Vec<String> = vec!["run".into()];
    let mut flag = |key: &str, value: String| {
        argv.push(format!("--{key}"));
        argv.push(value);
    };
    flag("cpus", config.cpus.to_string());
    flag("variant", config.variant.clone());
    flag("scenario", config.scenario.clone());
    flag("seed", config.seed.to_string());
    flag("sched", config.scheduler.clone());
    flag("quantum", config.quantum.to_string());
    for (key, value) in &config.extra {
        flag(key, value.clone());
    }
    parse_run_args(&argv).map_err(|BadInput(e)| {
        BadInput(format!(
            "the trace's run configuration is not one this build can run: {e}"
        ))
    })
}

/// `percpu-lab run` arguments from an argument vector (`argv[0]` is ignored).
pub fn parse_run_args<S: AsRef<str>>(argv: &[S]) -> Result<RunArgs, BadInput> {
    #[derive(clap::Parser)]
    struct Replayed {
        #[command(flatten)]
        run: RunArgs,
    }
    <Replayed as clap::Parser>::try_parse_from(argv.iter().map(AsRef::as_ref))
        .map(|r| r.run)
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("");
            BadInput(first.trim_start_matches("error: ").to_string())
        })
}

/// A trace being written from a machine's events.
pub struct Recording<W: Write> {
    state: Rc<RefCell<WriterState<W>>>,
}

struct WriterState<W: Write> {
    writer: Option<TraceWriter<W>>,
    error: Option<String>,
    /// The run's string table as far as the machine has handed it over (the tail's
    /// labels are added to it at the end).
    strings: StringTable,
    tail: TailTracker,
}

impl<W: Write + Commit + 'static> Recording<W> {
    /// Writes the header to `out` and has `machine` stream its events into it.
    pub fn start(machine: &mut Machine, out: W, config: &TraceConfig) -> Result<Self, BadInput> {
        Self::start_with(machine, out, config, RecordOptions::default(), None)
    }

    /// As [`Recording::start`], and hands each slice's events to `tee` too
    /// (before writing them).
    pub fn start_with(
        machine: &mut Machine,
        out: W,
        config: &TraceConfig,
        options: RecordOptions,
        mut tee: Option<EventSink>,
    ) -> Result<Self, BadInput> {
        let writer = TraceWriter::new(out, config, WriterOptions::default())
            .map_err(|e| BadInput(format!("cannot write the trace: {e}")))?;
        let state = Rc::new(RefCell::new(WriterState {
            writer: Some(writer),
            error: None,
            strings: StringTable::new(),
            tail: TailTracker::default(),
        }));
        let sink_state = state.clone();
        machine.record(
            options,
            Box::new(move |events: &[Event], strings: &StringTable| {
                if let Some(tee) = tee.as_mut() {
                    tee(events, strings);
                }
                let mut guard = sink_state.borrow_mut();
                let st = &mut *guard;
                st.tail.events(events);
                // Only ever appended to: copy the new strings, in order.
                for (id, text) in strings.iter().skip(st.strings.len()) {
                    let copied = st.strings.intern(text);
                    debug_assert_eq!(copied, id, "the run's strings are unique");
                }
                if st.error.is_some() {
                    return;
                }
                let Some(writer) = st.writer.as_mut() else {
                    return;
                };
                for event in events {
                    if let Err(e) = writer.write(event, strings) {
                        st.error = Some(e.to_string());
                        return;
                    }
                }
            }),
        )?;
        Ok(Self { state })
    }

    /// Takes note of a finished console line (the trace stores a digest of them).
    pub fn console_line(&self, cpu: usize, text: &str) {
        self.state.borrow_mut().tail.console_line(cpu, text);
    }

    /// Ends the trace, whatever way the run ended: how it ended ([`RunTail`]), the
    /// last chunk and the trailer,
    /// then commits the file (until then it is not visible under its name).
    pub fn finish(self, outcome: &RunOutcome) -> Result<(W, WriteSummary), BadInput> {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let mut writer = st.writer.take().expect("finished once");
        let tail = tail_of(&st.tail, outcome, None);
        let finished = tail
            .events(&mut st.strings)
            .iter()
            .try_for_each(|event| writer.write(event, &st.strings))
            .and_then(|()| writer.finish());
        if let Some(e) = st.error.take() {
            return Err(BadInput(format!("cannot write the trace: {e}")));
        }
        let (mut out, summary) =
            finished.map_err(|e| BadInput(format!("cannot write the trace: {e}")))?;
        out.commit()
            .map_err(|e| BadInput(format!("cannot write the trace: {e}")))?;
        Ok((out, summary))
    }
}

/// How a run that ended with `end` is recorded.
pub fn ending_of(end: &RunEnd) -> Ending {
    match end {
        RunEnd::PoweredOff { status, .. } => Ending::PowerOff { status: *status },
        RunEnd::Reset { status, .. } => Ending::Reset { status: *status },
        RunEnd::Fault { .. } => Ending::Fault,
        RunEnd::Watchdog { limit } => Ending::Watchdog { limit: *limit },
        RunEnd::Hang => Ending::Hang,
        end if interrupt::ended(end) => Ending::Interrupted,
        RunEnd::Stopped { reason } => Ending::Stopped {
            reason: reason.clone(),
        },
    }
}

/// The tail of the run `outcome` describes, whose events and console `tracker`
/// followed; `ending` instead of the outcome's own end if given.
pub fn tail_of(tracker: &TailTracker, outcome: &RunOutcome, ending: Option<Ending>) -> RunTail {
    let (cpu, pc) = match outcome.end {
        RunEnd::PoweredOff { cpu, .. } | RunEnd::Reset { cpu, .. } => (cpu, 0),
        RunEnd::Fault { cpu, pc, .. } => (cpu, pc),
        _ => (0, 0),
    };
    let ending = ending.unwrap_or_else(|| ending_of(&outcome.end));
    tracker.tail(ending, CpuId(cpu as u16), pc, outcome.total_insns)
}

/// A run that did not get to `finish` (the host panicked, e.g. on a closed stdout)
/// still writes what was recorded up to its last slice: the open chunk is written,
/// the trailer is not (readers then know the run was cut short). The CLI's trace
/// files are [`AtomicFile`]s, which are never committed here: the partial trace is
/// removed rather than left looking like a finished one.
impl<W: Write> Drop for Recording<W> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if let Some(mut writer) = st.writer.take() {
                let _ = writer.flush_chunk();
            }
        }
    }
}

/// Creates the trace file (before boot, so a bad path costs nothing); it appears
/// under `path` only when [`Recording::finish`] commits it.
pub fn create(path: &Path) -> Result<AtomicFile, BadInput> {
    AtomicFile::create(path)
}

pub type FileReader = TraceReader<traces::reader::StreamSource<BufReader<File>>>;

/// Opens a trace for reading.
pub fn open(path: &Path) -> Result<FileReader, BadInput> {
    crate::input_file::require_regular(path)?;
    let file =
        File::open(path).map_err(|e| BadInput(format!("cannot open {}: {e}", path.display())))?;
    TraceReader::from_reader(BufReader::new(file))
        .map_err(|e| BadInput(format!("{}: {e}", path.display())))
}

/// The warning for a trace read only in part (nothing for a clean one).
pub fn warn_damage(path: &Path, damage: Option<&Damage>) {
    if let Some(damage) = damage {
        eprintln!(
            "percpu-lab: warning: {}: {damage}; using the {} events before it",
            path.display(),
            damage.events_kept
        );
    }
}
