//! `percpu-lab replay FILE`: re-executes the recorded run from the trace header's
//! configuration and compares the events, one by one, with the recorded ones.
//!
//! The machine is deterministic, so running the same configuration again is the
//! replay; the recorded host decisions (each slice, each injected IRQ) are events
//! too, so a different schedule shows up as a divergence like any other.
//!
//! A replay ends where the recording did: a run that ended by itself (power-off, fault,
//! watchdog, hang) must reach the same end on its own; a run the host ended (deadlock
//! stop, signal) and a cut trace end after the slice in which their last event came,
//! so the replay asks the machine to stop after that slice. The trace's tail (console
//! digest and end, [`traces::ending`]) is compared as its last two events.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use clap::Args;
use emu::{KernelImage, Machine, RunOutcome, StopRequest};
use traces::{ElfHash, Event, RunTail, StrId, StringTable, TailTracker};

use crate::tracefile::{self, FileReader};
use crate::{interrupt, kernel, BadInput, Verdict};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace to replay (from `percpu-lab run --trace`).
    pub file: PathBuf,
    /// Guest kernel ELF the trace was recorded with (default: the built-in guest).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

/// Where the replay first differs from the recording (`None`: the end of that side).
struct Divergence {
    index: u64,
    expected: Option<(Event, String)>,
    got: Option<(Event, String)>,
    /// What the difference means, when the two lines do not say it.
    note: Option<&'static str>,
}

/// The recorded run: its events ahead of the replay, with its tail (how it ended)
/// held back, as the machine does not produce those two events.
struct Recorded {
    reader: FileReader,
    ahead: VecDeque<Event>,
    exhausted: bool,
    /// The tail and the two events that stored it.
    tail: Option<(RunTail, [Event; RunTail::EVENTS])>,
}

impl Recorded {
    /// Reads far enough ahead to tell the tail from the machine's events.
    fn fill(&mut self) {
        while !self.exhausted && self.ahead.len() <= RunTail::EVENTS {
            match self.reader.next() {
                Some(event) => self.ahead.push_back(event),
                None => self.exhausted = true,
            }
        }
        if self.exhausted && self.tail.is_none() && self.ahead.len() == RunTail::EVENTS {
            let events = [self.ahead[0], self.ahead[1]];
            if let Some(tail) = RunTail::parse(&events, self.reader.strings()) {
                self.tail = Some((tail, events));
                self.ahead.clear();
            }
        }
    }

    /// The recorded machine's next event (`None`: they are used up).
    fn next(&mut self) -> Option<Event> {
        self.fill();
        self.ahead.pop_front()
    }

    fn used_up(&mut self) -> bool {
        self.fill();
        self.ahead.is_empty()
    }

    /// Whether the trace ends early, damaged, with no tail (once used up).
    fn cut(&self) -> bool {
        self.tail.is_none() && self.reader.damage().is_some()
    }

    /// Whether the replay has to stop by itself where the recorded events are used
    /// up (once they are): the host ended the recorded run, or the trace does not
    /// say how it ended (cut, or written by format 1.0).
    fn stops_when_used_up(&self) -> bool {
        match &self.tail {
            Some((tail, _)) => tail.ending.host_stopped(),
            None => self.cut() || self.reader.header().minor == 0,
        }
    }
}

/// Why the replay asked the machine to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The recording ends here (and its run was ended by the host, or cut).
    UsedUp,
    Diverged,
    Interrupted,
}

struct Compare {
    recorded: Recorded,
    /// Recorded events compared so far (the index of the next one).
    index: u64,
    /// Per string id: its text was found equal in both tables.
    strings_checked: Vec<bool>,
    divergence: Option<Divergence>,
    /// The replay went past the end of a cut trace (the rest is not compared).
    past_cut: bool,
    /// Follows the replayed run, for its tail.
    tracker: TailTracker,
    stop: StopRequest,
    stopped: Option<Stop>,
}

fn describe(e: &Event, table: &StringTable) -> (Event, String) {
    (*e, e.display(table).to_string())
}

