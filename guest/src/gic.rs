//! GICv2: distributor at 0x0800_0000, CPU interface at 0x0801_0000.
//!
//! The distributor is set up once by the boot CPU; each CPU sets up its banked
//! SGI/PPI state and its CPU interface. The SGI target for a logical CPU is its
//! CPU-interface mask, which each CPU reads from its banked ITARGETSR0.

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use crate::config::MAX_CPUS;
use crate::irq::IpiMessage;

const GICD: usize = 0x0800_0000;
const GICC: usize = 0x0801_0000;

const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_SGIR: usize = 0xf00;

const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;

/// Priority given to every interrupt we use (lower = more urgent).
const DEFAULT_PRIORITY: u32 = 0xa0;
/// Spurious interrupt IDs start here.
pub const SPURIOUS: u32 = 1020;

/// SGI numbers the kernel uses.
pub const SGI_RESCHEDULE: u32 = 0;
pub const SGI_CALL_FUNCTION: u32 = 1;
// The host records an IPI as taken on the SGI of its message's number
// (emu/src/record/abi.rs).
const _: () = assert!(
    SGI_RESCHEDULE == IpiMessage::Reschedule as u32
        && SGI_CALL_FUNCTION == IpiMessage::CallFunction as u32
);
/// The virtual timer's PPI.
pub const PPI_VIRTUAL_TIMER: u32 = 27;

/// CPU-interface mask (bit per interface) of each logical CPU; set by the CPU itself.
static CPU_INTERFACE_MASK: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

/// CONTEXT: any; device register access, no lock needed (banked or boot-only state).
fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: GIC registers, identity-mapped as device memory.
    unsafe { ((base + offset) as *const u32).read_volatile() }
}

/// CONTEXT: any; as `read`.
fn write(base: usize, offset: usize, value: u32) {
    // SAFETY: as above.
    unsafe { ((base + offset) as *mut u32).write_volatile(value) }
}

/// Disables every shared interrupt, then enables the distributor.
///
/// CONTEXT: boot CPU, once, IRQs masked, before other CPUs start.
pub fn init_distributor() {
    write(GICD, GICD_CTLR, 0);
    let lines = 32 * ((read(GICD, GICD_TYPER) & 0x1f) as usize + 1);
    for first in (32..lines).step_by(32) {
        write(GICD, GICD_ICENABLER + first / 8, u32::MAX);
    }
    write(GICD, GICD_CTLR, 1);
}

/// Sets up this CPU's banked SGIs/PPIs and its CPU interface: SGIs for IPIs and the
/// virtual timer enabled, everything else off.
///
/// CONTEXT: each CPU once at bring-up, IRQs masked.
pub fn init_this_cpu(cpu: usize, mpidr: u64) {
    write(GICD, GICD_ICENABLER, u32::MAX);
    let priority = DEFAULT_PRIORITY * 0x0101_0101;
    for word in 0..8 {
        write(GICD, GICD_IPRIORITYR + word * 4, priority);
    }
    write(
        GICD,
        GICD_ISENABLER,
        (1 << SGI_RESCHEDULE) | (1 << SGI_CALL_FUNCTION) | (1 << PPI_VIRTUAL_TIMER),
    );
    // ITARGETSR0..7 read back this CPU's own interface mask in every byte; a
    // uniprocessor GIC may read zero, where Aff0 numbering is the only sensible one.
    let mut mask = 0u32;
    for word in 0..8 {
        mask |= read(GICD, GICD_ITARGETSR + word * 4);
    }
    let mask = (mask | (mask >> 8) | (mask >> 16) | (mask >> 24)) as u8;
    let mask = if mask != 0 { mask } else { 1 << (mpidr & 7) };
    CPU_INTERFACE_MASK[cpu].store(mask, Relaxed);
    write(GICC, GICC_PMR, 0xf0);
    write(GICC, GICC_CTLR, 1);
}

/// Sends SGI `sgi` to logical CPU `cpu`. Stores before this call are visible to the
/// target's handler.
///
/// CONTEXT: any; does not sleep.
pub fn send_sgi(cpu: usize, sgi: u32) {
    let targets = CPU_INTERFACE_MASK[cpu].load(Relaxed) as u32;
    crate::arch::dsb_ishst();
    write(GICD, GICD_SGIR, (targets << 16) | sgi);
}

/// Acknowledges the highest-priority pending interrupt: returns the raw IAR value
/// (bits 9:0 = interrupt ID, 12:10 = source CPU of an SGI).
///
/// CONTEXT: IRQ handler.
pub fn acknowledge() -> u32 {
    read(GICC, GICC_IAR)
}

/// Signals the end of handling for an IAR value from `acknowledge`.
///
/// CONTEXT: IRQ handler.
pub fn end_of_interrupt(iar: u32) {
    write(GICC, GICC_EOIR, iar);
}

/// Sends IPI `msg` (an SGI) to logical CPU `cpu`.
///
/// CONTEXT: any; does not sleep.
#[inline(always)]
pub fn send_ipi(cpu: usize, msg: IpiMessage) {
    let sgi = match msg {
        IpiMessage::Reschedule => SGI_RESCHEDULE,
        IpiMessage::CallFunction => SGI_CALL_FUNCTION,
    };
    send_sgi(cpu, sgi);
}
