//! The recorder's view of RISC-V ([`IsaAbi`]): the psABI's registers, the frame
//! record just below s0, `tp` as the per-CPU pointer, `sstatus.SIE` as the IRQ
//! mask.

use unicorn_engine::{RegisterRISCV, Unicorn};

use super::hart::xreg;
use crate::record::abi::{word_at, words, IsaAbi, MaskWrite, TicketSite};

/// RISC-V's [`IsaAbi`].
pub(crate) struct Riscv64Abi;

/// `sstatus.SIE` and `sstatus.SPIE`.
const SIE: u64 = 1 << 1;
const SPIE: u64 = 1 << 5;
/// The `sstatus` CSR number.
const SSTATUS: u32 = 0x100;
const SRET: u32 = 0x1020_0073;
/// `jalr x0, 0(ra)`.
const RET: u32 = 0x0000_8067;

/// How a CSR instruction changes `sstatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsrWrite {
    /// `csrrw`: the source replaces the register.
    Write,
    /// `csrrs`: the source's bits are set.
    Set,
    /// `csrrc`: the source's bits are cleared.
    Clear,
}

/// An instruction that writes `sstatus.SIE`, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SieWrite {
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

fn decode(word: u32) -> Option<SieWrite> {
    if word == SRET {
        return Some(SieWrite::Sret);
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
    let (reg, imm) = if funct3 & 4 == 0 {
        (Some(source), 0)
    } else {
        (None, source)
    };
    Some(SieWrite::Sstatus { op, reg, imm })
}

impl IsaAbi for Riscv64Abi {
    fn arg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64 {
        xreg(uc, 10 + n)
    }

    fn xreg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64 {
        xreg(uc, n)
    }

    fn sp(&self, uc: &Unicorn<'_, ()>) -> u64 {
        xreg(uc, 2)
    }

    fn link(&self, uc: &Unicorn<'_, ()>) -> u64 {
        xreg(uc, 1)
    }

    fn frame_pointer(&self, uc: &Unicorn<'_, ()>) -> u64 {
        xreg(uc, 8)
    }

    fn frame_record(&self) -> i64 {
        -16
    }

    fn percpu(&self, uc: &Unicorn<'_, ()>) -> u64 {
        xreg(uc, 4)
    }

    fn irqs_masked(&self, uc: &Unicorn<'_, ()>) -> bool {
        uc.reg_read(RegisterRISCV::SSTATUS)
            .is_ok_and(|s| s & SIE == 0)
    }

    fn masked_before_exception(&self, uc: &Unicorn<'_, ()>) -> bool {
        uc.reg_read(RegisterRISCV::SSTATUS)
            .is_ok_and(|s| s & SPIE == 0)
    }

    /// The thread's `Context` is one register longer than arm64's.
    fn thread_field_shift(&self) -> u64 {
        8
    }

    /// The supervisor software interrupt, for every message
    /// (guest/src/riscv64/irqchip.rs keeps the messages in a per-CPU word).
    fn ipi_intid(&self, _msg: u32) -> u32 {
        1
    }

    fn mask_write(&self, word: u32) -> Option<MaskWrite> {
        decode(word).map(|write| MaskWrite {
            word,
            exception_return: write == SieWrite::Sret,
        })
    }

    fn mask_after(&self, uc: &Unicorn<'_, ()>, write: MaskWrite, masked_now: bool) -> bool {
        match decode(write.word) {
            Some(SieWrite::Sstatus { op, reg, imm }) => {
                let source = reg.map_or(imm as u64, |r| xreg(uc, r));
                let touches = source & SIE != 0;
                match op {
                    CsrWrite::Write => !touches,
                    CsrWrite::Set => masked_now && !touches,
                    CsrWrite::Clear => masked_now || touches,
                }
            }
            Some(SieWrite::Sret) => self.masked_before_exception(uc),
            None => masked_now,
        }
    }

    fn is_return(&self, word: u32) -> bool {
        word == RET
    }

    /// `jal x0`, or the linker's far `tail` (`auipc rT, hi` then `jalr x0, lo(rT)`).
    fn jump_target(&self, code: &[u8], offset: u64) -> Option<i64> {
        let word = word_at(code, offset)?;
        let at = offset as i64;
        if word & 0xfff == 0x06f {
            let imm = ((word >> 31) & 1) << 20
                | ((word >> 21) & 0x3ff) << 1
                | ((word >> 20) & 1) << 11
                | ((word >> 12) & 0xff) << 12;
            return Some(at + ((imm << 11) as i32 >> 11) as i64);
        }
        if word & 0x7fff == 0x0067 && word != RET {
            // jalr x0, lo(rT) right after auipc rT, hi.
            let base = (word >> 15) & 0x1f;
            let auipc = word_at(code, offset.checked_sub(4)?)?;
            return (auipc & 0x7f == 0x17 && (auipc >> 7) & 0x1f == base).then(|| {
                let hi = (auipc & 0xffff_f000) as i32 as i64;
                let lo = (word as i32 >> 20) as i64;
                at - 4 + hi + lo
            });
        }
        None
    }

    /// After `addi s0, sp, imm`, until the epilogue's `ld s0, imm(sp)`; code
    /// after the epilogue's return or tail call is another path through the
    /// framed body.
    fn frame_set_up_at(&self, code: &[u8], offset: usize) -> bool {
        const SET_FP: u32 = 0x0001_0413; // addi s0, sp, imm
        const LOAD_FP: u32 = 0x0001_3403; // ld s0, imm(sp)
        let (mut framed, mut unwinding) = (false, false);
        for word in words(&code[..offset.min(code.len())]) {
            if word & 0x000f_ffff == SET_FP {
                framed = true;
            } else if word & 0x000f_ffff == LOAD_FP {
                unwinding = true;
            } else if unwinding && (word == RET || word & 0xfff == 0x06f) {
                unwinding = false;
            }
        }
        framed && !unwinding
    }

    /// After the `amoadd.w` that takes the ticket, which always does.
    fn ticket_taken_site(&self, code: &[u8]) -> Option<TicketSite> {
        let words: Vec<u32> = words(code).collect();
        // AMOADD.W (any aq/rl): funct5 00000, funct3 010, opcode AMO.
        let at = words.iter().position(|&w| w & 0xf800_707f == 0x0000_202f)?;
        (at + 1 < words.len()).then_some(TicketSite {
            offset: 4 * (at as u64 + 1),
            status: None,
        })
    }

    fn interrupt_vector_symbol(&self) -> Option<&'static str> {
        Some("trap_entry")
    }

    /// QEMU's way, as the engine takes them: `scause`'s top bit set.
    fn interrupt_taken(&self, uc: &Unicorn<'_, ()>) -> Option<(u32, u64)> {
        super::hart::interrupt_entered(uc).then(|| {
            let cause = uc.reg_read(RegisterRISCV::SCAUSE).unwrap_or(0);
            (cause as u32, uc.reg_read(RegisterRISCV::SEPC).unwrap_or(0))
        })
    }

    /// The first store word after a `fence rw, w`.
    fn release_store_site(&self, code: &[u8]) -> Option<u64> {
        const FENCE_RW_W: u32 = 0x0310_000f;
        let is_store_word = |w: u32| w & 0x707f == 0x2023;
        let mut words = words(code);
        let fence = words.position(|w| w == FENCE_RW_W)?;
        Some(4 * (fence + 1 + words.position(is_store_word)?) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::abi::code;

    #[test]
    fn decodes_every_sstatus_write_and_sret() {
        let sstatus = |op, reg, imm| Some(SieWrite::Sstatus { op, reg, imm });
        // csrs sstatus, a0 / csrc sstatus, t0 / csrw sstatus, t0 / csrci sstatus, 2
        assert_eq!(decode(0x1005_2073), sstatus(CsrWrite::Set, Some(10), 0));
        assert_eq!(decode(0x1002_b073), sstatus(CsrWrite::Clear, Some(5), 0));
        assert_eq!(decode(0x1002_9073), sstatus(CsrWrite::Write, Some(5), 0));
        assert_eq!(decode(0x1001_7073), sstatus(CsrWrite::Clear, None, 2));
        assert_eq!(decode(SRET), Some(SieWrite::Sret));
        assert!(Riscv64Abi.mask_write(SRET).unwrap().exception_return);
        assert!(!Riscv64Abi.mask_write(0x1001_7073).unwrap().exception_return);
        // csrr a0, sstatus (a read); csrs sie, t0 (another CSR); addi
        for word in [0x1000_2573, 0x1042_a073, 0x0010_0513] {
            assert_eq!(decode(word), None, "{word:#x}");
            assert_eq!(Riscv64Abi.mask_write(word), None, "{word:#x}");
        }
    }

    #[test]
    fn finds_returns_and_tail_calls() {
        // addi sp,sp,-16; ret; j +8 (inside); j +0x100 (out); ret
        let code_ = code(&[0xff01_0113, RET, 0x0080_006f, 0x1000_006f, RET]);
        assert_eq!(Riscv64Abi.exit_offsets(&code_), vec![4, 12, 16]);
        // j -8
        let back = code(&[0x0000_0013, 0x0000_0013, 0xff9f_f06f]);
        assert_eq!(Riscv64Abi.jump_target(&back, 8), Some(0));
        // auipc t1, 1; jr -1936(t1): the linker's far tail call, out of the code.
        let tail = code(&[0x0000_1317, 0x8703_0067]);
        assert_eq!(Riscv64Abi.jump_target(&tail, 4), Some(4096 - 1936));
        assert_eq!(Riscv64Abi.exit_offsets(&tail), vec![4]);
    }

    #[test]
    fn a_frame_is_set_up_between_prologue_and_epilogue() {
        // addi sp,sp,-16; sd ra,8(sp); sd s0,0(sp); addi s0,sp,16; nop; ld s0,0(sp); ret
        let code = code(&[
            0xff01_0113,
            0x0011_3423,
            0x0081_3023,
            0x0101_0413,
            0x0000_0013,
            0x0001_3403,
            RET,
        ]);
        let framed: Vec<bool> = (0..=7)
            .map(|i| Riscv64Abi.frame_set_up_at(&code, 4 * i))
            .collect();
        assert_eq!(
            framed,
            [false, false, false, false, true, true, false, true]
        );
    }

    #[test]
    fn spin_lock_events_sit_where_the_ticket_is_taken_and_the_lock_handed_on() {
        let lock = code(&[
            0x0010_0513, // li a0, 1
            0x04a4_a52f, // amoadd.w.aq a0, a0, (s1)
            0x0044_a583, // lw a1, 4(s1)
        ]);
        assert_eq!(
            Riscv64Abi.ticket_taken_site(&lock),
            Some(TicketSite {
                offset: 8,
                status: None
            })
        );
        let unlock = code(&[
            0x0005_2423, // sw zero, 8(a0): the owner, before the fence
            0x0045_2583, // lw a1, 4(a0)
            0x0310_000f, // fence rw, w
            0x0015_8593, // addi a1, a1, 1
            0x00b5_2223, // sw a1, 4(a0): the release
        ]);
        assert_eq!(Riscv64Abi.release_store_site(&unlock), Some(16));
        assert_eq!(Riscv64Abi.release_store_site(&lock), None);
        // arm64's patterns are not RISC-V's.
        let arm64_lock = code(&[0x885f_fe68, 0x1100_0509, 0x880a_7e69, 0x35ff_ffaa]);
        assert_eq!(Riscv64Abi.ticket_taken_site(&arm64_lock), None);
    }
}
