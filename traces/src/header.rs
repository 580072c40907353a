//! The run's configuration as stored in the trace header (layout: [`crate::format`]).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::OpenError;
use crate::format::{HEADER_FIXED_LEN, MAGIC, MAX_HEADER_BODY, VERSION_MAJOR, VERSION_MINOR};
use crate::varint::{put_uleb, ByteCursor};

/// SHA-256 of the guest ELF file, so replay can refuse a trace of another guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ElfHash(pub [u8; 32]);

impl ElfHash {
    /// Hashes the bytes of an ELF file.
    pub fn of(elf_bytes: &[u8]) -> Self {
        ElfHash(Sha256::digest(elf_bytes).into())
    }

    /// Lower-case hex, as `sha256sum` prints it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Everything needed to re-run the recorded run, stored in the header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceConfig {
    /// SHA-256 of the guest kernel's file.
    pub guest_elf: ElfHash,
    /// Number of emulated CPUs.
    pub cpus: u32,
    /// Allocator variant (`fine`, `irq`, `mutex`).
    pub variant: String,
    /// The guest's workload.
    pub scenario: String,
    /// The run's seed (workload, and scheduler unless a `sched-seed` says otherwise).
    pub seed: u64,
    /// Host scheduler (`rr`, `random`, `pct`, …).
    pub scheduler: String,
    /// Scheduler quantum in instructions.
    pub quantum: u64,
    /// Further settings (e.g. `max-insns`, `inject`, `pct-depth`); written in key order.
    pub extra: BTreeMap<String, String>,
}

