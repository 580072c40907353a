//! The emulated multicore ARM64 machine of percpu-lab: one Unicorn instance per core
//! over shared guest RAM, taking turns on one host thread under a deterministic
//! scheduler, with the devices of QEMU's `virt` board (PL011, GICv2, generic timer,
//! PSCI) modelled on the host. See `docs/machine.md` for the contract with the guest.

pub mod bench;
pub mod exception;
pub mod fdt;
pub mod gic;
pub mod insn;
pub mod kernel;
pub mod machine;
pub mod memory;
pub mod mmu;
pub mod psci;
pub mod sched;
mod syshook;
pub mod timer;
pub mod uart;
pub mod unwind;

pub use kernel::{KernelError, KernelImage};
pub use machine::{
    CpuReport, CpuState, EmuError, Machine, MachineConfig, RunEnd, RunOutcome, TakenException,
};
pub use memory::{GuestMemory, GuestRam, OutOfRam, RAM_BASE};
pub use sched::{SchedView, Scheduler, SchedulerKind, Slice};
