//! Call probes: how often a guest function is called and how many instructions a
//! call takes, measured with code hooks on its entry and on its `ret` instructions
//! only — no per-instruction hook.
//!
//! A call ends at one of the function's own `ret`s or, for a function that leaves
//! by a tail call, at the return address of a direct `bl` to it (calls through a
//! function pointer that end in a tail call are not seen). It is matched to its
//! entry by the stack pointer: a function returns with the SP it was entered with. The count is inclusive and per CPU: it holds
//! everything that CPU executed between entry and return (callees, IRQ handlers,
//! other threads if the caller slept there). A call whose thread returns on another
//! CPU is not counted. On a given run all of this is deterministic.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use unicorn_engine::{RegisterARM64, RegisterRISCV};

use crate::cpu::Core;
use crate::error::{uc_err, EmuError};

use crate::Isa;

/// AArch64 `ret` (to x30); RISC-V `ret` (`jalr x0, 0(ra)`).
const RET: u32 = 0xd65f_03c0;
const RISCV_RET: u32 = 0x0000_8067;

/// What a probe measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls that returned on the CPU they were made on.
    pub calls: u64,
    /// Instructions of those calls, the `ret` included.
    pub insns: u64,
}

impl CallStats {
    /// The mean instructions per call, if there was one.
    pub fn insns_per_call(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.insns as f64 / self.calls as f64)
    }
}

/// Identifies a probe on a [`crate::Machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeId(pub(crate) usize);

/// One probed function: its totals and, per CPU, the calls still open as
/// (stack pointer at entry, instruction count at entry).
#[derive(Default)]
pub(crate) struct CallProbe {
    stats: Cell<CallStats>,
    open: RefCell<Vec<Vec<(u64, u64)>>>,
}

impl CallProbe {
    pub(crate) fn new(cpus: usize) -> Self {
        Self {
            stats: Cell::default(),
            open: RefCell::new(vec![Vec::new(); cpus]),
        }
    }

    pub(crate) fn stats(&self) -> CallStats {
        self.stats.get()
    }

    fn enter(&self, cpu: usize, sp: u64, now: u64) {
        self.open.borrow_mut()[cpu].push((sp, now));
    }

    fn leave(&self, cpu: usize, sp: u64, now: u64) {
        let mut open = self.open.borrow_mut();
        let calls = &mut open[cpu];
        // Innermost call with this SP; anything opened after it never returned here.
        let Some(at) = calls.iter().rposition(|&(entry_sp, _)| entry_sp == sp) else {
            return;
        };
        let (_, started) = calls[at];
        calls.truncate(at);
        let mut stats = self.stats.get();
        stats.calls += 1;
        stats.insns += now - started + 1;
        self.stats.set(stats);
    }
}

/// Offsets of the `ret` instructions in a function's code.
pub(crate) fn ret_offsets(code: &[u8], isa: Isa) -> impl Iterator<Item = u64> + '_ {
    let ret = match isa {
        Isa::Aarch64 => RET,
        Isa::Riscv64 => RISCV_RET,
    };
    code.chunks_exact(4)
        .enumerate()
        .filter(move |(_, word)| u32::from_le_bytes([word[0], word[1], word[2], word[3]]) == ret)
        .map(|(i, _)| 4 * i as u64)
}

/// The return addresses of every direct call to `entry` in `code` (`(address,
/// instruction)` pairs, in address order): `bl`, or RISC-V's `jal ra` and
/// `auipc ra` + `jalr ra`. A call also ends there when the function leaves by a
/// tail call rather than its own `ret`.
pub(crate) fn return_sites(
    code: impl Iterator<Item = (u64, u32)>,
    entry: u64,
    isa: Isa,
) -> Vec<u64> {
    match isa {
        Isa::Aarch64 => arm64_return_sites(code, entry).collect(),
        Isa::Riscv64 => riscv_return_sites(code, entry),
    }
}

fn riscv_return_sites(code: impl Iterator<Item = (u64, u32)>, entry: u64) -> Vec<u64> {
    const RA: u32 = 1;
    let mut sites = Vec::new();
    let mut previous: Option<(u64, u32)> = None;
    for (addr, word) in code {
        let rd = (word >> 7) & 0x1f;
        let target = match word & 0x7f {
            // jal ra, imm
            0x6f if rd == RA => {
                let imm = ((word >> 31) & 1) << 20
                    | ((word >> 21) & 0x3ff) << 1
                    | ((word >> 20) & 1) << 11
                    | ((word >> 12) & 0xff) << 12;
                Some(addr.wrapping_add_signed(((imm << 11) as i32 >> 11) as i64))
            }
            // jalr ra, lo(ra) after auipc ra, hi
            0x67 if rd == RA && (word >> 15) & 0x1f == RA => previous
                .filter(|&(at, auipc)| {
                    at + 4 == addr && auipc & 0x7f == 0x17 && (auipc >> 7) & 0x1f == RA
                })
                .map(|(at, auipc)| {
                    let hi = (auipc & 0xffff_f000) as i32 as i64;
                    at.wrapping_add_signed(hi + (word as i32 >> 20) as i64)
                }),
            _ => None,
        };
        if target == Some(entry) {
            sites.push(addr + 4);
        }
        previous = Some((addr, word));
    }
    sites
}