/// A parsed header: the format version found and the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format's major version (a reader refuses another).
    pub major: u16,
    /// The format's minor version (additions an older reader skips).
    pub minor: u16,
    /// What was run.
    pub config: TraceConfig,
    /// Total header size in bytes (frames start here).
    pub len: usize,
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_uleb(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Serializes the header for `config` (always the current version).
pub fn encode_header(config: &TraceConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&config.guest_elf.0);
    put_uleb(&mut body, u64::from(config.cpus));
    put_str(&mut body, &config.variant);
    put_str(&mut body, &config.scenario);
    put_uleb(&mut body, config.seed);
    put_str(&mut body, &config.scheduler);
    put_uleb(&mut body, config.quantum);
    put_uleb(&mut body, config.extra.len() as u64);
    for (key, value) in &config.extra {
        put_str(&mut body, key);
        put_str(&mut body, value);
    }
    let mut out = Vec::with_capacity(HEADER_FIXED_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    out.extend_from_slice(&VERSION_MINOR.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// What the fixed part of a header says about the rest.
pub(crate) struct FixedHeader {
    pub major: u16,
    pub minor: u16,
    pub body_len: usize,
    pub body_crc: u32,
}

/// Checks magic and version in the first [`HEADER_FIXED_LEN`] bytes (or fewer, if that
/// is all the file has: then reports truncation, or bad magic if what exists is wrong).
pub(crate) fn parse_fixed(bytes: &[u8]) -> Result<FixedHeader, OpenError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(OpenError::BadMagic {
            found: bytes[..magic_len].to_vec(),
        });
    }
    if bytes.len() < HEADER_FIXED_LEN {
        return Err(OpenError::HeaderTruncated {
            len: bytes.len() as u64,
            needed: HEADER_FIXED_LEN as u64,
        });
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let (major, minor) = (u16_at(8), u16_at(10));
    if major != VERSION_MAJOR {
        return Err(OpenError::UnsupportedVersion { major, minor });
    }
    let body_len = u32_at(12);
    if body_len > MAX_HEADER_BODY {
        return Err(OpenError::HeaderCorrupt {
            reason: "header length too large",
        });
    }
    Ok(FixedHeader {
        major,
        minor,
        body_len: body_len as usize,
        body_crc: u32_at(16),
    })
}

/// Checks the body's CRC and parses it.
pub(crate) fn parse_body(fixed: &FixedHeader, body: &[u8]) -> Result<Header, OpenError> {
    if crc32fast::hash(body) != fixed.body_crc {
        return Err(OpenError::HeaderCorrupt {
            reason: "CRC mismatch",
        });
    }
    let corrupt = |reason| OpenError::HeaderCorrupt { reason };
    let mut cursor = ByteCursor::new(body);
    let uleb = |cursor: &mut ByteCursor| cursor.uleb().map_err(|_| corrupt("bad integer"));
    let text = |cursor: &mut ByteCursor| -> Result<String, OpenError> {
        let len = cursor.uleb().map_err(|_| corrupt("bad string length"))?;
        let bytes = usize::try_from(len)
            .ok()
            .and_then(|len| cursor.take(len).ok())
            .ok_or(corrupt("string runs past the header"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    };
    let hash = cursor.take(32).map_err(|_| corrupt("header too short"))?;
    let guest_elf = ElfHash(hash.try_into().unwrap());
    let cpus = u32::try_from(uleb(&mut cursor)?).map_err(|_| corrupt("cpu count too large"))?;
    let variant = text(&mut cursor)?;
    let scenario = text(&mut cursor)?;
    let seed = uleb(&mut cursor)?;
    let scheduler = text(&mut cursor)?;
    let quantum = uleb(&mut cursor)?;
    let pairs = uleb(&mut cursor)?;
    let mut extra = BTreeMap::new();
    for _ in 0..pairs {
        let key = text(&mut cursor)?;
        let value = text(&mut cursor)?;
        if extra.last_key_value().is_some_and(|(last, _)| *last >= key) {
            return Err(corrupt("extra config keys not unique and ascending"));
        }
        extra.insert(key, value);
    }
    let config = TraceConfig {
        guest_elf,
        cpus,
        variant,
        scenario,
        seed,
        scheduler,
        quantum,
        extra,
    };
    Ok(Header {
        major: fixed.major,
        minor: fixed.minor,
        config,
        len: HEADER_FIXED_LEN + fixed.body_len,
    })
}

/// Parses the header at the start of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<Header, OpenError> {
    let fixed = parse_fixed(bytes)?;
    let end = HEADER_FIXED_LEN + fixed.body_len;
    let body = bytes
        .get(HEADER_FIXED_LEN..end)
        .ok_or(OpenError::HeaderTruncated {
            len: bytes.len() as u64,
            needed: end as u64,
        })?;
    parse_body(&fixed, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2's first SHA-256 example ("abc"), as `sha256sum` prints it.
    #[test]
    fn an_elf_hash_is_the_files_sha256() {
        assert_eq!(
            ElfHash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(ElfHash::of(b"abd"), ElfHash::of(b"abc"));
    }

    /// A parsed header says where the frames start: right after its bytes.
    #[test]
    fn a_header_s_length_is_its_bytes() {
        let config = TraceConfig {
            cpus: 4,
            scenario: "storm".into(),
            extra: [("inject".to_string(), "none".to_string())].into(),
            ..TraceConfig::default()
        };
        let mut bytes = encode_header(&config);
        let len = bytes.len();
        bytes.extend_from_slice(b"frames follow");
        let header = parse_header(&bytes).unwrap();
        assert_eq!((header.len, header.config), (len, config));
    }

    /// The largest body length a reader accepts is `MAX_HEADER_BODY` itself.
    #[test]
    fn the_header_body_limit_is_inclusive() {
        let fixed = |body_len: u32| {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(VERSION_MAJOR.to_le_bytes());
            bytes.extend(VERSION_MINOR.to_le_bytes());
            bytes.extend(body_len.to_le_bytes());
            bytes.extend(0u32.to_le_bytes());
            parse_fixed(&bytes).map(|f| f.body_len)
        };
        assert_eq!(fixed(MAX_HEADER_BODY).ok(), Some(MAX_HEADER_BODY as usize));
        assert!(fixed(MAX_HEADER_BODY + 1).is_err());
    }
}
