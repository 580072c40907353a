//! Loading the guest ELF: each way a file can be unusable gets its own one-line error,
//! and symbols name PCs and export data.

mod common;

use std::path::Path;

use common::*;
use emu::{ImageSymbols, KernelError, KernelImage, Machine, MachineConfig};

fn valid() -> Vec<u8> {
    elf(&[0x1f, 0x20, 0x03, 0xd5], LOAD, EM_AARCH64, &[])
}

#[test]
fn unreadable_file() {
    let err = KernelImage::from_path(Path::new("/nonexistent/percpu-guest.elf")).unwrap_err();
    assert!(matches!(err, KernelError::Unreadable { .. }));
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/percpu-guest.elf") && !text.contains('\n'),
        "{text}"
    );
}

#[test]
fn not_an_elf() {
    let err = KernelImage::from_bytes(b"#!/bin/sh\necho hi\n".to_vec()).unwrap_err();
    assert_eq!(err, KernelError::NotElf);
    assert_eq!(
        KernelImage::from_bytes(Vec::new()).unwrap_err(),
        KernelError::NotElf
    );
}

#[test]
fn thirty_two_bit() {
    let mut bytes = valid();
    bytes[4] = 1; // ELFCLASS32
    assert_eq!(
        KernelImage::from_bytes(bytes).unwrap_err(),
        KernelError::Not64Bit
    );
}

#[test]
fn big_endian() {
    let mut bytes = valid();
    bytes[5] = 2; // ELFDATA2MSB
    assert_eq!(
        KernelImage::from_bytes(bytes).unwrap_err(),
        KernelError::NotLittleEndian
    );
}

#[test]
fn wrong_architecture_is_named() {
    let err = KernelImage::from_bytes(elf(&[0x90], LOAD, EM_X86_64, &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel is built for x86-64, not AArch64 or RV64"
    );
}

#[test]
fn no_loadable_segment() {
    let mut bytes = valid();
    bytes[64..68].copy_from_slice(&4u32.to_le_bytes()); // PT_LOAD -> PT_NOTE
    assert_eq!(
        KernelImage::from_bytes(bytes).unwrap_err(),
        KernelError::NoLoadableSegment
    );
}

#[test]
fn segment_outside_ram() {
    let kernel = KernelImage::from_bytes(elf(&[0; 4], 0x1000, EM_AARCH64, &[])).unwrap();
    let err = Machine::new(MachineConfig::default(), &kernel)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "kernel segment at physical 0x1000 (0x4 bytes) lies outside guest RAM"
    );
}

#[test]
fn symbols_name_pcs_and_export_bytes() {
    let mut code = vec![0u8; 0x40];
    let scenarios = b"smoke\tevery core boots\nstorm\tall cores alloc and free\n";
    code.extend_from_slice(scenarios);
    let mangled = "_ZN12percpu_guest4boot10start_core17h0123456789abcdefE";
    let symbols = [
        ("primary_entry", LOAD, 0x20),
        (mangled, LOAD + 0x20, 0x20),
        ("PERCPU_LAB_SCENARIOS", LOAD + 0x40, scenarios.len() as u64),
    ];
    let kernel = KernelImage::from_bytes(elf(&code, LOAD, EM_AARCH64, &symbols)).unwrap();
    assert_eq!(
        kernel.symbolize(LOAD + 0x1c).as_deref(),
        Some("primary_entry+0x1c")
    );
    assert_eq!(
        kernel.symbolize(LOAD + 0x24).as_deref(),
        Some("percpu_guest::boot::start_core+0x4")
    );
    assert_eq!(kernel.symbolize(LOAD - 4), None);
    // A call ending primary_entry returns to the next function's first instruction.
    assert_eq!(
        kernel.symbolize(LOAD + 0x20).as_deref(),
        Some("percpu_guest::boot::start_core+0x0")
    );
    assert_eq!(
        kernel.symbolize_return(LOAD + 0x20).as_deref(),
        Some("primary_entry+0x20")
    );
    assert_eq!(
        kernel.symbol_bytes("PERCPU_LAB_SCENARIOS"),
        Some(&scenarios[..])
    );
    assert_eq!(
        kernel.symbol_address("percpu_guest::boot::start_core"),
        Some(LOAD + 0x20)
    );
    assert_eq!(kernel.entry(), LOAD);
}

