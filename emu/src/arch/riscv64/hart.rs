//! A RISC-V hart as the host drives it, on QEMU's riscv64 `virt` (RAM at
//! 0x8000_0000, an NS16550A, the device tree in a1 and the hart id in a0) with the
//! host as the SBI firmware (TIME, IPI, RFENCE, HSM, SRST).
//!
//! Unicorn 2.1.4 on RISC-V (`../shared/DESIGN.md`, checked again here):
//! - Exceptions reach the INTR hook (ecall 8, illegal instruction 2, page faults
//!   12/13/15) with the PC past the faulting instruction, and are never vectored;
//!   the host enters the trap (sepc, scause, stval, sstatus, pc = stvec).
//! - Interrupts are vectored by QEMU itself once a pending bit of `mip` is set,
//!   enabled in `sie`, delegated (`mideleg`) and `sstatus.SIE` allows: QEMU owns
//!   interrupt entry here. The host only raises and lowers `mip.STIP` (the
//!   timer, at the exact instruction its deadline falls on) and `mip.SSIP` (an
//!   SBI IPI); the guest clears SSIP itself. QEMU checks for interrupts between
//!   translation blocks and every CSR write ends its block, so an unmask takes
//!   effect right after the instruction that did it, as on arm64.
//! - No `time` CSR: `rdtime` traps as illegal; the INTR hook emulates it in place
//!   (the slice goes on).
//! - Host access to a CSR is gated by the current privilege: `mip` and `mideleg`
//!   are written at M, then the hart goes back to S.
//! - The guest is built without the C extension, so every instruction is 4 bytes
//!   and a block's instruction count is its size / 4, as on arm64.

use unicorn_engine::{Arch, Mode, RegisterRISCV, Unicorn};

use crate::error::{uc_err, EmuError};

/// Physical address of RAM on QEMU's riscv64 `virt`.
pub const RAM_BASE: u64 = 0x8000_0000;
/// The NS16550A.
pub const UART_BASE: u64 = 0x1000_0000;
pub const UART_SIZE: u64 = 0x1000;
/// The device tree's `timebase-frequency`: the `time` CSR counts at 10 MHz.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// `mip`/`sip` bits.
pub const SSIP: u64 = 1 << 1;
pub const STIP: u64 = 1 << 5;
const SEIP: u64 = 1 << 9;
/// `sstatus` bits.
const SSTATUS_SIE: u64 = 1 << 1;
const SSTATUS_SPIE: u64 = 1 << 5;
const SSTATUS_SPP: u64 = 1 << 8;

const PRIV_U: u64 = 0;
const PRIV_S: u64 = 1;
const PRIV_M: u64 = 3;

/// The machine clock runs at the arm64 counter's 62.5 MHz; `time` at 10 MHz.
const CLOCK_PER_TIME: (u64, u64) = (25, 4);

/// The `time` CSR at machine-clock tick `clock`.
pub fn time_at(clock: u64) -> u64 {
    clock / CLOCK_PER_TIME.0 * CLOCK_PER_TIME.1
        + clock % CLOCK_PER_TIME.0 * CLOCK_PER_TIME.1 / CLOCK_PER_TIME.0
}

/// The first machine-clock tick at which `time` reaches `time`.
pub fn clock_at_time(time: u64) -> u64 {
    let (num, den) = CLOCK_PER_TIME;
    let whole = (time / den).saturating_mul(num);
    whole.saturating_add((time % den * num).div_ceil(den))
}

/// A new RV64 core (Unicorn's default model: RV64GC with S-mode and Sv39).
pub(crate) fn new_engine() -> Result<Unicorn<'static, ()>, EmuError> {
    let mut uc = Unicorn::new(Arch::RISCV, Mode::RISCV64).map_err(uc_err("creating a core"))?;
    // The timer and software interrupts go to S-mode, where QEMU vectors them.
    with_priv(&mut uc, PRIV_M, |uc| {
        uc.reg_write(RegisterRISCV::MIDELEG, SSIP | STIP | SEIP)
    })
    .map_err(uc_err("delegating interrupts"))?;
    Ok(uc)
}

