//! The arm64 core's system registers as the host sees them: encodings, the
//! firmware's reset of EL2/EL3, and the MRS/MSR/SYS hooks for the registers the
//! host models (the generic timer, MPIDR) and for broadcast maintenance.

use std::cell::RefCell;
use std::rc::Rc;

use unicorn_engine::{Arm64Insn, RegisterARM64, RegisterARM64CP, Unicorn};

use super::psci;
use super::syshook::{self, SysHook};
use crate::board::Board;
use crate::core_mmu::CoreMmu;
use crate::error::{uc_err, EmuError};
use crate::slice_counter::SliceCounter;
use crate::timer::CNTFRQ_HZ;

// System register encodings (op0, op1, CRn, CRm, op2).
pub(crate) type SysReg = (u32, u32, u32, u32, u32);
pub(crate) const MPIDR_EL1: SysReg = (3, 0, 0, 0, 5);
pub(crate) const DAIF: SysReg = (3, 3, 4, 2, 1);
pub(crate) const MDSCR_EL1: SysReg = (2, 0, 0, 2, 2);
pub(crate) const CNTFRQ_EL0: SysReg = (3, 3, 14, 0, 0);
pub(crate) const CNTPCT_EL0: SysReg = (3, 3, 14, 0, 1);
pub(crate) const CNTVCT_EL0: SysReg = (3, 3, 14, 0, 2);
pub(crate) const CNTV_TVAL_EL0: SysReg = (3, 3, 14, 3, 0);
pub(crate) const CNTV_CTL_EL0: SysReg = (3, 3, 14, 3, 1);
pub(crate) const CNTV_CVAL_EL0: SysReg = (3, 3, 14, 3, 2);

/// The register of encoding `reg`, to read or write from the host.
pub(crate) const fn cp((op0, op1, crn, crm, op2): SysReg) -> RegisterARM64CP {
    RegisterARM64CP::new()
        .op0(op0)
        .op1(op1)
        .crn(crn)
        .crm(crm)
        .op2(op2)
}

