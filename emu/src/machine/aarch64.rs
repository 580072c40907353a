//! The arm64 side of the run loop: power-on, PSCI calls, synchronous exceptions
//! entered by the host, and the exclusive monitor a WFE waits on.

use unicorn_engine::{RegisterARM64, Unicorn};

use super::{read_sized, CpuState, EmuError, Machine, RunEnd, TakenException};
use crate::cpu::{read_insn, read_xreg, translation_regs, SCTLR_EL1};
use crate::error::uc_err;
use crate::exception::{self, Kind, Synchronous, PSTATE_EL1H_MASKED, PSTATE_I};
use crate::insn;
use crate::mmu::{self, Access};
use crate::psci;

impl Machine {
    /// Starts `cpu` at `entry` (EL1h, DAIF masked, MMU off) with `x0` = `context`.
    pub(super) fn power_on(
        &mut self,
        cpu: usize,
        entry: u64,
        context: u64,
    ) -> Result<(), EmuError> {
        let core = &mut self.cores[cpu];
        let uc = &mut core.uc;
        let err = uc_err("starting a core");
        uc.reg_write(RegisterARM64::PSTATE, PSTATE_EL1H_MASKED)
            .map_err(&err)?;
        let mut sctlr = SCTLR_EL1;
        uc.reg_read_arm64_coproc(&mut sctlr).map_err(&err)?;
        // MMU, data and instruction caches off, as after reset (also rebuilds hflags).
        uc.reg_write_arm64_coproc(&sctlr.val(sctlr.val & !0b1_0000_0000_0101))
            .map_err(&err)?;
        uc.reg_write(RegisterARM64::X0, context).map_err(&err)?;
        uc.reg_write(RegisterARM64::PC, entry).map_err(&err)?;
        uc.ctl_flush_tlb().map_err(&err)?;
        if let Some(mmu) = &core.mmu {
            mmu.regs_changed();
        }
        core.pc = entry;
        core.state = CpuState::Running;
        Ok(())
    }

    /// The exclusive monitor `cpu` set just before the WFE it stopped at, if any
    /// (see [`crate::events::Monitor`]).
    pub(super) fn exclusive_monitor(&self, cpu: usize) -> Option<crate::events::Monitor> {
        let core = &self.cores[cpu];
        let regs = crate::cpu::translation_regs(&core.uc);
        crate::events::Monitor::before_wfe(
            &self.kernel,
            core.pc,
            |reg| crate::cpu::read_xreg(&core.uc, reg),
            |va| {
                if !regs.mmu_on() {
                    return Some(va);
                }
                let t = crate::mmu::walk_any(&self.ram, &regs, va).ok()?;
                Some(t.pa | (va & 0xfff))
            },
            |pa, size| read_sized(&self.ram, pa, size),
        )
    }

