//! The few AArch64 instruction decodings the host needs: telling HVC from an
//! undefined instruction, recognising WFI, immediates of SVC/BRK, and the address a
//! faulting load or store used (for FAR_EL1).

pub fn is_hvc(word: u32) -> bool {
    word & 0xffe0_001f == 0xd400_0002
}

pub fn is_wfi(word: u32) -> bool {
    word == 0xd503_207f
}

/// The 16-bit immediate of SVC/HVC/BRK.
pub fn imm16(word: u32) -> u32 {
    (word >> 5) & 0xffff
}

/// How a load/store computes its address: base register (31 = SP), plus either an
/// immediate or a shifted/extended index register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemAccess {
    pub base: u32,
    pub offset: Offset,
    pub is_write: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    Imm(i64),
    /// Register `reg` (31 = XZR), extended by `option` and shifted left by `shift`.
    Reg {
        reg: u32,
        option: u32,
        shift: u32,
    },
}

fn sign_extend(value: u32, bits: u32) -> i64 {
    ((value as i64) << (64 - bits)) >> (64 - bits)
}

/// Whether `word` is an unprivileged load or store (`ldtr*`, `sttr*`): at EL1 it
/// accesses memory with EL0's permissions, as Linux's uaccess routines do.
pub fn is_unprivileged(word: u32) -> bool {
    // Load/store register (unprivileged): size 111 0 00 opc 0 imm9 10 Rn Rt, no SIMD form.
    word & 0x3f20_0c00 == 0x3800_0800
}

/// Decodes the common load/store forms; `None` for anything else.
pub fn decode_mem_access(word: u32) -> Option<MemAccess> {
    let base = (word >> 5) & 31;
    let size = word >> 30;
    let simd = word & (1 << 26) != 0;
    let opc = (word >> 22) & 3;
    // Single register forms: stores have opc 00 (and SIMD opc x0).
    let single_is_write = if simd { opc & 1 == 0 } else { opc == 0 };
    let simd_scale = if simd && opc & 2 != 0 { 4 } else { size };

    if word & 0x3b00_0000 == 0x3900_0000 {
        // Unsigned immediate offset.
        let imm = ((word >> 10) & 0xfff) as i64;
        return Some(MemAccess {
            base,
            offset: Offset::Imm(imm << simd_scale),
            is_write: single_is_write,
        });
    }
    if word & 0x3b20_0c00 == 0x3820_0800 {
        // Register offset.
        let shift = if word & (1 << 12) != 0 { simd_scale } else { 0 };
        let offset = Offset::Reg {
            reg: (word >> 16) & 31,
            option: (word >> 13) & 7,
            shift,
        };
        return Some(MemAccess {
            base,
            offset,
            is_write: single_is_write,
        });
    }
    if word & 0x3b20_0000 == 0x3800_0000 {
        // Unscaled, post-index, unprivileged, pre-index (bits 11:10 = 00, 01, 10, 11).
        let post_index = (word >> 10) & 3 == 1;
        let imm = if post_index {
            0
        } else {
            sign_extend((word >> 12) & 0x1ff, 9)
        };
        return Some(MemAccess {
            base,
            offset: Offset::Imm(imm),
            is_write: single_is_write,
        });
    }
    if word & 0x3b20_0c00 == 0x3820_0000 {
        // LSE atomics: read and write at the base address.
        return Some(MemAccess {
            base,
            offset: Offset::Imm(0),
            is_write: true,
        });
    }
    if word & 0x3a00_0000 == 0x2800_0000 {
        // Load/store pair: bits 24:23 = 01 post-index, else offset/pre-index.
        let post_index = (word >> 23) & 3 == 1;
        let scale = if simd {
            2 + (word >> 30)
        } else {
            2 + (word >> 31)
        };
        let imm = if post_index {
            0
        } else {
            sign_extend((word >> 15) & 0x7f, 7) << scale
        };
        return Some(MemAccess {
            base,
            offset: Offset::Imm(imm),
            is_write: word & (1 << 22) == 0,
        });
    }
    if word & 0xbe00_0000 == 0x0c00_0000 {
        // AdvSIMD load/store multiple or single structures (`ld1`..`st4`, `ld1r`..),
        // with or without post-index: the address is the base register.
        return Some(MemAccess {
            base,
            offset: Offset::Imm(0),
            is_write: word & (1 << 22) == 0,
        });
    }
    if word & 0x3f00_0000 == 0x0800_0000 {
        // Exclusive and acquire/release: address is the base register.
        return Some(MemAccess {
            base,
            offset: Offset::Imm(0),
            is_write: word & (1 << 22) == 0,
        });
    }
    None
}

