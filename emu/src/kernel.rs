//! The guest kernel ELF: loadable segments (by physical address), entry point and the
//! symbol table used to name PCs and to read exported data such as
//! `PERCPU_LAB_SCENARIOS`.
//!
//! A Linux `vmlinux` links its segments with physical = virtual addresses in the
//! kernel half, where no board has RAM: it is meant to be loaded by the arm64 boot
//! protocol instead (Documentation/arch/arm64/booting.rst), as its flat `Image` at a
//! 2 MiB-aligned RAM address plus the header's `text_offset`. Such an ELF (its first
//! segment starts with the `Image` header) is placed that way: the segments keep
//! their link addresses and get physical ones at the start of RAM.

use std::fmt;
use std::path::Path;

use goblin::elf::{
    header, program_header::PT_LOAD, sym::STT_FUNC, sym::STT_NOTYPE, sym::STT_OBJECT, Elf,
};

use crate::memory::{GuestMemory, OutOfRam, RAM_BASE};

/// The arm64 `Image` header's magic, at offset 0x38 (`ARM\x64`).
const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
const IMAGE_MAGIC_OFFSET: usize = 0x38;
/// The header's little-endian u64 `text_offset`, at offset 8.
const IMAGE_TEXT_OFFSET: usize = 8;
/// Addresses from here up are the kernel half of the address space.
const KERNEL_HALF: u64 = 0xffff_0000_0000_0000;

/// Why a file cannot be used as the guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    Unreadable {
        path: String,
        reason: String,
    },
    NotElf,
    Not64Bit,
    NotLittleEndian,
    WrongMachine {
        machine: String,
    },
    NoLoadableSegment,
    SegmentOutsideRam {
        paddr: u64,
        size: u64,
    },
    /// `e_type` is not ET_EXEC (a relocatable object or a shared/PIE object).
    NotExecutable {
        kind: &'static str,
    },
    EntryOutsideCode {
        entry: u64,
    },
    OverlappingSegments {
        space: &'static str,
        first: u64,
        second: u64,
    },
    /// A function the recorder probes lies outside the executable segments.
    ProbeOutsideCode {
        name: String,
        addr: u64,
    },
    Malformed(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, reason } => write!(f, "cannot read kernel {path}: {reason}"),
            Self::NotElf => write!(f, "kernel is not an ELF file"),
            Self::Not64Bit => write!(
                f,
                "kernel is a 32-bit ELF; an AArch64 (64-bit) kernel is needed"
            ),
            Self::NotLittleEndian => write!(
                f,
                "kernel is a big-endian ELF; a little-endian AArch64 kernel is needed"
            ),
            Self::WrongMachine { machine } => {
                write!(f, "kernel is built for {machine}, not AArch64")
            }
            Self::NoLoadableSegment => write!(f, "kernel has no loadable (PT_LOAD) segment"),
            Self::SegmentOutsideRam { paddr, size } => write!(
                f,
                "kernel segment at physical {paddr:#x} ({size:#x} bytes) lies outside guest RAM"
            ),
            Self::NotExecutable { kind } => write!(
                f,
                "kernel is {kind}; a linked, position-dependent executable (ET_EXEC) is needed"
            ),
            Self::EntryOutsideCode { entry } => write!(
                f,
                "kernel entry point {entry:#x} lies outside every executable PT_LOAD segment"
            ),
            Self::OverlappingSegments {
                space,
                first,
                second,
            } => write!(
                f,
                "kernel PT_LOAD segments at {space} {first:#x} and {second:#x} overlap"
            ),
            Self::ProbeOutsideCode { name, addr } => write!(
                f,
                "kernel function `{name}` (probed by the recorder) at {addr:#x} lies outside the loaded code"
            ),
            Self::Malformed(why) => write!(f, "kernel ELF is malformed: {why}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// One PT_LOAD segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    paddr: u64,
    file_offset: u64,
    file_size: u64,
    mem_size: u64,
    executable: bool,
}

#[derive(Debug, Clone)]
struct Symbol {
    addr: u64,
    size: u64,
    name: String,
    raw_name: String,
}

/// A parsed, validated guest kernel.
#[derive(Debug, Clone)]
pub struct KernelImage {
    bytes: Vec<u8>,
    segments: Vec<Segment>,
    entry: u64,
    /// Function and object symbols, sorted by address.
    symbols: Vec<Symbol>,
    /// Placed by the arm64 boot protocol (a Linux `vmlinux`), not by its ELF
    /// physical addresses.
    boot_protocol: bool,
}

