//! The RISC-V board with hand-assembled programs (encodings from the RISC-V
//! unprivileged and privileged specifications): `rdtime` emulation, the timer
//! interrupt at its exact instruction whatever the slicing, WFI, SBI IPIs and
//! hart start, the host's trap entry for an exception, and the PLIC and CLINT.

mod common;

use emu::{Isa, KernelImage, MachineConfig, MmuMode, RunEnd, SchedulerKind};

const LOAD: u64 = 0x8020_0000;
const EM_RISCV: u16 = 243;

// Registers and CSRs.
const ZERO: u32 = 0;
const T0: u32 = 5;
const T1: u32 = 6;
const A0: u32 = 10;
const A1: u32 = 11;
const A2: u32 = 12;
const A3: u32 = 13;
const A6: u32 = 16;
const A7: u32 = 17;
const SSTATUS: u32 = 0x100;
const SIE: u32 = 0x104;
const STVEC: u32 = 0x105;
const SCAUSE: u32 = 0x142;
const STVAL: u32 = 0x143;
const SIP: u32 = 0x144;
const TIME: u32 = 0xc01;

const STIP: u64 = 1 << 5;
const SSIP: u64 = 1 << 1;

/// A RISC-V program under construction, at `LOAD`.
#[derive(Default)]
struct Asm {
    words: Vec<u32>,
}

