//! One core: its Unicorn instance over the shared RAM, the hooks that count its
//! instructions, catch its exceptions and model its system registers, and the board
//! state (devices, time) those hooks share.

use std::rc::Rc;

use unicorn_engine::Unicorn;

use crate::core_mmu::CoreMmu;
use crate::slice_counter::SliceCounter;

/// What a core is doing between slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuState {
    /// Not started yet, or stopped with PSCI CPU_OFF.
    Off,
    /// Runnable.
    Running,
    /// In WFI until an interrupt is pending for it.
    WaitingForInterrupt,
    /// After a WFE, until an event (another CPU's SEV) or an interrupt arrives.
    WaitingForEvent,
}

/// A synchronous exception the host entered on a CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenException {
    /// "SVC", "BRK", "undefined instruction", "data abort", "instruction abort".
    pub kind: &'static str,
    /// The syndrome (ESR_EL1).
    pub esr: u64,
    /// The faulting address (FAR_EL1), for an abort.
    pub far: Option<u64>,
    /// Preferred return address (ELR_EL1).
    pub elr: u64,
}

/// Which hooks a core gets: all of them, only what counting and stopping need
/// (to measure Unicorn's own speed), or not even the counting block hook (the
/// engine's floor: instructions go uncounted, and the slice ends only at an
/// exception or a WFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hooks {
    Full,
    CountOnly,
    Uncounted,
}

/// What an ISA's hooks on a core need kept until the engine is dropped.
pub(crate) type KeepAlive = Box<dyn std::any::Any>;

pub(crate) struct Core {
    pub(crate) uc: Unicorn<'static, ()>,
    pub(crate) state: CpuState,
    pub(crate) pc: u64,
    pub(crate) insns: u64,
    pub(crate) irqs: u64,
    pub(crate) last_exception: Option<TakenException>,
    pub(crate) counter: Rc<SliceCounter>,
    /// Hooks on single instructions, from every part of the machine.
    pub(crate) code_sites: crate::code_sites::CodeSites,
    /// The simulated MMU's hooks on this core (`None`: Unicorn's built-in MMU).
    pub(crate) mmu: Option<Rc<CoreMmu>>,
    /// While waiting in WFE: the exclusive monitor a store may clear.
    pub(crate) monitor: Option<crate::arch::aarch64::wfe::Monitor>,
    /// RISC-V: the host has raised `mip.STIP` (the timer's deadline passed).
    pub(crate) timer_pending: bool,
    /// Declared after `uc`: the engine refers to these until it is dropped.
    _keep_alive: Vec<KeepAlive>,
}

impl Core {
    pub(crate) fn with_engine(
        uc: Unicorn<'static, ()>,
        counter: Rc<SliceCounter>,
        mmu: Option<Rc<CoreMmu>>,
        keep_alive: Vec<KeepAlive>,
    ) -> Self {
        Self {
            uc,
            state: CpuState::Off,
            pc: 0,
            insns: 0,
            irqs: 0,
            last_exception: None,
            monitor: None,
            timer_pending: false,
            counter,
            code_sites: Default::default(),
            mmu,
            _keep_alive: keep_alive,
        }
    }
}
