//! LEB128 varints and zigzag mapping, the integer encodings of the trace format.
//!
//! `uleb` is unsigned LEB128: seven value bits per byte, least significant group first,
//! bit 7 set on every byte but the last. A `u64` takes 1–10 bytes; the tenth byte may only
//! carry the value's top bit (0 or 1), anything larger is an overflow. Non-minimal
//! encodings (trailing `0x80` groups) are accepted by the reader but never written.
//!
//! `zigzag` maps a signed delta onto an unsigned one so small magnitudes of either sign
//! stay short: `0, -1, 1, -2, 2, …` ↦ `0, 1, 2, 3, 4, …`, i.e. `(d << 1) ^ (d >> 63)`.

/// Why an integer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 significant bits.
    Overflow,
}

/// Appends `value` as unsigned LEB128.
pub fn put_uleb(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes `put_uleb` writes for `value`.
pub fn uleb_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// Maps a signed delta to an unsigned one (see the module docs).
pub fn zigzag(delta: i64) -> u64 {
    ((delta << 1) ^ (delta >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A forward-only cursor over a byte slice with the primitive reads of the format.
#[derive(Debug, Clone)]
pub struct ByteCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteCursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteCursor { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, VarintError> {
        let byte = *self.bytes.get(self.pos).ok_or(VarintError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// The next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], VarintError> {
        let end = self.pos.checked_add(len).ok_or(VarintError::Truncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(VarintError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    /// An unsigned LEB128 value of at most 64 bits.
    pub fn uleb(&mut self) -> Result<u64, VarintError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let group = u64::from(byte & 0x7f);
            if shift == 63 && group > 1 {
                return Err(VarintError::Overflow);
            }
            value |= group << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(VarintError::Overflow)
    }

    /// A zigzag-encoded signed value (in LEB128).
    pub fn zigzag(&mut self) -> Result<i64, VarintError> {
        self.uleb().map(unzigzag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_uleb(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(uleb_len(value), bytes.len());
            assert_eq!(ByteCursor::new(bytes).uleb(), Ok(value));
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn rejects_overflow_and_truncation() {
        let eleven = [0x80u8; 10]
            .iter()
            .chain(&[0x01])
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(ByteCursor::new(&eleven).uleb(), Err(VarintError::Overflow));
        let top_too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            ByteCursor::new(&top_too_big).uleb(),
            Err(VarintError::Overflow)
        );
        assert_eq!(
            ByteCursor::new(&[0x80, 0x80]).uleb(),
            Err(VarintError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn uleb_and_zigzag_round_trip(value: u64, delta: i64) {
            let mut out = Vec::new();
            put_uleb(&mut out, value);
            prop_assert_eq!(out.len(), uleb_len(value));
            let mut cursor = ByteCursor::new(&out);
            prop_assert_eq!(cursor.uleb(), Ok(value));
            prop_assert!(cursor.is_empty());
            prop_assert_eq!(unzigzag(zigzag(delta)), delta);
        }
    }
}