#[test]
fn only_linked_executables_are_accepted() {
    for (e_type, kind) in [(1u16, "ET_REL"), (3, "ET_DYN")] {
        let mut bytes = valid();
        bytes[16..18].copy_from_slice(&e_type.to_le_bytes());
        let err = KernelImage::from_bytes(bytes).unwrap_err();
        assert!(
            matches!(err, KernelError::NotExecutable { .. }) && err.to_string().contains(kind),
            "{err}"
        );
    }
}

#[test]
fn entry_outside_the_code_is_refused() {
    let mut bytes = valid();
    bytes[24..32].copy_from_slice(&(LOAD + 4).to_le_bytes()); // just past the one word
    assert_eq!(
        KernelImage::from_bytes(bytes).unwrap_err(),
        KernelError::EntryOutsideCode { entry: LOAD + 4 }
    );
}

#[test]
fn function_code_must_lie_in_an_executable_segment() {
    let code = [0x1f, 0x20, 0x03, 0xd5, 0xc0, 0x03, 0x5f, 0xd6]; // nop; ret
    let symbols = [("inside", LOAD, 8), ("outside", LOAD + 0x1000, 8)];
    let kernel = KernelImage::from_bytes(elf(&code, LOAD, EM_AARCH64, &symbols)).unwrap();
    assert_eq!(kernel.function_code("inside"), Ok(Some((LOAD, &code[..]))));
    assert_eq!(kernel.function_code("absent"), Ok(None));
    assert_eq!(
        kernel.function_code("outside"),
        Err(KernelError::ProbeOutsideCode {
            name: "outside".into(),
            addr: LOAD + 0x1000
        })
    );
}

/// Line tables: none in an ELF without DWARF; in the guest, a function's entry is in
/// its source file, named relative to the repository (which the guest's build
/// maps to `GUEST_SOURCE_ROOT`, wherever it was cloned), the allocator's too.
#[test]
fn source_lines_come_from_the_dwarf_line_tables() {
    assert!(emu::SourceLines::parse(&valid(), None).is_none());
    assert!(emu::SourceLines::parse(b"not an elf", None).is_none());
    let Some(guest) = guest() else { return };
    let lines = emu::SourceLines::parse(guest.file_bytes(), Some(emu::GUEST_SOURCE_ROOT))
        .expect("the guest is built with line tables");
    let entry = guest.symbol_address("free_pages").expect("free_pages");
    let line = lines.lookup(entry).expect("a line for free_pages");
    assert!(line.starts_with("guest/src/page_alloc.rs:"), "{line}");
    let (alloc, _) = guest
        .code_words()
        .find(|&(addr, _)| {
            guest
                .symbolize(addr)
                .is_some_and(|name| name.contains(">::pcpu_alloc+"))
        })
        .expect("the allocator's pcpu_alloc");
    let alloc_line = lines.lookup(alloc).expect("a line in pcpu_alloc");
    assert!(
        alloc_line.starts_with("allocator/src/percpu.rs:"),
        "{alloc_line}"
    );
    assert!(lines.lookup(0).is_none());
    let absolute = emu::SourceLines::parse(guest.file_bytes(), None).unwrap();
    assert!(
        absolute.lookup(entry).unwrap().ends_with(&line),
        "without a prefix to strip"
    );
}

/// Where arm64 Linux links itself (`vmlinux`: physical = virtual addresses).
const LINUX_LINK: u64 = 0xffff_ffc0_0800_0000;
const TEXT_OFFSET: u64 = 0x8_0000;

/// A tiny `vmlinux`: the arm64 `Image` header (a branch over it, `text_offset`,
/// the magic), then code that powers off with status = x0 (the device tree's
/// address, as the boot protocol hands it over).
fn tiny_vmlinux(magic: &[u8; 4]) -> Vec<u8> {
    elf(
        &tiny_image(magic),
        LINUX_LINK,
        EM_AARCH64,
        &[
            ("_text", LINUX_LINK, 0),
            ("primary_entry", LINUX_LINK + 0x40, 16),
        ],
    )
}

