//! The seam every analysis of an event stream implements, so that `run` (online, fed
//! as the machine records) and `check FILE` (offline, fed from the reader) drive the
//! same code and get the same findings.
//!
//! An analysis is a pure function of the events and the string table: it must not
//! look at anything else (host time, the emulator), so that a trace alone re-derives
//! what a run reported. It keeps only live state (not the events), so a check of a
//! long trace streams.

use crate::{Event, Finding, StringTable};

/// An analysis fed one event at a time, in trace order.
pub trait Analysis {
    /// Takes the next event; `strings` names its string ids (it may grow between
    /// calls, ids never change).
    fn event(&mut self, event: &Event, strings: &StringTable);

    /// The stream ended (the run's end or the trace's last event): report what only
    /// the end shows. The default has nothing to add.
    fn finish(&mut self) {}

    /// What was found so far, in the order found.
    fn findings(&self) -> &[Finding];

    /// Takes `events`, the next ones of the stream.
    fn feed(&mut self, events: &[Event], strings: &StringTable) {
        for event in events {
            self.event(event, strings);
        }
    }
}

impl Analysis for crate::Validator {
    fn event(&mut self, event: &Event, strings: &StringTable) {
        crate::Validator::feed(self, std::slice::from_ref(event), strings);
    }

    fn findings(&self) -> &[Finding] {
        crate::Validator::findings(self)
    }
}
