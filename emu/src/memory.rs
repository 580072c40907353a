//! Guest physical memory: one host allocation shared by every core's Unicorn instance,
//! and the narrow [`GuestMemory`] trait everything else on the host uses to touch it;
//! and an instruction word as a core fetches it.

use std::fmt;
use std::ptr::NonNull;

use unicorn_engine::{Prot, Unicorn};

/// Guest physical address of the first byte of RAM (QEMU `virt`).
pub const RAM_BASE: u64 = 0x4000_0000;

/// Unicorn maps memory in whole pages; the host allocation is aligned to match.
const PAGE_SIZE: usize = 4096;

/// An access that does not fall entirely inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRam {
    /// The access's address.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl fmt::Display for OutOfRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest access of {} bytes at {:#x} is outside memory",
            self.len, self.addr
        )
    }
}

impl std::error::Error for OutOfRam {}

/// Byte-level access to guest memory at guest addresses (physical for [`GuestRam`],
/// virtual for a core's view through its MMU).
pub trait GuestMemory {
    /// Fills `buf` from `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRam>;
    /// Stores `data` at `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), OutOfRam>;

    /// The little-endian u32 at `addr`.
    fn read_u32(&self, addr: u64) -> Result<u32, OutOfRam> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// The little-endian u64 at `addr`.
    fn read_u64(&self, addr: u64) -> Result<u64, OutOfRam> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// A little-endian value of `size` bytes (at most 8) at `addr`.
    fn read_le(&self, addr: u64, size: usize) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(addr, &mut bytes[..size.min(8)]).ok()?;
        Some(u64::from_le_bytes(bytes))
    }
    /// Stores `value` little-endian at `addr`.
    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), OutOfRam> {
        self.write(addr, &value.to_le_bytes())
    }
    /// Stores `value` little-endian at `addr`.
    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), OutOfRam> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// Guest RAM: a zeroed, page-aligned anonymous mapping. The host kernel gives it a
/// page only when the guest (or the host) first touches that page, so a run pays
/// for the memory it uses, not for the whole RAM size. Unicorn instances map it
/// with `mem_map_ptr`; they must be dropped before it (see `Machine`'s field
/// order).
pub struct GuestRam {
    base: u64,
    ptr: NonNull<u8>,
    size: usize,
}

impl GuestRam {
    /// `size` is rounded up to whole pages. Returns `None` for an empty or impossible size.
    pub fn new(base: u64, size: u64) -> Option<Self> {
        let size = usize::try_from(size)
            .ok()?
            .checked_next_multiple_of(PAGE_SIZE)?;
        if size == 0 {
            return None;
        }
        // SAFETY: a fresh private anonymous mapping of a non-zero size: it aliases
        // nothing, and the kernel zero-fills its pages on first touch.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(mapped.cast::<u8>())?;
        Some(Self { base, ptr, size })
    }

    /// The guest physical address of its first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Whether `len` bytes at `addr` lie inside it.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.base + self.size())
    }

    /// The host pointer handed to Unicorn's `mem_map_ptr`.
    pub(crate) fn host_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `size` bytes, readable, and lives as long as self;
        // guest code only runs inside `emu_start`, never while the host reads it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) }
    }

    /// Every page that is not all zero, by offset (what a snapshot keeps).
    pub(crate) fn nonzero_pages(&self) -> Vec<(usize, Box<[u8]>)> {
        let touched = self.touched_pages();
        self.bytes()
            .chunks_exact(PAGE_SIZE)
            .enumerate()
            .filter(|&(i, page)| touched.get(i) != Some(&false) && page.iter().any(|&b| b != 0))
            .map(|(i, page)| (i * PAGE_SIZE, Box::from(page)))
            .collect()
    }

    /// Per page, whether the host may hold data for it: a page of this private
    /// anonymous mapping that is neither present nor swapped out
    /// (`/proc/self/pagemap` bits 63 and 62) was never written, or was given back
    /// by [`GuestRam::reset_to`], and reads as zero; scanning it would only fault
    /// it in. Empty (scan everything) when pagemap cannot be read or host pages
    /// are not guest pages.
    fn touched_pages(&self) -> Vec<bool> {
        use std::os::unix::fs::FileExt;
        const PRESENT_OR_SWAPPED: u64 = 3 << 62;
        // SAFETY: sysconf has no memory effects.
        if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != PAGE_SIZE as libc::c_long {
            return Vec::new();
        }
        let pages = self.size / PAGE_SIZE;
        let mut entries = vec![0u8; pages * 8];
        let first = (self.ptr.as_ptr() as usize / PAGE_SIZE * 8) as u64;
        let read = std::fs::File::open("/proc/self/pagemap")
            .and_then(|f| f.read_exact_at(&mut entries, first));
        if read.is_err() {
            return Vec::new();
        }
        entries
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")) & PRESENT_OR_SWAPPED != 0)
            .collect()
    }

    /// Makes the RAM hold `pages` (from [`GuestRam::nonzero_pages`]) and zeroes
    /// elsewhere: every page is given back to the host kernel (it reads as zero
    /// again) and the saved ones are written.
    pub(crate) fn reset_to(&mut self, pages: &[(usize, Box<[u8]>)]) {
        // SAFETY: the whole mapping, private and anonymous: MADV_DONTNEED makes its
        // pages read as zero again; nothing holds references into it.
        unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.size, libc::MADV_DONTNEED) };
        for (offset, page) in pages {
            // SAFETY: `nonzero_pages` made each offset a whole page inside the
            // mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    page.as_ptr(),
                    self.ptr.as_ptr().add(*offset),
                    page.len(),
                )
            };
        }
    }

    fn offset(&self, addr: u64, len: usize) -> Result<usize, OutOfRam> {
        if self.contains(addr, len as u64) {
            Ok((addr - self.base) as usize)
        } else {
            Err(OutOfRam {
                addr,
                len: len as u64,
            })
        }
    }
}