/// The bare `Image` of [`tiny_vmlinux`] (its image size: 0x1000).
fn tiny_image(magic: &[u8; 4]) -> Vec<u8> {
    let base = emu::RAM_BASE + TEXT_OFFSET;
    let mut a = Asm::default();
    a.b(base + 0x40).emit(0);
    a.quad(TEXT_OFFSET)
        .quad(0x1000)
        .quad(0xa)
        .quad(0)
        .quad(0)
        .quad(0);
    a.emit(u32::from_le_bytes(*magic)).emit(0);
    assert_eq!(a.here(), base + 0x40);
    a.system_off_with(0);
    a.quad(0).quad(0); // data after the code (`_etext`)
    a.bytes()
}

#[test]
fn a_vmlinux_is_placed_by_the_arm64_boot_protocol() {
    let kernel = KernelImage::from_bytes(tiny_vmlinux(b"ARM\x64")).unwrap();
    assert!(kernel.is_boot_protocol_image());
    // Code runs at its physical address before the kernel's MMU is on; it is
    // named by its link address.
    assert_eq!(kernel.entry(), emu::RAM_BASE + TEXT_OFFSET);
    assert_eq!(
        kernel
            .symbolize(emu::RAM_BASE + TEXT_OFFSET + 0x44)
            .as_deref(),
        Some("primary_entry+0x4")
    );
    let config = MachineConfig {
        cpus: 1,
        ..MachineConfig::default()
    };
    let dtb = emu::fdt::dtb_address(emu::RAM_BASE, config.ram_size);
    let (outcome, _, _) = run(config, &kernel);
    assert_eq!(
        outcome.end,
        emu::RunEnd::PoweredOff {
            cpu: 0,
            status: dtb
        }
    );
}

/// Runs `kernel` on one CPU: the tiny kernel powers off with the device tree's
/// address as its status.
fn powers_off_with_the_dtb(kernel: &KernelImage) {
    let config = MachineConfig {
        cpus: 1,
        ..MachineConfig::default()
    };
    let dtb = emu::fdt::dtb_address(emu::RAM_BASE, config.ram_size);
    let (outcome, _, _) = run(config, kernel);
    assert_eq!(
        outcome.end,
        emu::RunEnd::PoweredOff {
            cpu: 0,
            status: dtb
        }
    );
}

#[test]
fn a_bare_image_is_placed_like_its_vmlinux_and_named_by_its_symbols() {
    let image = tiny_image(b"ARM\x64");
    let entry = emu::RAM_BASE + TEXT_OFFSET;
    let unnamed = KernelImage::from_bytes(image.clone()).unwrap();
    assert!(unnamed.is_boot_protocol_image() && !unnamed.has_symbols());
    assert_eq!(unnamed.entry(), entry);
    assert_eq!(unnamed.symbolize(entry + 0x44), None);
    assert!(unnamed.debug_elf().is_none());
    assert!(
        unnamed.known_code_ranges().is_empty(),
        "a whole Image holds data too"
    );
    powers_off_with_the_dtb(&unnamed);

    let vmlinux = tiny_vmlinux(b"ARM\x64");
    let named = KernelImage::from_image(image.clone(), ImageSymbols::Vmlinux(&vmlinux)).unwrap();
    assert_eq!(named.entry(), entry);
    assert_eq!(named.file_bytes(), &image[..], "the Image is what runs");
    assert_eq!(
        named.debug_elf(),
        Some(&vmlinux[..]),
        "the DWARF is the vmlinux's"
    );
    for pc in [entry + 0x44, LINUX_LINK + 0x44] {
        assert_eq!(named.symbolize(pc).as_deref(), Some("primary_entry+0x4"));
    }
    powers_off_with_the_dtb(&named);

    let etext = image.len() as u64 - 16;
    let map = format!(
        "{LINUX_LINK:016x} T _text\n{:016x} T primary_entry\n{:016x} D _etext\n\
         0000000000000000 A _kernel_flags_le\n{:016x} B _end\n",
        LINUX_LINK + 0x40,
        LINUX_LINK + etext,
        LINUX_LINK + 0x1000
    );
    let mapped = KernelImage::from_image(image, ImageSymbols::SystemMap(&map)).unwrap();
    assert!(mapped.debug_elf().is_none(), "a System.map has no DWARF");
    assert_eq!(
        mapped.symbolize(LINUX_LINK + 0x44).as_deref(),
        Some("primary_entry+0x4")
    );
    // Code is what lies before `_etext`.
    let (at, code) = mapped.function_code("primary_entry").unwrap().unwrap();
    assert_eq!((at, code.len() as u64), (LINUX_LINK + 0x40, etext - 0x40));
    assert!(mapped.function_containing(LINUX_LINK + etext).is_none());
    assert!(mapped.function_containing(LINUX_LINK + 0x48).is_some());
    let code: Vec<(u64, u64)> = mapped
        .known_code_ranges()
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(code, [(LINUX_LINK, LINUX_LINK + etext)]);
    powers_off_with_the_dtb(&mapped);
}

