//! Behaviour of the machine on small hand-encoded AArch64 programs.

mod common;

use common::*;
use emu::{CpuState, MachineConfig, RunEnd, SchedulerKind};

fn one_cpu() -> MachineConfig {
    MachineConfig {
        cpus: 1,
        quantum: 1000,
        max_insns: 10_000_000,
        ..MachineConfig::default()
    }
}

const VECTORS: u64 = LOAD + 0x800;
const GICD: u64 = 0x0800_0000;
const GICC: u64 = 0x0801_0000;

/// Sets VBAR_EL1 to `VECTORS` (clobbers x0).
fn set_vbar(a: &mut Asm) {
    a.mov64(0, VECTORS).emit(msr(VBAR_EL1, 0));
}

/// Enables the GIC distributor and this CPU's interface with every private
/// interrupt enabled and the priority mask open (x21 = GICD, x22 = GICC).
fn enable_gic(a: &mut Asm) {
    a.mov64(21, GICD).mov64(22, GICC).mov64(3, 1);
    a.emit(str_w(3, 21, 0x000)).emit(str_w(3, 22, 0x000));
    a.mov64(3, 0xffff_ffff).emit(str_w(3, 21, 0x100));
    a.mov64(3, 0xff).emit(str_w(3, 22, 0x004));
}

#[test]
fn synchronous_exceptions_fill_elr_spsr_esr_and_eret_returns() {
    let mut a = Asm::default();
    set_vbar(&mut a);
    a.mov64(20, DATA).mov64(1, 0);
    let svc_at = a.here();
    a.emit(svc(0x42)).emit(add(1, 1, 1)); // skipped: the handler returns to ELR + 4
    let brk_at = a.here();
    a.emit(brk(7));
    let udf_at = a.here();
    a.emit(UDF);
    a.system_off_with(1);
    // Current EL with SPx, synchronous: record ESR, ELR, SPSR; return past ELR + 4.
    a.align_to(VECTORS + 0x200);
    a.emit(mrs(10, ESR_EL1)).emit(str_post(10, 20, 8));
    a.emit(mrs(11, ELR_EL1)).emit(str_post(11, 20, 8));
    a.emit(mrs(12, SPSR_EL1)).emit(str_post(12, 20, 8));
    a.emit(add(11, 11, 4)).emit(msr(ELR_EL1, 11)).emit(ERET);

    let (outcome, machine, _) = run(one_cpu(), &a.kernel());
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    let mem = machine.memory();
    let record = |i: u64| {
        let at = DATA + 24 * i;
        [
            mem.read_u64(at).unwrap(),
            mem.read_u64(at + 8).unwrap(),
            mem.read_u64(at + 16).unwrap(),
        ]
    };
    // EC 0x15 SVC / 0x3c BRK / 0x00 unknown, IL set; SPSR = EL1h with DAIF masked.
    assert_eq!(record(0), [0x5600_0042, svc_at + 4, 0x3c5]);
    assert_eq!(record(1), [0xf200_0007, brk_at, 0x3c5]);
    assert_eq!(record(2), [0x0200_0000, udf_at, 0x3c5]);
}

#[test]
fn irq_waits_while_masked_and_is_taken_right_after_unmasking() {
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.mov64(20, DATA).mov64(1, 0).mov64(2, 0);
    a.mov64(3, (2 << 24) | 3).emit(str_w(3, 21, 0xf00)); // SGI 3 to self, IRQs masked
    let masked_loop = a.here();
    a.emit(add(1, 1, 1))
        .emit(cmp(1, 2000))
        .b_cond(1, masked_loop);
    a.emit(IRQ_ON);
    let spin = a.here();
    a.emit(add(2, 2, 1)).b(spin);
    // Current EL with SPx, IRQ: acknowledge, record, power off with x1.
    a.align_to(VECTORS + 0x280);
    a.emit(ldr_w(4, 22, 0x0c))
        .emit(str_x(4, 20, 0))
        .emit(str_x(2, 20, 8));
    a.emit(mrs(12, SPSR_EL1)).emit(str_x(12, 20, 16));
    a.system_off_with(1);

    let (outcome, machine, _) = run(one_cpu(), &a.kernel());
    assert_eq!(
        outcome.end,
        RunEnd::PoweredOff {
            cpu: 0,
            status: 2000
        },
        "taken only after the masked loop"
    );
    let mem = machine.memory();
    assert_eq!(mem.read_u64(DATA).unwrap(), 3, "IAR: SGI 3 from CPU 0");
    assert_eq!(
        mem.read_u64(DATA + 8).unwrap(),
        0,
        "taken right after the unmasking instruction, before the loop after it"
    );
    assert_eq!(
        mem.read_u64(DATA + 16).unwrap() & 0x3cf,
        0x345,
        "interrupted EL1h with I clear"
    );
    assert_eq!(outcome.cpus[0].irqs, 1);
}

