//! Frame-pointer backtraces of a stopped core, read through that core's MMU.

use unicorn_engine::{Prot, Unicorn};

use crate::memory::{GuestMemory, OutOfRam};

/// Deepest backtrace reported (a corrupt chain must not loop forever).
const MAX_FRAMES: usize = 64;

/// A core's view of memory at virtual addresses, as its MMU translates them now.
pub struct CoreView<'a> {
    uc: &'a mut Unicorn<'static, ()>,
}

impl<'a> CoreView<'a> {
    /// The view of the core whose engine is `uc`.
    pub fn new(uc: &'a mut Unicorn<'static, ()>) -> Self {
        Self { uc }
    }
}

impl GuestMemory for CoreView<'_> {
    // Through the engine: a stopped core (a report's backtrace), where a fill is
    // the host's and the model ignores it.
    #[allow(clippy::disallowed_methods)]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let len = buf.len() as u64;
        self.uc
            .vmem_read(addr, Prot::READ, buf)
            .map_err(|_| OutOfRam { addr, len })
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), OutOfRam> {
        let outside = |_| OutOfRam {
            addr,
            len: data.len() as u64,
        };
        let pa = self.uc.vmem_translate(addr, Prot::WRITE).map_err(outside)?;
        self.uc.mem_write(pa, data).map_err(outside)
    }
}

/// Return addresses along the chain of AArch64 frame records `{previous x29, x30}`
/// starting at `fp`, innermost first. The guest's exception entry pushes such a
/// record `{interrupted x29, ELR}`, so the walk continues through exceptions.
pub fn frame_pointer_chain(mem: &dyn GuestMemory, fp: u64) -> Vec<u64> {
    frame_chain_with(|addr| mem.read_u64(addr).ok(), fp)
}

/// [`frame_pointer_chain`] for RISC-V, whose frame record {caller's s0, ra} lies
/// just below the frame pointer.
pub fn riscv_frame_pointer_chain(mem: &dyn GuestMemory, fp: u64) -> Vec<u64> {
    frame_chain_at(
        |at| read_record(|addr| mem.read_u64(addr).ok(), at),
        fp,
        -16,
    )
}

/// [`frame_pointer_chain`] over any reader of guest u64s (a probe reads through
/// its core while the core runs).
pub(crate) fn frame_chain_with(read_u64: impl Fn(u64) -> Option<u64>, fp: u64) -> Vec<u64> {
    frame_chain_at(|at| read_record(&read_u64, at), fp, 0)
}

/// The frame record at `at` (the caller's frame pointer, then the return
/// address) read as two u64s.
fn read_record(read_u64: impl Fn(u64) -> Option<u64>, at: u64) -> Option<[u64; 2]> {
    Some([read_u64(at)?, read_u64(at.wrapping_add(8))?])
}

/// Most bytes [`StackWindow`] copies at once: a few frames of a kernel stack.
const STACK_SPAN: usize = 512;

/// Frame records read through a stopped core's MMU, from one copy of the stack
/// above the first record where the chain stays in it.
///
/// A chain's records lie close together up one stack, and one engine read costs
/// many times a copy of a few hundred bytes, so each read copies on to the end of
/// its target page (at most [`STACK_SPAN`] bytes). It never copies past that page:
/// the engine translates, and fills its TLB for, exactly the pages that reading
/// the records one by one would. Kept only while the core is stopped in a hook,
/// when its memory cannot change.
pub(crate) struct StackWindow<R> {
    /// Reads guest memory as the core does; false where it cannot.
    read: R,
    /// The engine's target page size (a power of two), 0 to read each record alone.
    page_size: u64,
    start: u64,
    len: usize,
    bytes: [u8; STACK_SPAN],
}

impl<R: Fn(u64, &mut [u8]) -> bool> StackWindow<R> {
    pub(crate) fn new(read: R, page_size: u64) -> Self {
        Self {
            read,
            page_size,
            start: 0,
            len: 0,
            bytes: [0; STACK_SPAN],
        }
    }

    /// The 16-byte frame record at `at`.
    pub(crate) fn record(&mut self, at: u64) -> Option<[u64; 2]> {
        let mut buf = [0; 16];
        if !self.copied(at, 16) {
            let page_left = self
                .page_size
                .wrapping_sub(at & self.page_size.wrapping_sub(1));
            let len = page_left.min(STACK_SPAN as u64) as usize;
            if self.page_size.is_power_of_two()
                && len >= buf.len()
                && (self.read)(at, &mut self.bytes[..len])
            {
                (self.start, self.len) = (at, len);
            } else {
                // Unreadable, or split over two pages: as the walk always read it.
                return (self.read)(at, &mut buf).then(|| words(&buf));
            }
        }
        let from = (at - self.start) as usize;
        buf.copy_from_slice(&self.bytes[from..from + 16]);
        Some(words(&buf))
    }

