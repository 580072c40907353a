//! `percpu-lab replay FILE`: re-executes the recorded run from the trace header's
//! configuration and compares the events, one by one, with the recorded ones.
//!
//! The machine is deterministic, so running the same configuration again is the
//! replay; the recorded host decisions (each slice, each injected IRQ) are events
//! too, so a different schedule shows up as a divergence like any other.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use clap::Args;
use emu::{KernelImage, Machine, RecordOptions};
use traces::{ElfHash, Event, StrId, StringTable};

use crate::tracefile::{self, FileReader};
use crate::{kernel, BadInput, Verdict};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace to replay (from `percpu-lab run --trace`).
    pub file: PathBuf,
    /// Guest kernel ELF the trace was recorded with (default: the built-in guest).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

/// Where the replay first differs from the recording.
struct Divergence {
    index: u64,
    expected: Option<(Event, String)>,
    got: Option<(Event, String)>,
}

struct Compare {
    reader: FileReader,
    /// Recorded events compared so far (the index of the next one).
    index: u64,
    /// Per string id: its text was found equal in both tables.
    strings_checked: Vec<bool>,
    divergence: Option<Divergence>,
}

impl Compare {
    fn check(&mut self, got: &Event, strings: &StringTable) {
        if self.divergence.is_some() {
            return;
        }
        let index = self.index;
        let describe = |e: &Event, table: &StringTable| (*e, e.display(table).to_string());
        let Some(expected) = self.reader.next() else {
            // A damaged trace is compared as far as it could be read.
            if self.reader.damage().is_none() {
                self.divergence = Some(Divergence {
                    index,
                    expected: None,
                    got: Some(describe(got, strings)),
                });
            }
            return;
        };
        self.index += 1;
        let same = expected == *got
            && expected.kind.string_ref().is_none_or(|StrId(id)| {
                let id = id as usize;
                if self.strings_checked.get(id) == Some(&true) {
                    return true;
                }
                let equal =
                    self.reader.strings().get(StrId(id as u32)) == strings.get(StrId(id as u32));
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
                expected: Some(describe(&expected, self.reader.strings())),
                got: Some(describe(got, strings)),
            });
        }
    }
}

fn check_guest(
    args: &ReplayArgs,
    kernel: &KernelImage,
    recorded: &ElfHash,
) -> Result<(), BadInput> {
    let ours = ElfHash::of(kernel.elf_bytes());
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
    let kernel = kernel::load(args.kernel.as_deref())?;
    check_guest(args, &kernel, &header.guest_elf)?;
    let mut run_args = tracefile::run_args_of(&header)?;
    run_args.kernel = args.kernel.clone();
    kernel::check_scenario(&kernel, &run_args.scenario)?;

    let mut machine = Machine::new(run_args.machine_config(), &kernel)?;
    let compare = Rc::new(RefCell::new(Compare {
        reader,
        index: 0,
        strings_checked: Vec::new(),
        divergence: None,
    }));
    let sink = compare.clone();
    machine.record(
        RecordOptions::default(),
        Box::new(move |events: &[Event], strings: &StringTable| {
            let mut compare = sink.borrow_mut();
            for event in events {
                compare.check(event, strings);
            }
        }),
    )?;
    machine.run(&mut |_, _| {});
    drop(machine);
    let mut compare = Rc::try_unwrap(compare)
        .ok()
        .expect("the machine is gone")
        .into_inner();
    // Recorded events the replay never reached.
    if compare.divergence.is_none() && compare.reader.damage().is_none() {
        if let Some(expected) = compare.reader.next() {
            let text = expected.display(compare.reader.strings()).to_string();
            compare.divergence = Some(Divergence {
                index: compare.index,
                expected: Some((expected, text)),
                got: None,
            });
        }
    }
    // Read to the end so that damage anywhere is reported.
    for _ in compare.reader.by_ref() {}
    tracefile::warn_damage(&args.file, compare.reader.damage());

    match compare.divergence {
        None => {
            let damaged = if compare.reader.damage().is_some() {
                " (as far as the damaged trace goes)"
            } else {
                ""
            };
            println!(
                "replay of {}: identical, {} events{damaged} ({} {} cpus, seed {})",
                args.file.display(),
                compare.index,
                header.scenario,
                header.cpus,
                header.seed
            );
            Ok(Verdict::Clean)
        }
        Some(d) => {
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
            println!(
                "replay of {}: diverges at event #{}: {place}",
                args.file.display(),
                d.index
            );
            let text = |side: Option<(Event, String)>, missing: &str| {
                side.map_or_else(|| missing.to_string(), |(_, text)| text)
            };
            println!("  expected: {}", text(d.expected, "end of the trace"));
            println!("  got:      {}", text(d.got, "end of the run"));
            Ok(Verdict::Findings)
        }
    }
}