#[test]
fn psci_cpu_on_starts_a_second_core_with_its_context() {
    let mut a = Asm::default();
    let secondary = LOAD + 0x400;
    a.mov64(20, DATA);
    a.psci(0xc400_0003, &[1, secondary, 0x1234])
        .emit(str_x(0, 20, 0)); // CPU_ON result
    let wait = a.here();
    a.emit(ldr_x(5, 20) | (2 << 10)).cbz(true, 5, wait); // ldr x5, [x20, #16]
    a.system_off_with(5);
    a.align_to(secondary);
    a.mov64(20, DATA)
        .emit(mrs(6, MPIDR_EL1))
        .emit(str_x(6, 20, 8))
        .emit(str_x(0, 20, 16));
    let park = a.here();
    a.emit(WFI).b(park);

    let config = MachineConfig {
        cpus: 2,
        ..one_cpu()
    };
    let (outcome, machine, _) = run(config, &a.kernel());
    assert_eq!(
        outcome.end,
        RunEnd::PoweredOff {
            cpu: 0,
            status: 0x1234
        }
    );
    assert_eq!(machine.memory().read_u64(DATA).unwrap(), 0, "PSCI SUCCESS");
    assert_eq!(
        machine.memory().read_u64(DATA + 8).unwrap(),
        0x8000_0001,
        "MPIDR of CPU 1"
    );
    assert_eq!(outcome.cpus[1].state, CpuState::WaitingForInterrupt);
}

/// Programs the virtual timer `ticks` ahead and records CNTVCT before and in the
/// handler; `idle` waits in WFI, otherwise spins.
fn timer_program(ticks: u32, idle: bool) -> Asm {
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.mov64(20, DATA);
    a.mov64(3, ticks as u64).emit(msr(CNTV_TVAL_EL0, 3));
    a.emit(mrs(5, CNTVCT_EL0));
    a.mov64(3, 1).emit(msr(CNTV_CTL_EL0, 3)).emit(IRQ_ON);
    let wait = a.here();
    a.emit(if idle { WFI } else { NOP }).b(wait);
    a.align_to(VECTORS + 0x280);
    a.emit(mrs(6, CNTVCT_EL0)).emit(ldr_w(7, 22, 0x0c));
    a.emit(str_x(5, 20, 0)).emit(str_x(6, 20, 8));
    a.system_off_with(7);
    a
}

#[test]
fn timer_fires_at_the_programmed_virtual_time() {
    for idle in [true, false] {
        let (outcome, machine, _) = run(one_cpu(), &timer_program(50_000, idle).kernel());
        assert_eq!(
            outcome.end,
            RunEnd::PoweredOff { cpu: 0, status: 27 },
            "PPI 27 (idle: {idle})"
        );
        let mem = machine.memory();
        let elapsed = mem.read_u64(DATA + 8).unwrap() - mem.read_u64(DATA).unwrap();
        // The deadline is 50,000 after the time the TVAL write sees; the first read
        // is the instruction after it, the handler's read comes at the deadline.
        assert_eq!(elapsed, 50_000 - 1, "idle: {idle}");
        if idle {
            assert!(
                outcome.total_insns < 1000,
                "idle time skipped, not emulated"
            );
        }
    }
}

#[test]
fn reprogramming_the_timer_in_its_handler_lowers_the_line_at_once() {
    // The handler re-arms the timer far ahead, EOIs and returns; the main loop spins
    // past the first deadline. A line still high after the re-arm would make the
    // GIC hand out the same tick again before the slice ends.
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.mov64(8, 0); // taken timer IRQs
    a.mov64(3, 5_000).emit(msr(CNTV_TVAL_EL0, 3));
    a.mov64(3, 1).emit(msr(CNTV_CTL_EL0, 3)).emit(IRQ_ON);
    a.mov64(9, 20_000);
    let spin = a.here();
    a.emit(sub(9, 9, 1)).cbnz(true, 9, spin);
    a.system_off_with(8);
    a.align_to(VECTORS + 0x280);
    a.emit(ldr_w(7, 22, 0x0c)); // GICC_IAR
    a.mov64(3, 10_000_000).emit(msr(CNTV_TVAL_EL0, 3));
    a.emit(add(8, 8, 1));
    a.emit(str_w(7, 22, 0x10)); // GICC_EOIR
                                // Like a kernel's IRQ loop, acknowledge again until the GIC says spurious.
    let done = VECTORS + 0x2f0;
    a.emit(ldr_w(10, 22, 0x0c))
        .emit(cmp(10, 1023))
        .b_cond(0, done); // b.eq
    a.emit(add(8, 8, 1)).emit(str_w(10, 22, 0x10));
    a.align_to(done);
    a.emit(ERET);
    let config = MachineConfig {
        quantum: 100_000,
        ..one_cpu()
    };
    let (outcome, ..) = run(config, &a.kernel());
    assert_eq!(
        outcome.end,
        RunEnd::PoweredOff { cpu: 0, status: 1 },
        "one tick, taken once"
    );
}

/// How a test program unmasks IRQs.
#[derive(Debug, Clone, Copy)]
enum Unmask {
    DaifClr,
    MsrDaif,
    /// `eret` to a little further on, with SPSR_EL1 saying EL1h and I clear.
    Eret,
}

