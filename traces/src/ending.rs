//! How a recorded run ended: the two marker events a finished trace ends with
//! (format 1.1, see [`crate::format`]).
//!
//! A replay re-runs the recorded configuration and must stop where the recording
//! stopped. Some runs end by themselves (power-off, guest fault, watchdog, hang) and a
//! replay reaches the same end on its own; others were ended by the host (a deadlock the
//! lock validator found, a signal), and only the trace can say so. The writer of a run
//! therefore appends, after the machine's last event:
//!
//! 1. a marker [`CONSOLE_LABEL`] whose value is a digest of the guest console output
//!    ([`ConsoleDigest`]), so that a replay compares what the guest printed too;
//! 2. a marker `end:NAME` whose value is a detail of the end ([`Ending`]).
//!
//! Both carry the same time (the run's final instruction count, or the last event's
//! time if that is later), CPU and task (the CPU the end is about, CPU 0 otherwise, and
//! its running task) and pc (a fault's pc, else 0).

use std::fmt;

use crate::event::{CpuId, Event, EventKind, TaskId};
use crate::strings::StringTable;

/// Label of the console digest marker.
pub const CONSOLE_LABEL: &str = "console-digest";
/// Prefix of the end marker's label.
const END_PREFIX: &str = "end:";
/// Name prefix of [`Ending::Stopped`] (the reason follows).
const STOPPED_PREFIX: &str = "stopped: ";

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// PSCI SYSTEM_OFF with this status.
    PowerOff {
        /// The status the guest passed.
        status: u64,
    },
    /// PSCI SYSTEM_RESET with this status.
    Reset {
        /// The status the guest passed.
        status: u64,
    },
    /// Something the guest could not take (the event's CPU and pc say where).
    Fault,
    /// The instruction budget ran out.
    Watchdog {
        /// The budget, in instructions.
        limit: u64,
    },
    /// No CPU could run and nothing would wake one.
    Hang,
    /// An analysis of the events had the host stop the run (e.g. at a deadlock).
    Stopped {
        /// What the analysis found.
        reason: String,
    },
    /// SIGINT or SIGTERM.
    Interrupted,
}

impl Ending {
    /// Whether the host ended the run: a re-run would go on past this point, so a
    /// replay has to stop there itself.
    pub fn host_stopped(&self) -> bool {
        matches!(self, Ending::Stopped { .. } | Ending::Interrupted)
    }

    fn name(&self) -> String {
        match self {
            Ending::PowerOff { .. } => "power-off".into(),
            Ending::Reset { .. } => "reset".into(),
            Ending::Fault => "fault".into(),
            Ending::Watchdog { .. } => "watchdog".into(),
            Ending::Hang => "hang".into(),
            Ending::Stopped { reason } => format!("{STOPPED_PREFIX}{reason}"),
            Ending::Interrupted => "interrupted".into(),
        }
    }

    fn value(&self) -> u64 {
        match self {
            Ending::PowerOff { status } | Ending::Reset { status } => *status,
            Ending::Watchdog { limit } => *limit,
            _ => 0,
        }
    }

    fn parse(name: &str, value: u64) -> Option<Self> {
        let ending = match name {
            "power-off" => Ending::PowerOff { status: value },
            "reset" => Ending::Reset { status: value },
            "watchdog" => Ending::Watchdog { limit: value },
            "fault" => Ending::Fault,
            "hang" => Ending::Hang,
            "interrupted" => Ending::Interrupted,
            _ => Ending::Stopped {
                reason: name.strip_prefix(STOPPED_PREFIX)?.to_string(),
            },
        };
        // Kinds without a detail store 0; anything else is not one of ours.
        (ending.value() == value).then_some(ending)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::PowerOff { status: 0 } => write!(f, "power-off"),
            Ending::PowerOff { status } => write!(f, "power-off with status {status}"),
            Ending::Reset { status } => write!(f, "reset (status {status})"),
            Ending::Fault => write!(f, "guest fault"),
            Ending::Watchdog { limit } => write!(f, "watchdog ({limit} instructions)"),
            Ending::Hang => write!(f, "hang"),
            Ending::Stopped { reason } => write!(f, "host stop ({reason})"),
            Ending::Interrupted => write!(f, "interrupted (SIGINT/SIGTERM)"),
        }
    }
}

/// A 64-bit FNV-1a digest of console lines, each taken as `cpuN: TEXT\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleDigest(pub u64);

impl Default for ConsoleDigest {
    fn default() -> Self {
        ConsoleDigest(0xcbf2_9ce4_8422_2325)
    }
}

