//! RISC-V (RV64GC) on QEMU's riscv64 `virt` board, S-mode with the host as the
//! SBI firmware ([`sbi`]): the hart's registers and traps ([`hart`]), the Sv39
//! walk ([`sv39`]) and the board ([`board`]: the NS16550A, the PLIC ([`plic`]) and
//! the firmware's CLINT).

use std::cell::RefCell;

use unicorn_engine::Unicorn;

use crate::arch::aarch64::exception::Synchronous;
use crate::arch::Arch;
use crate::board::{Board, BoardKind};
use crate::cpu::Core;
use crate::cpu::{CpuState, TakenException};
use crate::error::{uc_err, EmuError};
use crate::hardware::{Hardware, RunEnd};
use crate::memory::read_insn;
use crate::slice_counter::{IrqStop, SliceCounter};
use crate::unwind;

pub(crate) mod abi;
pub(crate) mod board;
pub mod hart;
pub(crate) mod plic;
pub(crate) mod sbi;
pub(crate) mod simmu;
pub(crate) mod sv39;

pub use hart::time_at;

/// RV64GC in S-mode.
pub(crate) struct Riscv64;

impl Arch for Riscv64 {
    fn abi(&self) -> &'static dyn crate::record::abi::IsaAbi {
        &abi::Riscv64Abi
    }

    fn mmu(&self) -> &'static dyn crate::simmu::IsaMmuHooks {
        &simmu::Riscv64Mmu
    }

    fn ram_base(&self) -> u64 {
        hart::RAM_BASE
    }

    fn board(&self) -> &'static BoardKind {
        &board::VIRT
    }

    fn new_engine(&self) -> Result<Unicorn<'static, ()>, EmuError> {
        hart::new_engine()
    }

    fn boot(&self, hw: &mut Hardware, entry: u64, dtb: u64) -> Result<(), EmuError> {
        // a0 = the boot hart's id, a1 = the device tree.
        power_on_hart(hw, 0, entry, 0, dtb)
    }

    fn irq_pending(&self, _board: &Board, core: &Core, _cpu: usize) -> bool {
        hart::interrupt_pending(&core.uc)
    }

    fn drive_timer_inputs(&self, board: &Board, cores: &mut [Core]) {
        drive_timer_inputs(board, cores);
    }

    fn trap_vector(&self, uc: &Unicorn<'static, ()>) -> u64 {
        hart::trap_vector(uc)
    }

    fn interrupt_entered(&self, uc: &Unicorn<'_, ()>) -> bool {
        hart::interrupt_entered(uc)
    }

    fn is_wfi(&self, word: u32) -> bool {
        word == hart::WFI
    }

    fn stopped_after_wfi(&self, uc: &mut Unicorn<'static, ()>, stopped_at: u64) -> bool {
        read_insn(uc, stopped_at.wrapping_sub(4)) == Some(hart::WFI)
    }

    fn exception(&self, hw: &mut Hardware, cpu: usize, cause: u32) -> Option<RunEnd> {
        riscv_exception(hw, cpu, cause)
    }

    fn abort(&self, hw: &mut Hardware, cpu: usize, exc: Synchronous) -> Option<RunEnd> {
        riscv_page_fault(hw, cpu, exc)
    }

    fn backtrace(&self, uc: &mut Unicorn<'static, ()>) -> Vec<u64> {
        let fp = hart::frame_pointer(uc);
        unwind::riscv_frame_pointer_chain(&unwind::CoreView::new(uc), fp)
    }

    /// QEMU takes the interrupt once the host raises `mip.STIP`: stop exactly
    /// where the deadline falls, masked or not (the guest may read `sip`).
    fn irq_stop(
        &self,
        _uc: &Unicorn<'_, ()>,
        _cpu: usize,
        _board: &RefCell<Board>,
        c: &SliceCounter,
        addr: u64,
        insns: u64,
    ) -> Option<IrqStop> {
        if c.take_timer_deadline() {
            return Some(IrqStop::BlockStart);
        }
        c.timer_deadline_within(addr, insns)
    }

    /// Unicorn has no `time` CSR: a `rdtime` traps as an illegal instruction,
    /// with the PC past it. Gives its register the board's time there and lets
    /// the slice go on after it; the instructions of its block after it, counted
    /// when the block started, are taken back (the rest runs as a new block).
    fn emulates_in_place(
        &self,
        uc: &mut Unicorn<'_, ()>,
        intno: u32,
        board: &RefCell<Board>,
        c: &SliceCounter,
    ) -> bool {
        const ILLEGAL_INSTRUCTION: u32 = 2;
        if intno != ILLEGAL_INSTRUCTION {
            return false;
        }
        let Ok(pc) = uc.pc_read() else {
            return false;
        };
        let at = pc.wrapping_sub(4);
        let Some(rd) = read_insn(uc, at).and_then(hart::rdtime_destination) else {
            return false;
        };
        let time = hart::time_at(board.borrow().now_at(c.retired_before(at)));
        hart::set_xreg(uc, rd, time);
        c.executed.set(c.retired_before(pc));
        c.block_start.set(u64::MAX);
        true
    }
}

