//! `percpu-lab replay`: every run replays to the end it had (whoever ended it), a cut
//! trace replays up to its cut, and each way a replay can differ from its recording is
//! reported at the event where it does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{load, record, replay, rewrite, scratch, Run};
use traces::{Ending, EventKind, RunTail, Trace};

/// Records `args` into a scratch trace called `name`, expecting exit code `code`.
fn recorded(name: &str, args: &[&str], code: i32) -> (PathBuf, Trace) {
    let path = scratch(&format!("{name}.trace"));
    let run = record(&path, args);
    assert_eq!(run.code, code, "{name}: {}", run.describe());
    let trace = load(&path);
    assert!(trace.damage.is_none() && trace.trailer.is_some(), "{name}");
    (path, trace)
}

/// How the recorded run ended, as its trace says.
fn ending(trace: &Trace) -> Ending {
    let (_, tail) = RunTail::split(&trace.events, &trace.strings);
    tail.expect("a finished trace ends with its run's tail")
        .ending
}

/// Replays `path`, which must be identical to all `events` of its recording, and
/// says it ended as `ended` says.
fn assert_identical(path: &Path, events: usize, ended: &str) -> Run {
    let replay = replay(path);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    let expected = format!("identical, {events} events, ended: {ended}");
    assert!(
        replay.stdout.contains(&expected),
        "{expected}\n{}",
        replay.describe()
    );
    replay
}

/// Replays an edited trace: a divergence at event `index`, with these texts.
fn assert_diverges(path: &Path, index: usize, texts: &[&str]) -> Run {
    let replay = replay(path);
    assert_eq!(replay.code, 1, "{}", replay.describe());
    let at = format!("diverges at event #{index}:");
    assert!(replay.stdout.contains(&at), "{at}\n{}", replay.describe());
    for text in texts {
        assert!(
            replay.stdout.contains(text),
            "{text}\n{}",
            replay.describe()
        );
    }
    replay
}

fn is_deadlock_stop(ending: &Ending) -> bool {
    matches!(ending, Ending::Stopped { reason } if reason.starts_with("deadlock"))
}

/// Records `--variant mutex --scenario fs-reclaim --seed SEED`, replays it, and
/// returns how it ended.
fn fs_reclaim_replays_identically(seed: usize) -> Ending {
    let seed = seed.to_string();
    let args = [
        "--variant",
        "mutex",
        "--scenario",
        "fs-reclaim",
        "--seed",
        &seed,
    ];
    // Always the circular dependency: exit 1.
    let (path, trace) = recorded(&format!("fs-reclaim-{seed}"), &args, 1);
    let ending = ending(&trace);
    let ended = if is_deadlock_stop(&ending) {
        "host stop (deadlock"
    } else {
        "power-off"
    };
    assert_identical(&path, trace.events.len(), ended);
    ending
}