impl Compare {
    /// The events of one replayed slice.
    fn slice(&mut self, events: &[Event], strings: &StringTable) {
        self.tracker.events(events);
        for event in events {
            self.check(event, strings);
        }
        if self.stopped.is_some() {
            return;
        }
        // The machine stops after this slice: the same slice boundary as the recording.
        let stop = if self.divergence.is_some() {
            Stop::Diverged
        } else if self.recorded.used_up() && self.recorded.stops_when_used_up() {
            Stop::UsedUp
        } else if interrupt::requested() {
            Stop::Interrupted
        } else {
            return;
        };
        self.stopped = Some(stop);
        self.stop.stop(format!("replay: {stop:?}"));
    }

    fn check(&mut self, got: &Event, strings: &StringTable) {
        if self.divergence.is_some() || self.past_cut {
            return;
        }
        let index = self.index;
        let Some(expected) = self.recorded.next() else {
            if self.recorded.cut() {
                self.past_cut = true;
            } else {
                self.divergence = Some(Divergence {
                    index,
                    expected: None,
                    got: Some(describe(got, strings)),
                    note: None,
                });
            }
            return;
        };
        self.index += 1;
        let recorded_strings = self.recorded.reader.strings();
        let same = expected == *got
            && expected.kind.string_ref().is_none_or(|StrId(id)| {
                let id = id as usize;
                if self.strings_checked.get(id) == Some(&true) {
                    return true;
                }
                let equal = recorded_strings.get(StrId(id as u32)) == strings.get(StrId(id as u32));
                if equal {
                    if self.strings_checked.len() <= id {
                        self.strings_checked.resize(id + 1, false);
                    }
                    self.strings_checked[id] = true;
                }
                equal
            });
        if !same {
            self.divergence = Some(Divergence {
                index,
                expected: Some(describe(&expected, recorded_strings)),
                got: Some(describe(got, strings)),
                note: None,
            });
        }
    }

    /// After the run: what the recording holds beyond the replay, and its tail.
    fn finish(&mut self, outcome: &RunOutcome) {
        if self.divergence.is_some() || self.stopped == Some(Stop::Interrupted) {
            return;
        }
        let index = self.index;
        if let Some(expected) = self.recorded.next() {
            // The replayed run ended before the recorded one did.
            self.divergence = Some(Divergence {
                index,
                expected: Some(describe(&expected, self.recorded.reader.strings())),
                got: None,
                note: None,
            });
            return;
        }
        let Some((tail, events)) = &self.recorded.tail else {
            return;
        };
        // Where the replay stopped by itself, the end is the recorded one; the rest
        // (console, time, place) is still the replay's own.
        let ending = (self.stopped == Some(Stop::UsedUp)).then(|| tail.ending.clone());
        let ours = tracefile::tail_of(&self.tracker, outcome, ending);
        if ours == *tail {
            self.index += RunTail::EVENTS as u64;
            return;
        }
        let mut table = StringTable::new();
        let got = ours.events(&mut table);
        let console = ours.console != tail.console;
        let at = usize::from(!console);
        self.divergence = Some(Divergence {
            index: index + at as u64,
            expected: Some(describe(&events[at], self.recorded.reader.strings())),
            got: Some(describe(&got[at], &table)),
            note: Some(if console {
                "the guest console printed other text"
            } else {
                "the run ended another way"
            }),
        });
    }
}

fn check_guest(
    args: &ReplayArgs,
    kernel: &KernelImage,
    recorded: &ElfHash,
) -> Result<(), BadInput> {
    let ours = ElfHash::of(kernel.file_bytes());
    if ours == *recorded {
        return Ok(());
    }
    let which = match &args.kernel {
        Some(path) => format!("{}", path.display()),
        None => "the built-in guest".to_string(),
    };
    Err(BadInput(format!(
        "{} was recorded with another guest kernel (ELF sha256 {}; {which} has {}): pass that ELF with --kernel",
        args.file.display(),
        recorded.to_hex(),
        ours.to_hex()
    )))
}