impl Asm {
    fn here(&self) -> u64 {
        LOAD + 4 * self.words.len() as u64
    }
    fn emit(&mut self, word: u32) -> &mut Self {
        self.words.push(word);
        self
    }
    fn i_type(&mut self, opcode: u32, funct3: u32, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        assert!((-2048..2048).contains(&imm), "{imm}");
        self.emit(((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode)
    }
    fn addi(&mut self, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        self.i_type(0x13, 0, rd, rs1, imm)
    }
    fn sub(&mut self, rd: u32, rs1: u32, rs2: u32) -> &mut Self {
        self.emit((0x20 << 25) | (rs2 << 20) | (rs1 << 15) | (rd << 7) | 0x33)
    }
    fn add(&mut self, rd: u32, rs1: u32, rs2: u32) -> &mut Self {
        self.emit((rs2 << 20) | (rs1 << 15) | (rd << 7) | 0x33)
    }
    /// Loads a constant below 2^31 (lui + addi).
    fn li(&mut self, rd: u32, value: u64) -> &mut Self {
        assert!(value < 1 << 31);
        let hi = ((value + 0x800) >> 12) as u32;
        let lo = value as i64 - ((hi as i64) << 12);
        self.emit((hi << 12) | (rd << 7) | 0x37);
        self.addi(rd, rd, lo as i32)
    }
    /// Loads an address of this program (auipc + addi).
    fn la(&mut self, rd: u32, target: u64) -> &mut Self {
        let off = target as i64 - self.here() as i64;
        let hi = ((off + 0x800) >> 12) as u32;
        self.emit((hi << 12) | (rd << 7) | 0x17);
        self.addi(rd, rd, (off - ((hi as i32 as i64) << 12)) as i32)
    }
    /// `lw rd, imm(rs1)`.
    fn lw(&mut self, rd: u32, rs1: u32, imm: i32) -> &mut Self {
        self.i_type(0x03, 2, rd, rs1, imm)
    }
    /// `sw rs2, imm(rs1)`.
    fn sw(&mut self, rs2: u32, rs1: u32, imm: i32) -> &mut Self {
        let imm = imm as u32 & 0xfff;
        self.emit(
            (imm >> 5) << 25 | (rs2 << 20) | (rs1 << 15) | (2 << 12) | (imm & 0x1f) << 7 | 0x23,
        )
    }
    fn csr(&mut self, funct3: u32, rd: u32, csr: u32, rs1: u32) -> &mut Self {
        self.emit((csr << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x73)
    }
    fn csrr(&mut self, rd: u32, csr: u32) -> &mut Self {
        self.csr(2, rd, csr, ZERO)
    }
    fn csrw(&mut self, csr: u32, rs1: u32) -> &mut Self {
        self.csr(1, ZERO, csr, rs1)
    }
    fn csrs(&mut self, csr: u32, rs1: u32) -> &mut Self {
        self.csr(2, ZERO, csr, rs1)
    }
    fn rdtime(&mut self, rd: u32) -> &mut Self {
        self.csrr(rd, TIME)
    }
    fn ecall(&mut self) -> &mut Self {
        self.emit(0x0000_0073)
    }
    fn wfi(&mut self) -> &mut Self {
        self.emit(0x1050_0073)
    }
    fn nop(&mut self) -> &mut Self {
        self.addi(ZERO, ZERO, 0)
    }
    /// `jal x0, target`.
    fn j(&mut self, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) as u32;
        let imm = ((off >> 20) & 1) << 31
            | ((off >> 1) & 0x3ff) << 21
            | ((off >> 11) & 1) << 20
            | ((off >> 12) & 0xff) << 12;
        self.emit(imm | 0x6f)
    }
    /// `bne rs1, rs2, target`.
    fn bne(&mut self, rs1: u32, rs2: u32, target: u64) -> &mut Self {
        let off = (target as i64 - self.here() as i64) as u32;
        let imm = ((off >> 12) & 1) << 31
            | ((off >> 5) & 0x3f) << 25
            | ((off >> 1) & 0xf) << 8
            | ((off >> 11) & 1) << 7;
        self.emit(imm | (rs2 << 20) | (rs1 << 15) | (1 << 12) | 0x63)
    }
    /// An SBI call: a7 = extension, a6 = function (a0.. already set).
    fn sbi(&mut self, extension: u64, function: u64) -> &mut Self {
        self.li(A7, extension).li(A6, function).ecall()
    }
    /// SBI SRST shutdown with the reason (the run's status) in `reg`.
    fn shutdown_with(&mut self, reg: u32) -> &mut Self {
        self.addi(A1, reg, 0).li(A0, 0).sbi(0x5352_5354, 0)
    }
    /// Pads with `nop`s up to `target` (a label placed ahead).
    fn pad_to(&mut self, target: u64) -> &mut Self {
        assert!(self.here() <= target, "code overruns {target:#x}");
        while self.here() < target {
            self.nop();
        }
        self
    }
    fn kernel(&self) -> KernelImage {
        let bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        KernelImage::from_bytes(common::elf(&bytes, LOAD, EM_RISCV, &[])).unwrap()
    }
}

fn config(cpus: usize, quantum: u64) -> MachineConfig {
    MachineConfig {
        cpus,
        quantum,
        mmu: MmuMode::Builtin,
        max_insns: 5_000_000,
        ..MachineConfig::default()
    }
}

/// The status the run powered off with, and its instruction count.
fn powered_off(kernel: &KernelImage, config: MachineConfig) -> (u64, u64) {
    let (outcome, _, _) = common::run(config, kernel);
    match outcome.end {
        RunEnd::PoweredOff { status, .. } => (status, outcome.total_insns),
        other => panic!("the program did not power off: {other:?}"),
    }
}

#[test]
fn a_riscv_elf_is_a_riscv_machine() {
    let mut asm = Asm::default();
    asm.li(T0, 7).shutdown_with(T0);
    let kernel = asm.kernel();
    assert_eq!(kernel.isa(), Isa::Riscv64);
    assert_eq!(powered_off(&kernel, config(1, 1000)).0, 7);
    let checked = MachineConfig {
        mmu: MmuMode::Checked,
        ..config(1, 1000)
    };
    // The simulated MMU serves RISC-V too (Sv39; MMU off here: a flat map).
    assert_eq!(powered_off(&kernel, checked).0, 7);
}

/// `rdtime` reads the board's clock at its own instruction (10 MHz against the
/// clock's 62.5: 4 ticks of `time` per 25 instructions on one CPU), and the
/// instructions of its block are counted once although it traps in the middle.
#[test]
fn rdtime_reads_the_clock_at_its_instruction() {
    const GAP: usize = 250;
    let mut asm = Asm::default();
    asm.rdtime(T0);
    for _ in 0..GAP {
        asm.nop();
    }
    asm.rdtime(T1).sub(T1, T1, T0).shutdown_with(T1);
    let program_insns = asm.words.len() as u64;
    for quantum in [7, 100, 100_000] {
        let (elapsed, insns) = powered_off(&asm.kernel(), config(1, quantum));
        // From the first rdtime to the second: GAP + 1 instructions.
        let expected = emu::riscv_time_at(GAP as u64 + 1) - emu::riscv_time_at(0);
        assert_eq!(elapsed, expected, "quantum {quantum}");
        assert_eq!(
            insns, program_insns,
            "quantum {quantum}: instructions miscounted"
        );
    }
}

/// The timer interrupt is taken at the instruction its deadline falls on, however
/// the run is sliced: the handler reports how many loop iterations ran.
#[test]
fn the_timer_interrupt_arrives_at_its_exact_instruction() {
    let mut asm = Asm::default();
    let handler = LOAD + 0x400;
    asm.la(T0, handler).csrw(STVEC, T0);
    asm.li(T0, STIP).csrs(SIE, T0);
    // set_timer(time + 1000), then count with IRQs on.
    asm.rdtime(A0).addi(A0, A0, 1000).sbi(0x5449_4d45, 0);
    asm.li(A2, 0).li(T0, 2).csrs(SSTATUS, T0);
    let top = asm.here();
    asm.addi(A2, A2, 1).j(top);
    asm.pad_to(handler);
    // The handler: the count, plus (scause - 5) << 1, which is 0 only for the
    // supervisor timer interrupt (scause = 1 << 63 | 5).
    asm.csrr(T1, SCAUSE).addi(T1, T1, -5);
    asm.emit((1 << 20) | (T1 << 15) | (1 << 12) | (T1 << 7) | 0x13); // slli t1, t1, 1
    asm.add(A2, A2, T1);
    asm.shutdown_with(A2);
    let kernel = asm.kernel();
    let counts: Vec<u64> = [3, 10, 64, 1000, 20_000]
        .into_iter()
        .map(|quantum| powered_off(&kernel, config(1, quantum)).0)
        .collect();
    assert!(
        counts[0] < 1 << 63,
        "not a timer interrupt: {:#x}",
        counts[0]
    );
    // 1000 ticks of time = 6250 clock ticks = instructions on one CPU; the loop
    // is two instructions per iteration.
    assert!((3000..3200).contains(&counts[0]), "{counts:?}");
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "slicing moved the IRQ: {counts:?}"
    );
}

/// WFI with interrupts masked waits until the timer fires (virtual time skips
/// ahead), and the pending timer shows in `sip`.
#[test]
fn wfi_waits_for_the_timer_and_sip_shows_it() {
    let mut asm = Asm::default();
    asm.li(T0, STIP).csrs(SIE, T0);
    asm.rdtime(A0)
        .li(T0, 1_000_000)
        .add(A0, A0, T0)
        .sbi(0x5449_4d45, 0);
    asm.wfi();
    asm.rdtime(A3).csrr(T1, SIP);
    asm.li(T0, STIP);
    // status = sip.STIP (32) if woken by the timer; 0 otherwise.
    asm.emit((T0 << 20) | (T1 << 15) | (7 << 12) | (A2 << 7) | 0x33); // and a2, t1, t0
    asm.shutdown_with(A2);
    let (status, insns) = powered_off(&asm.kernel(), config(1, 1000));
    assert_eq!(status, STIP);
    assert!(insns < 100, "the core spun instead of waiting: {insns}");
}

/// Hart 0 starts hart 1 with SBI HSM (a0 = its hart id, a1 = the opaque value);
/// hart 1 sends hart 0 an IPI, which ends hart 0's WFI with `sip.SSIP` set.
#[test]
fn hart_start_and_an_ipi() {
    let mut asm = Asm::default();
    let second = LOAD + 0x200;
    asm.li(T0, SSIP).csrs(SIE, T0);
    asm.li(A0, 1).la(A1, second).li(A2, 40).sbi(0x0048_534d, 0);
    let wait = asm.here();
    asm.wfi().csrr(T1, SIP).li(T0, SSIP);
    asm.emit((T0 << 20) | (T1 << 15) | (7 << 12) | (A2 << 7) | 0x33); // and a2, t1, t0
    asm.bne(A2, T0, wait);
    asm.shutdown_with(A2);
    asm.pad_to(second);
    // Hart 1: a0 = 1 (its id), a1 = 40: IPI hart 0 if both arrived.
    asm.li(T0, 41).add(T1, A0, A1).bne(T1, T0, second);
    asm.li(A0, 1).li(A1, 0).sbi(0x0073_5049, 0);
    let park = asm.here();
    asm.wfi().j(park);
    let (status, _) = powered_off(&asm.kernel(), config(2, 50));
    assert_eq!(status, SSIP);
}

/// An instruction S-mode may not run (a write to the M-mode `mscratch`) is an
/// illegal-instruction exception: the host enters the trap with scause 2, sepc
/// at the instruction and stval its encoding.
#[test]
fn an_exception_enters_the_trap_handler_with_scause_sepc_and_stval() {
    let mut asm = Asm::default();
    let handler = LOAD + 0x100;
    asm.la(T0, handler).csrw(STVEC, T0);
    let illegal_at = asm.here();
    asm.csrw(0x340, ZERO); // csrw mscratch, zero
    let illegal = *asm.words.last().expect("just emitted");
    asm.pad_to(handler);
    // status = stval + scause * 2^32
    asm.csrr(A2, STVAL).csrr(A3, SCAUSE);
    asm.emit((32 << 20) | (A3 << 15) | (1 << 12) | (A3 << 7) | 0x13); // slli a3, a3, 32
    asm.add(A2, A2, A3).shutdown_with(A2);
    let kernel = asm.kernel();
    let (outcome, _, _) = common::run(config(1, 1000), &kernel);
    assert!(
        matches!(outcome.end, RunEnd::PoweredOff { status, .. } if status == (2 << 32) + illegal as u64),
        "{:?}",
        outcome.end
    );
    let taken = outcome.cpus[0]
        .last_exception
        .clone()
        .expect("an exception");
    assert_eq!((taken.kind, taken.elr), ("illegal instruction", illegal_at));
    let sched = MachineConfig {
        sched: SchedulerKind::Random,
        ..config(1, 3)
    };
    assert_eq!(powered_off(&kernel, sched).0, (2 << 32) + illegal as u64);
}

/// The PLIC answers at QEMU's address as QEMU 7.2's does from S-mode (the same
/// stores and loads, printed by a program under OpenSBI, gave these values):
/// priorities keep 3 bits, for sources up to 96; enables cover bits 0 to 95;
/// thresholds keep 3 bits; with nothing wired, nothing is pending or claimed.
/// The program powers off with a bit set for each load that read otherwise.
#[test]
fn the_plic_reads_back_what_a_guest_sets_up_as_on_qemu() {
    const PLIC: u64 = 0x0c00_0000;
    const T2: u32 = 7;
    const HART1_S_ENABLE: u64 = PLIC + 0x2000 + 0x80 * 3;
    const HART1_S_CONTEXT: u64 = PLIC + 0x20_0000 + 0x1000 * 3;
    let cases: [(u64, u32, u32); 12] = [
        (PLIC + 4 * 10, 0xff, 7),
        (PLIC + 4 * 11, 5, 5),
        (PLIC + 4 * 12, 8, 0),
        (PLIC, 3, 0),
        (PLIC + 4 * 96, 3, 3),
        (PLIC + 4 * 97, 3, 0),
        (HART1_S_ENABLE, 1 << 10 | 1, 1 << 10 | 1),
        (HART1_S_ENABLE + 8, u32::MAX, u32::MAX),
        (HART1_S_ENABLE + 12, u32::MAX, 0),
        (HART1_S_CONTEXT, 0xff, 7),
        (HART1_S_CONTEXT + 4, 0, 0),
        (PLIC + 0x1000, 0xffff, 0),
    ];
    let mut asm = Asm::default();
    asm.li(T2, 0);
    for (bit, &(addr, value, expected)) in cases.iter().enumerate() {
        // `lw` sign-extends: so are the values loaded to compare with.
        let load = |asm: &mut Asm, reg, value: u32| {
            match value {
                u32::MAX => asm.addi(reg, ZERO, -1),
                small => asm.li(reg, u64::from(small)),
            };
        };
        asm.li(A0, addr);
        load(&mut asm, A1, value);
        asm.sw(A1, A0, 0).lw(A2, A0, 0);
        load(&mut asm, A3, expected);
        // t1 = (a2 != a3) << bit; t2 |= t1
        asm.emit((A3 << 20) | (A2 << 15) | (4 << 12) | (T1 << 7) | 0x33); // xor
        asm.emit((T1 << 20) | (ZERO << 15) | (3 << 12) | (T1 << 7) | 0x33); // sltu
        asm.emit(((bit as u32) << 20) | (T1 << 15) | (1 << 12) | (T1 << 7) | 0x13); // slli
        asm.emit((T1 << 20) | (T2 << 15) | (6 << 12) | (T2 << 7) | 0x33); // or
    }
    asm.shutdown_with(T2);
    assert_eq!(powered_off(&asm.kernel(), config(2, 1000)).0, 0);
}

/// The CLINT is the firmware's (OpenSBI's PMP keeps S-mode out on QEMU): a load
/// from it ends the run as a fault at that instruction, not a host crash.
#[test]
fn a_load_from_the_clint_is_a_fault() {
    let mut asm = Asm::default();
    asm.li(T0, 0x0200_0000);
    let load_at = asm.here();
    asm.lw(T1, T0, 0).shutdown_with(T1);
    let (outcome, _, _) = common::run(config(1, 1000), &asm.kernel());
    assert!(
        matches!(outcome.end, RunEnd::Fault { cpu: 0, pc, .. } if pc == load_at),
        "{:?}",
        outcome.end
    );
}

/// A WFI does not end a RISC-V block: when the timer's deadline falls on an
/// instruction after a WFI of the same block, the run up to the deadline stops
/// at the WFI and the hart waits there, so the interrupt is taken right after
/// the WFI (`sepc`), not at the deadline's instruction, whatever the slicing.
#[test]
fn a_wfi_before_the_deadline_in_its_block_waits_for_it() {
    let mut asm = Asm::default();
    let handler = LOAD + 0x400;
    asm.la(T0, handler).csrw(STVEC, T0);
    asm.li(T0, STIP).csrs(SIE, T0).li(T0, 2).csrs(SSTATUS, T0);
    // The deadline: 4 ticks of time (25 instructions on one hart) from here.
    asm.rdtime(A0).addi(A0, A0, 4).sbi(0x5449_4d45, 0);
    asm.nop().nop().wfi();
    let after_wfi = asm.here();
    for _ in 0..64 {
        asm.nop();
    }
    asm.li(A2, 1).shutdown_with(A2);
    asm.pad_to(handler);
    asm.csrr(A2, 0x141).shutdown_with(A2); // sepc
    let kernel = asm.kernel();
    // Up to the WFI, then the handler: the nops after the WFI never run.
    let ran = (after_wfi - LOAD) / 4 + (asm.here() - handler) / 4;
    for quantum in [5, 100, 20_000] {
        assert_eq!(
            powered_off(&kernel, config(1, quantum)),
            (after_wfi, ran),
            "quantum {quantum}"
        );
    }
}
