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
//!
//! A bare `Image` (no ELF around it) is placed the same way. It names nothing by
//! itself: its symbols come from the `vmlinux` it was made from (symbols and DWARF;
//! its loadable contents must be the Image's bytes) or from its `System.map` (names
//! only; its `_end - _text` must be the header's image size).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use goblin::elf::{
    header, program_header::PT_LOAD, sym::STT_FUNC, sym::STT_NOTYPE, sym::STT_OBJECT, Elf,
};

use crate::memory::{GuestMemory, OutOfRam, RAM_BASE};
use crate::Isa;

/// The arm64 `Image` header's magic, at offset 0x38 (`ARM\x64`).
const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
const IMAGE_MAGIC_OFFSET: usize = 0x38;
/// The header's little-endian u64 `text_offset`, at offset 8.
const IMAGE_TEXT_OFFSET: usize = 8;
/// The header's little-endian u64 `image_size` (`_end - _text`; 0 before Linux 3.17).
const IMAGE_SIZE_OFFSET: usize = 16;
/// The header's little-endian u64 flags; bit 0 set means a big-endian kernel.
const IMAGE_FLAGS_OFFSET: usize = 24;
/// The header's size (the magic and one reserved word end it).
const IMAGE_HEADER_SIZE: usize = 64;
/// Addresses from here up are the kernel half of the address space.
const KERNEL_HALF: u64 = 0xffff_0000_0000_0000;

/// Why a file cannot be used as the guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// The file could not be read.
    Unreadable {
        /// The file.
        path: String,
        /// The OS's error.
        reason: String,
    },
    /// Neither an ELF nor an arm64 `Image`.
    NotElf,
    /// A 32-bit ELF.
    Not64Bit,
    /// A big-endian ELF.
    NotLittleEndian,
    /// An ELF for another machine.
    WrongMachine {
        /// The machine it names.
        machine: String,
    },
    /// No PT_LOAD segment.
    NoLoadableSegment,
    /// A segment that does not fit in guest RAM.
    SegmentOutsideRam {
        /// Its physical address.
        paddr: u64,
        /// Its size in memory.
        size: u64,
    },
    /// `e_type` is not ET_EXEC (a relocatable object or a shared/PIE object).
    NotExecutable {
        /// What it is instead.
        kind: &'static str,
    },
    /// The entry point is in no executable segment.
    EntryOutsideCode {
        /// The entry point.
        entry: u64,
    },
    /// Two PT_LOAD segments overlap.
    OverlappingSegments {
        /// Where: `virtual` or `physical`.
        space: &'static str,
        /// The first segment's start.
        first: u64,
        /// The second segment's start.
        second: u64,
    },
    /// A function the recorder probes lies outside the executable segments.
    ProbeOutsideCode {
        /// The function.
        name: String,
        /// Its address.
        addr: u64,
    },
    /// The ELF or `Image` does not parse; what the parser said.
    Malformed(String),
    /// `--symbols` given for a kernel that is an ELF (it has its own).
    SymbolsForElf,
    /// The symbols file cannot be used for the `Image`.
    BadSymbols(String),
    /// The symbols file describes another build than the `Image`.
    SymbolsMismatch(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, reason } => write!(f, "cannot read kernel {path}: {reason}"),
            Self::NotElf => write!(f, "kernel is neither an ELF file nor an arm64 Image"),
            Self::Not64Bit => write!(
                f,
                "kernel is a 32-bit ELF; an AArch64 (64-bit) kernel is needed"
            ),
            Self::NotLittleEndian => write!(
                f,
                "kernel is a big-endian ELF; a little-endian AArch64 kernel is needed"
            ),
            Self::WrongMachine { machine } => {
                write!(f, "kernel is built for {machine}, not AArch64 or RV64")
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
            Self::SymbolsForElf => write!(
                f,
                "--symbols is for a bare arm64 Image; this kernel is an ELF with its own symbols"
            ),
            Self::BadSymbols(why) => write!(f, "the kernel's symbols are unusable: {why}"),
            Self::SymbolsMismatch(why) => {
                write!(f, "the symbols are not those of this Image: {why}")
            }
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
    /// Whether the segment is known to be code (and what belongs with it, such as
    /// read-only data): not a whole `Image` only assumed executable, data and all.
    known_code: bool,
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
    /// The instruction set it is built for (its ELF `e_machine`; a bare `Image`
    /// is arm64).
    isa: Isa,
    /// The file that runs: an ELF, or a bare `Image` (shared: clones are cheap, and
    /// every analysis of every explored schedule holds one).
    bytes: Arc<[u8]>,
    segments: Vec<Segment>,
    entry: u64,
    /// Function and object symbols, sorted by address.
    symbols: Arc<[Symbol]>,
    /// Placed by the arm64 boot protocol (a Linux `vmlinux` or `Image`), not by its
    /// ELF physical addresses.
    boot_protocol: bool,
    debug_info: DebugInfo,
}

