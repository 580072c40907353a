//! Test helpers: a minimal AArch64 ELF writer and hand encodings of the few
//! instructions the test programs use (each checked against the Arm ARM).
#![allow(dead_code)]

use std::path::PathBuf;

use emu::{KernelImage, Machine, MachineConfig, RunOutcome};

pub const LOAD: u64 = 0x4008_0000;
/// Scratch RAM well away from the program and the device tree.
pub const DATA: u64 = 0x4100_0000;

pub const EM_AARCH64: u16 = 183;
pub const EM_X86_64: u16 = 62;

fn pad_to_8(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(8), 0);
}

/// An ELF64 with one PT_LOAD holding `code` at `paddr` (= vaddr), entry at its start,
/// and a symbol table with `symbols` (name, address, size; functions).
pub fn elf(code: &[u8], paddr: u64, machine: u16, symbols: &[(&str, u64, u64)]) -> Vec<u8> {
    let code_off = 0x100usize;
    let mut out = vec![0u8; code_off];
    out.extend_from_slice(code);
    pad_to_8(&mut out);
    // .strtab
    let strtab_off = out.len();
    let mut strtab = vec![0u8];
    let mut name_offs = Vec::new();
    for (name, _, _) in symbols {
        name_offs.push(strtab.len() as u32);
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
    }
    out.extend_from_slice(&strtab);
    pad_to_8(&mut out);
    // .symtab: a null symbol, then global functions in section 1 (none: use ABS).
    let symtab_off = out.len();
    out.extend_from_slice(&[0u8; 24]);
    for ((_, addr, size), name) in symbols.iter().zip(&name_offs) {
        out.extend_from_slice(&name.to_le_bytes());
        out.push((1 << 4) | 2); // STB_GLOBAL, STT_FUNC
        out.push(0);
        out.extend_from_slice(&0xfff1u16.to_le_bytes()); // SHN_ABS
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
    }
    let symtab_size = out.len() - symtab_off;
    let shstrtab_off = out.len();
    let shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0";
    out.extend_from_slice(shstrtab);
    pad_to_8(&mut out);
    let shoff = out.len();
    let section = |name: u32, kind: u32, off: usize, size: usize, link: u32, entsize: u64| {
        let mut s = Vec::new();
        s.extend_from_slice(&name.to_le_bytes());
        s.extend_from_slice(&kind.to_le_bytes());
        s.extend_from_slice(&0u64.to_le_bytes()); // flags
        s.extend_from_slice(&0u64.to_le_bytes()); // addr
        s.extend_from_slice(&(off as u64).to_le_bytes());
        s.extend_from_slice(&(size as u64).to_le_bytes());
        s.extend_from_slice(&link.to_le_bytes());
        s.extend_from_slice(&1u32.to_le_bytes()); // info: first global
        s.extend_from_slice(&8u64.to_le_bytes());
        s.extend_from_slice(&entsize.to_le_bytes());
        s
    };
    out.extend_from_slice(&[0u8; 64]);
    out.extend(section(1, 2, symtab_off, symtab_size, 2, 24)); // SHT_SYMTAB
    out.extend(section(9, 3, strtab_off, strtab.len(), 0, 0)); // SHT_STRTAB
    out.extend(section(17, 3, shstrtab_off, shstrtab.len(), 0, 0));

    // ELF header.
    let h = &mut out[..64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little-endian
    h[6] = 1;
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
    h[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    h[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes());
    h[54..56].copy_from_slice(&56u16.to_le_bytes());
    h[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    h[58..60].copy_from_slice(&64u16.to_le_bytes());
    h[60..62].copy_from_slice(&4u16.to_le_bytes()); // shnum
    h[62..64].copy_from_slice(&3u16.to_le_bytes()); // shstrndx
                                                    // Program header: PT_LOAD, RWX.
    let p = &mut out[64..120];
    p[..4].copy_from_slice(&1u32.to_le_bytes());
    p[4..8].copy_from_slice(&7u32.to_le_bytes());
    p[8..16].copy_from_slice(&(code_off as u64).to_le_bytes());
    p[16..24].copy_from_slice(&paddr.to_le_bytes());
    p[24..32].copy_from_slice(&paddr.to_le_bytes());
    p[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    p[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    p[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
    out
}

/// A program being assembled at `LOAD`, with labels resolved by the caller.
#[derive(Default, Clone)]
pub struct Asm {
    pub words: Vec<u32>,
}

impl Asm {
    pub fn here(&self) -> u64 {
        LOAD + 4 * self.words.len() as u64
    }
    pub fn emit(&mut self, w: u32) -> &mut Self {
        self.words.push(w);
        self
    }
    /// Pads with NOPs up to `addr`.
    pub fn align_to(&mut self, addr: u64) -> &mut Self {
        assert!(self.here() <= addr, "program overlaps {addr:#x}");
        while self.here() < addr {
            self.emit(NOP);
        }
        self
    }
    /// movz + movk: any 64-bit constant.
    pub fn mov64(&mut self, rd: u32, value: u64) -> &mut Self {
        self.emit(0xd280_0000 | ((value as u32 & 0xffff) << 5) | rd);
        for hw in 1..4 {
            let part = (value >> (16 * hw)) as u32 & 0xffff;
            if part != 0 {
                self.emit(0xf280_0000 | (hw << 21) | (part << 5) | rd);
            }
        }
        self
    }
    /// Branch (B) to an absolute address.
    pub fn b(&mut self, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) / 4;
        self.emit(0x1400_0000 | (off as u32 & 0x03ff_ffff))
    }
    /// B.cond to an absolute address (cond 0 = EQ, 1 = NE).
    pub fn b_cond(&mut self, cond: u32, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) / 4;
        self.emit(0x5400_0000 | ((off as u32 & 0x7ffff) << 5) | cond)
    }
    /// CBNZ (64-bit when `x`) to an absolute address.
    pub fn cbnz(&mut self, x: bool, rt: u32, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) / 4;
        self.emit(0x3500_0000 | (x as u32) << 31 | ((off as u32 & 0x7ffff) << 5) | rt)
    }
    pub fn cbz(&mut self, x: bool, rt: u32, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) / 4;
        self.emit(0x3400_0000 | (x as u32) << 31 | ((off as u32 & 0x7ffff) << 5) | rt)
    }
    /// Prints `text` on the UART, one STRB per byte (clobbers x9, w10).
    pub fn print(&mut self, text: &str) -> &mut Self {
        self.mov64(9, 0x0900_0000);
        for byte in text.bytes() {
            self.emit(0x5280_0000 | ((byte as u32) << 5) | 10); // movz w10, #byte
            self.emit(strb(10, 9));
        }
        self
    }
    /// PSCI call: x0 = function, x1..x3 = arguments.
    pub fn psci(&mut self, function: u32, args: &[u64]) -> &mut Self {
        self.mov64(0, function as u64);
        for (i, &a) in args.iter().enumerate() {
            self.mov64(1 + i as u32, a);
        }
        self.emit(HVC)
    }
    pub fn system_off_with(&mut self, status_reg: u32) -> &mut Self {
        self.emit(orr(1, status_reg));
        self.mov64(0, 0x8400_0008);
        self.emit(HVC)
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
    pub fn kernel(&self) -> KernelImage {
        KernelImage::from_bytes(elf(&self.bytes(), LOAD, EM_AARCH64, &[])).unwrap()
    }
}

pub const NOP: u32 = 0xd503_201f;
pub const WFI: u32 = 0xd503_207f;
pub const ERET: u32 = 0xd69f_03e0;
pub const HVC: u32 = 0xd400_0002;
pub const UDF: u32 = 0x0000_0000;
/// msr daifclr, #2 / msr daifset, #2 (IRQ mask bit).
pub const IRQ_ON: u32 = 0xd503_42ff;
pub const IRQ_OFF: u32 = 0xd503_42df;

pub const fn svc(imm: u32) -> u32 {
    0xd400_0001 | imm << 5
}
pub const fn brk(imm: u32) -> u32 {
    0xd420_0000 | imm << 5
}
/// add xd, xn, #imm
pub const fn add(rd: u32, rn: u32, imm: u32) -> u32 {
    0x9100_0000 | imm << 10 | rn << 5 | rd
}
/// sub xd, xn, #imm
pub const fn sub(rd: u32, rn: u32, imm: u32) -> u32 {
    0xd100_0000 | imm << 10 | rn << 5 | rd
}
/// cmp xn, #imm
pub const fn cmp(rn: u32, imm: u32) -> u32 {
    0xf100_001f | imm << 10 | rn << 5
}
/// mov xd, xm (orr xd, xzr, xm)
pub const fn orr(rd: u32, rm: u32) -> u32 {
    0xaa00_03e0 | rm << 16 | rd
}
/// (op0, op1, CRn, CRm, op2)
pub type Sys = (u32, u32, u32, u32, u32);
pub const VBAR_EL1: Sys = (3, 0, 12, 0, 0);
pub const ESR_EL1: Sys = (3, 0, 5, 2, 0);
pub const FAR_EL1: Sys = (3, 0, 6, 0, 0);
pub const ELR_EL1: Sys = (3, 0, 4, 0, 1);
pub const SPSR_EL1: Sys = (3, 0, 4, 0, 0);
pub const SCTLR_EL1: Sys = (3, 0, 1, 0, 0);
pub const MPIDR_EL1: Sys = (3, 0, 0, 0, 5);
pub const CNTVCT_EL0: Sys = (3, 3, 14, 0, 2);
pub const CNTV_TVAL_EL0: Sys = (3, 3, 14, 3, 0);
pub const CNTV_CTL_EL0: Sys = (3, 3, 14, 3, 1);
pub const CNTV_CVAL_EL0: Sys = (3, 3, 14, 3, 2);
pub const DAIF: Sys = (3, 3, 4, 2, 1);
pub const fn mrs(rt: u32, (op0, op1, crn, crm, op2): Sys) -> u32 {
    0xd520_0000
        | 1 << 21
        | (op0 - 2) << 19
        | op1 << 16
        | crn << 12
        | crm << 8
        | op2 << 5
        | rt
        | 0x0010_0000
}
pub const fn msr((op0, op1, crn, crm, op2): Sys, rt: u32) -> u32 {
    0xd500_0000 | op0 << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt
}
/// str xt, [xn], #imm (post-index)
pub const fn str_post(rt: u32, rn: u32, imm: u32) -> u32 {
    0xf800_0400 | (imm & 0x1ff) << 12 | rn << 5 | rt
}
/// str xt, [xn, #imm] (imm multiple of 8)
pub const fn str_x(rt: u32, rn: u32, imm: u32) -> u32 {
    0xf900_0000 | (imm / 8) << 10 | rn << 5 | rt
}
/// str wt, [xn, #imm] (imm multiple of 4)
pub const fn str_w(rt: u32, rn: u32, imm: u32) -> u32 {
    0xb900_0000 | (imm / 4) << 10 | rn << 5 | rt
}
/// ldr wt, [xn, #imm] (imm multiple of 4)
pub const fn ldr_w(rt: u32, rn: u32, imm: u32) -> u32 {
    0xb940_0000 | (imm / 4) << 10 | rn << 5 | rt
}
/// ldr xt, [xn]
pub const fn ldr_x(rt: u32, rn: u32) -> u32 {
    0xf940_0000 | rn << 5 | rt
}
/// strb wt, [xn]
pub const fn strb(rt: u32, rn: u32) -> u32 {
    0x3900_0000 | rn << 5 | rt
}

pub fn run(
    config: MachineConfig,
    kernel: &KernelImage,
) -> (RunOutcome, Machine, Vec<(usize, String)>) {
    let mut machine = Machine::new(config, kernel).unwrap();
    let mut lines = Vec::new();
    let outcome = machine.run(&mut |cpu, line| lines.push((cpu, line.to_string())));
    (outcome, machine, lines)
}

pub const ISB: u32 = 0xd503_3fdf;
pub const DSB_ISH: u32 = 0xd503_3b9f;
pub const TLBI_VMALLE1IS: u32 = 0xd508_831f;
pub const TLBI_VMALLE1: u32 = 0xd508_871f;
pub const MAIR_EL1: Sys = (3, 0, 10, 2, 0);
pub const TCR_EL1: Sys = (3, 0, 2, 0, 2);
pub const TTBR0_EL1: Sys = (3, 0, 2, 0, 0);

impl Asm {
    /// A 64-bit data word.
    pub fn quad(&mut self, value: u64) -> &mut Self {
        self.emit(value as u32).emit((value >> 32) as u32)
    }
}

/// The real guest kernel when it has been built (`guest/build.sh target/guest`, which
/// building the `tools` crate does, or `PERCPU_GUEST_ELF=path`); tests that need it
/// say so and pass without it.
pub fn guest() -> Option<KernelImage> {
    built_guest("PERCPU_GUEST_ELF", "percpu-guest.elf")
}

/// The real RISC-V guest, likewise (`PERCPU_GUEST_RISCV64_ELF=path`).
pub fn riscv_guest() -> Option<KernelImage> {
    built_guest("PERCPU_GUEST_RISCV64_ELF", "percpu-guest-riscv64.elf")
}

fn built_guest(variable: &str, file: &str) -> Option<KernelImage> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/guest")
                .join(file)
        });
    if !path.exists() {
        eprintln!("no guest kernel at {}: skipped", path.display());
        return None;
    }
    Some(KernelImage::from_path(&path).expect("the built guest loads"))
}

/// Turns the MMU on with TTBR0 = `l1`: MAIR attr0 = device, attr1 = normal
/// write-back; TCR: 39-bit VA (walks start at level 1), 4 KiB granule, no TTBR1
/// walks; then SCTLR_EL1.M. Clobbers x3.
pub fn enable_mmu(a: &mut Asm, l1: u64) {
    a.mov64(3, 0xff00).emit(msr(MAIR_EL1, 3));
    a.mov64(3, 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23))
        .emit(msr(TCR_EL1, 3));
    a.mov64(3, l1).emit(msr(TTBR0_EL1, 3)).emit(ISB);
    a.emit(mrs(3, SCTLR_EL1))
        .emit(0xb240_0063) // orr x3, x3, #1
        .emit(msr(SCTLR_EL1, 3))
        .emit(ISB);
}
