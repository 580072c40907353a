//! QEMU's riscv64 `virt` board as described to the guest.

use vm_fdt::FdtWriter;

use super::hart;
use crate::board::{Board, BoardKind, BusDevice, MmioAccess, Window};
use crate::fdt::BoardDescription;
use crate::uart;

/// QEMU's riscv64 `virt`, as far as the guest reads it (the host is the SBI
/// firmware, so no CLINT or PLIC is described).
pub(crate) const VIRT: BoardKind = BoardKind {
    compatible: "riscv-virtio",
    model: "percpu-lab riscv-virtio",
    interrupt_parent: None,
    cpus: riscv_harts,
    bus_node: Some("soc"),
    devices: &[&Ns16550],
};

/// The harts, with the timebase and each hart's local interrupt controller.
fn riscv_harts(fdt: &mut FdtWriter, count: usize) -> Result<(), vm_fdt::Error> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", hart::TIMEBASE_HZ as u32)?;
    for hart in 0..count {
        let node = fdt.begin_node(&format!("cpu@{hart}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", hart as u32)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("riscv,isa", "rv64imafd")?;
        fdt.property_string("mmu-type", "riscv,sv39")?;
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_u32("phandle", 1 + hart as u32)?;
        fdt.end_node(intc)?;
        fdt.end_node(node)?;
    }
    fdt.end_node(cpus)
}

/// The RISC-V console, an NS16550A: transmit holding register at 0, line status
/// at 5 (always ready to take a byte); its lines go to the same [`Uart`].
struct Ns16550;

impl Ns16550 {
    const THR: u64 = 0;
    const LSR: u64 = 5;
    /// Transmit holding register empty, transmitter empty.
    const LSR_THRE_TEMT: u64 = 0x60;
}

impl BusDevice for Ns16550 {
    fn node_name(&self) -> String {
        format!("serial@{:x}", hart::UART_BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string("compatible", "ns16550a")?;
        fdt.property_array_u64("reg", &[hart::UART_BASE, hart::UART_SIZE])?;
        fdt.property_u32("clock-frequency", 3_686_400)
    }
    fn windows(&self) -> &'static [Window] {
        &[Window {
            base: hart::UART_BASE,
            size: hart::UART_SIZE,
            mapping: "mapping the UART",
        }]
    }
    fn read(&self, _: &mut Board, a: MmioAccess) -> u64 {
        if a.offset == Self::LSR {
            Self::LSR_THRE_TEMT
        } else {
            0
        }
    }
    fn write(&self, board: &mut Board, a: MmioAccess, value: u64) -> Option<bool> {
        if a.offset == Self::THR {
            board.uart.write(a.cpu, uart::UARTDR, value);
        }
        None
    }
    fn is_console(&self) -> bool {
        true
    }
}