impl KernelImage {
    pub fn from_path(path: &Path) -> Result<Self, KernelError> {
        let bytes = std::fs::read(path).map_err(|e| KernelError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, KernelError> {
        check_ident(&bytes)?;
        let elf = Elf::parse(&bytes).map_err(|e| KernelError::Malformed(e.to_string()))?;
        if elf.header.e_machine != header::EM_AARCH64 {
            return Err(KernelError::WrongMachine {
                machine: machine_name(elf.header.e_machine),
            });
        }
        check_type(elf.header.e_type)?;
        let mut segments: Vec<Segment> = elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0)
            .map(|ph| Segment {
                vaddr: ph.p_vaddr,
                paddr: ph.p_paddr,
                file_offset: ph.p_offset,
                file_size: ph.p_filesz,
                mem_size: ph.p_memsz,
                executable: ph.p_flags & goblin::elf::program_header::PF_X != 0,
            })
            .collect();
        if segments.is_empty() {
            return Err(KernelError::NoLoadableSegment);
        }
        for s in &segments {
            let in_file = s
                .file_offset
                .checked_add(s.file_size)
                .is_some_and(|end| end <= bytes.len() as u64);
            if !in_file || s.file_size > s.mem_size {
                return Err(KernelError::Malformed(format!(
                    "segment at {:#x} exceeds the file",
                    s.paddr
                )));
            }
        }
        let boot_protocol = place_by_boot_protocol(&mut segments, &bytes);
        check_no_overlap(&segments, "physical", |s| s.paddr)?;
        check_no_overlap(&segments, "virtual", |s| s.vaddr)?;
        let entry_in_code = segments.iter().any(|s| {
            s.executable
                && [s.vaddr, s.paddr]
                    .iter()
                    .any(|&base| elf.entry >= base && elf.entry - base < s.mem_size)
        });
        if !entry_in_code {
            return Err(KernelError::EntryOutsideCode { entry: elf.entry });
        }
        let mut symbols: Vec<Symbol> = elf
            .syms
            .iter()
            // Untyped symbols are assembly labels (exception entry, context switch).
            .filter(|s| {
                matches!(s.st_type(), STT_FUNC | STT_OBJECT | STT_NOTYPE) && s.st_value != 0
            })
            .filter_map(|s| {
                let raw = elf.strtab.get_at(s.st_name)?;
                if raw.is_empty() || raw.starts_with('$') || raw.starts_with(".L") {
                    return None; // mapping symbols ($x, $d) and local temporaries
                }
                Some(Symbol {
                    addr: s.st_value,
                    size: s.st_size,
                    name: format!("{:#}", rustc_demangle::demangle(raw)),
                    raw_name: raw.to_string(),
                })
            })
            .collect();
        // At one address the sized symbol sorts last, so that lookups prefer it.
        symbols.sort_by_key(|s| (s.addr, s.size));
        let image = Self {
            entry: elf.entry,
            bytes: Vec::new(),
            segments,
            symbols,
            boot_protocol,
        };
        Ok(Self { bytes, ..image })
    }

    /// Whether this is a Linux-style `vmlinux` placed by the arm64 boot protocol
    /// (see the module doc) rather than a percpu-lab guest loaded by its ELF
    /// physical addresses.
    pub fn is_boot_protocol_image(&self) -> bool {
        self.boot_protocol
    }

    /// Where code linked at `vaddr` also runs, if anywhere else: a boot-protocol
    /// kernel runs its early code at its physical address, MMU off.
    pub fn physical_alias(&self, vaddr: u64) -> Option<u64> {
        self.to_physical(vaddr).filter(|&pa| pa != vaddr)
    }

    /// Physical address the boot CPU starts at (the ELF entry, moved to its physical
    /// address when it is given as a link-time virtual address).
    pub fn entry(&self) -> u64 {
        self.to_physical(self.entry).unwrap_or(self.entry)
    }

    /// Copies every segment into guest memory at its physical address (and zeroes its
    /// tail past the file contents).
    pub fn load_into(&self, mem: &mut dyn GuestMemory) -> Result<(), KernelError> {
        for s in &self.segments {
            let outside = |_: OutOfRam| KernelError::SegmentOutsideRam {
                paddr: s.paddr,
                size: s.mem_size,
            };
            let data = &self.bytes[s.file_offset as usize..(s.file_offset + s.file_size) as usize];
            mem.write(s.paddr, data).map_err(outside)?;
            let bss = vec![0; (s.mem_size - s.file_size) as usize];
            mem.write(s.paddr + s.file_size, &bss).map_err(outside)?;
        }
        Ok(())
    }

    /// Checks every segment lies in `[base, base+size)` without touching memory.
    pub fn check_fits(&self, base: u64, size: u64) -> Result<(), KernelError> {
        for s in &self.segments {
            let fits = s.paddr >= base
                && s.paddr
                    .checked_add(s.mem_size)
                    .is_some_and(|e| e <= base + size);
            if !fits {
                return Err(KernelError::SegmentOutsideRam {
                    paddr: s.paddr,
                    size: s.mem_size,
                });
            }
        }
        Ok(())
    }

    /// Physical end of the highest segment.
    pub fn physical_end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.paddr + s.mem_size)
            .max()
            .unwrap_or(0)
    }

    /// `name+0xoff` for the function or object containing `pc` (a link address, or a
    /// physical address inside a segment, as seen before the guest turns its MMU on).
    pub fn symbolize(&self, pc: u64) -> Option<String> {
        let lookup = |addr: u64| {
            let idx = self
                .symbols
                .partition_point(|s| s.addr <= addr)
                .checked_sub(1)?;
            let sym = &self.symbols[idx];
            let off = addr - sym.addr;
            // A label without a size extends to the next symbol.
            let inside = if sym.size > 0 {
                off < sym.size
            } else {
                self.symbols
                    .get(idx + 1)
                    .is_none_or(|next| addr < next.addr)
                    && self.in_segment(addr)
            };
            inside.then(|| format!("{}+{:#x}", sym.name, off))
        };
        lookup(pc).or_else(|| lookup(self.physical_to_link(pc)?))
    }

    /// Names a return address from a backtrace by the function that made the call:
    /// looks up `ret - 1` (a call that ends a function returns to the next one) and
    /// prints the offset of `ret` itself, as Linux's `%pB` does.
    pub fn symbolize_return(&self, ret: u64) -> Option<String> {
        let call = self.symbolize(ret.checked_sub(1)?)?;
        let (name, off) = call.rsplit_once("+0x")?;
        let off = u64::from_str_radix(off, 16).ok()? + 1;
        Some(format!("{name}+{off:#x}"))
    }

    /// The contents of a data symbol as stored in the ELF file (by raw or demangled name).
    pub fn symbol_bytes(&self, name: &str) -> Option<&[u8]> {
        let sym = self.find(name)?;
        let seg = self
            .segments
            .iter()
            .find(|s| sym.addr >= s.vaddr && sym.addr + sym.size <= s.vaddr + s.file_size)?;
        let start = (seg.file_offset + (sym.addr - seg.vaddr)) as usize;
        self.bytes.get(start..start + sym.size as usize)
    }

    /// The code of function `name` (its entry address and bytes), for probing it:
    /// `None` when the kernel has no such symbol, an error when it has one that does
    /// not lie inside an executable segment's file contents (a probe there would
    /// never fire, and a lock released there would look held forever).
    pub fn function_code(&self, name: &str) -> Result<Option<(u64, &[u8])>, KernelError> {
        let Some(sym) = self.find(name) else {
            return Ok(None);
        };
        self.code_of(sym)
            .map(Some)
            .ok_or(KernelError::ProbeOutsideCode {
                name: name.to_string(),
                addr: sym.addr,
            })
    }

    /// The function whose code contains `addr` (its entry address and bytes), if a
    /// sized symbol inside an executable segment covers it.
    pub fn function_containing(&self, addr: u64) -> Option<(u64, &[u8])> {
        let idx = self
            .symbols
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let sym = &self.symbols[idx];
        (addr - sym.addr < sym.size).then(|| self.code_of(sym))?
    }

    /// The bytes of `sym` if it lies inside an executable segment's file contents.
    fn code_of(&self, sym: &Symbol) -> Option<(u64, &[u8])> {
        let end = sym.addr.checked_add(sym.size)?;
        let seg = self
            .segments
            .iter()
            .find(|s| s.executable && sym.addr >= s.vaddr && end <= s.vaddr + s.file_size)?;
        let start = (seg.file_offset + (sym.addr - seg.vaddr)) as usize;
        Some((sym.addr, &self.bytes[start..start + sym.size as usize]))
    }

    /// Every aligned 32-bit word of the executable segments, with its link address
    /// (for scanning the kernel's code for instructions to hook).
    pub fn code_words(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.segments
            .iter()
            .filter(|s| s.executable)
            .flat_map(move |s| {
                let start = s.file_offset as usize;
                let code = &self.bytes[start..start + s.file_size as usize];
                code.chunks_exact(4).enumerate().map(move |(i, w)| {
                    let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    (s.vaddr + 4 * i as u64, word)
                })
            })
    }

    /// The ELF file as loaded (e.g. to hash it).
    pub fn elf_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        self.find(name).map(|s| s.addr)
    }

    fn find(&self, name: &str) -> Option<&Symbol> {
        self.symbols
            .iter()
            .find(|s| s.raw_name == name || s.name == name)
    }

    fn in_segment(&self, vaddr: u64) -> bool {
        self.segments
            .iter()
            .any(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.mem_size)
    }

    fn to_physical(&self, vaddr: u64) -> Option<u64> {
        let s = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.mem_size)?;
        Some(s.paddr + (vaddr - s.vaddr))
    }

    fn physical_to_link(&self, paddr: u64) -> Option<u64> {
        let s = self
            .segments
            .iter()
            .find(|s| s.paddr != s.vaddr && paddr >= s.paddr && paddr < s.paddr + s.mem_size)?;
        Some(s.vaddr + (paddr - s.paddr))
    }
}

