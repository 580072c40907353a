//! What the recorder reads of a core, by instruction set: argument and link
//! registers, the frame-pointer convention, the per-CPU pointer, the IRQ mask,
//! and the instructions it hooks (function exits, tail calls, IRQ-mask writes).
//!
//! | | arm64 | RISC-V |
//! | --- | --- | --- |
//! | arguments, result | x0.. | a0.. (x10..) |
//! | link register | x30 | ra (x1) |
//! | frame record {caller's fp, return address} | at fp = x29 | just below fp = s0 |
//! | per-CPU pointer | TPIDR_EL1 | tp (x4) |
//! | IRQs masked | PSTATE.I | `sstatus.SIE` clear |
//! | masked before the exception | SPSR_EL1.I | `sstatus.SPIE` clear |
//! | mask writes | `msr daif*`, `eret` | `csrr[wsc][i]` on `sstatus`, `sret` |
//! | returns, tail calls | `ret`, `b` out | `jalr x0, 0(ra)`, `jal x0` out |

use unicorn_engine::{RegisterARM64, RegisterRISCV, Unicorn};

use crate::arch::aarch64::exception::{self, PSTATE_I};
use crate::Isa;

/// `sstatus.SIE` and `sstatus.SPIE`.
const SIE: u64 = 1 << 1;
const SPIE: u64 = 1 << 5;
/// The `sstatus` CSR number.
const SSTATUS: u32 = 0x100;

/// How a RISC-V instruction changes `sstatus` (its CSR instruction's kind), and
/// what with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsrWrite {
    /// `csrrw`: the source replaces the register.
    Write,
    /// `csrrs`: the source's bits are set.
    Set,
    /// `csrrc`: the source's bits are cleared.
    Clear,
}

/// An instruction that can change the IRQ mask, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaskWrite {
    /// `msr daif, xN` (31: xzr).
    DaifRegister(u32),
    /// `msr daifset, #imm` (`set`) or `msr daifclr, #imm`.
    DaifImmediate { set: bool, imm: u32 },
    /// `eret`: the mask comes back from SPSR_EL1.
    Eret,
    /// A CSR instruction on `sstatus` with a register (`reg`) or an immediate
    /// source.
    Sstatus {
        op: CsrWrite,
        reg: Option<u32>,
        imm: u32,
    },
    /// `sret`: SIE comes back from SPIE.
    Sret,
}

/// The recorder's view of one instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abi(pub(crate) Isa);

impl Abi {
    fn riscv_x<D>(uc: &Unicorn<'_, D>, n: u32) -> u64 {
        crate::arch::riscv64::hart::xreg(uc, n)
    }

    /// The interrupt our guest's IPI message `msg` arrives as: on arm64 the SGI of
    /// the same number (guest/src/gic.rs), on RISC-V the supervisor software
    /// interrupt for every message (guest/src/riscv64/irqchip.rs).
    pub(crate) fn ipi_intid(self, msg: u32) -> u32 {
        match self.0 {
            Isa::Aarch64 => msg,
            Isa::Riscv64 => 1,
        }
    }

    /// Argument `n` (0: also the result at a return).
    pub(crate) fn arg<D>(self, uc: &Unicorn<'_, D>, n: u32) -> u64 {
        match self.0 {
            Isa::Aarch64 => crate::arch::aarch64::regs::read_xreg(uc, n),
            Isa::Riscv64 => Self::riscv_x(uc, 10 + n),
        }
    }

    /// General register `n` as the ISA numbers it.
    pub(crate) fn xreg<D>(self, uc: &Unicorn<'_, D>, n: u32) -> u64 {
        match self.0 {
            Isa::Aarch64 => crate::arch::aarch64::regs::read_xreg(uc, n),
            Isa::Riscv64 => Self::riscv_x(uc, n),
        }
    }

    pub(crate) fn sp<D>(self, uc: &Unicorn<'_, D>) -> u64 {
        match self.0 {
            Isa::Aarch64 => uc.reg_read(RegisterARM64::SP).unwrap_or(0),
            Isa::Riscv64 => Self::riscv_x(uc, 2),
        }
    }

    pub(crate) fn pc<D>(self, uc: &Unicorn<'_, D>) -> u64 {
        uc.pc_read().unwrap_or(0)
    }

