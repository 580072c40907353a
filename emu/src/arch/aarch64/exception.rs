//! Exception entry done by the host: Unicorn reports an exception but never vectors,
//! so the host writes what the architecture would (ELR_EL1, SPSR_EL1, ESR_EL1, FAR_EL1,
//! PSTATE, the stack pointer) and returns the vector address to resume at.

use unicorn_engine::{RegisterARM64, RegisterARM64CP, Unicorn};

/// PSTATE after entry: EL1h with D, A, I, F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// PSTATE.I: IRQs masked.
pub const PSTATE_I: u64 = 1 << 7;

/// `SPSR_EL1` has no register id in Unicorn; it is reached through the CP_REG path.
const SPSR_EL1: RegisterARM64CP = RegisterARM64CP::new().op0(3).op1(0).crn(4).crm(0).op2(0);

/// Exception classes (ESR_EL1.EC) the host raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Undefined,
    Svc {
        imm: u32,
    },
    Brk {
        imm: u32,
    },
    /// `status`: the fault status code (IFSC/DFSC).
    InstructionAbort {
        far: u64,
        status: u64,
    },
    DataAbort {
        far: u64,
        is_write: bool,
        status: u64,
    },
}

impl Synchronous {
    /// ESR_EL1 for this exception taken from exception level `from_el`.
    pub fn esr(&self, from_el: u64) -> u64 {
        const IL: u64 = 1 << 25;
        let same_el = (from_el == 1) as u64;
        let (ec, iss) = match *self {
            Self::Undefined => (0x00, 0),
            Self::Svc { imm } => (0x15, imm as u64),
            Self::Brk { imm } => (0x3c, imm as u64),
            Self::InstructionAbort { status, .. } => (0x20 | same_el, status),
            Self::DataAbort {
                is_write, status, ..
            } => (0x24 | same_el, status | (is_write as u64) << 6),
        };
        (ec << 26) | IL | iss
    }

    pub fn far(&self) -> Option<u64> {
        match *self {
            Self::InstructionAbort { far, .. } | Self::DataAbort { far, .. } => Some(far),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Undefined => "undefined instruction",
            Self::Svc { .. } => "SVC",
            Self::Brk { .. } => "BRK",
            Self::InstructionAbort { .. } => "instruction abort",
            Self::DataAbort { .. } => "data abort",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync(Synchronous),
    Irq,
}

/// The guest has no vector table (VBAR_EL1 = 0), so it cannot take the exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoVectors;

/// Enters the exception on `uc`, with `return_pc` as ELR_EL1. Returns the PC to
/// resume at (VBAR_EL1 + vector offset).
pub fn enter<D>(uc: &mut Unicorn<'_, D>, kind: Kind, return_pc: u64) -> Result<u64, NoVectors> {
    let read = |uc: &Unicorn<'_, D>, r| uc.reg_read(r).expect("register read");
    let vbar = read(uc, RegisterARM64::VBAR_EL1);
    if vbar == 0 {
        return Err(NoVectors);
    }
    let old_pstate = read(uc, RegisterARM64::PSTATE);
    let from_el = (old_pstate >> 2) & 3;
    let on_sp_el0 = old_pstate & 1 == 0;
    let vector = match (from_el, on_sp_el0) {
        (1, true) => 0x000,
        (1, false) => 0x200,
        _ => 0x400,
    } + if kind == Kind::Irq { 0x80 } else { 0 };

    let write = |uc: &mut Unicorn<'_, D>, r, v| uc.reg_write(r, v).expect("register write");
    write(uc, RegisterARM64::ELR_EL1, return_pc);
    if let Kind::Sync(exc) = kind {
        write(uc, RegisterARM64::ESR_EL1, exc.esr(from_el));
        if let Some(far) = exc.far() {
            write(uc, RegisterARM64::FAR_EL1, far);
        }
    }
    // Unicorn's SP register is the live stack pointer; the banked copy of the one
    // not in use is SP_EL0/SP_EL1. Bank SP_EL0 and switch to SP_EL1 by hand.
    if on_sp_el0 {
        let sp_el0 = read(uc, RegisterARM64::SP);
        let sp_el1 = read(uc, RegisterARM64::SP_EL1);
        write(uc, RegisterARM64::SP_EL0, sp_el0);
        write(uc, RegisterARM64::SP, sp_el1);
    }
    write(uc, RegisterARM64::PSTATE, PSTATE_EL1H_MASKED);
    // A CP_REG write also rebuilds Unicorn's cached hflags after the PSTATE change.
    uc.reg_write_arm64_coproc(&SPSR_EL1.val(old_pstate))
        .expect("SPSR_EL1 write");
    let pc = vbar + vector;
    write(uc, RegisterARM64::PC, pc);
    Ok(pc)
}

/// Reads SPSR_EL1 (for tests and reports).
pub fn spsr_el1<D>(uc: &Unicorn<'_, D>) -> u64 {
    let mut reg = SPSR_EL1;
    uc.reg_read_arm64_coproc(&mut reg).expect("SPSR_EL1 read");
    reg.val
}
