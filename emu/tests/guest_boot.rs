//! Boots the real guest kernel when it has been built (`guest/build.sh target/guest`,
//! or `PERCPU_GUEST_ELF=path`); without it these tests only say so and pass.

mod common;
use common::guest;

use emu::{KernelImage, Machine, MachineConfig, RunEnd, RunOutcome, SchedulerKind};

fn boot(
    kernel: &KernelImage,
    cpus: usize,
    sched: SchedulerKind,
    seed: u64,
) -> (RunOutcome, Vec<(usize, String)>) {
    let config = MachineConfig {
        cpus,
        sched,
        seed,
        max_insns: 500_000_000,
        bootargs: format!("scenario=smoke seed={seed}"),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, kernel).unwrap();
    let mut lines = Vec::new();
    let outcome = machine.run(&mut |cpu, line| lines.push((cpu, line.to_string())));
    if !matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }) {
        for (cpu, line) in &lines {
            eprintln!("[cpu{cpu}] {line}");
        }
        for c in &outcome.cpus {
            let name = |pc| kernel.symbolize(pc).unwrap_or_else(|| format!("{pc:#x}"));
            let trace: Vec<String> = c.backtrace.iter().map(|&pc| name(pc)).collect();
            eprintln!(
                "cpu{} {:?} pc {} insns {} irqs {} <- {}",
                c.cpu,
                c.state,
                name(c.pc),
                c.insns,
                c.irqs,
                trace.join(" <- ")
            );
        }
    }
    (outcome, lines)
}

#[test]
fn smoke_boots_on_1_2_4_and_8_cpus() {
    let Some(kernel) = guest() else { return };
    for cpus in [1, 2, 4, 8] {
        let (outcome, lines) = boot(&kernel, cpus, SchedulerKind::RoundRobin, 0);
        assert!(
            matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }),
            "{cpus} CPUs: {:?}",
            outcome.end
        );
        for cpu in 0..cpus {
            assert!(
                lines.iter().any(|(c, _)| *c == cpu),
                "CPU {cpu} of {cpus} printed nothing"
            );
        }
    }
}

#[test]
fn smoke_is_reproducible_per_seed() {
    let Some(kernel) = guest() else { return };
    let counts = |seed| {
        let (outcome, lines) = boot(&kernel, 4, SchedulerKind::Random, seed);
        assert!(
            matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }),
            "{:?}",
            outcome.end
        );
        (
            outcome.cpus.iter().map(|c| c.insns).collect::<Vec<_>>(),
            lines,
        )
    };
    assert_eq!(counts(5), counts(5));
}

#[test]
fn the_guest_exports_its_scenarios() {
    let Some(kernel) = guest() else { return };
    let table = kernel
        .symbol_bytes("PERCPU_LAB_SCENARIOS")
        .expect("exported");
    let text = std::str::from_utf8(table).expect("UTF-8");
    assert!(text.lines().any(|l| l.starts_with("smoke\t")), "{text:?}");
    assert!(kernel
        .symbolize(kernel.entry())
        .is_some_and(|s| s.ends_with("+0x0")));
}

/// Calls and inclusive instructions of `symbol` during `smoke`.
fn probed_smoke(kernel: &KernelImage, symbol: &str, seed: u64) -> emu::CallStats {
    let config = MachineConfig {
        cpus: 2,
        sched: SchedulerKind::Random,
        seed,
        bootargs: format!("scenario=smoke seed={seed}"),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, kernel).unwrap();
    let probe = machine.probe_calls(symbol).unwrap();
    let outcome = machine.run(&mut |_, _| {});
    assert!(
        matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }),
        "{:?}",
        outcome.end
    );
    machine.call_stats(probe)
}

#[test]
fn call_probes_count_calls_and_their_instructions_deterministically() {
    let Some(kernel) = guest() else { return };
    let first = probed_smoke(&kernel, "spin_lock", 5);
    assert!(
        first.calls >= 300,
        "smoke takes its shared spinlock hundreds of times: {first:?}"
    );
    // A ticket lock plus preempt_disable costs more than a handful of instructions.
    let per_call = first.insns_per_call().unwrap();
    assert!(per_call > 5.0, "{per_call} instructions per spin_lock");
    assert_eq!(
        first,
        probed_smoke(&kernel, "spin_lock", 5),
        "same seed, same figures"
    );

    // free_percpu leaves by a tail call (`b spin_unlock_irq`), never by its own
    // `ret`: its calls end at the return addresses of the `bl`s to it.
    let config = MachineConfig {
        cpus: 2,
        bootargs: "scenario=storm seed=1".into(),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, &kernel).unwrap();
    let frees = machine.probe_calls("free_percpu").unwrap();
    let mut lines = Vec::new();
    let outcome = machine.run(&mut |_, line| lines.push(line.to_string()));
    assert!(
        matches!(outcome.end, RunEnd::PoweredOff { status: 0, .. }),
        "{:?}",
        outcome.end
    );
    let counted: u64 = lines
        .iter()
        .find_map(|l| l.split("frees=").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("storm prints its counts");
    let stats = machine.call_stats(frees);
    assert!(
        stats.calls > 0 && stats.calls <= counted,
        "{stats:?} vs {counted} frees"
    );

    let mut machine = Machine::new(MachineConfig::default(), &kernel).unwrap();
    assert!(machine.probe_calls("no_such_function").is_err());
}