impl ConsoleDigest {
    /// Adds one finished line that `cpu` printed.
    pub fn line(&mut self, cpu: usize, text: &str) {
        let prefix = format!("cpu{cpu}: ");
        for &byte in prefix.as_bytes().iter().chain(text.as_bytes()).chain(b"\n") {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The end of a recorded run, as its last two events store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTail {
    /// How the run ended.
    pub ending: Ending,
    /// The digest of the guest's console output.
    pub console: ConsoleDigest,
    /// The virtual time of the end.
    pub time: u64,
    /// The CPU the end came from (for a fault, the faulting one).
    pub cpu: CpuId,
    /// The task running there.
    pub task: TaskId,
    /// Its PC (for a fault, the faulting instruction).
    pub pc: u64,
}

impl RunTail {
    /// How many events the tail takes.
    pub const EVENTS: usize = 2;

    /// The console marker and the end marker, their labels interned into `strings`.
    pub fn events(&self, strings: &mut StringTable) -> [Event; Self::EVENTS] {
        let marker = |label, value| Event {
            time: self.time,
            cpu: self.cpu,
            task: self.task,
            pc: self.pc,
            caller: 0,
            kind: EventKind::Marker { label, value },
        };
        let end_label = strings.intern(&format!("{END_PREFIX}{}", self.ending.name()));
        [
            marker(strings.intern(CONSOLE_LABEL), self.console.0),
            marker(end_label, self.ending.value()),
        ]
    }

    /// The tail stored in `events` (a trace's last two), if they are one.
    pub fn parse(events: &[Event], strings: &StringTable) -> Option<Self> {
        let [console, end] = events else {
            return None;
        };
        let marker = |e: &Event| match e.kind {
            EventKind::Marker { label, value } => Some((strings.get(label)?, value)),
            _ => None,
        };
        let (CONSOLE_LABEL, digest) = marker(console)? else {
            return None;
        };
        let (end_label, value) = marker(end)?;
        let ending = Ending::parse(end_label.strip_prefix(END_PREFIX)?, value)?;
        let place = |e: &Event| (e.time, e.cpu, e.task, e.pc, e.caller);
        (place(console) == place(end) && console.caller == 0).then_some(RunTail {
            ending,
            console: ConsoleDigest(digest),
            time: end.time,
            cpu: end.cpu,
            task: end.task,
            pc: end.pc,
        })
    }

    /// Splits a whole trace's events into the machine's events and the tail, if any.
    pub fn split<'a>(events: &'a [Event], strings: &StringTable) -> (&'a [Event], Option<Self>) {
        let at = events.len().saturating_sub(Self::EVENTS);
        match Self::parse(&events[at..], strings) {
            Some(tail) => (&events[..at], Some(tail)),
            None => (events, None),
        }
    }
}

/// Follows a run's events and console output, to build its [`RunTail`] when it ends
/// (the writer of a run and a replay of it use the same one, so both agree).
#[derive(Debug, Clone, Default)]
pub struct TailTracker {
    last_time: u64,
    /// Per CPU, the task running after its last event.
    tasks: Vec<TaskId>,
    console: ConsoleDigest,
}

impl TailTracker {
    /// Takes note of events, in order.
    pub fn events(&mut self, events: &[Event]) {
        for e in events {
            self.last_time = self.last_time.max(e.time);
            let cpu = e.cpu.0 as usize;
            if self.tasks.len() <= cpu {
                self.tasks.resize(cpu + 1, TaskId(0));
            }
            self.tasks[cpu] = match e.kind {
                EventKind::ContextSwitch { to, .. } => to,
                _ => e.task,
            };
        }
    }

    /// Takes note of one finished console line.
    pub fn console_line(&mut self, cpu: usize, text: &str) {
        self.console.line(cpu, text);
    }

    /// The tail of a run that ended this way after `total_insns` instructions, on `cpu`
    /// at `pc` (CPU 0 and pc 0 when the end is about no CPU).
    pub fn tail(&self, ending: Ending, cpu: CpuId, pc: u64, total_insns: u64) -> RunTail {
        RunTail {
            ending,
            console: self.console,
            time: total_insns.max(self.last_time),
            cpu,
            task: self.tasks.get(cpu.0 as usize).copied().unwrap_or(TaskId(0)),
            pc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_ending() -> [Ending; 8] {
        [
            Ending::PowerOff { status: 0 },
            Ending::PowerOff { status: 3 },
            Ending::Reset { status: 1 },
            Ending::Fault,
            Ending::Watchdog { limit: 3_000_000 },
            Ending::Hang,
            Ending::Stopped {
                reason: "deadlock: tasks wait".into(),
            },
            Ending::Interrupted,
        ]
    }

    /// Only an ending the host chose (an analysis's stop, a signal) is one a
    /// re-run would not reach by itself: a replay must stop there.
    #[test]
    fn only_the_host_s_stops_are_host_stopped() {
        let stopped: Vec<bool> = every_ending().iter().map(Ending::host_stopped).collect();
        assert_eq!(
            stopped,
            [false, false, false, false, false, false, true, true]
        );
    }

    /// The tail carries the digest of the console lines the tracker was told of.
    #[test]
    fn the_tail_carries_the_console_digest() {
        let quiet = TailTracker::default();
        let mut spoke = TailTracker::default();
        spoke.console_line(1, "hello");
        let mut digest = ConsoleDigest::default();
        digest.line(1, "hello");
        let tail = |t: &TailTracker| t.tail(Ending::Hang, CpuId(0), 0, 5).console;
        assert_eq!(tail(&spoke), digest);
        assert_eq!(tail(&quiet), ConsoleDigest::default());
    }

    /// The words `replay` and the reports end a run with.
    #[test]
    fn each_ending_reads_as_what_happened() {
        let text: Vec<String> = every_ending().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "power-off",
                "power-off with status 3",
                "reset (status 1)",
                "guest fault",
                "watchdog (3000000 instructions)",
                "hang",
                "host stop (deadlock: tasks wait)",
                "interrupted (SIGINT/SIGTERM)",
            ]
        );
    }

    #[test]
    fn every_ending_survives_its_events() {
        for ending in every_ending() {
            let mut tracker = TailTracker::default();
            tracker.console_line(1, "hello");
            let tail = tracker.tail(ending, CpuId(1), 0x4000, 99);
            let mut strings = StringTable::new();
            strings.intern("task:idle");
            let events = tail.events(&mut strings);
            assert_eq!(RunTail::parse(&events, &strings), Some(tail));
        }
    }

    #[test]
    fn other_markers_are_not_a_tail() {
        let mut strings = StringTable::new();
        let tail = TailTracker::default().tail(Ending::Hang, CpuId(0), 0, 5);
        let [console, end] = tail.events(&mut strings);
        assert!(RunTail::parse(&[end, console], &strings).is_none());
        assert!(RunTail::parse(&[console], &strings).is_none());
        let mut moved = end;
        moved.time += 1;
        assert!(RunTail::parse(&[console, moved], &strings).is_none());
        let task = strings.intern("task:worker");
        let mut other = end;
        other.kind = EventKind::Marker {
            label: task,
            value: 0,
        };
        assert!(RunTail::parse(&[console, other], &strings).is_none());
        // The writer's markers have no caller: guest markers at one place do.
        let called = |mut e: Event| {
            e.caller = 0x40;
            e
        };
        assert!(RunTail::parse(&[called(console), called(end)], &strings).is_none());
        let both = [console, end];
        let (events, found) = RunTail::split(&both, &strings);
        assert!(events.is_empty() && found == Some(tail));
    }

    /// The tail names the task running on its CPU after the last event (the one
    /// switched to, not the one switching) and comes no earlier than that event.
    #[test]
    fn the_tail_takes_the_running_task_and_the_last_time() {
        let event = |time, cpu, task, kind| Event {
            time,
            cpu: CpuId(cpu),
            task: TaskId(task),
            pc: 0x100,
            caller: 0,
            kind,
        };
        let mut tracker = TailTracker::default();
        tracker.events(&[
            event(10, 0, 1, EventKind::Sleep),
            event(
                500,
                1,
                2,
                EventKind::ContextSwitch {
                    from: TaskId(2),
                    to: TaskId(7),
                },
            ),
        ]);
        let tail = tracker.tail(Ending::Hang, CpuId(1), 0, 100);
        assert_eq!((tail.task, tail.time), (TaskId(7), 500));
        assert_eq!(tracker.tail(Ending::Hang, CpuId(0), 0, 900).time, 900);
        assert_eq!(tracker.tail(Ending::Hang, CpuId(0), 0, 900).task, TaskId(1));
    }

    #[test]
    fn the_digest_depends_on_text_cpu_and_order() {
        let digest = |lines: &[(usize, &str)]| {
            let mut d = ConsoleDigest::default();
            for &(cpu, text) in lines {
                d.line(cpu, text);
            }
            d
        };
        let base = digest(&[(0, "a"), (1, "b")]);
        assert_eq!(base, digest(&[(0, "a"), (1, "b")]));
        assert_ne!(base, digest(&[(1, "b"), (0, "a")]));
        assert_ne!(base, digest(&[(0, "a"), (0, "b")]));
        assert_ne!(base, digest(&[(0, "a"), (1, "c")]));
        assert_ne!(base, digest(&[(0, "ab")]));
    }
}
