//! Whatever the bytes, the reader returns an error or a (possibly damaged) trace: it never
//! panics. The `cargo fuzz` target in `traces/fuzz` does the same at length.

mod common;

use proptest::prelude::*;
use traces::{read_trace, read_trace_from};

/// Reads `bytes` both ways; the two readers must agree.
fn read_both(bytes: &[u8]) {
    let from_slice = read_trace(bytes);
    let from_stream = read_trace_from(bytes);
    match (from_slice, from_stream) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            if let Some(damage) = &a.damage {
                assert!(!damage.to_string().contains('\n'));
                assert_eq!(damage.events_kept, a.events.len() as u64);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("readers disagree: {a:?} vs {b:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_files(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        read_both(&bytes);
    }

    #[test]
    fn arbitrary_frames_after_a_valid_header(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = common::header_bytes();
        bytes.extend_from_slice(&body);
        read_both(&bytes);
    }

    /// CRC-valid chunks of random records reach the record decoder.
    #[test]
    fn arbitrary_payloads_with_valid_crc(
        payload in prop::collection::vec(any::<u8>(), 0..300),
        count in 0u32..40,
    ) {
        let mut bytes = common::header_bytes();
        bytes.extend(common::frame(b'C', count, &payload));
        read_both(&bytes);
    }

    /// A real trace with a few bytes changed and the CRCs fixed up.
    #[test]
    fn mutated_real_payloads(
        (strings, events) in common::trace_contents(60),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (original, _) = common::write_trace(&strings, &events, 100_000);
        let header_len = common::header_bytes().len();
        let frame = &original[header_len..];
        let payload_len = u32::from_le_bytes(frame[1..5].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(frame[5..9].try_into().unwrap());
        let mut payload = frame[13..13 + payload_len].to_vec();
        if payload.is_empty() {
            return Ok(());
        }
        for (at, value) in edits {
            let at = at.index(payload.len());
            payload[at] = value;
        }
        let mut bytes = common::header_bytes();
        bytes.extend(common::frame(b'C', count, &payload));
        read_both(&bytes);
    }
}
