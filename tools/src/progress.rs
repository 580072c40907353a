//! Progress on stderr for a person at a terminal: a spinner for `bench` and for runs
//! that last more than a few seconds. Off a terminal nothing is drawn, and nothing
//! progress shows ever reaches a trace or a report (it reads host time).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use emu::EventSink;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use traces::{Event, StringTable};

/// A run shows progress once it has taken this long (short runs stay quiet).
const SHOW_AFTER: Duration = Duration::from_secs(3);
/// The per-slice path reads the clock and updates the bar only every this many
/// slices (a slice is ~2000 instructions, so this is still many updates a second).
const SLICES_PER_UPDATE: u32 = 256;

/// A spinner showing what is being done; hidden (and without its ticking thread)
/// when stderr is not a terminal.
pub fn spinner(message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid"));
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Wraps a run's event sink so that a spinner counts guest instructions (the time
/// of the latest event) once the run has lasted [`SHOW_AFTER`]. Returns the bar to
/// clear when the run ends.
pub fn count_run(mut sink: EventSink) -> (EventSink, ProgressBar) {
    let bar = ProgressBar::hidden();
    let shown = bar.clone();
    let started = Instant::now();
    let mut slices = 0u32;
    let mut visible = false;
    let counting = Box::new(move |events: &[Event], strings: &StringTable| {
        sink(events, strings);
        slices += 1;
        if slices < SLICES_PER_UPDATE {
            return;
        }
        slices = 0;
        if !visible && started.elapsed() >= SHOW_AFTER && std::io::stderr().is_terminal() {
            visible = true;
            shown.set_style(
                ProgressStyle::with_template("{spinner} {human_pos} guest instructions {elapsed}")
                    .expect("valid"),
            );
            shown.set_draw_target(ProgressDrawTarget::stderr());
        }
        if let Some(last) = events.last() {
            shown.set_position(last.time);
        }
    });
    (counting, bar)
}

/// A bar counting `total` items (`what`) with a message, for a person at a
/// terminal; hidden otherwise.
pub fn counter(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what} ({{per_sec}}) {{msg}} {{elapsed}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid"));
    bar
}