    /// The link register (the return address before a frame record holds it).
    pub(crate) fn link<D>(self, uc: &Unicorn<'_, D>) -> u64 {
        match self.0 {
            Isa::Aarch64 => crate::arch::aarch64::regs::read_xreg(uc, 30),
            Isa::Riscv64 => Self::riscv_x(uc, 1),
        }
    }

    pub(crate) fn frame_pointer<D>(self, uc: &Unicorn<'_, D>) -> u64 {
        match self.0 {
            Isa::Aarch64 => crate::arch::aarch64::regs::read_xreg(uc, 29),
            Isa::Riscv64 => Self::riscv_x(uc, 8),
        }
    }

    /// Where, from a frame pointer, the frame record holds the caller's frame
    /// pointer and the return address.
    pub(crate) fn frame_record(self) -> [i64; 2] {
        match self.0 {
            Isa::Aarch64 => [0, 8],
            Isa::Riscv64 => [-16, -8],
        }
    }

    /// The per-CPU data pointer.
    pub(crate) fn percpu<D>(self, uc: &Unicorn<'_, D>) -> u64 {
        match self.0 {
            Isa::Aarch64 => uc.reg_read(RegisterARM64::TPIDR_EL1).unwrap_or(0),
            Isa::Riscv64 => Self::riscv_x(uc, 4),
        }
    }

    /// Whether IRQs are masked now.
    pub(crate) fn irqs_masked<D>(self, uc: &Unicorn<'_, D>) -> bool {
        match self.0 {
            Isa::Aarch64 => uc
                .reg_read(RegisterARM64::PSTATE)
                .is_ok_and(|p| p & PSTATE_I != 0),
            Isa::Riscv64 => uc
                .reg_read(RegisterRISCV::SSTATUS)
                .is_ok_and(|s| s & SIE == 0),
        }
    }

    /// In an exception handler's first instruction: whether the interrupted code
    /// had IRQs masked (what the return restores).
    pub(crate) fn masked_before_exception<D>(self, uc: &Unicorn<'_, D>) -> bool {
        match self.0 {
            Isa::Aarch64 => exception::spsr_el1(uc) & PSTATE_I != 0,
            Isa::Riscv64 => uc
                .reg_read(RegisterRISCV::SSTATUS)
                .is_ok_and(|s| s & SPIE == 0),
        }
    }

    /// How far the guest's `Thread` fields lie past their arm64 offsets: its
    /// `Context` is one register longer on RISC-V (guest/src/sched.rs asserts it).
    pub(crate) fn thread_field_shift(self) -> u64 {
        match self.0 {
            Isa::Aarch64 => 0,
            Isa::Riscv64 => 8,
        }
    }

    /// The IRQ mask after `write` runs on a core whose mask is `masked_now`.
    pub(crate) fn mask_after<D>(
        self,
        uc: &Unicorn<'_, D>,
        write: MaskWrite,
        masked_now: bool,
    ) -> bool {
        match write {
            MaskWrite::DaifRegister(reg) => {
                let value = if reg == 31 { 0 } else { self.xreg(uc, reg) };
                value & PSTATE_I != 0
            }
            MaskWrite::DaifImmediate { set, imm } => {
                let i = imm & 2 != 0;
                if set {
                    masked_now || i
                } else {
                    masked_now && !i
                }
            }
            MaskWrite::Eret | MaskWrite::Sret => self.masked_before_exception(uc),
            MaskWrite::Sstatus { op, reg, imm } => {
                let source = reg.map_or(imm as u64, |r| self.xreg(uc, r));
                let touches = source & SIE != 0;
                match op {
                    CsrWrite::Write => !touches,
                    CsrWrite::Set => masked_now && !touches,
                    CsrWrite::Clear => masked_now || touches,
                }
            }
        }
    }

    /// Decodes an instruction that can change the IRQ mask.
    pub(crate) fn mask_write(self, word: u32) -> Option<MaskWrite> {
        match self.0 {
            Isa::Aarch64 => arm64_mask_write(word),
            Isa::Riscv64 => riscv_mask_write(word),
        }
    }

    /// Whether `word` returns from its function.
    pub(crate) fn is_return(self, word: u32) -> bool {
        match self.0 {
            Isa::Aarch64 => word == 0xd65f_03c0,
            Isa::Riscv64 => word == 0x0000_8067, // jalr x0, 0(ra)
        }
    }

