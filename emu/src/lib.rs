//! The emulated multicore machine of percpu-lab: one Unicorn instance per core over
//! shared guest RAM, taking turns on one host thread under a deterministic
//! scheduler, with the devices of QEMU's `virt` board modelled on the host: for
//! arm64 (PL011, GICv2, generic timer, PSCI) or for RISC-V (NS16550A, PLIC, the
//! timer and IPIs through SBI, the host as the firmware and its CLINT). The kernel's ELF picks the
//! [`Isa`]; what differs lives behind the `arch` seam (`arch/aarch64/`,
//! `arch/riscv64/`), plus the recorder's register conventions in `record/abi.rs`
//! and the simulated MMU's choice of walker. See `docs/machine.md` for the contract
//! with the guest and for what adding an ISA or a device touches.
//!
//! # How a run goes
//! [`Machine::run`] repeats: update timer interrupt levels, wake CPUs in WFI with an
//! interrupt pending, let the [`Scheduler`] pick a runnable CPU and a slice length,
//! take a pending IRQ if that CPU's PSTATE.I allows, run the slice, account its
//! instructions (virtual time advances by them), apply broadcast TLB maintenance to
//! the other instances, then handle how the slice ended (budget, WFI, exception,
//! PSCI call, an IRQ to take now, emulator error). Nothing reads host time or host
//! randomness.
//!
//! # Interrupt timing
//! A slice ends early, exactly where an IRQ is due, and the IRQ is taken there
//! (docs/machine.md, "When `emu/` takes an IRQ"). The block hook decides: at a block
//! start it takes a pending IRQ once PSTATE.I is clear, which is right after the
//! unmasking instruction (see below); when the core's timer deadline falls inside
//! the block about to run with IRQs unmasked, the machine runs that block only up
//! to the deadline's instruction: arm64 steps there (`arch/aarch64/step.rs`),
//! RISC-V runs with an `until` address (at most once per tick).
//!
//! # Unicorn 2.1.4 (unicorn-engine 2.1.5) as measured for this crate
//! - Exceptions reach the INTR hook and are never vectored. PC when the hook runs:
//!   SVC (2) past the SVC; HVC and UDF (both 1), BRK (7), data abort (4) at the
//!   instruction. WFI is not an exception: `emu_start` returns with the PC past it,
//!   and the next `emu_start` simply continues (WFE and YIELD are NOPs).
//! - `emu_stop` from a block hook takes effect before that block runs, so the block
//!   hook checks the budget on entry and counts a block only when it runs: per-CPU
//!   counts are exact for any quantum.
//! - Every instruction that can clear PSTATE.I ends its translation block (QEMU 5.0's
//!   `translate-a64.c`: `msr daifset/daifclr` end the block by default, any MSR to a
//!   system register without `ARM_CP_SUPPRESS_TB_END` does, DAIF included, and
//!   `eret` jumps), so a block start is where an unmask takes effect.
//! - `emu_start`'s `until` address is checked only when code is translated: a block
//!   translated before that spans it runs past it. Dropping the block's translation
//!   first (`ctl_remove_cache`) makes it stop there; after the run Unicorn drops the
//!   shortened block by itself, and with it every block holding the `until`
//!   address: three translations per stop (measured: 18% of a bare storm run on
//!   arm64, which therefore steps instead). On a tight loop the block hook runs at ~950
//!   MIPS where `emu_start`'s `count` gives ~220 and an empty code hook ~100
//!   (`cargo run -p emu --release --example hookcost`).
//! - The architecture's software step works (measured): with MDSCR_EL1.SS and
//!   PSTATE.SS set (at EL1 also MDSCR_EL1.KDE set and PSTATE.D clear), each
//!   `emu_start` runs one instruction as a one-instruction block, translated apart
//!   from the whole block (the step state is in the translation flags), and ends in
//!   the undefined-instruction exit with PSTATE.SS cleared. Writing PSTATE does not
//!   recompute those flags; a system-register write after it does.
//! - Code hooks are bounded at translation time, but each hit runs through one
//!   helper (`helper_uc_tracecode`) that walks the engine's whole list of code
//!   hooks: a hit costs in proportion to how many code hooks there are. When a
//!   hook type has exactly one hook, the generated code calls it directly
//!   (`gen_uc_tracecode`); a second block hook puts every block through the
//!   helper. Hence one block hook per core, and sites at block starts run from it
//!   (`block_start.rs`).
//! - The binding's MRS/MSR/SYS hook proxy returns a Rust `bool` where C reads a
//!   `uint32_t`: declined instructions were skipped anyway. `arch/aarch64/syshook.rs` registers
//!   these hooks through the C API instead. Only the first such hook registered for
//!   an instruction kind is called (`gen_hook_sys` in `translate-a64.c`: "Only one
//!   hook per instruction for SYS/SYSL/MRS/MSR is allowed"), so the simulated MMU's
//!   watch on them rides on the machine's own hooks.
//! - Inside an MMIO callback the PC reads as the start of the running translation
//!   block, not the accessing instruction (measured): a device knows which CPU
//!   wrote, not at which instruction.
//! - The cortex-a72 model has EL2/EL3 with SCR_EL3.RW = HCR_EL2.RW = 0, which makes
//!   every ERET to EL1 illegal (PSTATE.IL): the machine sets both bits at reset.
//! - Unicorn's SP register is the live stack pointer; writing PSTATE does not switch
//!   banks, so exception entry from EL1t banks SP_EL0 and loads SP_EL1 by hand.
//! - QEMU 5.0 ignores SCTLR_EL1.A for ordinary loads; exclusives still fault when
//!   unaligned. ESR/FAR are never filled in: the host decodes the faulting load/store
//!   for FAR and walks the page tables for the fault status code (`arch/aarch64/mmu.rs`).
//! - The simulated MMU (default, [`MmuMode::Checked`]): `TlbType::VIRTUAL` with a fill
//!   hook answered by our walker (`arch/aarch64/mmu.rs`) through a per-CPU TLB model ([`tlb`]); a
//!   refused fill ends `emu_start` with `UC_ERR_EXCEPTION` at the access, and the host
//!   enters the abort. Fills come for 1 KiB target pages. Any memory-write hook, even
//!   bounded to one page, puts every load and store on the slow path, so page tables
//!   are write-protected in the fill answers instead (see `simmu`).
//! - Unicorn never marks RAM dirty: every store to a page whose soft-TLB entry is
//!   executable goes through the self-modifying-code check (`notdirty_write`), not
//!   only the first. The fill answer for a load or store leaves execute out on pages
//!   outside the kernel's executable segments; a fetch there fills the page again.