/// Runs `f` with the hart at privilege `level`, then puts it back in S-mode.
fn with_priv<T>(
    uc: &mut Unicorn<'static, ()>,
    level: u64,
    f: impl FnOnce(&mut Unicorn<'static, ()>) -> Result<T, unicorn_engine::uc_error>,
) -> Result<T, unicorn_engine::uc_error> {
    uc.reg_write(RegisterRISCV::PRIV, level)?;
    let result = f(uc);
    uc.reg_write(RegisterRISCV::PRIV, PRIV_S)?;
    result
}

/// Starts a hart at `entry` in S-mode, MMU off, interrupts masked, with a0/a1.
pub(crate) fn power_on(
    uc: &mut Unicorn<'static, ()>,
    entry: u64,
    a0: u64,
    a1: u64,
) -> Result<(), unicorn_engine::uc_error> {
    uc.reg_write(RegisterRISCV::PRIV, PRIV_S)?;
    uc.reg_write(RegisterRISCV::SATP, 0)?;
    let sstatus = uc.reg_read(RegisterRISCV::SSTATUS)?;
    uc.reg_write(RegisterRISCV::SSTATUS, sstatus & !SSTATUS_SIE)?;
    uc.reg_write(RegisterRISCV::A0, a0)?;
    uc.reg_write(RegisterRISCV::A1, a1)?;
    uc.reg_write(RegisterRISCV::PC, entry)?;
    uc.ctl_flush_tlb()
}

/// Raises or lowers the pending bit `bit` of `mip`.
pub(crate) fn set_pending(uc: &mut Unicorn<'static, ()>, bit: u64, high: bool) {
    let _ = with_priv(uc, PRIV_M, |uc| {
        let mip = uc.reg_read(RegisterRISCV::MIP)?;
        let mip = if high { mip | bit } else { mip & !bit };
        uc.reg_write(RegisterRISCV::MIP, mip)
    });
}

/// Whether an interrupt is pending and enabled in `sie` (what ends a WFI, even
/// with `sstatus.SIE` clear).
pub(crate) fn interrupt_pending(uc: &Unicorn<'static, ()>) -> bool {
    let read = |reg| uc.reg_read(reg).unwrap_or(0);
    read(RegisterRISCV::SIP) & read(RegisterRISCV::SIE) != 0
}

/// Whether the trap being entered is an interrupt (`scause`'s top bit).
pub(crate) fn interrupt_entered<D>(uc: &Unicorn<'_, D>) -> bool {
    uc.reg_read(RegisterRISCV::SCAUSE)
        .is_ok_and(|cause| cause >> 63 == 1)
}

/// The trap vector's address (`stvec`, direct mode), or `u64::MAX` with none.
pub(crate) fn trap_vector(uc: &Unicorn<'static, ()>) -> u64 {
    match uc.reg_read(RegisterRISCV::STVEC).map(|v| v & !3) {
        Ok(0) | Err(_) => u64::MAX,
        Ok(vector) => vector,
    }
}

/// The frame pointer, s0.
pub(crate) fn frame_pointer(uc: &Unicorn<'static, ()>) -> u64 {
    uc.reg_read(RegisterRISCV::X8).unwrap_or(0)
}

/// Register `x{n}`.
pub(crate) fn xreg<D>(uc: &Unicorn<'_, D>, n: u32) -> u64 {
    if n == 0 {
        return 0;
    }
    uc.reg_read(RegisterRISCV::X0 as i32 + n as i32)
        .unwrap_or(0)
}

/// Sets register `x{n}` (x0 stays zero).
pub(crate) fn set_xreg<D>(uc: &mut Unicorn<'_, D>, n: u32, value: u64) {
    if n != 0 {
        let _ = uc.reg_write(RegisterRISCV::X0 as i32 + n as i32, value);
    }
}

/// `wfi`.
pub(crate) const WFI: u32 = 0x1050_0073;

/// The destination register of `rdtime rd` (`csrrs rd, time, x0`).
pub(crate) fn rdtime_destination(word: u32) -> Option<u32> {
    const CSRRS_TIME_X0: u32 = 0xc010_2073;
    (word & !(0x1f << 7) == CSRRS_TIME_X0).then_some((word >> 7) & 0x1f)
}

/// The address a load or store instruction accesses (for `stval`).
pub(crate) fn access_address(uc: &Unicorn<'_, ()>, word: u32) -> Option<u64> {
    let rs1 = (word >> 15) & 0x1f;
    let base = xreg(uc, rs1);
    let offset = match word & 0x7f {
        0x03 => (word as i32 >> 20) as i64, // loads
        0x23 => (((word as i32 >> 25) << 5) | ((word >> 7) & 0x1f) as i32) as i64, // stores
        0x2f => 0,                          // atomics
        _ => return None,
    };
    Some(base.wrapping_add(offset as u64))
}

/// The exception names of `scause` codes.
pub(crate) fn exception_name(cause: u32) -> &'static str {
    match cause {
        0 => "instruction address misaligned",
        1 => "instruction access fault",
        2 => "illegal instruction",
        3 => "breakpoint",
        4 => "load address misaligned",
        5 => "load access fault",
        6 => "store address misaligned",
        7 => "store access fault",
        8 | 9 => "environment call",
        12 => "instruction page fault",
        13 => "load page fault",
        15 => "store page fault",
        _ => "exception",
    }
}