    /// The target, relative to the code's start, of the unconditional jump that
    /// does not link at `offset` of `code`: `b`; `jal x0`, or the linker's far
    /// `tail` (`auipc rT, hi` then `jalr x0, lo(rT)`).
    pub(crate) fn jump_target(self, code: &[u8], offset: u64) -> Option<i64> {
        let word_at = |at: u64| {
            let bytes = code.get(at as usize..at as usize + 4)?;
            Some(u32::from_le_bytes(bytes.try_into().ok()?))
        };
        let word = word_at(offset)?;
        let at = offset as i64;
        match self.0 {
            Isa::Aarch64 => (word & 0xfc00_0000 == 0x1400_0000)
                .then(|| at + ((word << 6) as i32 >> 6) as i64 * 4),
            Isa::Riscv64 if word & 0xfff == 0x06f => {
                let imm = ((word >> 31) & 1) << 20
                    | ((word >> 21) & 0x3ff) << 1
                    | ((word >> 20) & 1) << 11
                    | ((word >> 12) & 0xff) << 12;
                Some(at + ((imm << 11) as i32 >> 11) as i64)
            }
            Isa::Riscv64 if word & 0x7fff == 0x0067 && word != 0x0000_8067 => {
                // jalr x0, lo(rT) right after auipc rT, hi.
                let base = (word >> 15) & 0x1f;
                let auipc = word_at(offset.checked_sub(4)?)?;
                (auipc & 0x7f == 0x17 && (auipc >> 7) & 0x1f == base).then(|| {
                    let hi = (auipc & 0xffff_f000) as i32 as i64;
                    let lo = (word as i32 >> 20) as i64;
                    at - 4 + hi + lo
                })
            }
            Isa::Riscv64 => None,
        }
    }

    /// Where a function's code leaves it: each return, and each jump out of it (a
    /// tail call: the frame is gone, SP is back at its entry value).
    pub(crate) fn exit_offsets(self, code: &[u8]) -> impl Iterator<Item = u64> + '_ {
        let len = code.len() as i64;
        (0..code.len() as u64 / 4)
            .map(|i| 4 * i)
            .filter(move |&at| {
                let word = u32::from_le_bytes(code[at as usize..][..4].try_into().unwrap());
                self.is_return(word)
                    || self
                        .jump_target(code, at)
                        .is_some_and(|target| target < 0 || target >= len)
            })
    }

    /// Whether the function whose code is `code` has its frame record set up at
    /// `offset` (so the caller is in the record, not in the link register).
    pub(crate) fn frame_set_up_at(self, code: &[u8], offset: usize) -> bool {
        match self.0 {
            Isa::Aarch64 => crate::unwind::frame_set_up_at(code, offset),
            Isa::Riscv64 => riscv_frame_set_up_at(code, offset),
        }
    }
}

fn arm64_mask_write(word: u32) -> Option<MaskWrite> {
    const ERET: u32 = 0xd69f_03e0;
    if word == ERET {
        return Some(MaskWrite::Eret);
    }
    if word & 0xffff_ffe0 == 0xd51b_4220 {
        return Some(MaskWrite::DaifRegister(word & 31));
    }
    let imm = (word >> 8) & 0xf;
    match word & 0xffff_f0ff {
        0xd503_40df => Some(MaskWrite::DaifImmediate { set: true, imm }),
        0xd503_40ff => Some(MaskWrite::DaifImmediate { set: false, imm }),
        _ => None,
    }
}

fn riscv_mask_write(word: u32) -> Option<MaskWrite> {
    const SRET: u32 = 0x1020_0073;
    if word == SRET {
        return Some(MaskWrite::Sret);
    }
    if word & 0x7f != 0x73 || word >> 20 != SSTATUS {
        return None;
    }
    let funct3 = (word >> 12) & 7;
    let source = (word >> 15) & 0x1f;
    let op = match funct3 & 3 {
        1 => CsrWrite::Write,
        2 => CsrWrite::Set,
        3 => CsrWrite::Clear,
        _ => return None,
    };
    // csrrs/csrrc with x0 (or an immediate 0) only read.
    if source == 0 && op != CsrWrite::Write {
        return None;
    }
    Some(if funct3 & 4 == 0 {
        MaskWrite::Sstatus {
            op,
            reg: Some(source),
            imm: 0,
        }
    } else {
        MaskWrite::Sstatus {
            op,
            reg: None,
            imm: source,
        }
    })
}