// The machine is the seam the CLI, the bench and the tests build on: everything
// it exports says what it is.
#![deny(missing_docs)]

mod arch;
pub mod bench;
mod block_hook;
mod block_start;
mod board;
mod code_sites;
mod core_mmu;
mod core_setup;
mod cpu;
pub mod dwarf;
mod error;
pub mod fdt;
mod hardware;
pub mod kernel;
pub mod lines;
pub mod machine;
pub mod memory;
mod observe;
pub mod probe;
pub mod record;
pub mod sched;
mod simmu;
mod slice_counter;
pub mod timer;
pub mod tlb;
mod translation;
pub mod uart;
pub mod unwind;

pub use arch::riscv64::time_at as riscv_time_at;
pub use kernel::{ImageSymbols, KernelError, KernelImage};

/// The instruction set a machine's cores run (chosen by its kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// ARMv8-A AArch64 on QEMU's `virt` board: PL011, GICv2, generic timer, PSCI.
    Aarch64,
    /// RV64GC in S-mode on QEMU's riscv64 `virt` board: NS16550A, PLIC, the host as the
    /// SBI firmware (TIME, IPI, RFENCE, HSM, SRST).
    Riscv64,
}

impl Isa {
    /// The name `--arch` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Aarch64 => "aarch64",
            Isa::Riscv64 => "riscv64",
        }
    }

    /// Physical address of the board's RAM.
    pub fn ram_base(self) -> u64 {
        self.arch().ram_base()
    }

    /// The implementation of this instruction set.
    pub(crate) fn arch(self) -> &'static dyn arch::Arch {
        match self {
            Isa::Aarch64 => &arch::aarch64::Aarch64,
            Isa::Riscv64 => &arch::riscv64::Riscv64,
        }
    }
}
pub use lines::{SourceLines, GUEST_SOURCE_ROOT};
pub use machine::{
    CpuReport, CpuState, EmuError, Machine, MachineConfig, MmuMode, RunEnd, RunOutcome, Snapshot,
    StopRequest, TakenException,
};
pub use memory::{GuestMemory, GuestRam, OutOfRam, RAM_BASE};
pub use probe::{CallStats, ProbeId};
pub use record::{EventSink, LinuxLocks, MaskSample, RecordOptions, Recording};
pub use sched::{SchedPoint, SchedView, Scheduler, SchedulerKind, Slice};
