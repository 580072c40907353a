//! WFE in the guest's spin-lock wait and SEV at release (events.rs): a contended
//! spin lock costs the host instructions in proportion to how often it changes
//! hands, not to how long the waiters wait. Deterministic instruction counts on the
//! real guest (skipped when it is not built).

mod common;
use common::guest;

use emu::{CallStats, KernelImage, Machine, MachineConfig, RunEnd, SchedulerKind};

/// `smoke` on `cpus` CPUs (round-robin): every CPU takes shared spin locks.
fn spin_lock_stats(kernel: &KernelImage, cpus: usize) -> CallStats {
    let config = MachineConfig {
        cpus,
        sched: SchedulerKind::RoundRobin,
        quantum: 2_000,
        max_insns: 400_000_000,
        bootargs: "scenario=smoke seed=0 variant=fine".into(),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, kernel).unwrap();
    let probe = machine.probe_calls("spin_lock").unwrap();
    let outcome = machine.run(&mut |_, _| {});
    assert!(
        matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }),
        "{:?}",
        outcome.end
    );
    machine.call_stats(probe)
}

#[test]
fn a_contended_spin_lock_costs_about_what_an_uncontended_one_does() {
    let Some(kernel) = guest() else { return };
    let alone = spin_lock_stats(&kernel, 1);
    let per_call = |s: CallStats| s.insns as f64 / s.calls as f64;
    for cpus in [2, 4, 8] {
        let contended = spin_lock_stats(&kernel, cpus);
        assert!(contended.calls > alone.calls, "{cpus} cpus: {contended:?}");
        // Waiting in WFE retires nothing: a wait costs a re-check per release, not
        // a loop per quantum (spinning, 8 CPUs took about 15 times this).
        assert!(
            per_call(contended) < 1.5 * per_call(alone),
            "{cpus} cpus: {:.1} instructions per spin_lock, {:.1} alone",
            per_call(contended),
            per_call(alone)
        );
    }
}

/// Linux waits for a value with `ldxr; cbnz; wfe` and no SEV from the writer
/// (`smp_cond_load_*`): the writer's store clears the waiter's exclusive monitor,
/// which is an event. CPU 0 waits so for a flag CPU 1 sets with a plain store;
/// it must wake and power off with the flag's value (else the watchdog ends it).
#[test]
fn a_store_to_the_address_a_wfe_waits_on_wakes_it() {
    use common::*;
    const LDXR_W1_X0: u32 = 0x885f_7c01;
    const WFE: u32 = 0xd503_205f;
    let flag = LOAD + 0x800;
    let secondary = LOAD + 0x400;
    let mut a = Asm::default();
    a.psci(0xc400_0003, &[1, secondary, flag]);
    a.mov64(0, flag);
    let wait = a.here();
    a.emit(LDXR_W1_X0);
    let done = wait + 16;
    a.cbnz(false, 1, done).emit(WFE).b(wait);
    assert_eq!(a.here(), done);
    a.system_off_with(1);
    a.align_to(secondary);
    for _ in 0..200 {
        a.emit(NOP);
    }
    a.mov64(2, 7).emit(str_w(2, 0, 0));
    let spin = a.here();
    a.b(spin);
    a.align_to(flag).emit(0);
    let code = a.bytes();
    let kernel = KernelImage::from_bytes(elf(
        &code,
        LOAD,
        EM_AARCH64,
        &[("wait_for_flag", LOAD, code.len() as u64)],
    ))
    .unwrap();
    for sched in [SchedulerKind::RoundRobin, SchedulerKind::Random] {
        let config = MachineConfig {
            cpus: 2,
            sched: sched.clone(),
            quantum: 50,
            max_insns: 1_000_000,
            ..MachineConfig::default()
        };
        let (outcome, _, _) = run(config, &kernel);
        assert_eq!(
            outcome.end,
            RunEnd::PoweredOff { cpu: 0, status: 7 },
            "{sched:?}"
        );
    }
}