/// Where a kernel's DWARF is.
#[derive(Debug, Clone)]
enum DebugInfo {
    /// In the ELF that runs.
    InFile,
    /// In the `vmlinux` given for a bare `Image`.
    Separate(Arc<[u8]>),
    /// Nowhere (an `Image` with a `System.map`, or with no symbols).
    Absent,
}

/// Where a bare `Image`'s symbols come from.
#[derive(Debug, Clone, Copy)]
pub enum ImageSymbols<'a> {
    /// None: PCs stay numbers.
    None,
    /// The `vmlinux` the Image was made from (symbols and DWARF).
    Vmlinux(&'a [u8]),
    /// Its `System.map` (`address type name` lines).
    SystemMap(&'a str),
}

impl KernelImage {
    /// Loads the kernel file at `path` (an ELF, or an arm64 `Image`).
    pub fn from_path(path: &Path) -> Result<Self, KernelError> {
        Self::from_bytes(read(path)?)
    }

    /// The kernel at `path`, with a bare `Image`'s symbols from `symbols` (a
    /// `vmlinux`, or else a `System.map`); an ELF kernel refuses them.
    pub fn from_path_with_symbols(path: &Path, symbols: &Path) -> Result<Self, KernelError> {
        let bytes = read(path)?;
        if bytes.starts_with(header::ELFMAG) {
            return Err(KernelError::SymbolsForElf);
        }
        let symbols_file = read(symbols)?;
        if symbols_file.starts_with(header::ELFMAG) {
            return Self::from_image(bytes, ImageSymbols::Vmlinux(&symbols_file));
        }
        let text = std::str::from_utf8(&symbols_file).map_err(|_| {
            KernelError::BadSymbols(format!(
                "{} is neither an ELF vmlinux nor a text System.map",
                symbols.display()
            ))
        })?;
        Self::from_image(bytes, ImageSymbols::SystemMap(text))
    }

    /// An ELF kernel, or a bare arm64 `Image` (with no symbols).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, KernelError> {
        if !bytes.starts_with(header::ELFMAG) && image_header(&bytes).is_some() {
            return Self::from_image(bytes, ImageSymbols::None);
        }
        check_ident(&bytes)?;
        let elf = Elf::parse(&bytes).map_err(|e| KernelError::Malformed(e.to_string()))?;
        let isa = match elf.header.e_machine {
            header::EM_AARCH64 => Isa::Aarch64,
            header::EM_RISCV if elf.is_64 => Isa::Riscv64,
            other => {
                return Err(KernelError::WrongMachine {
                    machine: machine_name(other),
                })
            }
        };
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
                known_code: ph.p_flags & goblin::elf::program_header::PF_X != 0,
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
        let boot_protocol = isa == Isa::Aarch64 && place_by_boot_protocol(&mut segments, &bytes);
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
        let image = Self {
            isa,
            entry: elf.entry,
            bytes: Arc::from([]),
            segments,
            symbols: elf_symbols(&elf).into(),
            boot_protocol,
            debug_info: DebugInfo::InFile,
        };
        Ok(Self {
            bytes: bytes.into(),
            ..image
        })
    }

    /// A bare arm64 `Image`, placed by the boot protocol, named by `symbols`.
    pub fn from_image(image: Vec<u8>, symbols: ImageSymbols<'_>) -> Result<Self, KernelError> {
        let header = image_header(&image).ok_or(KernelError::NotElf)?;
        if header.big_endian {
            return Err(KernelError::NotLittleEndian);
        }
        let file_size = image.len() as u64;
        let mem_size = header.image_size.max(file_size);
        let paddr = RAM_BASE + header.text_offset;
        let whole = |vaddr: u64| Segment {
            vaddr,
            paddr,
            file_offset: 0,
            file_size,
            mem_size,
            executable: true,
            known_code: false,
        };
        let (segments, symbols, debug_info) = match symbols {
            // Unnamed, it is known at its physical addresses only.
            ImageSymbols::None => (vec![whole(paddr)], Vec::new(), DebugInfo::Absent),
            ImageSymbols::Vmlinux(vmlinux) => {
                let (segments, symbols) = vmlinux_layout(vmlinux, &image, &header)?;
                (segments, symbols, DebugInfo::Separate(vmlinux.into()))
            }
            ImageSymbols::SystemMap(map) => {
                let mut symbols = system_map_symbols(map)?;
                let text = symbol_in(&symbols, "_text")?;
                let end = symbol_in(&symbols, "_end")?;
                if header.image_size != 0 && end.wrapping_sub(text) != header.image_size {
                    return Err(KernelError::SymbolsMismatch(format!(
                        "its _end - _text is {:#x}, the Image's size {:#x}",
                        end.wrapping_sub(text),
                        header.image_size
                    )));
                }
                size_by_next(&mut symbols, text + mem_size);
                let segments = map_segments(&symbols, text, paddr, file_size, mem_size);
                (segments, symbols, DebugInfo::Absent)
            }
        };
        let entry = segments.iter().map(|s| s.vaddr).min().unwrap_or(paddr);
        Ok(Self {
            isa: Isa::Aarch64,
            bytes: image.into(),
            segments,
            entry,
            symbols: symbols.into(),
            boot_protocol: true,
            debug_info,
        })
    }

    /// Whether this is a Linux-style `vmlinux` placed by the arm64 boot protocol
    /// (see the module doc) rather than a percpu-lab guest loaded by its ELF
    /// physical addresses.
    pub fn is_boot_protocol_image(&self) -> bool {
        self.boot_protocol
    }

    /// Whether anything names the kernel's addresses (a bare `Image` given without
    /// `--symbols` has no names, and its link addresses are unknown).
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// Where code linked at `vaddr` also runs, if anywhere else: a boot-protocol
    /// kernel runs its early code at its physical address, MMU off.
    pub fn physical_alias(&self, vaddr: u64) -> Option<u64> {
        self.to_physical(vaddr).filter(|&pa| pa != vaddr)
    }

    /// The instruction set the kernel is built for.
    pub fn isa(&self) -> Isa {
        self.isa
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

    /// The 32-bit word of the executable segments at link address `addr`.
    pub fn code_word(&self, addr: u64) -> Option<u32> {
        let end = addr.checked_add(4)?;
        let seg = (self.segments.iter())
            .find(|s| s.executable && addr >= s.vaddr && end <= s.vaddr + s.file_size)?;
        let start = (seg.file_offset + (addr - seg.vaddr)) as usize;
        let bytes = self.bytes.get(start..start + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
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

    /// Where the executable segments lie in guest physical memory.
    pub fn code_physical_ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.segments
            .iter()
            .filter(|s| s.executable)
            .map(|s| s.paddr..s.paddr + s.mem_size)
            .collect()
    }

    /// Where the kernel's code is known to lie, at its link (virtual) addresses:
    /// executable ELF segments, or an `Image`'s text between its text symbols; not
    /// a whole `Image` only assumed executable (it holds data too).
    pub fn known_code_ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.segments
            .iter()
            .filter(|s| s.known_code)
            .map(|s| s.vaddr..s.vaddr + s.file_size)
            .collect()
    }

    /// The kernel file as given (ELF or `Image`), e.g. to hash it.
    pub fn file_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ELF that holds the kernel's DWARF: the kernel itself, or the `vmlinux`
    /// given as a bare `Image`'s symbols; `None` when there is no such ELF.
    pub fn debug_elf(&self) -> Option<&[u8]> {
        match &self.debug_info {
            DebugInfo::InFile => Some(&self.bytes),
            DebugInfo::Separate(elf) => Some(elf),
            DebugInfo::Absent => None,
        }
    }

    /// The address of the symbol `name`.
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

fn read(path: &Path) -> Result<Vec<u8>, KernelError> {
    std::fs::read(path).map_err(|e| KernelError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The fields of an arm64 `Image` header the loader needs.
struct ImageHeader {
    text_offset: u64,
    image_size: u64,
    big_endian: bool,
}

/// The header of an arm64 `Image` at the start of `bytes`, if its magic is there.
fn image_header(bytes: &[u8]) -> Option<ImageHeader> {
    let header = bytes.get(..IMAGE_HEADER_SIZE)?;
    if header[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] != IMAGE_MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    Some(ImageHeader {
        text_offset: word(IMAGE_TEXT_OFFSET),
        image_size: word(IMAGE_SIZE_OFFSET),
        big_endian: word(IMAGE_FLAGS_OFFSET) & 1 != 0,
    })
}

/// Function, object and label symbols of `elf`, sorted by address.
fn elf_symbols(elf: &Elf) -> Vec<Symbol> {
    let mut symbols: Vec<Symbol> = elf
        .syms
        .iter()
        // Untyped symbols are assembly labels (exception entry, context switch).
        .filter(|s| matches!(s.st_type(), STT_FUNC | STT_OBJECT | STT_NOTYPE) && s.st_value != 0)
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
    symbols
}

/// The address of `name` among `symbols`.
fn symbol_in(symbols: &[Symbol], name: &str) -> Result<u64, KernelError> {
    symbols
        .iter()
        .find(|s| s.raw_name == name)
        .map(|s| s.addr)
        .ok_or_else(|| KernelError::BadSymbols(format!("they have no `{name}`")))
}

/// The segments and symbols of the `vmlinux` an `Image` was made from, with file
/// offsets into the Image; checks that each segment's contents are the Image's.
fn vmlinux_layout(
    vmlinux: &[u8],
    image: &[u8],
    header: &ImageHeader,
) -> Result<(Vec<Segment>, Vec<Symbol>), KernelError> {
    let bad = |why: String| KernelError::BadSymbols(format!("the vmlinux {why}"));
    check_ident(vmlinux).map_err(|e| bad(format!("is unusable ({e})")))?;
    let elf = Elf::parse(vmlinux).map_err(|e| bad(format!("is malformed ({e})")))?;
    if elf.header.e_machine != header::EM_AARCH64 {
        return Err(bad("is not for AArch64".into()));
    }
    let symbols = elf_symbols(&elf);
    let text = symbol_in(&symbols, "_text")?;
    let mut segments = Vec::new();
    for ph in elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0)
    {
        let offset = ph.p_vaddr.wrapping_sub(text);
        let in_image = image.len() as u64 > offset;
        let file_size = if in_image {
            ph.p_filesz.min(image.len() as u64 - offset)
        } else {
            0
        };
        let ours = &image[offset.min(image.len() as u64) as usize..][..file_size as usize];
        let theirs = vmlinux
            .get(ph.p_offset as usize..)
            .and_then(|b| b.get(..file_size as usize));
        if theirs != Some(ours) || (ph.p_filesz > 0 && !in_image) {
            return Err(KernelError::SymbolsMismatch(format!(
                "the vmlinux segment at {:#x} is not what the Image holds there",
                ph.p_vaddr
            )));
        }
        segments.push(Segment {
            vaddr: ph.p_vaddr,
            paddr: RAM_BASE + header.text_offset + offset,
            file_offset: offset,
            file_size,
            mem_size: ph.p_memsz,
            executable: ph.p_flags & goblin::elf::program_header::PF_X != 0,
            known_code: ph.p_flags & goblin::elf::program_header::PF_X != 0,
        });
    }
    if segments.is_empty() {
        return Err(bad("has no loadable segment".into()));
    }
    Ok((segments, symbols))
}

/// The symbols of a `System.map` (`address type name` per line), sorted by address
/// and without sizes; absolute (`A`), undefined and debugging ones are left out.
fn system_map_symbols(map: &str) -> Result<Vec<Symbol>, KernelError> {
    let mut symbols = Vec::new();
    for (n, line) in map.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(KernelError::BadSymbols(format!(
                "System.map line {} is not `address type name`",
                n + 1
            )));
        };
        let addr = u64::from_str_radix(addr, 16).map_err(|_| {
            KernelError::BadSymbols(format!("System.map line {}: bad address", n + 1))
        })?;
        if matches!(kind, "A" | "a" | "U" | "N" | "n") || name.starts_with('$') {
            continue;
        }
        symbols.push(Symbol {
            addr,
            size: 0,
            name: name.to_string(),
            raw_name: name.to_string(),
        });
    }
    symbols.sort_by_key(|s| s.addr);
    Ok(symbols)
}

/// An `Image`'s segments as its `System.map` shows them: code in `[_text, _etext)`
/// and in `[__inittext_begin, __inittext_end)` (arm64 Linux's layout), data around
/// them; all of it code when the map does not mark them.
fn map_segments(
    symbols: &[Symbol],
    text: u64,
    paddr: u64,
    file_size: u64,
    mem_size: u64,
) -> Vec<Segment> {
    let offset_of = |name: &str| {
        symbol_in(symbols, name)
            .ok()
            .map(|a| a.wrapping_sub(text))
            .filter(|&off| off <= file_size)
    };
    let code: Vec<(u64, u64)> = [("_text", "_etext"), ("__inittext_begin", "__inittext_end")]
        .iter()
        .filter_map(|(start, end)| Some((offset_of(start)?, offset_of(end)?)))
        .filter(|(start, end)| start < end)
        .collect();
    let mut cuts: Vec<u64> = code.iter().flat_map(|&(s, e)| [s, e]).collect();
    cuts.extend([0, file_size]);
    cuts.sort_unstable();
    cuts.dedup();
    let all_code = code.is_empty();
    cuts.windows(2)
        .map(|w| {
            let (start, end) = (w[0], w[1]);
            let last = end == file_size;
            Segment {
                vaddr: text + start,
                paddr: paddr + start,
                file_offset: start,
                file_size: end - start,
                // The tail past the file (`.bss`) belongs to the last piece.
                mem_size: if last { mem_size - start } else { end - start },
                executable: all_code || code.iter().any(|&(s, e)| start >= s && end <= e),
                known_code: code.iter().any(|&(s, e)| start >= s && end <= e),
            }
        })
        .collect()
}

/// Gives each unsized symbol the size up to the next higher address (the last one
/// up to `end`), so that its code can be read and probed.
fn size_by_next(symbols: &mut [Symbol], end: u64) {
    let starts: Vec<u64> = symbols.iter().map(|s| s.addr).collect();
    for (i, sym) in symbols.iter_mut().enumerate() {
        let next = starts[i..]
            .iter()
            .copied()
            .find(|&a| a > sym.addr)
            .unwrap_or(end);
        sym.size = next.saturating_sub(sym.addr);
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
    let contents = &bytes[first.file_offset as usize..][..first.file_size as usize];
    let Some(header) = image_header(contents) else {
        return false;
    };
    // RAM_BASE is 2 MiB-aligned, as the protocol asks of the Image's base.
    let base = RAM_BASE + header.text_offset;
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
