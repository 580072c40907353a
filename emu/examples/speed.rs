//! Compares the machine's speed on `smoke` with Unicorn's raw speed on one instance.
//!
//!     cargo run -p emu --release --example speed -- KERNEL [RAW_INSNS]

use std::path::Path;
use std::time::Instant;

use emu::{KernelImage, Machine, MachineConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kernel = KernelImage::from_path(Path::new(&args[0])).expect("kernel");
    let raw_insns: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000_000);
    for cpus in [1, 2, 4, 8] {
        let config = MachineConfig {
            cpus,
            bootargs: "scenario=smoke".into(),
            ..MachineConfig::default()
        };
        let mut machine = Machine::new(config, &kernel).unwrap();
        let t = Instant::now();
        let outcome = machine.run(&mut |_, _| {});
        let s = t.elapsed().as_secs_f64();
        println!(
            "{cpus} cpus: {:?} {} insns {} slices {:.1} MIPS",
            outcome.end,
            outcome.total_insns,
            outcome.slices,
            outcome.total_insns as f64 / s / 1e6
        );
    }
    let mut instance = emu::bench::RawInstance::new(&kernel, "scenario=smoke").unwrap();
    let t = Instant::now();
    let raw = instance.run(raw_insns);
    let s = t.elapsed().as_secs_f64();
    println!(
        "raw: {:?} at {:?}, {} insns {:.1} MIPS",
        raw.end,
        kernel.symbolize(raw.pc),
        raw.insns,
        raw.insns as f64 / s / 1e6
    );
}
