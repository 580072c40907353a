//! The RISC-V side of the run loop: power-on, the host as SBI firmware, and the
//! exceptions the host enters (see `crate::riscv`).

use super::{CpuState, EmuError, Machine, RunEnd, TakenException};
use crate::cpu::read_insn;
use crate::error::uc_err;
use crate::riscv;

impl Machine {
    /// Starts RISC-V hart `cpu` at `entry` (S-mode, MMU off, interrupts masked)
    /// with a0/a1.
    pub(super) fn power_on_hart(
        &mut self,
        cpu: usize,
        entry: u64,
        a0: u64,
        a1: u64,
    ) -> Result<(), EmuError> {
        let core = &mut self.cores[cpu];
        riscv::power_on(&mut core.uc, entry, a0, a1).map_err(uc_err("starting a hart"))?;
        core.pc = entry;
        core.state = CpuState::Running;
        Ok(())
    }

    /// A RISC-V exception on `cpu` (its PC is past the faulting instruction): an
    /// `ecall` is an SBI call to the host; anything else enters the guest's trap
    /// handler as the hardware would.
    pub(super) fn riscv_exception(&mut self, cpu: usize, cause: u32) -> Option<RunEnd> {
        const ECALL_FROM_S: u32 = 9;
        const ECALL: u32 = 8;
        if cause == ECALL || cause == ECALL_FROM_S {
            return self.sbi_call(cpu);
        }
        let core = &mut self.cores[cpu];
        let epc = core.pc.wrapping_sub(4);
        let word = read_insn(&mut core.uc, epc).unwrap_or(0);
        let tval = match cause {
            4..=7 | 13 | 15 => riscv::access_address(&core.uc, word).unwrap_or(0),
            1 | 12 => epc,
            2 => word as u64,
            _ => 0,
        };
        self.riscv_trap(cpu, cause, epc, tval)
    }

    /// A page fault the simulated MMU refused an access with: the CPU takes it as
    /// the page fault of the access's kind (its PC is the faulting instruction).
    pub(super) fn riscv_page_fault(
        &mut self,
        cpu: usize,
        exc: crate::exception::Synchronous,
    ) -> Option<RunEnd> {
        use crate::exception::Synchronous;
        let (cause, tval) = match exc {
            Synchronous::InstructionAbort { far, .. } => (12, far),
            Synchronous::DataAbort {
                far,
                is_write: false,
                ..
            } => (13, far),
            Synchronous::DataAbort { far, .. } => (15, far),
            other => unreachable!("the MMU gives aborts only, not {other:?}"),
        };
        let epc = self.cores[cpu].pc;
        self.riscv_trap(cpu, cause, epc, tval)
    }

    /// Enters the guest's trap handler for exception `cause` at `epc`.
    fn riscv_trap(&mut self, cpu: usize, cause: u32, epc: u64, tval: u64) -> Option<RunEnd> {
        let core = &mut self.cores[cpu];
        match riscv::enter_trap(&mut core.uc, cause as u64, epc, tval) {
            Ok(Some(handler)) => {
                for observer in &self.observers {
                    observer.exception_entered(&core.uc, cpu, None, epc, self.total_insns);
                }
                core.pc = handler;
                core.last_exception = Some(TakenException {
                    kind: riscv::exception_name(cause),
                    esr: cause as u64,
                    far: Some(tval),
                    elr: epc,
                });
                None
            }
            _ => Some(RunEnd::Fault {
                cpu,
                pc: epc,
                what: format!(
                    "{} with no trap vector (stvec = 0)",
                    riscv::exception_name(cause)
                ),
            }),
        }
    }

