//! Running a core up to an instruction inside a translated block, where its timer
//! fires, without dropping the block's translation: the architecture's software
//! step (MDSCR_EL1.SS with PSTATE.SS), one instruction per `emu_start`.
//!
//! Unicorn honours an `until` address only when it translates, and afterwards
//! drops every block that holds it: stopping inside a block that way cost three
//! translations per timer tick (the shortened block, the rest of it after the
//! interrupt, and the whole block again next time), 18% of a bare run. A stepped
//! instruction is a one-instruction block whose translation is keyed apart from
//! the whole block's (the step state is part of its flags), so both stay cached.
//! Each step ends in Unicorn's undefined-instruction exit with PSTATE.SS cleared
//! (the step completed); a step that did not complete (a fault) leaves PSTATE.SS
//! set.
//!
//! Stepping at EL1 also needs MDSCR_EL1.KDE set and PSTATE.D clear. The guest sees
//! neither: [`GuestDebug`] keeps its own PSTATE.D and MDSCR_EL1, the MRS hook
//! answers reads of DAIF and MDSCR_EL1 with them, and both are restored before
//! anything else runs. No stepped instruction can write them (see `step_until`).
//! While stepping, the block hook leaves the budget and IRQs alone, as if the
//! block ran whole (the `until`-address way behaved so, and so the traces are the
//! same).

use unicorn_engine::{uc_error, RegisterARM64, RegisterARM64CP, Unicorn};

use super::debug_state::{GuestDebug, PSTATE_D};
use super::regs;
use crate::cpu::Core;
use crate::slice_counter::IrqStop;

/// PSTATE.SS (software step).
const PSTATE_SS: u64 = 1 << 21;
/// MDSCR_EL1.SS (software step on) and MDSCR_EL1.KDE (debug exceptions at the
/// EL they target, EL1 here).
const MDSCR_SS: u64 = 1;
const MDSCR_KDE: u64 = 1 << 13;
const MDSCR_EL1: RegisterARM64CP = regs::cp(regs::MDSCR_EL1);
/// Unicorn's exception number for an undefined instruction, and for a completed step.
const EXCP_UDEF: u32 = 1;

fn read_mdscr(uc: &Unicorn<'static, ()>) -> Result<u64, uc_error> {
    let mut reg = MDSCR_EL1;
    uc.reg_read_arm64_coproc(&mut reg)?;
    Ok(reg.val)
}

/// Writes MDSCR_EL1; Unicorn then recomputes the flags translations are keyed on
/// (whether stepping is active depends on PSTATE.D too).
fn write_mdscr(uc: &mut Unicorn<'static, ()>, value: u64) -> Result<(), uc_error> {
    uc.reg_write_arm64_coproc(&MDSCR_EL1.val(value))
}

/// Runs `core`, stopped by its block hook at the start of a block, up to the
/// instruction at `until` inside it, leaving [`IrqStop::Within`] set there; or up
/// to where an exception, a wait or an error of the guest's stops it first.
pub(crate) fn step_to(core: &mut Core, until: u64) -> Result<(), uc_error> {
    let guest = GuestDebug {
        d: core.uc.reg_read(RegisterARM64::PSTATE)? & PSTATE_D,
        mdscr: read_mdscr(&core.uc)?,
    };
    core.counter.irq_stop.set(None);
    core.counter.stepping.set(Some(guest));
    let stepped = step_until(core, until);
    let guest = core.counter.stepping.take().unwrap_or(guest);
    let pstate = core.uc.reg_read(RegisterARM64::PSTATE)?;
    core.uc.reg_write(
        RegisterARM64::PSTATE,
        (pstate & !(PSTATE_D | PSTATE_SS)) | guest.d,
    )?;
    write_mdscr(&mut core.uc, guest.mdscr)?;
    stepped
}

/// Steps from the block's start to `until`. Nothing stepped changes PSTATE.D or
/// MDSCR_EL1: the instructions that write them (`msr daifset/daifclr`, `msr daif`,
/// `msr mdscr_el1`, `eret`) end their block, and the steps run only instructions
/// before `until` inside one block. So both are forced once.
fn step_until(core: &mut Core, until: u64) -> Result<(), uc_error> {
    let (uc, c) = (&mut core.uc, &core.counter);
    let guest = c.stepping.get().expect("stepping");
    let forced_mdscr = guest.mdscr | MDSCR_SS | MDSCR_KDE;
    let pstate = uc.reg_read(RegisterARM64::PSTATE)?;
    uc.reg_write(RegisterARM64::PSTATE, pstate & !PSTATE_D)?;
    write_mdscr(uc, forced_mdscr)?;
    loop {
        let pc = uc.pc_read()?;
        if pc == until {
            c.irq_stop.set(Some(IrqStop::Within(until)));
            return Ok(());
        }
        // Each completed step clears PSTATE.SS (read live, not from the flags).
        let pstate = uc.reg_read(RegisterARM64::PSTATE)?;
        uc.reg_write(RegisterARM64::PSTATE, pstate | PSTATE_SS)?;
        c.stop_requested.set(false);
        uc.emu_start(pc, 0, 0, 0)?;
        let pstate = uc.reg_read(RegisterARM64::PSTATE)?;
        if c.exception.get() != Some(EXCP_UDEF) || pstate & PSTATE_SS != 0 {
            // The guest's exception, a wait, or a stop a hook asked for.
            return Ok(());
        }
        c.exception.set(None);
        debug_assert!(
            pstate & PSTATE_D == 0 && read_mdscr(uc) == Ok(forced_mdscr),
            "the instruction at {pc:#x} changed the debug state"
        );
    }
}
