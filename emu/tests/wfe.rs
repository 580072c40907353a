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
