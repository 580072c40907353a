//! The host as the SBI firmware (v0.2: BASE, TIME, IPI, RFENCE, HSM, SRST), as
//! OpenSBI is on QEMU's `virt`.

use super::hart;
use crate::cpu::CpuState;
use crate::hardware::{Hardware, RunEnd};

// SBI extensions and functions the host implements, and its error codes.
const BASE: u64 = 0x10;
const TIME: u64 = 0x5449_4d45;
const IPI: u64 = 0x0073_5049;
const RFENCE: u64 = 0x5246_4e43;
const HSM: u64 = 0x0048_534d;
const SRST: u64 = 0x5352_5354;

const SUCCESS: i64 = 0;
const ERR_NOT_SUPPORTED: i64 = -2;
const ERR_INVALID_PARAM: i64 = -3;
const ERR_ALREADY_AVAILABLE: i64 = -6;

/// The harts a `hart_mask`/`hart_mask_base` pair names, among `harts`.
pub(crate) fn harts_in_mask(mask: u64, base: u64, harts: usize) -> Vec<usize> {
    if base == u64::MAX {
        return (0..harts).collect();
    }
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .filter_map(|bit| usize::try_from(base.checked_add(bit)?).ok())
        .filter(|&hart| hart < harts)
        .collect()
}

/// Carries out the SBI call of the `ecall` before `cpu`'s PC (the host is the
/// firmware): a7 = extension, a6 = function, a0.. = arguments; the error goes
/// back in a0 and the value in a1.
pub(super) fn call(hw: &mut Hardware, cpu: usize) -> Option<RunEnd> {
    let harts = hw.cores.len();
    let arg = |hw: &Hardware, n: u32| hart::xreg(&hw.cores[cpu].uc, 10 + n);
    let (extension, function) = (arg(hw, 7), arg(hw, 6));
    let (a0, a1, a2, a3) = (arg(hw, 0), arg(hw, 1), arg(hw, 2), arg(hw, 3));
    let mut value = 0;
    let error = match (extension, function) {
        (BASE, 0) => {
            value = 2; // SBI v0.2
            SUCCESS
        }
        (BASE, 3) => {
            value = [TIME, IPI, RFENCE, HSM, SRST].contains(&a0) as u64;
            SUCCESS
        }
        (BASE, 1..=6) => SUCCESS,
        (TIME, 0) => {
            let mut board = hw.board.borrow_mut();
            let timer = &mut board.timers[cpu];
            timer.set_cval(hart::clock_at_time(a0));
            timer.set_ctl(1);
            drop(board);
            // The new deadline lowers the line at once (or raises it, if past).
            let mut board = hw.board.borrow_mut();
            board.update_timer_lines();
            super::drive_timer_inputs(&board, &mut hw.cores);
            SUCCESS
        }
        (IPI, 0) => {
            for target in harts_in_mask(a0, a1, harts) {
                hart::set_pending(&mut hw.cores[target].uc, hart::SSIP, true);
            }
            SUCCESS
        }
        (RFENCE, 0..=2) => {
            if let (Some(mmu), 1..=2) = (&hw.mmu, function) {
                // The model drops what the fence names: a size of 0 or all ones
                // is every address; sfence.vma.asid names an ASID in a4.
                let mask = harts_in_mask(a0, a1, harts)
                    .into_iter()
                    .fold(0u64, |mask, hart| mask | 1 << hart);
                let len = if a3 == u64::MAX { 0 } else { a3 };
                let start = if len == 0 { 0 } else { a2 };
                let asid = (function == 2).then(|| arg(hw, 4) as u16);
                let inv = crate::tlb::Invalidation {
                    cpus: mask,
                    start,
                    len,
                    asid,
                };
                let core = &hw.cores[cpu];
                mmu.remote_fence(core, inv, core.pc.wrapping_sub(4), hw.total_insns);
            }
            // fence.i, sfence.vma, sfence.vma.asid: the instance drops all of it.
            for target in harts_in_mask(a0, a1, harts) {
                hw.sbi_remote_fences += 1;
                let uc = &mut hw.cores[target].uc;
                let _ = if function == 0 {
                    uc.ctl_flush_tb()
                } else {
                    uc.ctl_flush_tlb()
                };
            }
            SUCCESS
        }
        (HSM, 0) => match usize::try_from(a0).ok().filter(|&t| t < harts) {
            None => ERR_INVALID_PARAM,
            Some(target) if hw.cores[target].state != CpuState::Off => ERR_ALREADY_AVAILABLE,
            Some(target) => match super::power_on_hart(hw, target, a1, a0, a2) {
                Ok(()) => SUCCESS,
                Err(e) => {
                    return Some(RunEnd::Fault {
                        cpu: target,
                        pc: a1,
                        what: format!("hart_start failed: {e}"),
                    })
                }
            },
        },
        (HSM, 2) => {
            value = match usize::try_from(a0).ok().filter(|&t| t < harts) {
                Some(target) if hw.cores[target].state != CpuState::Off => 0,
                Some(_) => 1,
                None => return sbi_return(hw, cpu, ERR_INVALID_PARAM, 0),
            };
            SUCCESS
        }
        (SRST, 0) => {
            // Reset type 0 is a shutdown; the reason (0 none, 1 system
            // failure) is the status the run ends with.
            return Some(match a0 {
                0 => RunEnd::PoweredOff { cpu, status: a1 },
                _ => RunEnd::Reset { cpu, status: a1 },
            });
        }
        _ => ERR_NOT_SUPPORTED,
    };
    let _ = a3;
    sbi_return(hw, cpu, error, value)
}

fn sbi_return(hw: &mut Hardware, cpu: usize, error: i64, value: u64) -> Option<RunEnd> {
    let uc = &mut hw.cores[cpu].uc;
    hart::set_xreg(uc, 10, error as u64);
    hart::set_xreg(uc, 11, value);
    None
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hart_masks_name_harts_from_their_base() {
        assert_eq!(harts_in_mask(0b101, 1, 4), vec![1, 3]);
        assert_eq!(harts_in_mask(1, u64::MAX, 3), vec![0, 1, 2]);
        assert_eq!(harts_in_mask(1, 7, 4), Vec::<usize>::new());
    }
}