impl MemAccess {
    /// The effective address, given a reader of general registers (31 = SP for the
    /// base, XZR for an index).
    pub fn address(&self, reg: impl Fn(u32) -> u64) -> u64 {
        let base = reg(self.base);
        match self.offset {
            Offset::Imm(imm) => base.wrapping_add(imm as u64),
            Offset::Reg {
                reg: r,
                option,
                shift,
            } => {
                let raw = if r == 31 { 0 } else { reg(r) };
                let extended = match option {
                    0b010 => raw as u32 as u64,
                    0b110 => raw as u32 as i32 as i64 as u64,
                    _ => raw,
                };
                base.wrapping_add(extended << shift)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIMD structure loads and stores (what glibc's string functions use) name
    /// their base register, so a fault on them gets its address (a FAR of 0 made
    /// Linux kill the process).
    #[test]
    fn simd_structure_accesses_give_their_base() {
        let cases = [
            (0x4c40_7041u32, 2, false), // ld1 {v1.16b}, [x2]
            (0x4c9f_ac60, 3, true),     // st1 {v0.2d, v1.2d}, [x3], #32
            (0x0d40_9080, 4, false),    // ld1 {v0.s}[1], [x4]
            (0x4dc6_c8a2, 5, false),    // ld1r {v2.4s}, [x5], x6
            (0x0c00_03e0, 31, true),    // st4 {v0.8b-v3.8b}, [sp]
        ];
        for (word, base, is_write) in cases {
            let access = decode_mem_access(word).unwrap_or_else(|| panic!("{word:#x}"));
            assert_eq!(
                (access.base, access.is_write),
                (base, is_write),
                "{word:#x}"
            );
            assert_eq!(
                access.address(|r| 0x1000 * u64::from(r)),
                0x1000 * u64::from(base)
            );
        }
    }

    /// `ldtr`/`sttr` of every size are unprivileged; the unscaled, indexed and
    /// register-offset forms beside them are not (encodings from the assembler).
    #[test]
    fn unprivileged_loads_and_stores_are_told_apart() {
        let unprivileged = [
            0xf840_0820u32, // ldtr x0, [x1]
            0xb800_4862,    // sttr w2, [x3, #4]
            0x3840_0820,    // ldtrb w0, [x1]
            0xb880_0820,    // ldtrsw x0, [x1]
            0x7800_0820,    // sttrh w0, [x1]
        ];
        let privileged = [
            0xf840_0020u32, // ldur x0, [x1]
            0xf840_0c20,    // ldr x0, [x1, #0]!
            0xf840_0420,    // ldr x0, [x1], #0
            0xf862_6820,    // ldr x0, [x1, x2]
            0xf940_0020,    // ldr x0, [x1]
            0x3c40_0820,    // (SIMD: no unprivileged form)
        ];
        for word in unprivileged {
            assert!(is_unprivileged(word), "{word:#x}");
            assert!(decode_mem_access(word).is_some(), "{word:#x}");
        }
        for word in privileged {
            assert!(!is_unprivileged(word), "{word:#x}");
        }
    }

    fn regs(r: u32) -> u64 {
        match r {
            1 => 0x1000,
            2 => 3,
            31 => 0x8000,
            _ => 0,
        }
    }

    #[test]
    fn decodes_addresses_of_common_loads_and_stores() {
        let addr = |w| decode_mem_access(w).unwrap().address(regs);
        assert_eq!(addr(0xf940_0420), 0x1008); // ldr x0, [x1, #8]
        assert!(decode_mem_access(0xf900_0420).unwrap().is_write); // str x0, [x1, #8]
        assert_eq!(addr(0xb940_0420), 0x1004); // ldr w0, [x1, #4]
        assert_eq!(addr(0xf85f_8020), 0x0ff8); // ldur x0, [x1, #-8]
        assert_eq!(addr(0xf841_0420), 0x1000); // ldr x0, [x1], #16
        assert_eq!(addr(0xf862_7820), 0x1018); // ldr x0, [x1, x2, lsl #3]
        assert_eq!(addr(0xa9bf_7bfd), 0x7ff0); // stp x29, x30, [sp, #-16]!
        assert!(decode_mem_access(0xa9bf_7bfd).unwrap().is_write);
        assert_eq!(addr(0xc85f_7c20), 0x1000); // ldxr x0, [x1]
        assert!(!decode_mem_access(0xc85f_7c20).unwrap().is_write);
        assert_eq!(decode_mem_access(0xd503_201f), None); // nop
        assert!(is_hvc(0xd400_0002) && !is_hvc(0xd400_0001) && is_wfi(0xd503_207f));
    }
}