    /// Turns Unicorn's exception number into the exception to enter, or `None` for a
    /// PSCI call (HVC, which Unicorn reports like an undefined instruction).
    pub(super) fn classify(
        &mut self,
        cpu: usize,
        intno: u32,
    ) -> Result<Option<Synchronous>, String> {
        const EXCP_UDEF: u32 = 1;
        const EXCP_SWI: u32 = 2;
        const EXCP_PREFETCH_ABORT: u32 = 3;
        const EXCP_DATA_ABORT: u32 = 4;
        const EXCP_BKPT: u32 = 7;
        let core = &mut self.cores[cpu];
        let pc = core.pc;
        let word_at = |uc: &mut Unicorn<'static, ()>, addr| read_insn(uc, addr).unwrap_or(0);
        if intno == EXCP_UDEF && insn::is_hvc(word_at(&mut core.uc, pc)) {
            return Ok(None);
        }
        Ok(Some(match intno {
            EXCP_UDEF => Synchronous::Undefined,
            EXCP_SWI => Synchronous::Svc {
                imm: insn::imm16(word_at(&mut core.uc, pc - 4)),
            },
            EXCP_BKPT => Synchronous::Brk {
                imm: insn::imm16(word_at(&mut core.uc, pc)),
            },
            EXCP_PREFETCH_ABORT => {
                let el0 = at_el0(&core.uc);
                let regs = translation_regs(&core.uc);
                let status = mmu::fault_status(&self.ram, &regs, pc, Access::Fetch, el0);
                // No fault in the tables: call it a level 3 translation fault.
                Synchronous::InstructionAbort {
                    far: pc,
                    status: status.unwrap_or(0b00_0111),
                }
            }
            EXCP_DATA_ABORT => {
                let word = word_at(&mut core.uc, pc);
                let access = insn::decode_mem_access(word);
                let uc = &core.uc;
                let far = access.map_or(0, |a| a.address(|r| read_xreg(uc, r)));
                let is_write = access.is_some_and(|a| a.is_write);
                let kind = if is_write {
                    Access::Write
                } else {
                    Access::Read
                };
                // An `ldtr`/`sttr` at EL1 has EL0's permissions.
                let el0 = at_el0(uc) || insn::is_unprivileged(word);
                // The tables allow the access: what is left is an alignment fault.
                let status = mmu::fault_status(&self.ram, &translation_regs(uc), far, kind, el0)
                    .unwrap_or(mmu::ALIGNMENT_FAULT);
                Synchronous::DataAbort {
                    far,
                    is_write,
                    status,
                }
            }
            other => return Err(format!("unexpected exception number {other}")),
        }))
    }

    /// Carries out the PSCI call of the HVC at `cpu`'s PC.
    pub(super) fn psci_call(&mut self, cpu: usize) -> Option<RunEnd> {
        let reg = |m: &Self, r| m.cores[cpu].uc.reg_read(r).unwrap_or(0);
        let function = reg(self, RegisterARM64::X0) as u32;
        let (x1, x2, x3) = (
            reg(self, RegisterARM64::X1),
            reg(self, RegisterARM64::X2),
            reg(self, RegisterARM64::X3),
        );
        // The HVC itself retires; the caller continues after it.
        let core = &mut self.cores[cpu];
        core.insns += 1;
        self.total_insns += 1;
        core.pc += 4;
        let result: u64 = match function {
            psci::PSCI_VERSION => psci::VERSION_0_2,
            psci::MIGRATE_INFO_TYPE => psci::TOS_NOT_PRESENT,
            psci::SYSTEM_OFF => return Some(RunEnd::PoweredOff { cpu, status: x1 }),
            psci::SYSTEM_RESET => return Some(RunEnd::Reset { cpu, status: x1 }),
            psci::CPU_OFF => {
                self.cores[cpu].state = CpuState::Off;
                return None;
            }
            psci::AFFINITY_INFO => match psci::cpu_of_mpidr(x1, self.cores.len()) {
                // Only level 0 (a single CPU) is meaningful on this board.
                Some(target) if x2 == 0 => match self.cores[target].state {
                    CpuState::Off => psci::AFFINITY_OFF,
                    _ => psci::AFFINITY_ON,
                },
                _ => psci::INVALID_PARAMETERS as u64,
            },
            psci::CPU_ON => match psci::cpu_of_mpidr(x1, self.cores.len()) {
                None => psci::INVALID_PARAMETERS as u64,
                Some(target) if self.cores[target].state != CpuState::Off => {
                    psci::ALREADY_ON as u64
                }
                Some(target) => match self.power_on(target, x2, x3) {
                    Ok(()) => psci::SUCCESS as u64,
                    Err(e) => {
                        return Some(RunEnd::Fault {
                            cpu: target,
                            pc: x2,
                            what: format!("CPU_ON failed: {e}"),
                        })
                    }
                },
            },
            _ => psci::NOT_SUPPORTED as u64,
        };
        let core = &mut self.cores[cpu];
        core.uc
            .reg_write(RegisterARM64::X0, result)
            .expect("x0 write");
        None
    }