impl Unmask {
    /// Emits the unmasking; returns the address of the unmasking instruction and of
    /// the first instruction after it.
    fn emit(self, a: &mut Asm) -> (u64, u64) {
        if let Unmask::Eret = self {
            let target = a.here() + 4 * 8;
            a.mov64(4, target).emit(msr(ELR_EL1, 4));
            a.mov64(4, 0x345).emit(msr(SPSR_EL1, 4));
        }
        let at = a.here();
        a.emit(match self {
            Unmask::DaifClr => IRQ_ON,
            Unmask::MsrDaif => msr(DAIF, 31), // msr daif, xzr
            Unmask::Eret => ERET,
        });
        let next = match self {
            Unmask::Eret => at + 4 * 3,
            _ => at + 4,
        };
        (at, next)
    }
}

#[test]
fn a_pending_timer_irq_is_taken_right_after_the_unmasking_instruction_under_any_schedule() {
    for unmask in [Unmask::DaifClr, Unmask::MsrDaif, Unmask::Eret] {
        // CPU 0 runs straight-line code: start CPU 1 (which spins), arm the timer a
        // tick ahead with IRQs masked (as since reset), let it fire during 300 NOPs,
        // unmask in the middle of more NOPs. The handler powers off with ELR_EL1.
        let mut a = Asm::default();
        set_vbar(&mut a);
        enable_gic(&mut a);
        let secondary = LOAD + 0x600;
        a.psci(0xc400_0003, &[1, secondary, 0]);
        a.mov64(3, 1).emit(msr(CNTV_TVAL_EL0, 3));
        a.emit(msr(CNTV_CTL_EL0, 3));
        for _ in 0..300 {
            a.emit(NOP);
        }
        let (unmask_at, resumes_at) = unmask.emit(&mut a);
        for _ in 0..20 {
            a.emit(NOP);
        }
        a.b(a.here()); // not reached: the IRQ comes first
        a.align_to(secondary);
        a.b(secondary);
        a.align_to(VECTORS + 0x280);
        a.emit(mrs(11, ELR_EL1));
        a.system_off_with(11);
        let handler_insns = (a.here() - (VECTORS + 0x280)) / 4;
        // Every instruction up to the unmasking one ran once, then the handler.
        let expected_insns = (unmask_at - LOAD) / 4 + 1 + handler_insns;

        let schedules = [(SchedulerKind::RoundRobin, 0)]
            .into_iter()
            .chain((0..4).map(|seed| (SchedulerKind::Random, seed)));
        for (sched, seed) in schedules {
            let config = MachineConfig {
                cpus: 2,
                sched: sched.clone(),
                seed,
                quantum: 50,
                ..one_cpu()
            };
            let (outcome, ..) = run(config, &a.kernel());
            let what = format!("{unmask:?}, {sched:?} seed {seed}");
            assert_eq!(
                outcome.end,
                RunEnd::PoweredOff {
                    cpu: 0,
                    status: resumes_at
                },
                "ELR_EL1 is the instruction after the unmask ({what})"
            );
            assert_eq!(outcome.cpus[0].insns, expected_insns, "{what}");
            assert_eq!(outcome.cpus[0].irqs, 1, "{what}");
        }
    }
}

/// A program for one CPU that unmasks IRQs and arms its timer for the absolute time
/// `deadline` (x20 = `DATA`); what follows is the caller's.
fn armed_at(deadline: u64) -> Asm {
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.mov64(20, DATA);
    a.emit(IRQ_ON);
    a.mov64(3, deadline).emit(msr(CNTV_CVAL_EL0, 3));
    a.mov64(3, 1).emit(msr(CNTV_CTL_EL0, 3));
    a
}

/// One CPU with IRQs on arms its timer for the absolute time `deadline`, then loops
/// over an 8-instruction body; the handler stores CNTVCT at `DATA` and powers off
/// with ELR_EL1. Returns the program, the body's address and the handler's length.
fn deadline_program(deadline: u64) -> (Asm, u64, u64) {
    let mut a = armed_at(deadline);
    let body = a.here();
    for _ in 0..7 {
        a.emit(add(1, 1, 1));
    }
    a.b(body);
    a.align_to(VECTORS + 0x280);
    a.emit(mrs(6, CNTVCT_EL0)).emit(str_x(6, 20, 0));
    a.emit(mrs(11, ELR_EL1));
    a.system_off_with(11);
    let handler_insns = (a.here() - (VECTORS + 0x280)) / 4;
    (a, body, handler_insns)
}

#[test]
fn a_timer_deadline_inside_a_long_slice_is_taken_at_its_instruction() {
    // With one CPU the clock is its instruction count: the IRQ interrupts the
    // instruction `deadline` instructions in, here the 4th of the loop body.
    // (Deadlines from 0x1_0001 on load with the same two instructions.)
    let (_, body, _) = deadline_program(0x1_0001);
    let deadline = (body - LOAD) / 4 + 8 * 9_000 + 3;
    let (program, same_body, handler_insns) = deadline_program(deadline);
    assert_eq!(body, same_body);
    deadline_is_taken_at_its_instruction(&program, body, handler_insns, deadline);
}

