//! Machine snapshots on the real guest (skipped, as in guest_boot.rs, when it is not
//! built): a run restored from a snapshot is the run a fresh machine makes, event
//! for event, whether the snapshot was taken before the first instruction or in the
//! middle of the run, with the checked MMU's TLB model too.

mod common;
use common::guest;

use std::cell::RefCell;
use std::rc::Rc;

use emu::{KernelImage, Machine, MachineConfig, RecordOptions, RunEnd, RunOutcome, SchedulerKind};
use traces::{Event, StringTable};

/// The events, their strings and the console of a recorded run.
type Recorded = (Vec<Event>, StringTable, Vec<(usize, String)>, RunOutcome);

fn config(scenario: &str) -> MachineConfig {
    MachineConfig {
        cpus: 4,
        sched: SchedulerKind::Random,
        seed: 3,
        quantum: 2_000,
        max_insns: 400_000_000,
        bootargs: format!("scenario={scenario} seed=3 variant=fine"),
        ..MachineConfig::default()
    }
}

/// A sink that keeps the events and strings, and where they end up.
type Collected = Rc<RefCell<(Vec<Event>, StringTable)>>;

fn collecting_sink() -> (emu::EventSink, Collected) {
    let out: Collected = Rc::new(RefCell::new((Vec::new(), StringTable::new())));
    let sink_out = out.clone();
    let sink: emu::EventSink = Box::new(move |events: &[Event], strings: &StringTable| {
        let mut out = sink_out.borrow_mut();
        out.0.extend_from_slice(events);
        out.1 = strings.clone();
    });
    (sink, out)
}

/// Runs `machine` to its end, its events going to `out`.
fn run_collecting(machine: &mut Machine, out: &Collected) -> Recorded {
    let mut console = Vec::new();
    let outcome = machine.run(&mut |cpu, line| console.push((cpu, line.to_string())));
    let (events, strings) = out.borrow().clone();
    (events, strings, console, outcome)
}

/// Runs `machine` to its end with a recorder attached now.
fn record_rest(machine: &mut Machine) -> Recorded {
    let (sink, out) = collecting_sink();
    machine.record(RecordOptions::default(), sink).unwrap();
    run_collecting(machine, &out)
}

fn fresh(kernel: &KernelImage, scenario: &str) -> Recorded {
    record_rest(&mut Machine::new(config(scenario), kernel).unwrap())
}

fn assert_same(restored: &Recorded, fresh: &Recorded) {
    assert_eq!(restored.3, fresh.3, "outcome");
    assert_eq!(restored.2, fresh.2, "console");
    assert_eq!(restored.0.len(), fresh.0.len(), "event count");
    assert!(restored.0 == fresh.0, "events differ");
    assert_eq!(restored.1, fresh.1, "strings");
}

#[test]
fn a_run_restored_from_a_snapshot_at_power_on_is_the_fresh_run() {
    let Some(kernel) = guest() else { return };
    for scenario in ["storm", "reclaim"] {
        let mut machine = Machine::new(config(scenario), &kernel).unwrap();
        let at_power_on = machine.snapshot().unwrap();
        assert!(at_power_on.ram_bytes() > 0, "the kernel is in RAM");
        // A whole run first: RAM, devices, TLB model and counts all move on.
        let first = machine.run(&mut |_, _| {});
        assert!(matches!(first.end, RunEnd::PoweredOff { status: 0, .. }));
        machine.restore(&at_power_on).unwrap();
        let again = record_rest(&mut machine);
        assert_same(&again, &fresh(&kernel, scenario));
    }
}

#[test]
fn a_run_restored_from_a_snapshot_mid_run_continues_as_it_did() {
    let Some(kernel) = guest() else { return };
    let mut config = config("storm");
    config.max_insns = 5_000_000;
    let mut machine = Machine::new(config.clone(), &kernel).unwrap();
    let stopped = machine.run(&mut |_, _| {});
    assert!(
        matches!(stopped.end, RunEnd::Watchdog { .. }),
        "{stopped:?}"
    );
    let middle = machine.snapshot().unwrap();
    machine.extend_watchdog(400_000_000);
    let mut console = Vec::new();
    let finished = machine.run(&mut |cpu, line| console.push((cpu, line.to_string())));
    assert!(matches!(finished.end, RunEnd::PoweredOff { status: 0, .. }));
    // Back to the middle, twice: the same rest of the run each time.
    for _ in 0..2 {
        machine.restore(&middle).unwrap();
        machine.extend_watchdog(400_000_000);
        let mut again = Vec::new();
        let outcome = machine.run(&mut |cpu, line| again.push((cpu, line.to_string())));
        assert_eq!(outcome, finished);
        assert_eq!(again, console);
    }
}

/// A recording machine restored from its power-on snapshot records the fresh run
/// again, with its translated code kept; under another scheduler, that scheduler's
/// fresh run (what an exploration does for each schedule). A plain restore, which
/// would leave the recording without a sink, is refused in one line.
#[test]
fn a_recording_machine_restored_records_the_fresh_run_again() {
    let Some(kernel) = guest() else { return };
    for scenario in ["storm", "reclaim"] {
        let mut machine = Machine::new(config(scenario), &kernel).unwrap();
        let (sink, out) = collecting_sink();
        machine.record(RecordOptions::default(), sink).unwrap();
        let at_power_on = machine.snapshot().unwrap();
        let fresh_run = fresh(&kernel, scenario);
        assert_same(&run_collecting(&mut machine, &out), &fresh_run);
        for _ in 0..2 {
            let (sink, out) = collecting_sink();
            machine.restore_recording(&at_power_on, sink).unwrap();
            assert_same(&run_collecting(&mut machine, &out), &fresh_run);
        }
        let mut other = config(scenario);
        other.seed = 11;
        let (sink, out) = collecting_sink();
        machine.restore_recording(&at_power_on, sink).unwrap();
        machine.set_scheduler(emu::sched::make_scheduler(
            &other.sched,
            other.seed,
            other.quantum,
            &other.irq_points,
        ));
        let rescheduled = run_collecting(&mut machine, &out);
        let fresh_other = record_rest(&mut Machine::new(other, &kernel).unwrap());
        assert_same(&rescheduled, &fresh_other);
        assert!(rescheduled.0 != fresh_run.0, "another schedule");

        let text = machine.restore(&at_power_on).unwrap_err().to_string();
        assert!(text.contains("restore_recording"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}

#[test]
fn a_snapshot_fits_only_its_own_machine() {
    let Some(kernel) = guest() else { return };
    let machine = Machine::new(config("smoke"), &kernel).unwrap();
    let snapshot = machine.snapshot().unwrap();
    let mut two = config("smoke");
    two.cpus = 2;
    let mut other = Machine::new(two, &kernel).unwrap();
    assert!(other.restore(&snapshot).is_err());
}
