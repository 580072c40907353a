//! WFE and SEV: each CPU's event register (Arm ARM D1.6, "Wait for Event").
//!
//! `sev` sets every CPU's event register, `sevl` its own. At a `wfe` a CPU whose
//! event register is set clears it and goes on; otherwise it stops there and waits,
//! not scheduled, until an event or an interrupt arrives (an interrupt wakes a WFE
//! even while masked). So a CPU spinning on a lock whose wait loop has a WFE costs
//! host time per release, not per iteration. Unicorn itself treats WFE as a hint
//! that does nothing: the machine hooks each WFE, SEV and SEVL of the kernel's code.

use std::cell::RefCell;
use std::rc::Rc;

use unicorn_engine::Unicorn;

use crate::cpu::{uc_err, Board, Core};
use crate::kernel::KernelImage;
use crate::machine::EmuError;

const WFE: u32 = 0xd503_205f;
const SEV: u32 = 0xd503_209f;
const SEVL: u32 = 0xd503_20bf;

/// What the instruction at a hooked address does to event registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Wait,
    SignalAll,
    SignalSelf,
}

fn site(word: u32) -> Option<Site> {
    match word {
        WFE => Some(Site::Wait),
        SEV => Some(Site::SignalAll),
        SEVL => Some(Site::SignalSelf),
        _ => None,
    }
}

/// Hooks every WFE, SEV and SEVL of `kernel` on every core.
pub(crate) fn install(
    cores: &mut [Core],
    kernel: &KernelImage,
    board: &Rc<RefCell<Board>>,
) -> Result<(), EmuError> {
    let sites: Vec<(u64, Site)> = kernel
        .code_words()
        .filter_map(|(addr, word)| site(word).map(|s| (addr, s)))
        .collect();
    let err = uc_err("hooking WFE and SEV");
    for (cpu, core) in cores.iter_mut().enumerate() {
        for &(addr, site) in &sites {
            let (board, counter) = (board.clone(), core.counter.clone());
            core.uc
                .add_code_hook(addr, addr, move |uc: &mut Unicorn<'_, ()>, _, _| {
                    let mut board = board.borrow_mut();
                    match site {
                        Site::SignalAll => board.events.iter_mut().for_each(|e| *e = true),
                        Site::SignalSelf => board.events[cpu] = true,
                        // Set: consume it and go on. Clear: stop before the WFE;
                        // the machine runs the CPU again once an event is there.
                        Site::Wait if std::mem::take(&mut board.events[cpu]) => {}
                        Site::Wait => {
                            counter.wfe_wait.set(true);
                            let _ = uc.emu_stop();
                        }
                    }
                })
                .map_err(&err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_three_hints_and_nothing_else() {
        assert_eq!(site(0xd503_205f), Some(Site::Wait));
        assert_eq!(site(0xd503_209f), Some(Site::SignalAll));
        assert_eq!(site(0xd503_20bf), Some(Site::SignalSelf));
        assert_eq!(site(0xd503_207f), None, "WFI");
        assert_eq!(site(0xd503_201f), None, "NOP");
    }
}
