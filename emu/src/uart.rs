//! PL011 UART, transmit side only: bytes are collected per CPU and each finished line
//! is queued for the host's console callback with the CPU that wrote it.

/// Where the `virt` board has it.
pub const UART_BASE: u64 = 0x0900_0000;
/// Its register window.
pub const UART_SIZE: u64 = 0x1000;

/// The data register: a store transmits its low byte.
pub const UARTDR: u64 = 0x00;
const UARTFR: u64 = 0x18;
/// Flag register: transmit FIFO empty, receive FIFO empty (never busy, never full).
const FR_IDLE: u64 = 0x90;
/// Peripheral ID registers, so a probing driver recognises a PL011.
const PERIPH_ID: [(u64, u64); 8] = [
    (0xfe0, 0x11),
    (0xfe4, 0x10),
    (0xfe8, 0x14),
    (0xfec, 0x00),
    (0xff0, 0x0d),
    (0xff4, 0xf0),
    (0xff8, 0x05),
    (0xffc, 0xb1),
];

/// The UART's state: each CPU's line so far, and the lines finished.
#[derive(Debug, Clone, Default)]
pub struct Uart {
    partial: Vec<Vec<u8>>,
    finished: Vec<(usize, String)>,
}

impl Uart {
    /// A UART written by `ncpus` CPUs.
    pub fn new(ncpus: usize) -> Self {
        Self {
            partial: vec![Vec::new(); ncpus],
            finished: Vec::new(),
        }
    }

    /// A load of the register at `offset`.
    pub fn read(&self, offset: u64) -> u64 {
        match offset {
            UARTFR => FR_IDLE,
            _ => PERIPH_ID
                .iter()
                .find(|&&(o, _)| o == offset)
                .map_or(0, |&(_, v)| v),
        }
    }

    /// A store by `cpu` of `value` to the register at `offset`.
    pub fn write(&mut self, cpu: usize, offset: u64, value: u64) {
        if offset != UARTDR {
            return; // control registers: nothing to model
        }
        match value as u8 {
            b'\n' => {
                let line = std::mem::take(&mut self.partial[cpu]);
                self.finished
                    .push((cpu, String::from_utf8_lossy(&line).into_owned()));
            }
            b'\r' => {}
            byte => self.partial[cpu].push(byte),
        }
    }

    /// Finished lines, oldest first.
    pub fn take_lines(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.finished)
    }

    /// Ends every unfinished line (at the end of a run).
    pub fn flush_partial(&mut self) {
        for cpu in 0..self.partial.len() {
            if !self.partial[cpu].is_empty() {
                self.write(cpu, UARTDR, b'\n' as u64);
            }
        }
    }
}