/// Enters the S-mode trap for exception `cause` at `epc` with `tval`: what the
/// hardware does and Unicorn leaves to the host. Returns the handler's address,
/// or `None` when there is no handler (`stvec` = 0).
pub(crate) fn enter_trap(
    uc: &mut Unicorn<'static, ()>,
    cause: u64,
    epc: u64,
    tval: u64,
) -> Result<Option<u64>, unicorn_engine::uc_error> {
    // The trap is taken in S-mode, from whichever mode the hart was in. The
    // mode goes first: Unicorn refuses a CSR access the current mode may not
    // make, and a refused read leaves its value undefined (from U-mode, `stvec`
    // read as a host address).
    let previous = uc.reg_read(RegisterRISCV::PRIV)?;
    uc.reg_write(RegisterRISCV::PRIV, PRIV_S)?;
    let stvec = uc.reg_read(RegisterRISCV::STVEC)? & !3;
    if stvec == 0 {
        return Ok(None);
    }
    let sstatus = uc.reg_read(RegisterRISCV::SSTATUS)?;
    let spie = if sstatus & SSTATUS_SIE != 0 {
        SSTATUS_SPIE
    } else {
        0
    };
    let spp = if previous == PRIV_U { 0 } else { SSTATUS_SPP };
    let sstatus = (sstatus & !(SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_SPP)) | spie | spp;
    uc.reg_write(RegisterRISCV::SSTATUS, sstatus)?;
    uc.reg_write(RegisterRISCV::SEPC, epc)?;
    uc.reg_write(RegisterRISCV::SCAUSE, cause)?;
    uc.reg_write(RegisterRISCV::STVAL, tval)?;
    uc.reg_write(RegisterRISCV::PC, stvec)?;
    Ok(Some(stvec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_runs_at_ten_of_the_clocks_sixty_two_and_a_half_megahertz() {
        assert_eq!(time_at(0), 0);
        assert_eq!(time_at(25), 4);
        assert_eq!(time_at(62_500_000), TIMEBASE_HZ);
        for t in [0, 1, 3, 4, 5, 1000, 10_000_001] {
            let c = clock_at_time(t);
            assert!(time_at(c) >= t && (c == 0 || time_at(c - 1) < t), "{t}");
        }
        assert_eq!(clock_at_time(u64::MAX), u64::MAX);
    }

    #[test]
    fn rdtime_decodes() {
        // rdtime a5 = csrrs a5, time, zero
        assert_eq!(rdtime_destination(0xc01027f3), Some(15));
        assert_eq!(rdtime_destination(0xc00027f3), None); // rdcycle
    }

    /// A trap taken in U-mode enters S-mode at `stvec` with `sstatus.SPP` clear
    /// (so the handler's `sret` goes back to U), whereas one taken in S-mode
    /// keeps SPP set. Reading `stvec` in U-mode would give an undefined value.
    #[test]
    fn a_trap_from_user_mode_enters_supervisor_mode_at_the_vector() {
        const VECTOR: u64 = 0x8020_0100;
        for (from, spp) in [(PRIV_U, 0), (PRIV_S, SSTATUS_SPP)] {
            let mut uc = new_engine().unwrap();
            uc.reg_write(RegisterRISCV::STVEC, VECTOR).unwrap();
            let sstatus = uc.reg_read(RegisterRISCV::SSTATUS).unwrap();
            uc.reg_write(RegisterRISCV::SSTATUS, sstatus | SSTATUS_SIE)
                .unwrap();
            uc.reg_write(RegisterRISCV::PRIV, from).unwrap();
            let handler = enter_trap(&mut uc, 2, 0x1000, 0x73).unwrap();
            assert_eq!(handler, Some(VECTOR), "from {from}");
            assert_eq!(uc.reg_read(RegisterRISCV::PRIV).unwrap(), PRIV_S);
            let sstatus = uc.reg_read(RegisterRISCV::SSTATUS).unwrap();
            assert_eq!(sstatus & SSTATUS_SPP, spp, "from {from}");
            assert_eq!(sstatus & (SSTATUS_SIE | SSTATUS_SPIE), SSTATUS_SPIE);
            assert_eq!(uc.reg_read(RegisterRISCV::SEPC).unwrap(), 0x1000);
            assert_eq!(uc.reg_read(RegisterRISCV::PC).unwrap(), VECTOR);
        }
    }
}
