//! The console (the board's PL011 on arm64, its NS16550A on RISC-V): whole lines
//! under one spinlock.
//!
//! `println!` formats into a buffer on the caller's stack first and only then takes
//! `CONSOLE_LOCK` (irqsave) to push the bytes, so lines from different CPUs never
//! interleave and the lock is held for the UART writes alone.

use core::fmt::{self, Write};

use crate::sync::SpinLock;

#[cfg(target_arch = "aarch64")]
const UART_BASE: usize = 0x0900_0000;
#[cfg(target_arch = "aarch64")]
const UARTDR: usize = 0x00;
#[cfg(target_arch = "aarch64")]
const UARTFR: usize = 0x18;
#[cfg(target_arch = "aarch64")]
const UARTFR_TXFF: u32 = 1 << 5;

/// Longest line kept; longer lines are cut (and marked with `...`).
const LINE_MAX: usize = 240;

/// CONSOLE_LOCK: serialises whole lines on the UART. Taken irqsave (lines are printed
/// from IRQ handlers and the panic path too).
static CONSOLE_LOCK: SpinLock<()> = SpinLock::new("console_lock", ());

/// A line being formatted.
pub struct LineBuffer {
    bytes: [u8; LINE_MAX],
    len: usize,
    truncated: bool,
}

impl LineBuffer {
    /// CONTEXT: any (const).
    pub const fn new() -> Self {
        LineBuffer {
            bytes: [0; LINE_MAX],
            len: 0,
            truncated: false,
        }
    }

    /// CONTEXT: any.
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for LineBuffer {
    /// CONTEXT: any; the buffer is the caller's own.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE_MAX {
                self.truncated = true;
                break;
            }
            self.bytes[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// CONTEXT: CONSOLE_LOCK held, or the fatal paths (print_line_dying, print_raw).
#[cfg(target_arch = "aarch64")]
fn put_byte(b: u8) {
    let fr = (UART_BASE + UARTFR) as *const u32;
    let dr = (UART_BASE + UARTDR) as *mut u32;
    // SAFETY: the PL011 registers are identity-mapped device memory.
    unsafe {
        while fr.read_volatile() & UARTFR_TXFF != 0 {
            core::hint::spin_loop();
        }
        dr.write_volatile(b as u32);
    }
}

/// The NS16550A's transmit register and line status (LSR.THRE: it may take a byte).
#[cfg(target_arch = "riscv64")]
const NS16550_BASE: usize = 0x1000_0000;
#[cfg(target_arch = "riscv64")]
const NS16550_LSR: usize = 5;
#[cfg(target_arch = "riscv64")]
const NS16550_LSR_THRE: u8 = 1 << 5;

/// CONTEXT: CONSOLE_LOCK held, or the fatal paths (print_line_dying, print_raw).
#[cfg(target_arch = "riscv64")]
fn put_byte(b: u8) {
    let lsr = (NS16550_BASE + NS16550_LSR) as *const u8;
    let thr = NS16550_BASE as *mut u8;
    // SAFETY: the NS16550A registers are identity-mapped device memory.
    unsafe {
        while lsr.read_volatile() & NS16550_LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        thr.write_volatile(b);
    }
}

/// CONTEXT: CONSOLE_LOCK held, or print_line_dying giving up on it.
fn put_line(line: &LineBuffer) {
    for &b in line.as_bytes() {
        put_byte(b);
    }
    if line.truncated {
        for &b in b"..." {
            put_byte(b);
        }
    }
    put_byte(b'\n');
}

/// Prints one line.
///
/// CONTEXT: any, IRQ handlers included; takes and releases CONSOLE_LOCK (irqsave);
/// does not sleep. Must not be called with CONSOLE_LOCK held.
pub fn print_line(args: fmt::Arguments) {
    let mut line = LineBuffer::new();
    let _ = line.write_fmt(args);
    let _guard = CONSOLE_LOCK.lock_irqsave();
    put_line(&line);
}

/// How many times the panic path waits for another CPU to finish its line.
const PANIC_LOCK_SPINS: usize = 1_000_000;

/// Prints a line on the way down: takes CONSOLE_LOCK if it can get it soon, and
/// prints anyway otherwise (this CPU may be the holder).
///
/// CONTEXT: panic and fatal-exception paths only; IRQs masked.
pub fn print_line_dying(args: fmt::Arguments) {
    let mut line = LineBuffer::new();
    let _ = line.write_fmt(args);
    if CONSOLE_LOCK.raw().held_by_this_cpu() {
        put_line(&line);
        return;
    }
    for _ in 0..PANIC_LOCK_SPINS {
        if let Some(_guard) = CONSOLE_LOCK.try_lock() {
            put_line(&line);
            return;
        }
        core::hint::spin_loop();
    }
    put_line(&line);
}

/// Writes `text` straight to the UART, no lock, no formatting: for a panic inside
/// the panic path, where nothing else can be trusted.
///
/// CONTEXT: fatal paths only.
pub fn print_raw(text: &str) {
    for &b in text.as_bytes() {
        put_byte(b);
    }
}

/// `println!("...")`: one whole line on the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