#[test]
fn fs_reclaim_mutex_seeds_0_to_19_replay_identically_deadlocked_or_not() {
    // Four at a time: each seed is a run and a replay of its own.
    let endings: Vec<Ending> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                s.spawn(move || {
                    (worker..20)
                        .step_by(4)
                        .map(fs_reclaim_replays_identically)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // Both kinds of end are covered.
    let deadlocked = endings.iter().filter(|e| is_deadlock_stop(e)).count();
    assert!(deadlocked > 0 && deadlocked < endings.len(), "{endings:?}");
}

/// Every flag that changes what the guest does travels in the trace: a run
/// with another flush strategy and an inject replays identically (before the
/// flush strategy was in the header, this replay diverged within a few
/// hundred events).
#[test]
fn a_run_with_a_flush_strategy_and_an_inject_replays_identically() {
    let args = [
        "--scenario",
        "reclaim",
        "--variant",
        "fine",
        "--seed",
        "2",
        "--flush",
        "ipi",
        "--inject",
        "skip-tlb-flush",
    ];
    let (path, trace) = recorded("flush-ipi", &args, 1);
    assert_eq!(
        trace.header.config.extra.get("flush").map(String::as_str),
        Some("ipi")
    );
    assert_identical(&path, trace.events.len(), "power-off");
}

#[test]
fn the_abba_deadlock_self_test_replays_to_its_stop() {
    let args = ["--scenario", "selftest-lock-abba-deadlock"];
    let (path, trace) = recorded("abba-deadlock", &args, 1);
    assert!(is_deadlock_stop(&ending(&trace)));
    assert_identical(&path, trace.events.len(), "host stop (deadlock");
}

#[test]
fn watchdog_and_guest_fault_runs_replay_to_the_same_end() {
    let args = ["--scenario", "hang", "--max-insns", "3000000"];
    let (path, trace) = recorded("watchdog", &args, 3);
    assert_eq!(ending(&trace), Ending::Watchdog { limit: 3_000_000 });
    assert_identical(&path, trace.events.len(), "watchdog (3000000 instructions)");

    let (path, trace) = recorded("panic", &["--scenario", "panic"], 3);
    assert!(
        matches!(ending(&trace), Ending::PowerOff { status } if status != 0),
        "{:?}",
        ending(&trace)
    );
    assert_identical(&path, trace.events.len(), "power-off with status");
}

/// Starts a run that would go on for a very long time, sends it `signal` once its
/// trace holds a few chunks, and returns how it ended.
fn interrupted_run(path: &Path, signal: &str) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_percpu-lab"))
        .args(["run", "--scenario", "hang", "--max-insns", "1000000000000"])
        .args(["--trace", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let since = Instant::now();
    // The trace is written to a temporary file beside `path` until it is finished.
    let dir = path.parent().expect("a directory");
    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let written = || -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(&name))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    while written() < 150_000 {
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "the trace does not grow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    Run {
        code: output
            .status
            .code()
            .expect("ended by its own exit, not the signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[test]
fn a_run_ended_by_sigint_or_sigterm_finishes_its_trace_and_replays_to_that_point() {
    for signal in ["-INT", "-TERM"] {
        let path = scratch(&format!("killed{signal}.trace"));
        let run = interrupted_run(&path, signal);
        assert_eq!(run.code, 130, "{signal}: {}", run.describe());
        // The report so far, and the finished trace.
        assert!(
            run.stdout.contains("== stopped: interrupted"),
            "{}",
            run.describe()
        );
        assert!(run.stderr.contains("events"), "{}", run.describe());
        let trace = load(&path);
        assert!(trace.damage.is_none() && trace.trailer.is_some());
        assert_eq!(ending(&trace), Ending::Interrupted);
        // The replay stops where the run did, not at --max-insns.
        assert_identical(&path, trace.events.len(), "interrupted");
    }
}

#[test]
fn a_truncated_trace_replays_up_to_its_last_whole_chunk() {
    let deadlock_seed = common::deadlocking_fs_reclaim_seed();
    for (name, args) in [
        (
            "storm",
            vec!["--scenario", "storm", "--seed", "2", "--variant", "fixed"],
        ),
        (
            "deadlock",
            vec![
                "--variant",
                "mutex",
                "--scenario",
                "fs-reclaim",
                "--seed",
                &deadlock_seed,
            ],
        ),
    ] {
        let (path, trace) = recorded(name, &args, if name == "storm" { 0 } else { 1 });
        let bytes = std::fs::read(&path).unwrap();
        let cut = scratch(&format!("{name}-cut.trace"));
        if name == "deadlock" {
            assert!(is_deadlock_stop(&ending(&trace)));
        }
        // Cut inside the last chunk, so that the kept events end mid-slice.
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let kept = load(&cut);
        assert!(kept.damage.is_some() && kept.events.len() < trace.events.len());
        assert!(
            !kept.events.is_empty(),
            "{name}: the test needs whole chunks"
        );
        let replay = replay(&cut);
        assert_eq!(replay.code, 0, "{name}: {}", replay.describe());
        let expected = format!(
            "identical, {} events (as far as the damaged trace goes), ended: where the trace was cut",
            kept.events.len()
        );
        assert!(replay.stdout.contains(&expected), "{}", replay.describe());
        assert!(
            replay.stderr.contains("warning") && replay.stderr.contains("was cut"),
            "{}",
            replay.describe()
        );
    }
}

/// A clean smoke run (it powers off by itself) and the index of its last machine event.
fn smoke() -> (Trace, usize) {
    let (_, trace) = recorded(
        &format!("smoke-{}", rand_name()),
        &["--scenario", "smoke"],
        0,
    );
    let last = trace.events.len() - 1 - RunTail::EVENTS;
    (trace, last)
}

/// A distinct name per call (the tests run in parallel in one process).
fn rand_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst).to_string()
}

#[test]
fn a_dropped_event_means_the_replay_has_more() {
    let (mut trace, last) = smoke();
    let dropped = trace.events.remove(last);
    let edited = scratch("dropped.trace");
    rewrite(&trace, &edited);
    let got = format!("got:      {}", dropped.display(&trace.strings));
    assert_diverges(&edited, last, &["expected: end of the trace", &got]);
}

#[test]
fn an_extra_event_means_the_replay_has_fewer() {
    let (mut trace, last) = smoke();
    let extra = trace.events[last];
    trace.events.insert(last + 1, extra);
    let edited = scratch("extra.trace");
    rewrite(&trace, &edited);
    let expected = format!("expected: {}", extra.display(&trace.strings));
    assert_diverges(
        &edited,
        last + 1,
        &[&expected, "got:      end of the run (power-off)"],
    );

    // A run the host stopped goes on past its recorded end: the next slice is not
    // the extra event.
    let args = ["--scenario", "selftest-lock-abba-deadlock"];
    let (_, mut trace) = recorded("deadlock-extra", &args, 1);
    let last = trace.events.len() - 1 - RunTail::EVENTS;
    let extra = trace.events[last];
    trace.events.insert(last + 1, extra);
    rewrite(&trace, &edited);
    let expected = format!("expected: {}", extra.display(&trace.strings));
    assert_diverges(&edited, last + 1, &[&expected, "got:      t="]);
}

#[test]
fn a_changed_event_is_another_event() {
    let (mut trace, last) = smoke();
    let index = (last / 2..last)
        .find(|&i| matches!(trace.events[i].kind, EventKind::PageAlloc { .. }))
        .expect("smoke allocates pages");
    let original = trace.events[index];
    if let EventKind::PageAlloc { pa, .. } = &mut trace.events[index].kind {
        *pa += 0x1000;
    }
    let edited = scratch("changed.trace");
    rewrite(&trace, &edited);
    let expected = format!("expected: {}", trace.events[index].display(&trace.strings));
    let got = format!("got:      {}", original.display(&trace.strings));
    assert_diverges(&edited, index, &[&expected, &got]);
}

#[test]
fn other_console_text_is_a_divergence_at_the_console_digest() {
    let (mut trace, last) = smoke();
    let console = last + 1;
    let EventKind::Marker { value, .. } = &mut trace.events[console].kind else {
        panic!("the tail starts with the console digest");
    };
    *value ^= 1;
    let edited = scratch("console.trace");
    rewrite(&trace, &edited);
    assert_diverges(
        &edited,
        console,
        &["console-digest", "the guest console printed other text"],
    );
}

#[test]
fn another_recorded_end_is_a_divergence_at_the_end_marker() {
    let (mut trace, last) = smoke();
    let end = last + 2;
    let label = trace.strings.intern("end:watchdog");
    trace.events[end].kind = EventKind::Marker { label, value: 1000 };
    let edited = scratch("end.trace");
    rewrite(&trace, &edited);
    assert_diverges(
        &edited,
        end,
        &[
            "end:watchdog=1000",
            "end:power-off=0",
            "the run ended another way",
        ],
    );
}

#[test]
fn a_replay_without_a_trace_tail_still_checks_every_event() {
    // A trace without its tail (edited, format 1.1): the replay runs on to its own end
    // and must not find more events than the trace has.
    let (mut trace, last) = smoke();
    trace.events.truncate(last);
    let edited = scratch("no-tail.trace");
    rewrite(&trace, &edited);
    assert_diverges(&edited, last, &["expected: end of the trace"]);
}

#[test]
fn a_format_1_0_trace_of_a_deadlock_stop_replays_to_where_it_ends() {
    // Format 1.0 wrote no tail: the replay cannot know who ended the run, so it stops
    // where the events end.
    let args = ["--scenario", "selftest-lock-abba-deadlock"];
    let (_, mut trace) = recorded("format-1.0", &args, 1);
    trace.events.truncate(trace.events.len() - RunTail::EVENTS);
    let old = scratch("format-1.0-old.trace");
    rewrite(&trace, &old);
    let mut bytes = std::fs::read(&old).unwrap();
    bytes[10..12].copy_from_slice(&0u16.to_le_bytes()); // the minor version
    std::fs::write(&old, bytes).unwrap();
    assert_eq!(load(&old).header.minor, 0);
    assert_identical(&old, trace.events.len(), "not recorded (format 1.0 trace)");
}

/// Events name lock classes through the string table: a class renamed in the trace
/// (same ids, other text) is another event, at the first event that names it.
#[test]
fn a_renamed_lock_class_is_another_event() {
    let (mut trace, _) = smoke();
    let (index, class) = trace
        .events
        .iter()
        .enumerate()
        .find_map(|(i, e)| e.kind.lock().map(|lock| (i, lock.class)))
        .expect("smoke takes locks");
    let mut strings = traces::StringTable::new();
    for id in 0..trace.strings.len() as u32 {
        let text = trace.strings.get(traces::StrId(id)).unwrap();
        let text = if id == class.0 { "renamed_lock" } else { text };
        assert_eq!(strings.intern(text).0, id, "ids stay the same");
    }
    let got = format!("got:      {}", trace.events[index].display(&trace.strings));
    let expected = format!("expected: {}", trace.events[index].display(&strings));
    assert!(expected.contains("renamed_lock"));
    trace.strings = strings;
    let edited = scratch("renamed.trace");
    rewrite(&trace, &edited);
    assert_diverges(&edited, index, &[&expected, &got]);
}

/// A trace without its run's tail replays to the run's own end and says the trace
/// does not record it; a format 1.0 trace (which never had a tail) stops where its
/// events end and says why.
#[test]
fn a_trace_without_its_tail_says_how_the_replay_ended() {
    let (mut trace, last) = smoke();
    trace.events.truncate(last + 1);
    let untailed = scratch("untailed.trace");
    rewrite(&trace, &untailed);
    // The same events as format 1.0: the version is the header's bytes 10-11.
    let mut bytes = std::fs::read(&untailed).unwrap();
    bytes[10..12].copy_from_slice(&0u16.to_le_bytes());
    let old = scratch("format-1.0.trace");
    std::fs::write(&old, bytes).unwrap();
    for (path, says) in [
        (&untailed, "(the trace does not record its end)"),
        (&old, "not recorded (format 1.0 trace)"),
    ] {
        let run = replay(path);
        assert_eq!(run.code, 0, "{}", run.describe());
        assert!(run.stdout.contains(says), "{says}: {}", run.describe());
    }
}
