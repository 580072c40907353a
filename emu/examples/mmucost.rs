//! The simulated MMU's cost: the same scenario with Unicorn's built-in MMU, our walker
//! and TLB model, and the model with every check on.
//!
//!     cargo run -p emu --release --example mmucost -- KERNEL [SCENARIO] [CPUS] [REPEATS]

use std::path::Path;
use std::time::Instant;

use emu::{KernelImage, Machine, MachineConfig, MmuMode, SchedulerKind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kernel = KernelImage::from_path(Path::new(&args[0])).expect("kernel");
    let scenario = args.get(1).map_or("smoke", String::as_str);
    let cpus: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    for mmu in [MmuMode::Builtin, MmuMode::Simulated, MmuMode::Checked] {
        let (mut insns, mut secs) = (0u64, 0f64);
        let mut end = None;
        for _ in 0..repeats {
            let config = MachineConfig {
                cpus,
                sched: SchedulerKind::RoundRobin,
                quantum: 2000,
                bootargs: format!("scenario={scenario} seed=0 variant=fine"),
                mmu,
                ..MachineConfig::default()
            };
            let mut machine = Machine::new(config, &kernel).unwrap();
            let t = Instant::now();
            let outcome = machine.run(&mut |_, _| {});
            secs += t.elapsed().as_secs_f64();
            insns += outcome.total_insns;
            end = Some((outcome.end, outcome.slices, machine.mmu_stats()));
        }
        let (end, slices, stats) = end.unwrap();
        println!(
            "{mmu:?}: {end:?}, {} insns/run, {slices} slices, {:.1} MIPS, {:.3} s/run",
            insns / repeats as u64,
            insns as f64 / secs / 1e6,
            secs / repeats as f64
        );
        if let Some(stats) = stats {
            println!("    {stats:?}");
        }
    }
}
