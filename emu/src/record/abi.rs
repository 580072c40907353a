//! What the recorder reads of a core and decodes of the kernel's code, by
//! instruction set: argument and link registers, the frame-pointer convention,
//! the per-CPU pointer, the IRQ mask, and the instructions it hooks (function
//! exits, tail calls, IRQ-mask writes, where a ticket lock changes hands). One
//! [`IsaAbi`] per ISA, in `arch/<isa>/abi.rs`; [`crate::arch::Arch::abi`] picks it.
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
//! | spin lock's ticket taken | after `stxr` + `cbnz` on its status | after `amoadd.w` |
//! | spin unlock's handing on | the first `stlr` | the first `sw` after `fence rw, w` |

use unicorn_engine::Unicorn;

/// An instruction that can change the IRQ mask, found by [`IsaAbi::mask_write`]:
/// the ISA decodes it again when it runs ([`IsaAbi::mask_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MaskWrite {
    /// The instruction.
    pub(crate) word: u32,
    /// It returns from an exception (`eret`, `sret`): the mask comes back from
    /// what the exception saved.
    pub(crate) exception_return: bool,
}

/// Where, in `spin_lock`'s code, its ticket is known taken: the offset of the
/// instruction after the one that takes it, and the register that says whether
/// it did (0: taken), if the ISA's way can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TicketSite {
    pub(crate) offset: u64,
    pub(crate) status: Option<u32>,
}

/// The recorder's view of one instruction set. Registers are read from a core's
/// engine; code is the kernel's, little-endian 32-bit words.
pub(crate) trait IsaAbi: Sync {
    /// Argument `n` (0: also the result at a return).
    fn arg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64;
    /// General register `n` as the ISA numbers it.
    fn xreg(&self, uc: &Unicorn<'_, ()>, n: u32) -> u64;
    fn sp(&self, uc: &Unicorn<'_, ()>) -> u64;
    /// The link register (the return address before a frame record holds it).
    fn link(&self, uc: &Unicorn<'_, ()>) -> u64;
    fn frame_pointer(&self, uc: &Unicorn<'_, ()>) -> u64;
    /// Where, from a frame pointer, the frame record lies: the caller's frame
    /// pointer, then the return address.
    fn frame_record(&self) -> i64;
    /// The per-CPU data pointer.
    fn percpu(&self, uc: &Unicorn<'_, ()>) -> u64;
    /// Whether IRQs are masked now.
    fn irqs_masked(&self, uc: &Unicorn<'_, ()>) -> bool;
    /// In an exception handler's first instruction: whether the interrupted code
    /// had IRQs masked (what the return restores).
    fn masked_before_exception(&self, uc: &Unicorn<'_, ()>) -> bool;
    /// How far our guest's `Thread` fields lie past their arm64 offsets (its
    /// `Context` holds the ISA's callee-saved registers; guest/src/sched.rs
    /// asserts the layout).
    fn thread_field_shift(&self) -> u64;
    /// The interrupt our guest's IPI message `msg` arrives as.
    fn ipi_intid(&self, msg: u32) -> u32;
    /// Decodes an instruction that can change the IRQ mask.
    fn mask_write(&self, word: u32) -> Option<MaskWrite>;
    /// The IRQ mask after `write` runs on a core whose mask is `masked_now`.
    fn mask_after(&self, uc: &Unicorn<'_, ()>, write: MaskWrite, masked_now: bool) -> bool;
    /// Whether the engine's system-register write hook sees `write` (arm64's
    /// `msr daif, Xt`): its probe then runs from that hook (see
    /// `SliceCounter::daif_writes`), not from a code hook.
    fn mask_write_is_hooked(&self, _write: MaskWrite) -> bool {
        false
    }
    /// Whether `word` returns from its function.
    fn is_return(&self, word: u32) -> bool;
    /// Whether Unicorn ends a translation block after `word` whatever it does
    /// (branches, exception-generating instructions). False where unknown.
    fn ends_block(&self, _word: u32) -> bool {
        false
    }
    /// Whether `word` never continues to the next instruction (an unconditional
    /// jump or return), so padding after it is never reached.
    fn never_falls_through(&self, _word: u32) -> bool {
        false
    }
    /// Whether `word` is the padding compilers put between functions (a NOP).
    fn is_padding(&self, _word: u32) -> bool {
        false
    }
    /// The target, relative to the code's start, of the unconditional jump that
    /// does not link at `offset` of `code`.
    fn jump_target(&self, code: &[u8], offset: u64) -> Option<i64>;
    /// Whether the function whose code is `code` has its frame record set up at
    /// `offset` (so the caller is in the record, not in the link register).
    fn frame_set_up_at(&self, code: &[u8], offset: usize) -> bool;
    /// Where, in `spin_lock`'s code, its ticket is known taken.
    fn ticket_taken_site(&self, code: &[u8]) -> Option<TicketSite>;
    /// The offset of `spin_unlock`'s store that hands the lock on.
    fn release_store_site(&self, code: &[u8]) -> Option<u64>;
    /// Our guest's symbol where the engine itself enters interrupts (the host
    /// enters the others and reports them), if it does on this ISA.
    fn interrupt_vector_symbol(&self) -> Option<&'static str> {
        None
    }
    /// At [`Self::interrupt_vector_symbol`]: the interrupt the engine just
    /// entered and the interrupted PC, or `None` for a trap the host entered.
    fn interrupt_taken(&self, _uc: &Unicorn<'_, ()>) -> Option<(u32, u64)> {
        None
    }

    /// Where a function's code leaves it: each return, and each jump out of it (a
    /// tail call: the frame is gone, SP is back at its entry value).
    fn exit_offsets(&self, code: &[u8]) -> Vec<u64> {
        let len = code.len() as i64;
        words(code)
            .enumerate()
            .map(|(i, word)| (4 * i as u64, word))
            .filter(|&(at, word)| {
                self.is_return(word)
                    || self
                        .jump_target(code, at)
                        .is_some_and(|target| target < 0 || target >= len)
            })
            .map(|(at, _)| at)
            .collect()
    }
}

/// `code` as little-endian 32-bit words.
pub(crate) fn words(code: &[u8]) -> impl Iterator<Item = u32> + '_ {
    code.chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// The word at byte `offset` of `code`.
pub(crate) fn word_at(code: &[u8], offset: u64) -> Option<u32> {
    let bytes = code.get(offset as usize..offset as usize + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// `words` as little-endian code bytes (the tests' hand-assembled functions).
#[cfg(test)]
pub(crate) fn code(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}
