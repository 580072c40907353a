//! Trace events and analyses.