    fn copied(&self, at: u64, len: u64) -> bool {
        at >= self.start && at.saturating_add(len) <= self.start + self.len as u64
    }
}

/// A frame record's (or any 16 bytes') two little-endian u64s.
pub(crate) fn words(record: &[u8; 16]) -> [u64; 2] {
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&record[i..i + 8]);
        u64::from_le_bytes(w)
    };
    [word(0), word(8)]
}

/// Walks frame records `{caller's frame pointer, return address}` that lie at
/// `offset` from the frame pointer; `read_record` reads the 16 bytes of one
/// (in one guest read where that is cheaper than two).
pub(crate) fn frame_chain_at(
    read_record: impl FnMut(u64) -> Option<[u64; 2]>,
    fp: u64,
    offset: i64,
) -> Vec<u64> {
    let mut trace = Vec::new();
    frame_chain_into(&mut trace, read_record, fp, offset);
    trace
}

/// [`frame_chain_at`] into `trace` (cleared first): the recorder walks a chain at
/// every event and keeps one buffer for it.
pub(crate) fn frame_chain_into(
    trace: &mut Vec<u64>,
    mut read_record: impl FnMut(u64) -> Option<[u64; 2]>,
    mut fp: u64,
    offset: i64,
) {
    trace.clear();
    let mut seen = [0u64; MAX_FRAMES];
    while fp != 0
        && fp.is_multiple_of(8)
        && trace.len() < MAX_FRAMES
        && !seen[..trace.len()].contains(&fp)
    {
        let Some([next, ret]) = read_record(fp.wrapping_add_signed(offset)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        seen[trace.len()] = fp;
        trace.push(ret);
        fp = next;
    }
}

/// The frames of `chain` (the frame records above code called from `caller`, 0 if
/// unknown) beyond `caller` itself: the chain starts with `caller` when the called
/// function has pushed its own frame record, and it is not repeated.
pub(crate) fn frames_above(caller: u64, chain: &[u64]) -> &[u64] {
    match chain.split_first() {
        Some((&first, rest)) if caller != 0 && first == caller => rest,
        _ => chain,
    }
}

/// Whether the function whose code up to (not including) the instruction at
/// `offset` is `code` has its frame record set up there (`x29` points to it, so the
/// caller is at `[x29 + 8]` rather than in `x30`): after `mov x29, sp` (or `add x29,
/// sp, #n`), until the epilogue's `ldp x29, x30, …`. Code after an epilogue's `ret`
/// or tail call is another path through the framed body.
pub(crate) fn frame_set_up_at(code: &[u8], offset: usize) -> bool {
    const SET_FP_MASK: u32 = 0xffc0_03ff;
    const SET_FP: u32 = 0x9100_03fd; // add x29, sp, #imm (mov x29, sp)
    const LDP_FP_LR_MASK: u32 = 0xfe40_7fff;
    const LDP_FP_LR: u32 = 0xa840_7bfd; // ldp x29, x30, [sp], #imm / [sp, #imm]
    const RET: u32 = 0xd65f_03c0;
    let (mut framed, mut unwinding) = (false, false);
    for word in code[..offset.min(code.len())].chunks_exact(4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if word & SET_FP_MASK == SET_FP {
            framed = true;
        } else if word & LDP_FP_LR_MASK == LDP_FP_LR {
            unwinding = true;
        } else if unwinding && (word == RET || word & 0xfc00_0000 == 0x1400_0000) {
            unwinding = false;
        }
    }
    framed && !unwinding
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a bare engine, no model
mod tests {
    use super::*;
    use crate::memory::{GuestRam, RAM_BASE};

    #[test]
    fn walks_frame_records_and_stops_at_the_end_or_a_loop() {
        let mut ram = GuestRam::new(RAM_BASE, 4096).unwrap();
        let (a, b, c) = (RAM_BASE + 0x100, RAM_BASE + 0x200, RAM_BASE + 0x300);
        for (fp, next, ret) in [
            (a, b, 0x4008_0010),
            (b, c, 0x4008_0020),
            (c, 0, 0x4008_0030),
        ] {
            ram.write_u64(fp, next).unwrap();
            ram.write_u64(fp + 8, ret).unwrap();
        }
        assert_eq!(
            frame_pointer_chain(&ram, a),
            [0x4008_0010, 0x4008_0020, 0x4008_0030]
        );
        ram.write_u64(c, a).unwrap(); // a cycle
        assert_eq!(frame_pointer_chain(&ram, a).len(), 3);
        assert_eq!(
            frame_pointer_chain(&ram, RAM_BASE + 0x10_0000),
            Vec::<u64>::new()
        );
    }

    /// A chain through a core's memory: through [`StackWindow`], and one record
    /// per engine read as before it.
    fn chains_both_ways(uc: &Unicorn<'_, ()>, fp: u64) -> (Vec<u64>, Vec<u64>) {
        let page = uc.ctl_get_page_size().unwrap().into();
        let read = |at, buf: &mut [u8]| uc.vmem_read(at, Prot::READ, buf).is_ok();
        let mut window = StackWindow::new(read, page);
        let windowed = frame_chain_at(|at| window.record(at), fp, 0);
        let one_by_one = frame_chain_at(
            |at| {
                let mut buf = [0; 16];
                uc.vmem_read(at, Prot::READ, &mut buf).ok()?;
                Some(words(&buf))
            },
            fp,
            0,
        );
        (windowed, one_by_one)
    }

    #[test]
    fn a_windowed_walk_reads_what_a_walk_record_by_record_reads() {
        let mut uc = Unicorn::new(unicorn_engine::Arch::ARM64, unicorn_engine::Mode::ARM).unwrap();
        let page = u64::from(uc.ctl_get_page_size().unwrap());
        // Two mapped pages of 4 KiB (the MMU is off: virtual is physical), then none.
        let base = 0x10_0000;
        uc.mem_map(base, 0x2000, Prot::ALL).unwrap();
        let end = base + 0x2000;
        let put = |uc: &mut Unicorn<'_, ()>, fp: u64, next: u64, ret: u64| {
            let mut record = [0; 16];
            record[..8].copy_from_slice(&next.to_le_bytes());
            record[8..].copy_from_slice(&ret.to_le_bytes());
            uc.mem_write(fp, &record).unwrap();
        };
        // Frames close together, one far up the stack, one across a target page's
        // end, and the last record straddling the end of mapped memory.
        let frames = [
            base + 0x10,
            base + 0x40,
            base + 0x390,
            base + page - 8,
            base + 0x1ff0 - 0x400,
            end - 8,
        ];
        for (i, pair) in frames.windows(2).enumerate() {
            put(&mut uc, pair[0], pair[1], 0x4008_0000 + 4 * i as u64);
        }
        let (windowed, one_by_one) = chains_both_ways(&uc, frames[0]);
        assert_eq!(windowed, one_by_one);
        // Every record read, up to the one that cannot be (it ends the walk).
        assert_eq!(windowed.len(), frames.len() - 1, "{windowed:x?}");
        // A chain that ends with a zero frame pointer, within the window.
        put(&mut uc, base + 0x40, 0, 0x4009_0000);
        assert_eq!(
            chains_both_ways(&uc, frames[0]).0,
            [0x4008_0000, 0x4009_0000]
        );
        // Nothing mapped at the first record.
        assert_eq!(chains_both_ways(&uc, end + 0x100), (vec![], vec![]));
    }

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn a_frame_is_set_up_between_prologue_and_epilogue() {
        const STP: u32 = 0xa9bf_7bfd; // stp x29, x30, [sp, #-16]!
        const MOV_FP: u32 = 0x9100_03fd; // mov x29, sp
        const MSR: u32 = 0xd51b_4228; // msr daif, x8
        const LDP: u32 = 0xa8c1_7bfd; // ldp x29, x30, [sp], #16
        const RET: u32 = 0xd65f_03c0;
        const B: u32 = 0x1400_0010; // b (a tail call)
        let f = code(&[STP, MOV_FP, MSR, LDP, MSR, RET, MSR, LDP, B, MSR]);
        let framed: Vec<bool> = (0..10).map(|i| frame_set_up_at(&f, 4 * i)).collect();
        assert_eq!(
            framed,
            [false, false, true, true, false, false, true, true, false, true],
            "before the prologue, in the body, after an epilogue, on another path"
        );
        // A leaf without a frame record never has one.
        assert!(!frame_set_up_at(&code(&[MSR, RET]), 4));
        // `ldp x29, x30, [sp, #16]` (signed offset) is an epilogue too.
        assert!(!frame_set_up_at(&code(&[STP, MOV_FP, 0xa941_7bfd]), 12));
    }

    #[test]
    fn the_frames_above_a_caller_skip_its_own_record() {
        assert_eq!(frames_above(0x20, &[0x20, 0x30]), [0x30]);
        assert_eq!(frames_above(0x20, &[0x30, 0x40]), [0x30, 0x40]);
        assert_eq!(frames_above(0, &[0x30]), [0x30]);
        assert_eq!(frames_above(0x20, &[]), [] as [u64; 0]);
    }
}
