//! Wraps arbitrary bytes as the payload of one CRC-valid chunk after a valid header, so
//! the fuzzer reaches the record decoder instead of stopping at the CRC check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traces::format::FRAME_CHUNK;

fuzz_target!(|input: (u8, &[u8])| {
    let (event_count, payload) = input;
    let mut bytes = traces::header::encode_header(&traces::TraceConfig::default());
    let mut frame = vec![FRAME_CHUNK];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&u32::from(event_count).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame);
    crc.update(payload);
    frame.extend_from_slice(&crc.finalize().to_le_bytes());
    bytes.extend_from_slice(&frame);
    bytes.extend_from_slice(payload);
    let trace = traces::read_trace(&bytes).expect("the header is valid");
    // Either the chunk decodes whole or nothing of it is kept.
    match &trace.damage {
        Some(damage) if !damage.is_benign() => assert!(trace.events.is_empty()),
        _ => assert_eq!(trace.events.len(), usize::from(event_count)),
    }
});
