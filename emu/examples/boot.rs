//! Boots a guest ELF and prints its console and the per-CPU report; a debugging aid
//! independent of the CLI.
//!
//!     [QUANTUM=N] cargo run -p emu --release --example boot -- KERNEL [CPUS] [BOOTARGS] [random SEED]

use std::path::Path;
use std::time::Instant;

use emu::{KernelImage, Machine, MachineConfig, SchedulerKind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: boot KERNEL [CPUS] [BOOTARGS] [random SEED]");
        std::process::exit(2);
    };
    let kernel = KernelImage::from_path(Path::new(path)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let mut config = MachineConfig::default();
    if kernel.isa() == emu::Isa::Riscv64 {
        config.mmu = emu::MmuMode::Builtin;
    }
    if let Some(cpus) = args.get(1) {
        config.cpus = cpus.parse().expect("CPUS is a number");
    }
    if let Some(bootargs) = args.get(2) {
        config.bootargs = bootargs.clone();
    }
    if args.get(3).map(String::as_str) == Some("random") {
        config.sched = SchedulerKind::Random;
        config.seed = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    }
    if let Some(quantum) = std::env::var("QUANTUM").ok().and_then(|q| q.parse().ok()) {
        config.quantum = quantum;
    }
    let mut machine = Machine::new(config, &kernel).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let started = Instant::now();
    let outcome = machine.run(&mut |cpu, line| println!("[cpu{cpu}] {line}"));
    let secs = started.elapsed().as_secs_f64();
    println!("end: {:?}", outcome.end);
    let name = |pc: u64| kernel.symbolize(pc).unwrap_or_else(|| format!("{pc:#x}"));
    for c in &outcome.cpus {
        println!(
            "cpu{} {:?} pc={} insns={} irqs={}",
            c.cpu,
            c.state,
            name(c.pc),
            c.insns,
            c.irqs
        );
        for &ret in &c.backtrace {
            let caller = kernel
                .symbolize_return(ret)
                .unwrap_or_else(|| format!("{ret:#x}"));
            println!("    <- {caller}");
        }
    }
    println!(
        "{} insns in {} slices, {:.3} s host, {:.1} MIPS",
        outcome.total_insns,
        outcome.slices,
        secs,
        outcome.total_insns as f64 / secs / 1e6
    );
}