/// Gives the segments of a `vmlinux` (every segment linked at physical addresses in
/// the kernel half, the lowest one starting with the arm64 `Image` header) the
/// physical addresses its flat `Image` has when loaded at the start of RAM plus
/// `text_offset`; says whether it did. Other ELFs are left alone.
fn place_by_boot_protocol(segments: &mut [Segment], bytes: &[u8]) -> bool {
    if !segments.iter().all(|s| s.paddr >= KERNEL_HALF) {
        return false;
    }
    let Some(first) = segments.iter().min_by_key(|s| s.vaddr).copied() else {
        return false;
    };
    let header_end = IMAGE_MAGIC_OFFSET + IMAGE_MAGIC.len();
    if (first.file_size as usize) < header_end {
        return false;
    }
    let header = &bytes[first.file_offset as usize..][..header_end];
    if header[IMAGE_MAGIC_OFFSET..] != IMAGE_MAGIC {
        return false;
    }
    let text_offset = u64::from_le_bytes(
        header[IMAGE_TEXT_OFFSET..IMAGE_TEXT_OFFSET + 8]
            .try_into()
            .expect("8 bytes"),
    );
    // RAM_BASE is 2 MiB-aligned, as the protocol asks of the Image's base.
    let base = RAM_BASE + text_offset;
    for s in segments.iter_mut() {
        s.paddr = base + (s.vaddr - first.vaddr);
    }
    true
}