pub(crate) fn sysreg(cp: &RegisterARM64CP) -> SysReg {
    (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
}

/// Unicorn's cortex-a72 has EL2 and EL3 whose SCR_EL3.RW and HCR_EL2.RW reset to 0,
/// which declares EL1 AArch32: every ERET to EL1 was then an illegal return that set
/// PSTATE.IL. Firmware would set both bits before entering the kernel; so do we.
pub(crate) fn declare_lower_els_aarch64(uc: &mut Unicorn<'static, ()>) -> Result<(), EmuError> {
    const SCR_EL3: RegisterARM64CP = RegisterARM64CP::new().op0(3).op1(6).crn(1).crm(1).op2(0);
    const HCR_EL2: RegisterARM64CP = RegisterARM64CP::new().op0(3).op1(4).crn(1).crm(1).op2(0);
    for (reg, rw_bit) in [(SCR_EL3, 1u64 << 10), (HCR_EL2, 1u64 << 31)] {
        let mut current = reg;
        uc.reg_read_arm64_coproc(&mut current)
            .map_err(uc_err("reading SCR_EL3/HCR_EL2"))?;
        uc.reg_write_arm64_coproc(&reg.val(current.val | rw_bit))
            .map_err(uc_err("setting SCR_EL3/HCR_EL2.RW"))?;
    }
    Ok(())
}

/// MRS/MSR hooks for the registers the host models (the timer, MPIDR), and the SYS hook
/// that turns broadcast TLB and I-cache maintenance into flushes of every core. The
/// simulated MMU's (`mmu`) watch on translation registers and TLB maintenance rides
/// on the same hooks: Unicorn calls only one MRS/MSR/SYS hook per instruction
/// (`gen_hook_sys` in its `translate-a64.c`).
pub(crate) fn install_sysreg_hooks(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    board: &Rc<RefCell<Board>>,
    counter: &Rc<SliceCounter>,
    mmu: Option<Rc<CoreMmu>>,
) -> Result<Vec<SysHook>, EmuError> {
    let (b, c) = (board.clone(), counter.clone());
    let mrs = syshook::add(uc, Arm64Insn::UC_ARM64_INS_MRS, move |access| {
        let board = b.borrow();
        let now = || board.now_at(c.retired_before(access.pc()));
        let value = match sysreg(access.cp) {
            // While the machine steps (step.rs), the guest's own debug state.
            DAIF => {
                let Some(guest) = c.stepping.get() else {
                    return false;
                };
                match access.engine().map(|uc| uc.reg_read(RegisterARM64::PSTATE)) {
                    Some(Ok(pstate)) => guest.daif(pstate),
                    _ => return false,
                }
            }
            MDSCR_EL1 => match c.stepping.get() {
                Some(guest) => guest.mdscr,
                None => return false,
            },
            MPIDR_EL1 => psci::mpidr_register(cpu),
            CNTFRQ_EL0 => CNTFRQ_HZ,
            CNTVCT_EL0 | CNTPCT_EL0 => now(),
            CNTV_CTL_EL0 => board.timers[cpu].ctl(now()),
            CNTV_CVAL_EL0 => board.timers[cpu].cval(),
            CNTV_TVAL_EL0 => board.timers[cpu].tval(now()),
            _ => return false,
        };
        access.set_result(value);
        true
    })
    .map_err(uc_err("adding the MRS hook"))?;
    let (b, c, m) = (board.clone(), counter.clone(), mmu.clone());
    let msr = syshook::add(uc, Arm64Insn::UC_ARM64_INS_MSR, move |access| {
        if let Some(m) = &m {
            super::simmu::on_msr(m, access);
        }
        let cp = access.cp;
        let reg = sysreg(cp);
        if reg == DAIF {
            // The write itself is left to Unicorn: it ends its block, whose
            // successor's block hook takes a pending IRQ if the write unmasked it.
            if !c.daif_writes.is_empty() {
                let pc = access.pc();
                if c.daif_writes.holds(pc) {
                    if let Some(mut uc) = access.engine() {
                        c.daif_writes.run(&mut uc, &c, pc);
                    }
                }
            }
            return false;
        }
        if !matches!(reg, CNTV_CTL_EL0 | CNTV_CVAL_EL0 | CNTV_TVAL_EL0) {
            return false;
        }
        let mut board = b.borrow_mut();
        let now = board.now_at(c.retired_before(access.pc()));
        let timer = &mut board.timers[cpu];
        match reg {
            CNTV_CTL_EL0 => timer.set_ctl(cp.val),
            CNTV_CVAL_EL0 => timer.set_cval(cp.val),
            _ => timer.set_tval(now, cp.val),
        }
        // The timer's output is a level: reprogramming it lowers (or raises) the PPI
        // now, not at the next slice, or the guest would take the old tick again.
        c.irq_line_may_have_risen(board.update_timer_line(cpu, now));
        // The new deadline, counted from the slice's start like the old one.
        let fires_after = board.timers[cpu]
            .deadline(now)
            .map_or(u64::MAX, |t| board.clock.insns_until(t, board.running));
        c.timer_fires_after.set(fires_after);
        true
    })
    .map_err(uc_err("adding the MSR hook"))?;
    let c = counter.clone();
    let sys = syshook::add(uc, Arm64Insn::UC_ARM64_INS_SYS, move |access| {
        if let Some(m) = &mmu {
            super::simmu::on_sys(m, access);
        }
        let cp = access.cp;
        match (cp.op1, cp.crn, cp.crm, cp.op2) {
            // TLBI …IS / …OS (EL1): CRm 1, 2 (ranges) and 3.
            (0, 8, 1..=3, _) => c.tlb_broadcast.set(true),
            // IC IALLUIS, IC IVAU.
            (0, 7, 1, 0) | (3, 7, 5, 1) => c.code_broadcast.set(true),
            _ => {}
        }
        false // the instruction still does its local part
    })
    .map_err(uc_err("adding the SYS hook"))?;
    Ok(vec![mrs, msr, sys])
}
