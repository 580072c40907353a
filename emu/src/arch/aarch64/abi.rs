//! The recorder's view of arm64 ([`IsaAbi`]): AAPCS64 registers, the frame
//! record at x29, TPIDR_EL1 as the per-CPU pointer, PSTATE.I as the IRQ mask.

use unicorn_engine::{RegisterARM64, Unicorn};

use super::core_regs::read_xreg;
use super::exception::{self, PSTATE_I};
use crate::record::abi::{word_at, words, IsaAbi, MaskWrite, TicketSite};

/// arm64's [`IsaAbi`].
pub(crate) struct Aarch64Abi;

const ERET: u32 = 0xd69f_03e0;
const RET: u32 = 0xd65f_03c0;
const NOP: u32 = 0xd503_201f;

/// An instruction that writes PSTATE.I, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaifWrite {
    /// `msr daif, xN` (31: xzr).
    Register(u32),
    /// `msr daifset, #imm` (`set`) or `msr daifclr, #imm`.
    Immediate { set: bool, imm: u32 },
    /// `eret`: the mask comes back from SPSR_EL1.
    Eret,
}

fn decode(word: u32) -> Option<DaifWrite> {
    if word == ERET {
        return Some(DaifWrite::Eret);
    }
    if word & 0xffff_ffe0 == 0xd51b_4220 {
        return Some(DaifWrite::Register(word & 31));
    }
    let imm = (word >> 8) & 0xf;
    match word & 0xffff_f0ff {
        0xd503_40df => Some(DaifWrite::Immediate { set: true, imm }),
        0xd503_40ff => Some(DaifWrite::Immediate { set: false, imm }),
        _ => None,
    }
}

impl IsaAbi for Aarch64Abi {
    fn arg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64 {
        read_xreg(uc, n)
    }

    fn xreg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64 {
        read_xreg(uc, n)
    }

    fn sp(&self, uc: &Unicorn<'_, ()>) -> u64 {
        uc.reg_read(RegisterARM64::SP).unwrap_or(0)
    }

    fn link(&self, uc: &Unicorn<'_, ()>) -> u64 {
        read_xreg(uc, 30)
    }

    fn frame_pointer(&self, uc: &Unicorn<'_, ()>) -> u64 {
        read_xreg(uc, 29)
    }

    fn frame_record(&self) -> i64 {
        0
    }

    fn percpu(&self, uc: &Unicorn<'_, ()>) -> u64 {
        uc.reg_read(RegisterARM64::TPIDR_EL1).unwrap_or(0)
    }

    fn irqs_masked(&self, uc: &Unicorn<'_, ()>) -> bool {
        uc.reg_read(RegisterARM64::PSTATE)
            .is_ok_and(|p| p & PSTATE_I != 0)
    }

    fn masked_before_exception(&self, uc: &Unicorn<'_, ()>) -> bool {
        exception::spsr_el1(uc) & PSTATE_I != 0
    }

    fn thread_field_shift(&self) -> u64 {
        0
    }

    /// The SGI of the message's number (guest/src/gic.rs asserts it).
    fn ipi_intid(&self, msg: u32) -> u32 {
        msg
    }

    fn mask_write(&self, word: u32) -> Option<MaskWrite> {
        decode(word).map(|write| MaskWrite {
            word,
            exception_return: write == DaifWrite::Eret,
        })
    }

    fn mask_write_is_hooked(&self, write: MaskWrite) -> bool {
        matches!(decode(write.word), Some(DaifWrite::Register(_)))
    }

    fn mask_after(&self, uc: &Unicorn<'_, ()>, write: MaskWrite, masked_now: bool) -> bool {
        match decode(write.word) {
            Some(DaifWrite::Register(reg)) => {
                let value = if reg == 31 { 0 } else { read_xreg(uc, reg) };
                value & PSTATE_I != 0
            }
            Some(DaifWrite::Immediate { set, imm }) => {
                let i = imm & 2 != 0;
                if set {
                    masked_now || i
                } else {
                    masked_now && !i
                }
            }
            Some(DaifWrite::Eret) => self.masked_before_exception(uc),
            None => masked_now,
        }
    }

    fn is_return(&self, word: u32) -> bool {
        word == RET
    }

    /// Branches (immediate, conditional, compare or test and branch, register)
    /// and exception generation (`svc`, `hvc`, `smc`, `brk`, `hlt`): QEMU's
    /// translator ends the block at each.
    fn ends_block(&self, word: u32) -> bool {
        let branch_imm = word & 0x7c00_0000 == 0x1400_0000; // b, bl
        let compare_or_test = word & 0x7c00_0000 == 0x3400_0000; // cbz/cbnz, tbz/tbnz
        let conditional = word & 0xff00_0010 == 0x5400_0000; // b.cond
        let exception = word & 0xff00_0000 == 0xd400_0000;
        let register = word & 0xfe00_0000 == 0xd600_0000; // br, blr, ret, eret
        branch_imm || compare_or_test || conditional || exception || register
    }

    /// `b`, `br`, `ret`, `eret`.
    fn never_falls_through(&self, word: u32) -> bool {
        let b = word & 0xfc00_0000 == 0x1400_0000;
        let br = word & 0xffff_fc1f == 0xd61f_0000;
        b || br || word & 0xffff_fc1f == RET & 0xffff_fc1f || word == ERET
    }

    fn is_padding(&self, word: u32) -> bool {
        word == NOP
    }

    /// `b`.
    fn jump_target(&self, code: &[u8], offset: u64) -> Option<i64> {
        let word = word_at(code, offset)?;
        (word & 0xfc00_0000 == 0x1400_0000)
            .then(|| offset as i64 + ((word << 6) as i32 >> 6) as i64 * 4)
    }

