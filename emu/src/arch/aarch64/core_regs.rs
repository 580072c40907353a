//! A core's registers read through its engine: general registers by number, and
//! the translation registers a table walk needs. A leaf: the MMU, the recorder and
//! the system-register hooks all read registers, and none of them through another.

use unicorn_engine::{RegisterARM64, RegisterARM64CP, Unicorn};

use super::mmu::TranslationRegs;

pub(crate) const SCTLR_EL1: RegisterARM64CP =
    RegisterARM64CP::new().op0(3).op1(0).crn(1).crm(0).op2(0);
pub(crate) const TCR_EL1: RegisterARM64CP =
    RegisterARM64CP::new().op0(3).op1(0).crn(2).crm(0).op2(2);

/// The registers that say how the core translates addresses now.
pub(crate) fn translation_regs<D>(uc: &Unicorn<'_, D>) -> TranslationRegs {
    let cp = |reg: RegisterARM64CP| {
        let mut reg = reg;
        uc.reg_read_arm64_coproc(&mut reg).map_or(0, |()| reg.val)
    };
    crate::arch::aarch64::mmu::VmsaRegs {
        sctlr: cp(SCTLR_EL1),
        tcr: cp(TCR_EL1),
        ttbr0: uc.reg_read(RegisterARM64::TTBR0_EL1).unwrap_or(0),
        ttbr1: uc.reg_read(RegisterARM64::TTBR1_EL1).unwrap_or(0),
    }
    .into()
}

/// General register `n` (31 = SP, as a load/store base).
pub(crate) fn read_xreg<D>(uc: &Unicorn<'_, D>, n: u32) -> u64 {
    let reg = match n {
        0..=28 => RegisterARM64::X0 as i32 + n as i32,
        29 => RegisterARM64::X29 as i32,
        30 => RegisterARM64::X30 as i32,
        _ => RegisterARM64::SP as i32,
    };
    uc.reg_read(reg).unwrap_or(0)
}