/// Under any quantum, the IRQ of `program` (a `deadline_program`) interrupts the 4th
/// instruction of its loop `body`, at virtual time `deadline`.
fn deadline_is_taken_at_its_instruction(
    program: &Asm,
    body: u64,
    handler_insns: u64,
    deadline: u64,
) {
    for quantum in [7, 1000, 1 << 30] {
        let config = MachineConfig {
            quantum,
            ..one_cpu()
        };
        let (outcome, machine, _) = run(config, &program.kernel());
        assert_eq!(
            outcome.end,
            RunEnd::PoweredOff {
                cpu: 0,
                status: body + 4 * 3
            },
            "ELR_EL1: the instruction the deadline falls on (quantum {quantum})"
        );
        assert_eq!(machine.memory().read_u64(DATA).unwrap(), deadline);
        assert_eq!(outcome.cpus[0].insns, deadline + handler_insns);
    }
}

/// `deadline_program` with the loop at EL0, as Linux runs user space: SCTLR_EL1.nTWI
/// clear, so a WFI at EL0 traps. The IRQ goes to the lower-EL vector.
fn el0_deadline_program(deadline: u64) -> (Asm, u64, u64, u64) {
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.mov64(20, DATA);
    a.emit(mrs(3, SCTLR_EL1));
    a.emit(0xd2a0_0024); // mov x4, #0x10000 (nTWI)
    a.emit(0x8a24_0063); // bic x3, x3, x4
    a.emit(msr(SCTLR_EL1, 3));
    a.mov64(3, deadline).emit(msr(CNTV_CVAL_EL0, 3));
    a.mov64(3, 1).emit(msr(CNTV_CTL_EL0, 3));
    let body = LOAD + 0x400;
    a.mov64(3, body).emit(msr(ELR_EL1, 3));
    a.emit(0xd518_401f); // msr spsr_el1, xzr: EL0t, IRQs unmasked
    a.emit(ERET);
    let before_body = (a.here() - LOAD) / 4;
    a.align_to(body);
    for _ in 0..7 {
        a.emit(add(1, 1, 1));
    }
    a.b(body);
    a.align_to(VECTORS + 0x480);
    a.emit(mrs(6, CNTVCT_EL0)).emit(str_x(6, 20, 0));
    a.emit(mrs(11, ELR_EL1));
    a.system_off_with(11);
    let handler_insns = (a.here() - (VECTORS + 0x480)) / 4;
    (a, body, handler_insns, before_body)
}

/// Unicorn ends a run stopped inside a block by imitating a WFI at the stop; at EL0
/// with nTWI clear that WFI traps, which the machine once delivered to the guest as
/// an undefined instruction on the instruction before (Linux killed the process
/// with SIGILL). The IRQ is taken at its instruction, as at EL1.
#[test]
fn a_timer_deadline_inside_an_el0_block_is_an_irq_not_an_undefined_instruction() {
    let (_, _, _, before_body) = el0_deadline_program(0x1_0001);
    let deadline = before_body + 8 * 9_000 + 3;
    let (program, body, handler_insns, same) = el0_deadline_program(deadline);
    assert_eq!(before_body, same);
    deadline_is_taken_at_its_instruction(&program, body, handler_insns, deadline);
}

