//! The simulated MMU on hand-built tables: translation and permission faults reach the
//! guest with the architectural ESR/FAR (identical to what the machine reports with
//! Unicorn's built-in MMU), and stores through the tables are tracked.

mod common;

use common::*;
use emu::{MachineConfig, MmuMode, RunEnd};

const VECTORS: u64 = LOAD + 0x800;
const TABLES: u64 = LOAD + 0x1_0000;
const L1: u64 = TABLES;
const L2_TEST: u64 = TABLES + 0x1000;
const L3_TEST: u64 = TABLES + 0x2000;
const RECORDS: u64 = DATA + 0x8000;
const TEST_VA: u64 = 0x8000_0000;
/// Page descriptor: valid page, normal memory (attr 1), inner shareable, accessed.
const PAGE_ATTRS: u64 = 0x707;
const READ_ONLY: u64 = 1 << 7;
const PXN: u64 = 1 << 53;
/// `ldtr x8, [x5]`: an EL1 load with EL0's permissions (Linux's uaccess).
const LDTR_X8_X5: u32 = 0xf840_08a8;

/// x19 = where the handler resumes: just after the next instruction (`mov64` of an
/// address in the kernel's 0x4008_xxxx range is two words).
fn resume_after_next(a: &mut Asm) {
    let resume = a.here() + 8 + 4;
    a.mov64(19, resume);
    assert_eq!(a.here() + 4, resume);
}

fn program() -> Asm {
    let mut a = Asm::default();
    a.mov64(0, VECTORS).emit(msr(VBAR_EL1, 0));
    a.mov64(20, RECORDS);
    enable_mmu(&mut a, L1);
    a.mov64(5, TEST_VA + 8);
    a.emit(ldr_x(7, 5)); // read-only page: the load works
    resume_after_next(&mut a);
    a.emit(str_x(7, 5, 0)); // permission fault, level 3, write
    a.mov64(5, TEST_VA + 0x2010);
    resume_after_next(&mut a);
    a.emit(ldr_x(8, 5)); // translation fault, level 3
    a.mov64(5, TEST_VA + 0x1000);
    resume_after_next(&mut a);
    a.emit(0xd61f_00a0); // br x5: PXN page, instruction abort
    a.mov64(5, 0x80_0000_0000);
    resume_after_next(&mut a);
    a.emit(ldr_x(8, 5)); // beyond the 39-bit range: translation fault, level 0
    a.mov64(5, TEST_VA + 8);
    resume_after_next(&mut a);
    a.emit(LDTR_X8_X5); // EL0's view of the read-only page: no access, level 3
    a.emit(orr(1, 7)); // status: what the read-only page held
    a.mov64(0, 0x8400_0008).emit(HVC);

    // Current EL with SPx, synchronous: record ESR, FAR, ELR; resume at x19.
    a.align_to(VECTORS + 0x200);
    a.emit(mrs(10, ESR_EL1)).emit(str_post(10, 20, 8));
    a.emit(mrs(11, FAR_EL1)).emit(str_post(11, 20, 8));
    a.emit(mrs(12, ELR_EL1)).emit(str_post(12, 20, 8));
    a.emit(msr(ELR_EL1, 19)).emit(ERET);

    a.align_to(L1);
    a.quad(0).quad(0x4000_0000 | 0x705).quad(L2_TEST | 3);
    a.align_to(L2_TEST);
    a.quad(L3_TEST | 3);
    a.align_to(L3_TEST);
    a.quad(DATA | PAGE_ATTRS | READ_ONLY);
    a.quad((DATA + 0x1000) | PAGE_ATTRS | PXN);
    a
}

