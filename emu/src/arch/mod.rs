//! The seam between the machine and an instruction set.
//!
//! The machine (`machine.rs`: RAM, the run loop, scheduling, virtual time,
//! snapshots; `board.rs`: devices on the bus and the device tree built from them)
//! knows no instruction set. What differs between ISAs is asked of an [`Arch`]:
//! how a core is created and started, how its interrupt input is driven and
//! taken, what ends a slice (WFI, an exception, a firmware call) and how to
//! unwind its stack. Each ISA is one folder here: [`aarch64`] (GICv2, PSCI,
//! VMSAv8-64, WFE) and [`riscv64`] (the host as SBI firmware, Sv39). Adding a
//! third: `docs/machine.md`, "Adding an ISA".

use unicorn_engine::Unicorn;

use std::cell::RefCell;
use std::rc::Rc;

use crate::board::{Board, BoardKind};
use crate::cpu::{Core, Hooks, KeepAlive};
use crate::error::EmuError;
use crate::hardware::{Hardware, RunEnd};
use crate::kernel::KernelImage;
use crate::record::abi::IsaAbi;
use crate::simmu::IsaMmuHooks;
use crate::slice_counter::{IrqStop, SliceCounter};

pub mod aarch64;
pub mod riscv64;

use aarch64::exception::Synchronous;

/// What the machine's run loop asks of an instruction set. Implementations are
/// unit structs, one per ISA; [`crate::Isa::arch`] picks one. Methods that act on the
/// machine take its [`Hardware`]: the ISA code sees the cores, the board and RAM,
/// the machine sees only this trait.
pub(crate) trait Arch: Sync {
    /// Physical address of the board's RAM.
    fn ram_base(&self) -> u64;
    /// What the recorder reads of a core and decodes of the kernel's code.
    fn abi(&self) -> &'static dyn IsaAbi;
    /// How the simulated MMU sees the ISA's translation and TLB maintenance.
    fn mmu(&self) -> &'static dyn IsaMmuHooks;
    /// The board: its root node, its CPUs and its devices (the bus).
    fn board(&self) -> &'static BoardKind;
    /// A new core's engine, configured as the ISA needs before the machine adds
    /// its hooks.
    fn new_engine(&self) -> Result<Unicorn<'static, ()>, EmuError>;
    /// Hooks of the ISA's own on a new core, after the machine's: arm64's
    /// system-register hooks (timer, GIC-free MPIDR, the MMU's registers).
    /// Returns what must live as long as the engine.
    fn install_core_hooks(&self, _core: &mut CoreHooks<'_>) -> Result<Vec<KeepAlive>, EmuError> {
        Ok(Vec::new())
    }
    /// Decides, at the start of a block of `insns` instructions at `addr`, whether
    /// the slice must stop in or before it so that an interrupt is taken at its
    /// architectural instruction boundary (docs/machine.md, "When `emu/` takes an
    /// IRQ"). Called by the block hook only when [`SliceCounter::irq_due_by`] says
    /// an interrupt may be due.
    fn irq_stop(
        &self,
        uc: &Unicorn<'_, ()>,
        cpu: usize,
        board: &RefCell<Board>,
        counter: &SliceCounter,
        addr: u64,
        insns: u64,
    ) -> Option<IrqStop>;
    /// Whether a block starting at [`Arch::trap_vector`] is the engine entering
    /// an interrupt (not a trap the host entered).
    fn interrupt_entered(&self, _uc: &Unicorn<'_, ()>) -> bool {
        false
    }
    /// Carries out in place the instruction the engine raised exception `intno`
    /// for, if the host emulates it (RISC-V's `rdtime`): true lets the slice go on.
    fn emulates_in_place(
        &self,
        _uc: &mut Unicorn<'_, ()>,
        _intno: u32,
        _board: &RefCell<Board>,
        _counter: &SliceCounter,
    ) -> bool {
        false
    }
    /// Hooks on every core that need the kernel's code (arm64: WFE/SEV sites).
    fn install_kernel_hooks(&self, _cores: &[Core], _kernel: &KernelImage) {}
    /// Starts the boot CPU at `entry` with the device tree at `dtb`, as the ISA's
    /// boot protocol hands them over.
    fn boot(&self, hw: &mut Hardware, entry: u64, dtb: u64) -> Result<(), EmuError>;
    /// Whether `cpu`'s interrupt input is asserted (it wakes a core waiting in WFI
    /// or WFE, masked or not).
    fn irq_pending(&self, board: &Board, core: &Core, cpu: usize) -> bool;
    /// Brings each core's timer interrupt input to its timer's level now, after
    /// the board has updated its interrupt controller (nothing to do where the
    /// timer's line goes through a device, as arm64's does through the GIC).
    fn drive_timer_inputs(&self, _board: &Board, _cores: &mut [Core]) {}
    /// Takes a pending interrupt on `cpu` where the host enters interrupts (arm64);
    /// nothing where the engine takes them itself (RISC-V).
    fn deliver_irq(&self, _hw: &mut Hardware, _cpu: usize) -> Result<(), RunEnd> {
        Ok(())
    }
    /// Where the core's trap handler is (the counting hook tells a trap taken by
    /// the engine itself by a block starting there), `u64::MAX` if the host
    /// enters every trap.
    fn trap_vector(&self, _uc: &Unicorn<'static, ()>) -> u64 {
        u64::MAX
    }
    /// Whether `word` is the wait-for-interrupt instruction.
    fn is_wfi(&self, word: u32) -> bool;
    /// Runs `core`, stopped by its block hook at the start of a block, up to the
    /// instruction at `until` inside it, without dropping the block's translation
    /// (arm64: software step). `None`: this ISA cannot, and the machine runs the
    /// block with an `until` address instead.
    fn step_to(
        &self,
        _core: &mut Core,
        _until: u64,
    ) -> Option<Result<(), unicorn_engine::uc_error>> {
        None
    }
    /// Whether the run stopped at `stopped_at` because the instruction before it
    /// was a WFI that does not end its block (RISC-V's): the core waits.
    fn stopped_after_wfi(&self, _uc: &mut Unicorn<'static, ()>, _stopped_at: u64) -> bool {
        false
    }
    /// Handles exception `cause` (the engine's number) that ended `cpu`'s slice:
    /// enters the guest's handler, or carries out a call to the firmware the host
    /// plays. `Some` ends the run.
    fn exception(&self, hw: &mut Hardware, cpu: usize, cause: u32) -> Option<RunEnd>;
    /// Enters the fault the simulated MMU refused an access of `cpu`'s with.
    fn abort(&self, hw: &mut Hardware, cpu: usize, exc: Synchronous) -> Option<RunEnd>;
    /// What a core that stopped in WFE waits on besides events and interrupts.
    fn exclusive_monitor(&self, _hw: &Hardware, _cpu: usize) -> Option<aarch64::wfe::Monitor> {
        None
    }
    /// Return addresses of a stopped core's frame-pointer chain, innermost first.
    fn backtrace(&self, uc: &mut Unicorn<'static, ()>) -> Vec<u64>;
}

/// A new core as [`Arch::install_core_hooks`] sees it.
pub(crate) struct CoreHooks<'a> {
    pub(crate) uc: &'a mut Unicorn<'static, ()>,
    pub(crate) cpu: usize,
    pub(crate) board: &'a Rc<RefCell<Board>>,
    pub(crate) counter: &'a Rc<SliceCounter>,
    /// The simulated MMU's view of the core, which sees its maintenance.
    pub(crate) mmu: Option<Rc<crate::core_mmu::CoreMmu>>,
    pub(crate) hooks: Hooks,
}