fn arm64_return_sites(
    code: impl Iterator<Item = (u64, u32)>,
    entry: u64,
) -> impl Iterator<Item = u64> {
    code.filter(move |&(addr, word)| {
        // BL: 0b100101 imm26, target = pc + sign-extended imm26 * 4.
        let offset = (((word & 0x03ff_ffff) << 6) as i32 >> 4) as i64;
        word & 0xfc00_0000 == 0x9400_0000 && addr.wrapping_add_signed(offset) == entry
    })
    .map(|(addr, _)| addr + 4)
}

/// Hooks `probe` into one core: its entry and each of its returns.
pub(crate) fn install(
    core: &mut Core,
    cpu: usize,
    probe: &Rc<CallProbe>,
    entry: u64,
    returns: &[u64],
    isa: Isa,
) -> Result<(), EmuError> {
    let sites = std::iter::once((entry, true)).chain(returns.iter().map(|&r| (r, false)));
    for (addr, is_entry) in sites {
        let (probe, counter) = (probe.clone(), core.counter.clone());
        core.code_sites.add(addr, move |uc, pc| {
            let sp = match isa {
                Isa::Aarch64 => uc.reg_read(RegisterARM64::SP),
                Isa::Riscv64 => uc.reg_read(RegisterRISCV::X2),
            }
            .unwrap_or(0);
            let now = counter.retired_total_before(pc);
            if is_entry {
                probe.enter(cpu, sp, now);
            } else {
                probe.leave(cpu, sp, now);
            }
        });
    }
    let err = uc_err("adding a call probe");
    core.code_sites.install(&mut core.uc).map_err(&err)?;
    // Code translated before the hooks were added would not call them.
    core.uc.ctl_flush_tb().map_err(&err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_matched_to_its_return_by_stack_pointer() {
        let probe = CallProbe::new(2);
        probe.enter(0, 0x1000, 10);
        probe.enter(0, 0x0f00, 20); // recursion
        probe.leave(0, 0x0f00, 29);
        probe.leave(0, 0x1000, 49);
        assert_eq!(
            probe.stats(),
            CallStats {
                calls: 2,
                insns: 10 + 40
            }
        );
    }

    #[test]
    fn a_return_on_another_cpu_or_unmatched_is_not_counted() {
        let probe = CallProbe::new(2);
        probe.enter(0, 0x1000, 10);
        probe.leave(1, 0x1000, 20);
        probe.leave(0, 0x2000, 20);
        assert_eq!(probe.stats().calls, 0);
        // A call abandoned inside (its thread switched away) is dropped by an outer return.
        probe.enter(0, 0x0f00, 12);
        probe.leave(0, 0x1000, 30);
        assert_eq!(
            probe.stats(),
            CallStats {
                calls: 1,
                insns: 21
            }
        );
        probe.leave(0, 0x0f00, 31);
        assert_eq!(probe.stats().calls, 1);
    }

    #[test]
    fn return_sites_are_after_each_bl_to_the_entry() {
        let entry = 0x4000_1000;
        let bl = |from: u64, to: u64| {
            0x9400_0000 | (((to as i64 - from as i64) >> 2) as u32 & 0x03ff_ffff)
        };
        let code = [
            (0x4000_0000, bl(0x4000_0000, entry)),     // forwards
            (0x4000_0004, bl(0x4000_0004, entry + 4)), // elsewhere
            (0x4000_2000, bl(0x4000_2000, entry)),     // backwards
            (0x4000_2004, 0x1400_0000 | 1),            // b, not bl
        ];
        let sites = return_sites(code.into_iter(), entry, Isa::Aarch64);
        assert_eq!(sites, vec![0x4000_0004, 0x4000_2004]);
    }

    #[test]
    fn riscv_return_sites_are_after_each_jal_or_auipc_jalr_to_the_entry() {
        let entry = 0x8020_1000;
        let code = [
            (0x8020_0000, 0x0000_10ef_u32), // jal ra, +0x1000: the entry
            (0x8020_0ff0, 0x0000_0097),     // auipc ra, 0
            (0x8020_0ff4, 0x00c0_80e7),     // jalr ra, 12(ra): 0x8020_0ffc, not it
            (0x8020_2000, 0xffff_f097),     // auipc ra, -1 (page)
            (0x8020_2004, 0x0000_80e7),     // jalr ra, 0(ra)
            (0x8020_3000, 0x0000_106f),     // j +0x1000 (no link)
        ];
        let sites = return_sites(code.into_iter(), entry, Isa::Riscv64);
        assert_eq!(sites, vec![0x8020_0004, 0x8020_2008]);
    }

    #[test]
    fn finds_every_ret_and_nothing_else() {
        let mut code = Vec::new();
        for word in [0xd503_201fu32, RET, 0xd65f_0000 /* br x0 */, RET] {
            code.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(
            ret_offsets(&code, Isa::Aarch64).collect::<Vec<_>>(),
            vec![4, 12]
        );
    }
}