#[test]
fn symbols_of_another_build_are_refused() {
    let vmlinux = tiny_vmlinux(b"ARM\x64");
    let mut image = tiny_image(b"ARM\x64");
    image[0x44] ^= 1;
    let err = KernelImage::from_image(image.clone(), ImageSymbols::Vmlinux(&vmlinux)).unwrap_err();
    assert!(matches!(err, KernelError::SymbolsMismatch(_)), "{err}");
    assert!(
        err.to_string().contains("not what the Image holds"),
        "{err}"
    );

    let sized = |end: u64| format!("{LINUX_LINK:x} T _text\n{:x} B _end\n", LINUX_LINK + end);
    let err = KernelImage::from_image(image.clone(), ImageSymbols::SystemMap(&sized(0x2000)))
        .unwrap_err();
    assert!(matches!(err, KernelError::SymbolsMismatch(_)), "{err}");
    assert!(
        KernelImage::from_image(image.clone(), ImageSymbols::SystemMap(&sized(0x1000))).is_ok()
    );

    for (map, why) in [
        ("ffffffc008000040 T primary_entry\n", "no `_text`"),
        ("ffffffc008000000 T\n", "line 1"),
        ("zzzz T _text\n", "bad address"),
    ] {
        let err = KernelImage::from_image(image.clone(), ImageSymbols::SystemMap(map)).unwrap_err();
        assert!(matches!(err, KernelError::BadSymbols(_)), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn a_big_endian_image_is_refused() {
    let mut image = tiny_image(b"ARM\x64");
    image[24] |= 1; // the header's flags: bit 0 is the kernel's endianness
    assert_eq!(
        KernelImage::from_bytes(image).unwrap_err(),
        KernelError::NotLittleEndian
    );
}

#[test]
fn a_kernel_half_elf_without_the_image_header_is_refused() {
    // Without the header it is an ordinary ELF, loaded at its physical
    // addresses, which no RAM has.
    let kernel = KernelImage::from_bytes(tiny_vmlinux(b"NOPE")).unwrap();
    assert!(!kernel.is_boot_protocol_image());
    let err = Machine::new(MachineConfig::default(), &kernel)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("outside guest RAM"), "{err}");
}

#[test]
fn the_initrd_lies_after_the_device_tree_which_names_it() {
    let kernel = KernelImage::from_bytes(tiny_vmlinux(b"ARM\x64")).unwrap();
    let initrd: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let config = MachineConfig {
        cpus: 1,
        initrd: Some(initrd.clone().into()),
        ..MachineConfig::default()
    };
    let dtb_addr = emu::fdt::dtb_address(emu::RAM_BASE, config.ram_size);
    let machine = Machine::new(config, &kernel).unwrap();
    let start = dtb_addr + emu::fdt::DTB_MAX_SIZE;
    let mut loaded = vec![0; initrd.len()];
    machine.memory().read(start, &mut loaded).unwrap();
    assert_eq!(loaded, initrd);
    let mut blob = vec![0; 64 << 10];
    machine.memory().read(dtb_addr, &mut blob).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let chosen = fdt.find_node("/chosen").unwrap();
    let u64_of = |name| {
        let bytes = chosen.property(name).unwrap().value;
        u64::from_be_bytes(bytes.try_into().unwrap())
    };
    assert_eq!(u64_of("linux,initrd-start"), start);
    assert_eq!(u64_of("linux,initrd-end"), start + initrd.len() as u64);

    let too_big = MachineConfig {
        cpus: 1,
        ram_size: 16 << 20,
        initrd: Some(vec![0; 16 << 20].into()),
        ..MachineConfig::default()
    };
    let err = Machine::new(too_big, &kernel)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("initrd") && err.contains("does not fit"),
        "{err}"
    );
}