    /// Enters the synchronous exception `exc` on `cpu`, at its PC (SVC's preferred
    /// return address is the next instruction: Unicorn's PC is already past it;
    /// for the others, the instruction itself).
    pub(super) fn enter_synchronous(&mut self, cpu: usize, exc: Synchronous) -> Option<RunEnd> {
        let core = &mut self.cores[cpu];
        let pc = core.pc;
        match exception::enter(&mut core.uc, Kind::Sync(exc), pc) {
            Ok(vector) => {
                for observer in &self.observers {
                    observer.exception_entered(&core.uc, cpu, None, pc, self.total_insns);
                }
                core.pc = vector;
                core.last_exception = Some(TakenException {
                    kind: exc.name(),
                    esr: core.uc.reg_read(RegisterARM64::ESR_EL1).unwrap_or(0),
                    far: exc.far(),
                    elr: pc,
                });
                None
            }
            Err(_) => Some(RunEnd::Fault {
                cpu,
                pc,
                what: format!("{} with no vector table (VBAR_EL1 = 0)", exc.name()),
            }),
        }
    }

    /// Takes a pending IRQ on `cpu` if its PSTATE.I allows: at the start of its slice
    /// (one that became pending while other CPUs ran) and where its block hook
    /// ended the slice for one.
    pub(super) fn deliver_gic_irq(&mut self, cpu: usize) -> Result<(), RunEnd> {
        if !self.board.borrow().gic.irq_line(cpu) {
            return Ok(());
        }
        let core = &mut self.cores[cpu];
        let pstate = core.uc.reg_read(RegisterARM64::PSTATE).unwrap_or(PSTATE_I);
        if pstate & PSTATE_I != 0 {
            return Ok(());
        }
        let return_pc = core.pc;
        match exception::enter(&mut core.uc, Kind::Irq, core.pc) {
            Ok(pc) => {
                if !self.observers.is_empty() {
                    // What the handler's GICC_IAR read will return (1023: spurious).
                    let intid = self.board.borrow().gic.pending_intid(cpu);
                    for observer in &self.observers {
                        observer.exception_entered(
                            &core.uc,
                            cpu,
                            Some(intid.unwrap_or(1023)),
                            return_pc,
                            self.total_insns,
                        );
                    }
                }
                core.pc = pc;
                core.irqs += 1;
                Ok(())
            }
            Err(_) => Err(RunEnd::Fault {
                cpu,
                pc: core.pc,
                what: "IRQ with no vector table (VBAR_EL1 = 0)".into(),
            }),
        }
    }
}

/// Whether the core runs at EL0 (PSTATE.EL).
fn at_el0(uc: &Unicorn<'static, ()>) -> bool {
    uc.reg_read(RegisterARM64::PSTATE)
        .is_ok_and(|pstate| pstate & 0b1100 == 0)
}

/// Whether a run stopped at its `until` address by Unicorn took the exit for a
/// trapped WFI: Unicorn ends such a run by imitating a WFI there, and at EL0 with
/// SCTLR_EL1.nTWI clear (as Linux runs user space) a WFI traps, so the run ends in
/// an undefined-instruction exception with the PC on the instruction before
/// `until`, which has already run.
pub(super) fn exit_trapped_as_wfi(
    uc: &Unicorn<'static, ()>,
    counter: &crate::cpu::SliceCounter,
    until: u64,
) -> bool {
    const EXCP_UDEF: u32 = 1;
    const SCTLR_NTWI: u64 = 1 << 16;
    let sctlr = {
        let mut reg = SCTLR_EL1;
        uc.reg_read_arm64_coproc(&mut reg).map_or(0, |()| reg.val)
    };
    counter.exception.get() == Some(EXCP_UDEF)
        && at_el0(uc)
        && sctlr & SCTLR_NTWI == 0
        && uc.pc_read().is_ok_and(|pc| pc == until.wrapping_sub(4))
}
