//! Measures what instruction counting costs in Unicorn on a simple loop: no hook,
//! our block hook, emu_start's `count` (a per-instruction hook inside Unicorn), and an
//! empty per-instruction code hook.
//!
//!     cargo run -p emu --release --example hookcost

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use unicorn_engine::{Arch, Mode, Prot, Unicorn};

const BASE: u64 = 0x4000_0000;
const ITERATIONS: u32 = 10_000_000;

/// x0 = ITERATIONS; loop { 8 x add x1, x1, #1; subs x0, x0, #1; b.ne loop }; end.
fn program() -> (Vec<u8>, u64, u64) {
    let mut words = vec![
        0xd280_0000 | ((ITERATIONS & 0xffff) << 5),
        0xf2a0_0000 | ((ITERATIONS >> 16) << 5),
    ];
    words.extend([0x9100_0421; 8]);
    words.push(0xf100_0400); // subs x0, x0, #1
    words.push(0x5400_0000 | ((-9i32 as u32 & 0x7ffff) << 5) | 1); // b.ne loop
    let end = BASE + 4 * words.len() as u64;
    words.push(0xd503_201f);
    let insns = 2 + 10 * ITERATIONS as u64;
    (
        words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        end,
        insns,
    )
}

fn measure(name: &str, setup: impl FnOnce(&mut Unicorn<'static, ()>), count: usize) {
    let (code, end, insns) = program();
    let mut uc = Unicorn::new(Arch::ARM64, Mode::ARM).unwrap();
    uc.mem_map(BASE, 0x1000, Prot::ALL).unwrap();
    uc.mem_write(BASE, &code).unwrap();
    setup(&mut uc);
    let t = Instant::now();
    uc.emu_start(BASE, end, 0, count).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("{name:40} {:7.1} MIPS", insns as f64 / secs / 1e6);
}

fn main() {
    let (_, _, insns) = program();
    measure("no hook", |_| {}, 0);
    let executed = Rc::new(Cell::new(0u64));
    let e = executed.clone();
    measure(
        "block hook counting",
        move |uc| {
            uc.add_block_hook(1, 0, move |_, _, size| e.set(e.get() + size as u64 / 4))
                .unwrap();
        },
        0,
    );
    assert_eq!(executed.get(), insns, "the block hook counts exactly");
    measure(
        "emu_start count (per-instruction hook)",
        |_| {},
        insns as usize + 10,
    );
    measure(
        "empty code hook",
        |uc| {
            uc.add_code_hook(1, 0, |_, _, _| {}).unwrap();
        },
        0,
    );
}
