//! A guest's broadcast TLB invalidation reaches every core's Unicorn instance.

mod common;

use common::*;
use emu::{MachineConfig, RunEnd};

const TABLES: u64 = LOAD + 0x1_0000;
const L1: u64 = TABLES;
const L2_RAM: u64 = TABLES + 0x1000;
const L2_TEST: u64 = TABLES + 0x2000;
const L3_TEST: u64 = TABLES + 0x3000;
/// The virtual page whose mapping CPU 0 changes under CPU 1.
const TEST_VA: u64 = 0x8000_0000;
const PAGE_A: u64 = DATA;
const PAGE_B: u64 = DATA + 0x1000;
const FLAGS: u64 = DATA + 0x2000;
/// Page descriptor: valid page, normal memory (attr 1), inner shareable, accessed.
const PAGE_ATTRS: u64 = 0x707;

/// Spins until the word at `flag` is non-zero (clobbers x4, x5).
fn wait_flag(a: &mut Asm, flag: u64) {
    a.mov64(4, flag);
    let top = a.here();
    a.emit(ldr_x(5, 4)).cbz(true, 5, top);
}

fn set_flag(a: &mut Asm, flag: u64) {
    a.mov64(4, flag).mov64(5, 1).emit(str_x(5, 4, 0));
}

fn program(invalidate: u32) -> Asm {
    let secondary = LOAD + 0x800;
    let mut a = Asm::default();
    a.mov64(6, PAGE_A).mov64(7, 0xaaaa).emit(str_x(7, 6, 0));
    a.mov64(6, PAGE_B).mov64(7, 0xbbbb).emit(str_x(7, 6, 0));
    enable_mmu(&mut a, L1);
    a.psci(0xc400_0003, &[1, secondary, 0]);
    wait_flag(&mut a, FLAGS); // CPU 1 has used the old mapping
                              // Break before make, then the new page.
    a.mov64(6, L3_TEST)
        .emit(str_x(31, 6, 0))
        .emit(DSB_ISH)
        .emit(invalidate)
        .emit(DSB_ISH);
    a.mov64(7, PAGE_B | PAGE_ATTRS)
        .emit(str_x(7, 6, 0))
        .emit(DSB_ISH)
        .emit(ISB);
    set_flag(&mut a, FLAGS + 8);
    wait_flag(&mut a, FLAGS + 16);
    a.mov64(4, FLAGS + 24).emit(ldr_x(8, 4));
    a.system_off_with(8);

    a.align_to(secondary);
    enable_mmu(&mut a, L1);
    a.mov64(9, TEST_VA).emit(ldr_x(10, 9)); // caches the translation to page A
    set_flag(&mut a, FLAGS);
    wait_flag(&mut a, FLAGS + 8);
    a.emit(ldr_x(10, 9))
        .mov64(4, FLAGS + 24)
        .emit(str_x(10, 4, 0));
    set_flag(&mut a, FLAGS + 16);
    let park = a.here();
    a.emit(WFI).b(park);

    a.align_to(L1);
    a.quad(0x401).quad(L2_RAM | 3).quad(L2_TEST | 3);
    a.align_to(L2_RAM);
    for i in 0..64 {
        a.quad((0x4000_0000 + (i << 21)) | 0x705);
    }
    a.align_to(L2_TEST);
    a.quad(L3_TEST | 3);
    a.align_to(L3_TEST);
    a.quad(PAGE_A | PAGE_ATTRS);
    a
}

fn value_seen_by_cpu1(invalidate: u32) -> RunEnd {
    let config = MachineConfig {
        cpus: 2,
        quantum: 500,
        max_insns: 10_000_000,
        ..MachineConfig::default()
    };
    run(config, &program(invalidate).kernel()).0.end
}

#[test]
fn inner_shareable_tlbi_reaches_the_other_core() {
    assert_eq!(
        value_seen_by_cpu1(TLBI_VMALLE1IS),
        RunEnd::PoweredOff {
            cpu: 0,
            status: 0xbbbb
        }
    );
}

#[test]
fn local_tlbi_leaves_the_other_core_stale() {
    // The test above can fail: without the broadcast CPU 1 keeps the old page.
    assert_eq!(
        value_seen_by_cpu1(TLBI_VMALLE1),
        RunEnd::PoweredOff {
            cpu: 0,
            status: 0xaaaa
        }
    );
}