/// Only a linked executable has the fixed addresses the machine loads it at.
fn check_type(e_type: u16) -> Result<(), KernelError> {
    let kind = match e_type {
        header::ET_EXEC => return Ok(()),
        header::ET_REL => "a relocatable object file (ET_REL)",
        header::ET_DYN => "a position-independent/shared object (ET_DYN)",
        header::ET_CORE => "a core dump (ET_CORE)",
        _ => "not an executable (unknown e_type)",
    };
    Err(KernelError::NotExecutable { kind })
}

/// Loading overlapping segments would let the later one silently overwrite the
/// earlier; `start` picks the address space compared (physical or virtual).
fn check_no_overlap(
    segments: &[Segment],
    space: &'static str,
    start: impl Fn(&Segment) -> u64,
) -> Result<(), KernelError> {
    let mut ranges: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| (start(s), start(s).saturating_add(s.mem_size)))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[0].1 > pair[1].0 {
            return Err(KernelError::OverlappingSegments {
                space,
                first: pair[0].0,
                second: pair[1].0,
            });
        }
    }
    Ok(())
}

/// Checks the identification bytes first so that each wrong kind of file gets its own
/// error rather than a parser message.
fn check_ident(bytes: &[u8]) -> Result<(), KernelError> {
    if bytes.len() < header::SIZEOF_IDENT || &bytes[..4] != header::ELFMAG {
        return Err(KernelError::NotElf);
    }
    if bytes[header::EI_CLASS] != header::ELFCLASS64 {
        return Err(KernelError::Not64Bit);
    }
    if bytes[header::EI_DATA] != header::ELFDATA2LSB {
        return Err(KernelError::NotLittleEndian);
    }
    Ok(())
}

fn machine_name(machine: u16) -> String {
    match machine {
        header::EM_X86_64 => "x86-64".into(),
        header::EM_386 => "i386".into(),
        header::EM_ARM => "32-bit ARM".into(),
        header::EM_RISCV => "RISC-V".into(),
        header::EM_PPC64 => "PowerPC64".into(),
        header::EM_S390 => "s390".into(),
        header::EM_MIPS => "MIPS".into(),
        other => format!("{} (e_machine {other})", header::machine_to_str(other)),
    }
}