pub fn replay(args: &ReplayArgs) -> Result<Verdict, BadInput> {
    let reader = tracefile::open(&args.file)?;
    let header = reader.header().config.clone();
    let mut run_args = tracefile::run_args_of(&header)?;
    kernel::check_symbols_digest(&run_args)?;
    let kernel = kernel::load_for(
        args.kernel.as_deref(),
        run_args.symbols.as_deref(),
        run_args.arch,
    )?;
    check_guest(args, &kernel, &header.guest_elf)?;
    run_args.kernel = args.kernel.clone();
    if !kernel.is_boot_protocol_image() {
        kernel::check_scenario(&kernel, &run_args.scenario)?;
    }

    let mut machine = Machine::new(run_args.machine_config()?, &kernel)?;
    let compare = Rc::new(RefCell::new(Compare {
        recorded: Recorded {
            reader,
            ahead: VecDeque::new(),
            exhausted: false,
            tail: None,
        },
        index: 0,
        strings_checked: Vec::new(),
        divergence: None,
        past_cut: false,
        tracker: TailTracker::default(),
        stop: machine.stop_request(),
        stopped: None,
    }));
    let sink = compare.clone();
    machine.record(
        run_args.record_options(),
        Box::new(move |events: &[Event], strings: &StringTable| {
            sink.borrow_mut().slice(events, strings);
        }),
    )?;
    let outcome = machine.run(&mut |cpu, line| {
        compare.borrow_mut().tracker.console_line(cpu, line);
    });
    drop(machine);
    let mut compare = Rc::try_unwrap(compare)
        .ok()
        .expect("the machine is gone")
        .into_inner();
    compare.finish(&outcome);
    // Read to the end so that damage anywhere is reported.
    let recorded = &mut compare.recorded;
    for _ in recorded.reader.by_ref() {}
    tracefile::warn_damage(&args.file, recorded.reader.damage());

    let file = args.file.display();
    let Some(d) = compare.divergence else {
        if compare.stopped == Some(Stop::Interrupted) {
            println!(
                "replay of {file}: interrupted after {} events, identical so far",
                compare.index
            );
            return Ok(Verdict::Interrupted);
        }
        let damaged = if recorded.reader.damage().is_some() {
            " (as far as the damaged trace goes)"
        } else {
            ""
        };
        let ended = match &recorded.tail {
            Some((tail, _)) => tail.ending.to_string(),
            None if recorded.cut() => {
                eprintln!(
                    "percpu-lab: note: {file} was cut before the end of its run: the replay \
                     stopped after the slice of its last whole chunk"
                );
                "where the trace was cut".to_string()
            }
            None if compare.stopped == Some(Stop::UsedUp) => {
                "not recorded (format 1.0 trace); the replay stopped where it ends".to_string()
            }
            None => format!(
                "{} (the trace does not record its end)",
                tracefile::ending_of(&outcome.end)
            ),
        };
        // A Linux kernel has no scenario: the workload is the kernel itself.
        let workload = if kernel.is_boot_protocol_image() {
            "kernel"
        } else {
            header.scenario.as_str()
        };
        println!(
            "replay of {file}: identical, {} events{damaged}, ended: {ended} ({workload} {} cpus, seed {})",
            compare.index, header.cpus, header.seed
        );
        return Ok(Verdict::Clean);
    };
    let at = d.expected.as_ref().or(d.got.as_ref()).map(|(e, _)| *e);
    let place = match at {
        Some(e) => {
            let symbol = kernel
                .symbolize(e.pc)
                .map(|s| format!(" <{s}>"))
                .unwrap_or_default();
            let caller = match (e.caller, kernel.symbolize_return(e.caller)) {
                (0, _) => String::new(),
                (ret, Some(name)) => format!(", called from {ret:#x} <{name}>"),
                (ret, None) => format!(", called from {ret:#x}"),
            };
            format!("{} pc {:#x}{symbol}{caller}", e.cpu, e.pc)
        }
        None => String::new(),
    };
    println!("replay of {file}: diverges at event #{}: {place}", d.index);
    let recorded_end = match &recorded.tail {
        Some((tail, _)) => format!("end of the trace (the run ended: {})", tail.ending),
        None => "end of the trace".to_string(),
    };
    let replayed_end = format!("end of the run ({})", tracefile::ending_of(&outcome.end));
    let text = |side: Option<(Event, String)>, end: String| side.map_or(end, |(_, text)| text);
    println!("  expected: {}", text(d.expected, recorded_end));
    println!("  got:      {}", text(d.got, replayed_end));
    if let Some(note) = d.note {
        println!("  ({note})");
    }
    Ok(Verdict::Findings)
}
