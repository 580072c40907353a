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
    pub fn new(uc: &'a mut Unicorn<'static, ()>) -> Self {
        Self { uc }
    }
}

impl GuestMemory for CoreView<'_> {
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
pub fn frame_pointer_chain(mem: &dyn GuestMemory, mut fp: u64) -> Vec<u64> {
    let mut trace = Vec::new();
    let mut seen = Vec::new();
    while fp != 0 && fp.is_multiple_of(8) && trace.len() < MAX_FRAMES && !seen.contains(&fp) {
        let (Ok(next), Ok(ret)) = (mem.read_u64(fp), mem.read_u64(fp + 8)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        seen.push(fp);
        trace.push(ret);
        fp = next;
    }
    trace
}

#[cfg(test)]
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
}