    /// Carries out the SBI call of the `ecall` before `cpu`'s PC (the host is the
    /// firmware): a7 = extension, a6 = function, a0.. = arguments; the error goes
    /// back in a0 and the value in a1.
    pub(super) fn sbi_call(&mut self, cpu: usize) -> Option<RunEnd> {
        use riscv::sbi;
        let harts = self.cores.len();
        let arg = |m: &Self, n: u32| riscv::xreg(&m.cores[cpu].uc, 10 + n);
        let (extension, function) = (arg(self, 7), arg(self, 6));
        let (a0, a1, a2, a3) = (arg(self, 0), arg(self, 1), arg(self, 2), arg(self, 3));
        let mut value = 0;
        let error = match (extension, function) {
            (sbi::BASE, 0) => {
                value = 2; // SBI v0.2
                sbi::SUCCESS
            }
            (sbi::BASE, 3) => {
                value =
                    [sbi::TIME, sbi::IPI, sbi::RFENCE, sbi::HSM, sbi::SRST].contains(&a0) as u64;
                sbi::SUCCESS
            }
            (sbi::BASE, 1..=6) => sbi::SUCCESS,
            (sbi::TIME, 0) => {
                let mut board = self.board.borrow_mut();
                let timer = &mut board.timers[cpu];
                timer.set_cval(riscv::clock_at_time(a0));
                timer.set_ctl(1);
                drop(board);
                // The new deadline lowers the line at once (or raises it, if past).
                self.update_timer_lines();
                sbi::SUCCESS
            }
            (sbi::IPI, 0) => {
                for target in riscv::harts_in_mask(a0, a1, harts) {
                    riscv::set_pending(&mut self.cores[target].uc, riscv::SSIP, true);
                }
                sbi::SUCCESS
            }
            (sbi::RFENCE, 0..=2) => {
                if let (Some(mmu), 1..=2) = (&self.mmu, function) {
                    // The model drops what the fence names: a size of 0 or all ones
                    // is every address; sfence.vma.asid names an ASID in a4.
                    let mask = riscv::harts_in_mask(a0, a1, harts)
                        .into_iter()
                        .fold(0u64, |mask, hart| mask | 1 << hart);
                    let len = if a3 == u64::MAX { 0 } else { a3 };
                    let start = if len == 0 { 0 } else { a2 };
                    let asid = (function == 2).then(|| arg(self, 4) as u16);
                    let inv = crate::tlb::Invalidation {
                        cpus: mask,
                        start,
                        len,
                        asid,
                    };
                    let core = &self.cores[cpu];
                    mmu.remote_fence(core, inv, core.pc.wrapping_sub(4), self.total_insns);
                }
                // fence.i, sfence.vma, sfence.vma.asid: the instance drops all of it.
                for target in riscv::harts_in_mask(a0, a1, harts) {
                    self.sbi_remote_fences += 1;
                    let uc = &mut self.cores[target].uc;
                    let _ = if function == 0 {
                        uc.ctl_flush_tb()
                    } else {
                        uc.ctl_flush_tlb()
                    };
                }
                sbi::SUCCESS
            }
            (sbi::HSM, 0) => match usize::try_from(a0).ok().filter(|&t| t < harts) {
                None => sbi::ERR_INVALID_PARAM,
                Some(target) if self.cores[target].state != CpuState::Off => {
                    sbi::ERR_ALREADY_AVAILABLE
                }
                Some(target) => match self.power_on_hart(target, a1, a0, a2) {
                    Ok(()) => sbi::SUCCESS,
                    Err(e) => {
                        return Some(RunEnd::Fault {
                            cpu: target,
                            pc: a1,
                            what: format!("hart_start failed: {e}"),
                        })
                    }
                },
            },
            (sbi::HSM, 2) => {
                value = match usize::try_from(a0).ok().filter(|&t| t < harts) {
                    Some(target) if self.cores[target].state != CpuState::Off => 0,
                    Some(_) => 1,
                    None => return self.sbi_return(cpu, sbi::ERR_INVALID_PARAM, 0),
                };
                sbi::SUCCESS
            }
            (sbi::SRST, 0) => {
                // Reset type 0 is a shutdown; the reason (0 none, 1 system
                // failure) is the status the run ends with.
                return Some(match a0 {
                    0 => RunEnd::PoweredOff { cpu, status: a1 },
                    _ => RunEnd::Reset { cpu, status: a1 },
                });
            }
            _ => sbi::ERR_NOT_SUPPORTED,
        };
        let _ = a3;
        self.sbi_return(cpu, error, value)
    }

    pub(super) fn sbi_return(&mut self, cpu: usize, error: i64, value: u64) -> Option<RunEnd> {
        let uc = &mut self.cores[cpu].uc;
        riscv::set_xreg(uc, 10, error as u64);
        riscv::set_xreg(uc, 11, value);
        None
    }
}