/// [`Abi::frame_set_up_at`] for RISC-V: after `addi s0, sp, imm`, until the
/// epilogue's `ld s0, imm(sp)`; code after the epilogue's return or tail call is
/// another path through the framed body.
fn riscv_frame_set_up_at(code: &[u8], offset: usize) -> bool {
    const SET_FP: u32 = 0x0001_0413; // addi s0, sp, imm
    const LOAD_FP: u32 = 0x0001_3403; // ld s0, imm(sp)
    let (mut framed, mut unwinding) = (false, false);
    for word in code[..offset.min(code.len())].chunks_exact(4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if word & 0x000f_ffff == SET_FP {
            framed = true;
        } else if word & 0x000f_ffff == LOAD_FP {
            unwinding = true;
        } else if unwinding && (word == 0x0000_8067 || word & 0xfff == 0x06f) {
            unwinding = false;
        }
    }
    framed && !unwinding
}

#[cfg(test)]
mod tests {
    use super::*;

    const RV: Abi = Abi(Isa::Riscv64);

    #[test]
    fn decodes_every_sstatus_write_and_sret() {
        // csrs sstatus, a0 / csrc sstatus, t0 / csrw sstatus, t0 / csrci sstatus, 2
        let set = RV.mask_write(0x1005_2073);
        assert_eq!(
            set,
            Some(MaskWrite::Sstatus {
                op: CsrWrite::Set,
                reg: Some(10),
                imm: 0
            })
        );
        let clear = RV.mask_write(0x1002_b073);
        assert_eq!(
            clear,
            Some(MaskWrite::Sstatus {
                op: CsrWrite::Clear,
                reg: Some(5),
                imm: 0
            })
        );
        let write = RV.mask_write(0x1002_9073);
        assert_eq!(
            write,
            Some(MaskWrite::Sstatus {
                op: CsrWrite::Write,
                reg: Some(5),
                imm: 0
            })
        );
        let imm = RV.mask_write(0x1001_7073);
        assert_eq!(
            imm,
            Some(MaskWrite::Sstatus {
                op: CsrWrite::Clear,
                reg: None,
                imm: 2
            })
        );
        assert_eq!(RV.mask_write(0x1020_0073), Some(MaskWrite::Sret));
        // csrr a0, sstatus (a read); csrs sie, t0 (another CSR); addi
        for word in [0x1000_2573, 0x1042_a073, 0x0010_0513] {
            assert_eq!(RV.mask_write(word), None, "{word:#x}");
        }
    }

    #[test]
    fn finds_returns_and_tail_calls() {
        // addi sp,sp,-16; ret; j +8 (inside); j +0x100 (out); ret
        let words: [u32; 5] = [
            0xff01_0113,
            0x0000_8067,
            0x0080_006f,
            0x1000_006f,
            0x0000_8067,
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(RV.exit_offsets(&code).collect::<Vec<_>>(), vec![4, 12, 16]);
        // j -8
        let back: Vec<u8> = [0x0000_0013u32, 0x0000_0013, 0xff9f_f06f]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(RV.jump_target(&back, 8), Some(0));
        // auipc t1, 1; jr -1936(t1): the linker's far tail call, out of the code.
        let tail: Vec<u8> = [0x0000_1317u32, 0x8703_0067]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(RV.jump_target(&tail, 4), Some(4096 - 1936));
        assert_eq!(RV.exit_offsets(&tail).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_frame_is_set_up_between_prologue_and_epilogue() {
        // addi sp,sp,-16; sd ra,8(sp); sd s0,0(sp); addi s0,sp,16; nop; ld s0,0(sp); ret
        let words: [u32; 7] = [
            0xff01_0113,
            0x0011_3423,
            0x0081_3023,
            0x0101_0413,
            0x0000_0013,
            0x0001_3403,
            0x0000_8067,
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let framed: Vec<bool> = (0..=7).map(|i| RV.frame_set_up_at(&code, 4 * i)).collect();
        assert_eq!(
            framed,
            [false, false, false, false, true, true, false, true]
        );
    }
}