#[test]
fn an_sgi_a_cpu_sends_itself_is_taken_within_the_block_that_sent_it() {
    let mut a = Asm::default();
    set_vbar(&mut a);
    enable_gic(&mut a);
    a.emit(IRQ_ON);
    a.mov64(3, (2 << 24) | 5);
    let send = a.here();
    a.emit(str_w(3, 21, 0xf00)); // SGI 5 to self
    for _ in 0..4 {
        a.emit(NOP);
    }
    let next_block = a.here() + 4;
    a.b(next_block);
    a.b(a.here()); // not reached
    a.align_to(VECTORS + 0x280);
    a.emit(mrs(11, ELR_EL1));
    a.system_off_with(11);
    let config = MachineConfig {
        quantum: 1 << 30,
        ..one_cpu()
    };
    let (outcome, ..) = run(config, &a.kernel());
    match outcome.end {
        RunEnd::PoweredOff {
            cpu: 0,
            status: elr,
        } => assert!(
            elr > send && elr <= next_block,
            "taken at {elr:#x}, sent at {send:#x}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn waiting_forever_in_wfi_is_a_hang() {
    let mut a = Asm::default();
    a.emit(WFI);
    let (outcome, ..) = run(one_cpu(), &a.kernel());
    assert_eq!(outcome.end, RunEnd::Hang);
}

/// Every CPU appends its number to a shared log `per_cpu` times (atomic ticket with
/// LDAXR/STLXR); CPU 0 starts the others and powers off when the log is full.
fn interleaving_program(cpus: u64, per_cpu: u32) -> Asm {
    let mut a = Asm::default();
    let secondary = LOAD + 0x400;
    let common = LOAD + 0x500;
    a.mov64(19, 0);
    for cpu in 1..cpus {
        a.psci(0xc400_0003, &[cpu, secondary, cpu]);
    }
    a.b(common);
    a.align_to(secondary);
    a.emit(orr(19, 0)).b(common);
    a.align_to(common);
    a.mov64(20, DATA)
        .mov64(21, DATA + 0x1000)
        .mov64(22, per_cpu as u64);
    let again = a.here();
    a.emit(0x885f_fe83); // ldaxr w3, [x20]
    a.emit(0x1100_0464); // add w4, w3, #1
    a.emit(0x8805_fe84); // stlxr w5, w4, [x20]
    a.cbnz(false, 5, again);
    a.emit(0x3823_4ab3); // strb w19, [x21, w3, uxtw]
    a.emit(sub(22, 22, 1));
    a.cbnz(true, 22, again);
    let park = LOAD + 0x700;
    a.cbnz(true, 19, park);
    let wait = a.here();
    a.emit(ldr_w(3, 20, 0))
        .emit(cmp(3, (cpus as u32) * per_cpu))
        .b_cond(1, wait);
    a.system_off_with(31);
    a.align_to(park);
    a.emit(WFI).b(park);
    a
}

fn interleaving(seed: u64) -> (Vec<u8>, Vec<u64>) {
    let config = MachineConfig {
        cpus: 4,
        sched: SchedulerKind::Random,
        seed,
        quantum: 100,
        ..one_cpu()
    };
    let (outcome, machine, _) = run(config, &interleaving_program(4, 200).kernel());
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    let mut log = vec![0; 800];
    machine.memory().read(DATA + 0x1000, &mut log).unwrap();
    for cpu in 0..4 {
        assert_eq!(
            log.iter().filter(|&&c| c == cpu).count(),
            200,
            "no lost update"
        );
    }
    (log, outcome.cpus.iter().map(|c| c.insns).collect())
}

#[test]
fn same_seed_same_run_and_different_seeds_different_interleavings() {
    let (log_a, insns_a) = interleaving(1);
    let (log_b, insns_b) = interleaving(1);
    assert_eq!(log_a, log_b);
    assert_eq!(insns_a, insns_b);
    let (log_c, _) = interleaving(2);
    assert_ne!(log_a, log_c);
}

#[test]
fn console_lines_arrive_whole_per_cpu() {
    let mut a = Asm::default();
    let secondary = LOAD + 0x800;
    a.psci(0xc400_0003, &[1, secondary, 0]);
    a.print("hello from cpu 0\n");
    a.mov64(20, DATA);
    let wait = a.here();
    a.emit(ldr_x(5, 20)).cbz(true, 5, wait);
    a.system_off_with(31);
    a.align_to(secondary);
    a.print("hello from cpu 1\n").print("unfinished");
    a.mov64(20, DATA).mov64(5, 1).emit(str_x(5, 20, 0));
    let park = a.here();
    a.emit(WFI).b(park);

    let config = MachineConfig {
        cpus: 2,
        sched: SchedulerKind::Random,
        quantum: 3,
        ..one_cpu()
    };
    let (outcome, _, mut lines) = run(config, &a.kernel());
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    lines.sort();
    let expected = [
        (0, "hello from cpu 0"),
        (1, "hello from cpu 1"),
        (1, "unfinished"),
    ];
    assert_eq!(lines, expected.map(|(c, s)| (c, s.to_string())));
}

#[test]
fn watchdog_stops_a_runaway_guest() {
    let mut a = Asm::default();
    let spin = a.here();
    a.emit(add(1, 1, 1)).b(spin);
    let config = MachineConfig {
        max_insns: 10_000,
        ..one_cpu()
    };
    let (outcome, ..) = run(config, &a.kernel());
    assert_eq!(outcome.end, RunEnd::Watchdog { limit: 10_000 });
    assert_eq!(outcome.total_insns, 10_000);
    assert!(outcome.cpus[0].pc == spin || outcome.cpus[0].pc == spin + 4);
}

#[test]
fn instruction_counts_are_exact_whatever_the_quantum() {
    // 3 + 3 * 1000 + (mov + movz + movk + hvc) instructions, then SYSTEM_OFF.
    let mut a = Asm::default();
    a.mov64(1, 1000).emit(NOP).emit(NOP);
    let top = a.here();
    a.emit(sub(1, 1, 1)).emit(NOP).cbnz(true, 1, top);
    a.system_off_with(1);
    for quantum in [1, 7, 1000, 1 << 30] {
        let (outcome, ..) = run(
            MachineConfig {
                quantum,
                ..one_cpu()
            },
            &a.kernel(),
        );
        assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
        assert_eq!(outcome.cpus[0].insns, 3 + 3000 + 4, "quantum {quantum}");
    }
}

#[test]
fn faults_the_guest_cannot_take_end_the_run() {
    let mut a = Asm::default();
    a.mov64(0, 0x1000).emit(0xd61f_0000); // br x0: fetch from unmapped memory
    let (outcome, ..) = run(one_cpu(), &a.kernel());
    match outcome.end {
        RunEnd::Fault {
            cpu: 0,
            pc: 0x1000,
            what,
        } => assert!(what.contains("FETCH_UNMAPPED"), "{what}"),
        other => panic!("{other:?}"),
    }
    let mut a = Asm::default();
    a.emit(NOP).emit(UDF);
    let (outcome, ..) = run(one_cpu(), &a.kernel());
    match outcome.end {
        RunEnd::Fault { cpu: 0, pc, what } => {
            assert_eq!(pc, LOAD + 4);
            assert!(what.contains("no vector table"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_abort_reports_the_faulting_address() {
    // An exclusive load from an unaligned address takes an alignment data abort.
    let mut a = Asm::default();
    set_vbar(&mut a);
    a.mov64(4, DATA + 1);
    let load_at = a.here();
    a.emit(0xc85f_7c85); // ldxr x5, [x4]
    a.b(a.here()); // not reached
    a.align_to(VECTORS + 0x200);
    a.mov64(20, DATA + 0x100);
    a.emit(mrs(10, ESR_EL1)).emit(str_x(10, 20, 0));
    a.emit(mrs(11, FAR_EL1)).emit(str_x(11, 20, 8));
    a.emit(mrs(12, ELR_EL1)).emit(str_x(12, 20, 16));
    a.system_off_with(31);

    let (outcome, machine, _) = run(one_cpu(), &a.kernel());
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    let mem = machine.memory();
    assert_eq!(
        mem.read_u64(DATA + 0x100).unwrap() >> 26,
        0x25,
        "data abort, same EL"
    );
    assert_eq!(mem.read_u64(DATA + 0x108).unwrap(), DATA + 1);
    assert_eq!(mem.read_u64(DATA + 0x110).unwrap(), load_at);
    let taken = outcome.cpus[0].last_exception.clone().unwrap();
    assert_eq!(
        (taken.kind, taken.esr, taken.far, taken.elr),
        ("data abort", 0x9600_0021, Some(DATA + 1), load_at)
    );
}

#[test]
fn reports_carry_a_frame_pointer_backtrace() {
    // Build frame records by hand: x29 -> {fp1, ret0}, fp1 -> {0, ret1}; then hang.
    let mut a = Asm::default();
    a.mov64(29, DATA + 0x10)
        .mov64(1, DATA + 0x20)
        .mov64(2, 0x4008_1234)
        .mov64(3, 0x4008_5678);
    a.emit(str_x(1, 29, 0))
        .emit(str_x(2, 29, 8))
        .emit(str_x(3, 1, 8));
    a.emit(WFI);
    let (outcome, ..) = run(one_cpu(), &a.kernel());
    assert_eq!(outcome.end, RunEnd::Hang);
    assert_eq!(outcome.cpus[0].backtrace, [0x4008_1234, 0x4008_5678]);
}

#[test]
fn a_jump_to_address_zero_is_a_fault_not_a_stall() {
    let mut a = Asm::default();
    a.mov64(0, 0).emit(0xd61f_0000); // br x0
    let config = MachineConfig {
        max_insns: 1_000_000,
        ..one_cpu()
    };
    let (outcome, ..) = run(config, &a.kernel());
    assert!(
        matches!(outcome.end, RunEnd::Fault { cpu: 0, pc: 0, .. }),
        "{:?}",
        outcome.end
    );
}

#[test]
fn exception_from_sp_el0_switches_to_sp_el1_and_eret_switches_back() {
    const SP_EL1_TOP: u64 = DATA + 0x8000;
    const SP_EL0_TOP: u64 = DATA + 0x4000;
    let mut a = Asm::default();
    set_vbar(&mut a);
    a.mov64(20, DATA);
    a.mov64(0, SP_EL1_TOP).emit(0x9100_001f); // mov sp, x0 (EL1h: SP_EL1)
    a.emit(0xd500_40bf); // msr spsel, #0: EL1t
    a.mov64(0, SP_EL0_TOP).emit(0x9100_001f); // mov sp, x0 (now SP_EL0)
    a.emit(svc(1));
    a.emit(0x9100_03e1).emit(str_x(1, 20, 16)); // mov x1, sp: SP after ERET
    a.system_off_with(31);
    // Current EL with SP_EL0, synchronous.
    a.align_to(VECTORS);
    a.emit(0x9100_03e2).emit(str_x(2, 20, 0)); // mov x2, sp: SP in the handler
    a.emit(mrs(3, SPSR_EL1)).emit(str_x(3, 20, 8)).emit(ERET);

    let (outcome, machine, _) = run(one_cpu(), &a.kernel());
    assert_eq!(outcome.end, RunEnd::PoweredOff { cpu: 0, status: 0 });
    let mem = machine.memory();
    assert_eq!(
        mem.read_u64(DATA).unwrap(),
        SP_EL1_TOP,
        "handler runs on SP_EL1"
    );
    assert_eq!(mem.read_u64(DATA + 8).unwrap(), 0x3c4, "SPSR says EL1t");
    assert_eq!(
        mem.read_u64(DATA + 16).unwrap(),
        SP_EL0_TOP,
        "back on SP_EL0"
    );
}

#[test]
fn invalid_configurations_are_one_line_errors() {
    let kernel = Asm::default().emit(NOP).kernel();
    for cpus in [0, 9] {
        let err = emu::Machine::new(MachineConfig { cpus, ..one_cpu() }, &kernel)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("1 to 8") && !err.to_string().contains('\n'),
            "{err}"
        );
    }
    let err = emu::Machine::new(
        MachineConfig {
            ram_size: 1000,
            ..one_cpu()
        },
        &kernel,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("RAM size"), "{err}");
}

#[test]
fn psci_version_affinity_info_and_unknown_calls() {
    let mut a = Asm::default();
    a.mov64(20, DATA);
    a.psci(0x8400_0000, &[]).emit(str_x(0, 20, 0)); // PSCI_VERSION
    a.psci(0xc400_0004, &[1, 0]).emit(str_x(0, 20, 8)); // AFFINITY_INFO(cpu 1): off
    a.psci(0xc400_0003, &[1, LOAD + 0x400, 0])
        .emit(str_x(0, 20, 16)); // CPU_ON
    a.psci(0xc400_0003, &[1, LOAD + 0x400, 0])
        .emit(str_x(0, 20, 24)); // again: already on
    a.psci(0xc400_0004, &[1, 0]).emit(str_x(0, 20, 32)); // now on
    a.psci(0xc400_0003, &[7, LOAD + 0x400, 0])
        .emit(str_x(0, 20, 40)); // no such CPU
    a.psci(0x8400_00ff, &[]).emit(str_x(0, 20, 48)); // unknown function
    a.psci(0x8400_0009, &[42]); // SYSTEM_RESET with a status
    a.align_to(LOAD + 0x400);
    let park = a.here();
    a.emit(WFI).b(park);

    let (outcome, machine, _) = run(
        MachineConfig {
            cpus: 2,
            ..one_cpu()
        },
        &a.kernel(),
    );
    assert_eq!(outcome.end, RunEnd::Reset { cpu: 0, status: 42 });
    let results: Vec<i64> = (0..7)
        .map(|i| machine.memory().read_u64(DATA + 8 * i).unwrap() as i64)
        .collect();
    assert_eq!(results, [2, 1, 0, -4, 0, -2, -1]);
}

#[test]
fn an_sgi_wakes_a_cpu_from_wfi_even_with_irqs_masked() {
    let secondary = LOAD + 0x400;
    let mut a = Asm::default();
    enable_gic(&mut a);
    a.mov64(20, DATA);
    a.psci(0xc400_0003, &[1, secondary, 0]);
    let wait_parked = a.here();
    a.emit(ldr_x(5, 20)).cbz(true, 5, wait_parked); // CPU 1 is about to sleep
    a.mov64(3, (0b10 << 16) | 7).emit(str_w(3, 21, 0xf00)); // SGI 7 to CPU 1
    let wait_woken = a.here();
    a.emit(ldr_x(5, 20) | (1 << 10)).cbz(true, 5, wait_woken); // ldr x5, [x20, #8]
    a.system_off_with(5);
    a.align_to(secondary);
    enable_gic(&mut a); // banked: CPU 1's own interface and SGI enables
    a.mov64(20, DATA).mov64(5, 1).emit(str_x(5, 20, 0));
    a.emit(WFI); // IRQs stay masked: WFI still returns when SGI 7 is pending
    a.emit(ldr_w(4, 22, 0x0c)).emit(str_x(4, 20, 8)); // acknowledge by polling IAR
    let park = a.here();
    a.emit(WFI).b(park);

    let (outcome, ..) = run(
        MachineConfig {
            cpus: 2,
            ..one_cpu()
        },
        &a.kernel(),
    );
    assert_eq!(
        outcome.end,
        RunEnd::PoweredOff { cpu: 0, status: 7 },
        "IAR: SGI 7 from CPU 0"
    );
    assert_eq!(outcome.cpus[1].irqs, 0, "masked: no IRQ entry");
}

#[test]
fn a_watchdog_stop_can_be_extended_and_the_raw_instance_runs_on() {
    let mut a = Asm::default();
    let spin = a.here();
    a.emit(add(1, 1, 1)).b(spin);
    let kernel = a.kernel();
    let mut machine = emu::Machine::new(
        MachineConfig {
            max_insns: 1000,
            ..one_cpu()
        },
        &kernel,
    )
    .unwrap();
    assert_eq!(
        machine.run(&mut |_, _| {}).end,
        RunEnd::Watchdog { limit: 1000 }
    );
    machine.extend_watchdog(500);
    let outcome = machine.run(&mut |_, _| {});
    assert_eq!(
        (outcome.end, outcome.total_insns),
        (RunEnd::Watchdog { limit: 1500 }, 1500)
    );

    let mut raw = emu::bench::RawInstance::new(&kernel, "").unwrap();
    assert_eq!(raw.run(10_000).insns, 10_000);
    assert_eq!(raw.run(20_000).insns, 20_000);
}

#[test]
fn the_engine_floor_runs_the_counted_path_without_counting_it() {
    let mut a = Asm::default();
    a.mov64(1, 1000);
    let top = a.here();
    a.emit(sub(1, 1, 1)).cbnz(true, 1, top);
    a.print("done\n").mov64(2, 5).system_off_with(2);
    let kernel = a.kernel();
    let counted = emu::bench::RawInstance::new(&kernel, "")
        .unwrap()
        .run(u64::MAX / 4);
    let floor = emu::bench::RawInstance::uncounted(&kernel, "")
        .unwrap()
        .run(u64::MAX / 4);
    let powered_off = RunEnd::PoweredOff { cpu: 0, status: 5 };
    assert_eq!(
        (&counted.end, counted.console.as_str()),
        (&powered_off, "done\n")
    );
    assert_eq!(
        (&floor.end, floor.console.as_str()),
        (&powered_off, "done\n")
    );
    assert!(
        counted.insns > 2000,
        "the loop alone is 2000: {}",
        counted.insns
    );
    assert!(
        floor.insns < 10,
        "the floor counts no block: {}",
        floor.insns
    );
}

/// Code the kernel rewrites in its own code segment after running it runs anew,
/// with Unicorn's or the simulated MMU (translations of kernel code skip the soft
/// TLB rescan: the self-modifying-code check must still see the store).
#[test]
fn code_rewritten_after_it_ran_runs_anew() {
    const MOVZ_X7_1: u32 = 0xd280_0027;
    const MOVZ_X7_42: u32 = 0xd280_0547;
    for mmu in [emu::MmuMode::Builtin, emu::MmuMode::Checked] {
        let mut a = Asm::default();
        let site = LOAD + 0x100;
        a.mov64(5, site).mov64(8, 0).b(site);
        a.align_to(site);
        a.emit(MOVZ_X7_1);
        let done = site + 0x40;
        a.cbnz(true, 8, done);
        a.mov64(8, 1)
            .mov64(6, MOVZ_X7_42 as u64)
            .emit(str_w(6, 5, 0));
        a.b(site);
        a.align_to(done);
        a.system_off_with(7);
        let config = MachineConfig { mmu, ..one_cpu() };
        let mut machine = emu::Machine::new(config, &a.kernel()).unwrap();
        assert_eq!(
            machine.run(&mut |_, _| {}).end,
            RunEnd::PoweredOff { cpu: 0, status: 42 },
            "{mmu:?}"
        );
    }
}

/// `deadline_program`'s loop reading DAIF and MDSCR_EL1 before the instruction
/// the deadline falls on; the handler stores both and SPSR_EL1 at `DATA`.
fn debug_state_program(deadline: u64) -> (Asm, u64) {
    const MDSCR_EL1: Sys = (2, 0, 0, 2, 2);
    let mut a = armed_at(deadline);
    let body = a.here();
    a.emit(mrs(1, DAIF)).emit(mrs(2, MDSCR_EL1));
    for _ in 0..5 {
        a.emit(add(9, 9, 1));
    }
    a.b(body);
    a.align_to(VECTORS + 0x280);
    a.emit(str_x(1, 20, 0)).emit(str_x(2, 20, 8));
    a.emit(mrs(12, SPSR_EL1)).emit(str_x(12, 20, 16));
    a.emit(mrs(11, ELR_EL1));
    a.system_off_with(11);
    (a, body)
}

/// The machine steps to a deadline inside a block with the architecture's
/// software step, which needs PSTATE.D and MDSCR_EL1 changed: the guest reads its
/// own (D set since reset, MDSCR_EL1 zero), the interrupted PSTATE is its own (no
/// step bit), and the IRQ still interrupts the instruction the deadline falls on.
#[test]
fn stepping_to_a_deadline_leaves_the_guest_its_debug_state() {
    let (_, body) = debug_state_program(0x1_0001);
    let deadline = (body - LOAD) / 4 + 8 * 9_000 + 4;
    let (program, same_body) = debug_state_program(deadline);
    assert_eq!(body, same_body);
    let (outcome, machine, _) = run(one_cpu(), &program.kernel());
    assert_eq!(
        outcome.end,
        RunEnd::PoweredOff {
            cpu: 0,
            status: body + 4 * 4
        },
        "ELR_EL1: the 5th instruction of the loop"
    );
    let mem = machine.memory();
    let daif = mem.read_u64(DATA).unwrap();
    let mdscr = mem.read_u64(DATA + 8).unwrap();
    assert_eq!((daif, mdscr), (0x340, 0), "D, A and F masked, I not");
    let spsr = mem.read_u64(DATA + 16).unwrap();
    assert_eq!(spsr, 0x345, "EL1h, D, A and F masked, no PSTATE.SS");
    assert_eq!(outcome.cpus[0].irqs, 1);
}

/// A fault on the way to a deadline inside a block ends the run at the faulting
/// instruction, as it would without the deadline.
#[test]
fn a_fault_before_a_deadline_inside_its_block_is_reported_at_its_instruction() {
    let program = |deadline| {
        let mut a = armed_at(deadline);
        a.mov64(4, 0x1000); // unmapped
        let body = a.here();
        a.emit(add(1, 1, 1)).emit(add(1, 1, 1)).emit(ldr_x(5, 4));
        for _ in 0..4 {
            a.emit(add(1, 1, 1));
        }
        a.b(body);
        (a, body)
    };
    // Deadlines below 0x1_0000 load with one instruction.
    let (_, body) = program(0xffff);
    // The deadline falls on the body's 5th instruction, the load is its 3rd.
    let (program, same_body) = program((body - LOAD) / 4 + 4);
    assert_eq!(body, same_body);
    let (outcome, ..) = run(one_cpu(), &program.kernel());
    match outcome.end {
        RunEnd::Fault { cpu: 0, pc, what } => {
            assert_eq!(pc, body + 8, "the load");
            assert!(what.contains("READ_UNMAPPED"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.cpus[0].irqs, 0);
}