impl GuestMemory for GuestRam {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let off = self.offset(addr, buf.len())?;
        // SAFETY: `offset` checked the range lies inside the allocation; guest code only
        // runs inside `emu_start`, never while the host holds this borrow.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), OutOfRam> {
        let off = self.offset(addr, data.len())?;
        // SAFETY: as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len())
        };
        Ok(())
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this size; the Unicorn instances that map it
        // are gone (see the type's documentation).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}

/// Reads the instruction word at virtual address `pc` through the core's MMU.
// Through the engine: the core has just fetched from that page (it is in the TLB),
// or the slice has ended, where a fill is the host's and the model ignores it.
#[allow(clippy::disallowed_methods)]
pub(crate) fn read_insn<D>(uc: &mut Unicorn<'_, D>, pc: u64) -> Option<u32> {
    let mut word = [0; 4];
    uc.vmem_read(pc, Prot::EXEC, &mut word).ok()?;
    Some(u32::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_exactly_the_nonzero_pages_and_skips_untouched_ones() {
        let pages = 64;
        let mut ram = GuestRam::new(RAM_BASE, (pages * PAGE_SIZE) as u64).unwrap();
        ram.write_u64(RAM_BASE + 3 * PAGE_SIZE as u64 + 16, 7)
            .unwrap();
        ram.write_u64(RAM_BASE + 9 * PAGE_SIZE as u64, 0).unwrap(); // touched, still zero
        let mut zero = [0u8; 8];
        ram.read(RAM_BASE + 20 * PAGE_SIZE as u64, &mut zero)
            .unwrap(); // read only
        let saved = ram.nonzero_pages();
        assert_eq!(
            saved.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
            [3 * PAGE_SIZE]
        );
        let touched = ram.touched_pages();
        if !touched.is_empty() {
            // pagemap readable here: written pages count, never-touched ones do not.
            assert!(touched[3] && touched[9]);
            assert!(!touched[0] && !touched[40]);
        }
        ram.write_u64(RAM_BASE + 5 * PAGE_SIZE as u64, 1).unwrap();
        ram.reset_to(&saved);
        let touched = ram.touched_pages();
        if !touched.is_empty() {
            assert!(!touched[5], "given back to the host by reset_to");
        }
        assert_eq!(
            ram.read_u64(RAM_BASE + 3 * PAGE_SIZE as u64 + 16).unwrap(),
            7
        );
        assert_eq!(ram.read_u64(RAM_BASE + 5 * PAGE_SIZE as u64).unwrap(), 0);
        assert_eq!(ram.nonzero_pages().len(), 1);
    }

    #[test]
    fn reads_back_what_was_written_and_rejects_the_outside() {
        let mut ram = GuestRam::new(RAM_BASE, 8192).unwrap();
        ram.write_u64(RAM_BASE + 8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(ram.read_u32(RAM_BASE + 8).unwrap(), 0x5566_7788);
        assert_eq!(ram.read_u64(RAM_BASE + 8).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(
            ram.read_u32(RAM_BASE + 8190),
            Err(OutOfRam {
                addr: RAM_BASE + 8190,
                len: 4
            })
        );
        assert!(ram.write(RAM_BASE - 1, &[0]).is_err());
        assert!(ram.read_u64(u64::MAX - 3).is_err());
    }
}
