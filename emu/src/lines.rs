//! Source lines of guest code addresses, read from the kernel ELF's DWARF line
//! tables (`addr2line` over `gimli`), for reports that name `file:line`.

use std::sync::Arc;

/// The directory `guest/build.sh` maps the repository to in the guest's panic
/// locations and DWARF (`--remap-path-prefix`), so the guest ELF, and every
/// report naming its source lines, is the same wherever the repository was
/// cloned. Reports leave it off (`SourceLines::parse`'s `strip`).
pub const GUEST_SOURCE_ROOT: &str = "/percpu-lab";

type Reader = gimli::EndianArcSlice<gimli::LittleEndian>;

/// The line tables of one kernel ELF.
pub struct SourceLines {
    context: addr2line::Context<Reader>,
    /// A directory prefix left off the file names (the checkout the guest was built
    /// in), so that reports do not depend on where that was.
    strip: Option<String>,
}

impl SourceLines {
    /// The line tables of `elf`, or `None` when it has none. File names under
    /// `strip` are given relative to it.
    pub fn parse(elf: &[u8], strip: Option<&str>) -> Option<Self> {
        let object = goblin::elf::Elf::parse(elf).ok()?;
        let bytes_of = |name: &str| {
            let header = object
                .section_headers
                .iter()
                .find(|h| object.shdr_strtab.get_at(h.sh_name) == Some(name))?;
            let start = usize::try_from(header.sh_offset).ok()?;
            let end = start.checked_add(usize::try_from(header.sh_size).ok()?)?;
            elf.get(start..end)
        };
        bytes_of(".debug_line")?;
        let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            let data = bytes_of(id.name()).unwrap_or(&[]);
            Ok(gimli::EndianArcSlice::new(
                Arc::from(data),
                gimli::LittleEndian,
            ))
        };
        let dwarf = gimli::Dwarf::load(load).ok()?;
        let context = addr2line::Context::from_dwarf(dwarf).ok()?;
        let strip = strip.map(|dir| format!("{}/", dir.trim_end_matches('/')));
        Some(Self { context, strip })
    }

    /// `file:line` of the instruction at `addr`.
    pub fn lookup(&self, addr: u64) -> Option<String> {
        let location = self.context.find_location(addr).ok()??;
        let (file, line) = (location.file?, location.line?);
        let file = self
            .strip
            .as_deref()
            .and_then(|dir| file.strip_prefix(dir))
            .unwrap_or(file);
        Some(format!("{file}:{line}"))
    }
}
