//! What an instruction set's code acts on ([`crate::arch::Arch`]): the cores, the
//! board, RAM and the kernel, and who watches the run; and how a run ends. The
//! machine owns it and lends it to the ISA's code; the scheduler, the recorder and
//! the run loop's bookkeeping stay out of the ISA's reach.

use std::cell::RefCell;
use std::rc::Rc;

use crate::board::Board;
use crate::cpu::Core;
use crate::kernel::KernelImage;
use crate::memory::GuestRam;
use crate::observe::RunObserver;
use crate::simmu::SimMmu;

/// The machine's hardware and what watches it.
pub(crate) struct Hardware {
    // Field order matters: the Unicorn instances map `ram` and must be dropped first.
    pub(crate) cores: Vec<Core>,
    pub(crate) board: Rc<RefCell<Board>>,
    pub(crate) kernel: KernelImage,
    /// Instructions executed so far by all CPUs.
    pub(crate) total_insns: u64,
    /// Whoever watches the run loop (the recorder, while recording events; none:
    /// no hook added, nothing to pay).
    pub(crate) observers: Vec<Rc<dyn RunObserver>>,
    /// The simulated MMU (`None` with Unicorn's built-in one).
    pub(crate) mmu: Option<SimMmu>,
    /// RISC-V: remote fences the SBI RFENCE calls asked for (one per target hart).
    pub(crate) sbi_remote_fences: u64,
    pub(crate) ram: GuestRam,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// A CPU asked for power-off (PSCI SYSTEM_OFF, SBI shutdown).
    PoweredOff {
        /// The CPU.
        cpu: usize,
        /// The status the guest passed.
        status: u64,
    },
    /// A CPU asked for a reset (PSCI SYSTEM_RESET, SBI reset).
    Reset {
        /// The CPU.
        cpu: usize,
        /// The status the guest passed.
        status: u64,
    },
    /// Something the guest could not take: an emulator error (such as a fetch from
    /// unmapped memory) or an exception with no vector table.
    Fault {
        /// The CPU.
        cpu: usize,
        /// Its PC.
        pc: u64,
        /// What went wrong.
        what: String,
    },
    /// The instruction budget ran out.
    Watchdog {
        /// The budget, over all CPUs.
        limit: u64,
    },
    /// No CPU can run and nothing will wake one.
    Hang,
    /// An analysis of the recorded events asked to stop ([`crate::Machine::stop_request`]),
    /// e.g. on a real deadlock.
    Stopped {
        /// What the analysis found.
        reason: String,
    },
}
