//! SIGINT and SIGTERM during `run` and `replay`: the first one asks the run to end
//! after the slice being run (so the trace gets its last chunk and trailer and the
//! report so far is printed; exit 130); a second one ends the process at once.
//!
//! The machine knows nothing of signals: the handler only sets a flag, and the event
//! sink, called after every slice, turns it into a [`StopRequest`]. Plain `libc`
//! (already a dependency) is enough for one atomic flag and `_exit`; no signal crate.

use std::sync::atomic::{AtomicBool, Ordering};

use emu::{EventSink, RunEnd, StopRequest};

/// The [`RunEnd::Stopped`] reason of a run a signal ended.
pub const STOP_REASON: &str = "interrupted by SIGINT/SIGTERM";

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe; the second signal means "now".
        unsafe { libc::_exit(130) }
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is a valid value to fill in; the handler only
        // touches an atomic and calls `_exit`, both async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a signal asked the run to end.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `inner`, then a stop request if a signal came.
pub fn stop_on_signal(stop: StopRequest, mut inner: EventSink) -> EventSink {
    Box::new(move |events, strings| {
        inner(events, strings);
        if requested() {
            stop.stop(STOP_REASON);
        }
    })
}

/// Whether a signal ended this run.
pub fn ended(end: &RunEnd) -> bool {
    matches!(end, RunEnd::Stopped { reason } if reason == STOP_REASON)
}