    fn frame_set_up_at(&self, code: &[u8], offset: usize) -> bool {
        crate::unwind::frame_set_up_at(code, offset)
    }

    /// After the store-exclusive (STXR/STLXR) that takes the ticket, when the next
    /// instruction is the `cbnz` on its status.
    fn ticket_taken_site(&self, code: &[u8]) -> Option<TicketSite> {
        let words: Vec<u32> = words(code).collect();
        // STXR/STLXR (32- or 64-bit): size 1x, 001000 0 0 0, Rs, o0, Rt2 = 11111.
        let is_store_exclusive = |w: u32| w & 0xbfe0_7c00 == 0x8800_7c00;
        let at = words.iter().position(|&w| is_store_exclusive(w))?;
        let status = (words[at] >> 16) & 31;
        // CBNZ (32-bit) on the status register.
        let next = *words.get(at + 1)?;
        (next & 0xff00_001f == 0x3500_0000 | status).then_some(TicketSite {
            offset: 4 * (at as u64 + 1),
            status: Some(status),
        })
    }

    /// The first store-release (STLR, 32- or 64-bit).
    fn release_store_site(&self, code: &[u8]) -> Option<u64> {
        let at = words(code).position(|w| w & 0xbfff_fc00 == 0x889f_fc00)?;
        Some(4 * at as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::abi::code;

    #[test]
    fn decodes_every_daif_writing_instruction() {
        assert_eq!(decode(0xd69f_03e0), Some(DaifWrite::Eret));
        assert_eq!(decode(0xd51b_4228), Some(DaifWrite::Register(8)));
        // msr daifset, #15 / msr daifclr, #2
        assert_eq!(
            decode(0xd503_4fdf),
            Some(DaifWrite::Immediate { set: true, imm: 15 })
        );
        assert_eq!(
            decode(0xd503_42ff),
            Some(DaifWrite::Immediate { set: false, imm: 2 })
        );
        // mrs x8, daif; msr nzcv, x0; nop
        for word in [0xd53b_4228, 0xd51b_4200, 0xd503_201f] {
            assert_eq!(decode(word), None, "{word:#x}");
            assert_eq!(Aarch64Abi.mask_write(word), None, "{word:#x}");
        }
        let eret = Aarch64Abi.mask_write(ERET).unwrap();
        assert!(eret.exception_return);
        assert!(!Aarch64Abi.mask_write(0xd503_42ff).unwrap().exception_return);
    }

    #[test]
    fn a_function_exits_at_its_rets_and_tail_calls() {
        let code = code(&[
            0x1400_0002, // b +8: inside
            0xd65f_03c0, // ret
            0x17ff_fffe, // b -8: inside
            0x1400_0010, // b +64: outside (tail call)
            0x17ff_fff0, // b -64: outside
        ]);
        assert_eq!(Aarch64Abi.exit_offsets(&code), vec![4, 12, 16]);
    }

    #[test]
    fn spin_lock_events_sit_where_the_ticket_is_taken_and_the_lock_handed_on() {
        let lock = code(&[
            0x885f_fe68, // ldaxr w8, [x19]
            0x1100_0509, // add w9, w8, #1
            0x880a_7e69, // stxr w10, w9, [x19]
            0x35ff_ffaa, // cbnz w10, the ldaxr
        ]);
        assert_eq!(
            Aarch64Abi.ticket_taken_site(&lock),
            Some(TicketSite {
                offset: 12,
                status: Some(10)
            })
        );
        // The status branched on by another register: not the ticket's.
        let other = code(&[0x880a_7e69, 0x35ff_ffab]);
        assert_eq!(Aarch64Abi.ticket_taken_site(&other), None);
        let unlock = code(&[0xd503_201f, 0x889f_fd28]); // nop; stlr w8, [x9]
        assert_eq!(Aarch64Abi.release_store_site(&unlock), Some(4));
        assert_eq!(Aarch64Abi.release_store_site(&lock), None);
    }

    /// Which instructions end a translation block, and which never continue to
    /// the next one (what `block_start` relies on).
    #[test]
    fn block_ends_and_fall_throughs_are_decoded() {
        let abi = Aarch64Abi;
        // (word, ends its block, never falls through)
        let cases = [
            (0x1400_0002, true, true),   // b .+8
            (0x9400_0002, true, false),  // bl .+8
            (0x5400_0040, true, false),  // b.eq .+8
            (0x3400_0040, true, false),  // cbz w0, .+8
            (0x3600_0040, true, false),  // tbz w0, #0, .+8
            (0xd61f_0020, true, true),   // br x1
            (0xd63f_0020, true, false),  // blr x1
            (RET, true, true),           // ret
            (0xd65f_0020, true, true),   // ret x1
            (ERET, true, true),          // eret
            (0xd400_0001, true, false),  // svc #0
            (0xd420_0000, true, false),  // brk #0
            (NOP, false, false),         // nop
            (0x9100_0400, false, false), // add x0, x0, #1
            (0xc801_7c02, false, false), // stxr w1, x2, [x0]
            (0xd503_42ff, false, false), // msr daifclr, #2
        ];
        for (word, ends, never_falls_through) in cases {
            assert_eq!(abi.ends_block(word), ends, "{word:#010x}");
            assert_eq!(
                abi.never_falls_through(word),
                never_falls_through,
                "{word:#010x}"
            );
        }
        assert!(abi.is_padding(NOP) && !abi.is_padding(RET));
    }
}
