//! Feeds arbitrary bytes to both trace readers: they must return an error or a trace,
//! agree with each other, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let from_slice = traces::read_trace(bytes);
    let from_stream = traces::read_trace_from(bytes);
    match (from_slice, from_stream) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            if let Some(damage) = &a.damage {
                let _ = damage.to_string();
                assert_eq!(damage.events_kept, a.events.len() as u64);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("readers disagree: {a:?} vs {b:?}"),
    }
});