fn run_with(mmu: MmuMode) -> (RunEnd, Vec<[u64; 3]>, Option<emu::tlb::MmuStats>) {
    let config = MachineConfig {
        cpus: 1,
        quantum: 1000,
        max_insns: 1_000_000,
        mmu,
        ..MachineConfig::default()
    };
    let kernel = program().kernel();
    let mut machine = emu::Machine::new(config, &kernel).unwrap();
    let outcome = machine.run(&mut |_, _| {});
    let mem = machine.memory();
    let records = (0..5)
        .map(|i| {
            let at = RECORDS + 24 * i;
            [
                mem.read_u64(at).unwrap(),
                mem.read_u64(at + 8).unwrap(),
                mem.read_u64(at + 16).unwrap(),
            ]
        })
        .collect();
    (outcome.end, records, machine.mmu_stats())
}

#[test]
fn faults_carry_the_architectural_syndrome() {
    let (end, records, stats) = run_with(MmuMode::Checked);
    assert_eq!(end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    let code = program();
    let find = |word: u32, after: u64| {
        (0..code.words.len())
            .map(|i| LOAD + 4 * i as u64)
            .find(|&addr| addr > after && code.words[((addr - LOAD) / 4) as usize] == word)
            .unwrap()
    };
    let store_at = find(str_x(7, 5, 0), LOAD);
    let load_at = find(ldr_x(8, 5), store_at);
    let far_load_at = find(ldr_x(8, 5), load_at);
    let ldtr_at = find(LDTR_X8_X5, far_load_at);
    assert_eq!(
        records,
        vec![
            // Data abort, same EL, IL, WnR, permission fault level 3.
            [0x9600_004f, TEST_VA + 8, store_at],
            // Data abort, translation fault level 3.
            [0x9600_0007, TEST_VA + 0x2010, load_at],
            // Instruction abort, same EL, permission fault level 3; ELR = FAR = target.
            [0x8600_000f, TEST_VA + 0x1000, TEST_VA + 0x1000],
            // Translation fault level 0.
            [0x9600_0004, 0x80_0000_0000, far_load_at],
            // The ldtr: EL0 may not read the kernel's page (AP 10): permission
            // fault level 3, where the plain load above read it.
            [0x9600_000f, TEST_VA + 8, ldtr_at],
        ]
    );
    let stats = stats.expect("the simulated MMU reports");
    assert_eq!(stats.faults, 5);
    assert!(stats.tlb_fills[0] >= 3);
}

#[test]
fn the_built_in_mmu_gives_the_same_syndromes() {
    let (end, builtin, stats) = run_with(MmuMode::Builtin);
    assert_eq!(end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    assert!(stats.is_none());
    assert_eq!(builtin, run_with(MmuMode::Checked).1);
}

/// A page outside the kernel's executable segments gets no execute permission in
/// Unicorn's soft TLB when a load or store fills it (so that stores there skip
/// Unicorn's self-modifying-code check): code the kernel writes there and then
/// jumps to must still run, the fetch filling the page again with execute.
#[test]
fn code_written_to_a_data_page_runs() {
    const MOVZ_X7_42: u32 = 0xd280_0547;
    const BR_X5: u32 = 0xd61f_00a0;
    let page = DATA + 0x2000;
    let mut a = Asm::default();
    a.mov64(5, page);
    a.mov64(6, MOVZ_X7_42 as u64).emit(str_w(6, 5, 0));
    // The `b` at page + 4 back to `back` below (imm26, in words).
    let back = LOAD + 0x100;
    let offset = ((back as i64 - (page + 4) as i64) / 4) as u32 & 0x03ff_ffff;
    a.mov64(6, (0x1400_0000 | offset) as u64)
        .emit(str_w(6, 5, 4));
    a.emit(BR_X5);
    a.align_to(back);
    a.system_off_with(7);
    let config = MachineConfig {
        cpus: 1,
        quantum: 1000,
        max_insns: 100_000,
        mmu: MmuMode::Checked,
        ..MachineConfig::default()
    };
    let mut machine = emu::Machine::new(config, &a.kernel()).unwrap();
    let outcome = machine.run(&mut |_, _| {});
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 42 });
}