/// Starts RISC-V hart `cpu` at `entry` (S-mode, MMU off, interrupts masked)
/// with a0/a1.
pub(super) fn power_on_hart(
    hw: &mut Hardware,
    cpu: usize,
    entry: u64,
    a0: u64,
    a1: u64,
) -> Result<(), EmuError> {
    let core = &mut hw.cores[cpu];
    hart::power_on(&mut core.uc, entry, a0, a1).map_err(uc_err("starting a hart"))?;
    core.pc = entry;
    core.state = CpuState::Running;
    Ok(())
}

/// A RISC-V exception on `cpu` (its PC is past the faulting instruction): an
/// `ecall` is an SBI call to the host; anything else enters the guest's trap
/// handler as the hardware would.
fn riscv_exception(hw: &mut Hardware, cpu: usize, cause: u32) -> Option<RunEnd> {
    const ECALL_FROM_S: u32 = 9;
    const ECALL: u32 = 8;
    if cause == ECALL || cause == ECALL_FROM_S {
        return sbi::call(hw, cpu);
    }
    let core = &mut hw.cores[cpu];
    let epc = core.pc.wrapping_sub(4);
    let word = read_insn(&mut core.uc, epc).unwrap_or(0);
    let tval = match cause {
        4..=7 | 13 | 15 => hart::access_address(&core.uc, word).unwrap_or(0),
        1 | 12 => epc,
        2 => word as u64,
        _ => 0,
    };
    riscv_trap(hw, cpu, cause, epc, tval)
}

/// A page fault the simulated MMU refused an access with: the CPU takes it as
/// the page fault of the access's kind (its PC is the faulting instruction).
fn riscv_page_fault(
    hw: &mut Hardware,
    cpu: usize,
    exc: crate::arch::aarch64::exception::Synchronous,
) -> Option<RunEnd> {
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
    let epc = hw.cores[cpu].pc;
    riscv_trap(hw, cpu, cause, epc, tval)
}

/// Enters the guest's trap handler for exception `cause` at `epc`.
pub(super) fn riscv_trap(
    hw: &mut Hardware,
    cpu: usize,
    cause: u32,
    epc: u64,
    tval: u64,
) -> Option<RunEnd> {
    let core = &mut hw.cores[cpu];
    match hart::enter_trap(&mut core.uc, cause as u64, epc, tval) {
        Ok(Some(handler)) => {
            for observer in &hw.observers {
                observer.exception_entered(&core.uc, cpu, None, epc, hw.total_insns);
            }
            core.pc = handler;
            core.last_exception = Some(TakenException {
                kind: hart::exception_name(cause),
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
                hart::exception_name(cause)
            ),
        }),
    }
}

/// The timer's output is `mip.STIP`, raised and lowered by the host.
fn drive_timer_inputs(board: &Board, cores: &mut [Core]) {
    let now = board.clock.now();
    for (cpu, core) in cores.iter_mut().enumerate() {
        let level = board.timers[cpu].irq_level(now);
        if level != core.timer_pending {
            hart::set_pending(&mut core.uc, hart::STIP, level);
            core.timer_pending = level;
        }
    }
}
