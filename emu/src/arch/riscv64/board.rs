//! QEMU's riscv64 `virt` board as described to the guest.

use vm_fdt::FdtWriter;

use super::{hart, plic};
use crate::board::{Board, BoardKind, BusDevice, MmioAccess, Window};
use crate::fdt::BoardDescription;
use crate::uart;

/// QEMU's riscv64 `virt`, as far as the guest reads it.
pub(crate) const VIRT: BoardKind = BoardKind {
    compatible: "riscv-virtio",
    model: "percpu-lab riscv-virtio",
    interrupt_parent: None,
    cpus: riscv_harts,
    bus_node: Some("soc"),
    devices: &[&Ns16550, &PlicDevice, &Clint],
};

/// Each hart's local interrupt controller (`cpu@N/interrupt-controller`).
fn intc_phandle(hart: usize) -> u32 {
    1 + hart as u32
}
/// Above every hart's.
const PLIC_PHANDLE: u32 = 0x100;
/// The UART's source on the PLIC, as on QEMU.
const UART_IRQ: u32 = 10;

/// `interrupts-extended`: for each hart, its local controller and the cause of
/// each of `causes` (machine/supervisor software 3/1, timer 7/5, external 11/9).
fn per_hart_interrupts(
    fdt: &mut FdtWriter,
    harts: usize,
    causes: &[u32],
) -> Result<(), vm_fdt::Error> {
    let cells: Vec<u32> = (0..harts)
        .flat_map(|hart| causes.iter().flat_map(move |&c| [intc_phandle(hart), c]))
        .collect();
    fdt.property_array_u32("interrupts-extended", &cells)
}

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
        fdt.property_u32("phandle", intc_phandle(hart))?;
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
        fdt.property_u32("interrupts", UART_IRQ)?;
        fdt.property_u32("interrupt-parent", PLIC_PHANDLE)?;
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

/// The PLIC ([`plic`]): its registers answer, no source is wired.
struct PlicDevice;

impl BusDevice for PlicDevice {
    fn node_name(&self) -> String {
        format!("plic@{:x}", plic::BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, b: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_phandle(PLIC_PHANDLE)?;
        fdt.property_u32("riscv,ndev", plic::SOURCES)?;
        fdt.property_array_u64("reg", &[plic::BASE, plic::SIZE])?;
        // Machine then supervisor external interrupt, as QEMU lists them.
        per_hart_interrupts(fdt, b.cpus, &[11, 9])?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_string_list(
            "compatible",
            vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
        )?;
        fdt.property_u32("#address-cells", 0)?;
        fdt.property_u32("#interrupt-cells", 1)
    }
    fn windows(&self) -> &'static [Window] {
        &[Window {
            base: plic::BASE,
            size: plic::SIZE,
            mapping: "mapping the PLIC",
        }]
    }
    fn read(&self, board: &mut Board, a: MmioAccess) -> u64 {
        board.plic.read(a.offset)
    }
    fn write(&self, board: &mut Board, a: MmioAccess, value: u64) -> Option<bool> {
        board.plic.write(a.offset, value);
        None
    }
}

/// The CLINT: each hart's `mtimecmp` and `msip`. It belongs to the firmware,
/// which the host plays: the board's per-hart timers are its `mtimecmp` (set by
/// SBI `set_timer`) and SBI `send_ipi` raises the supervisor software interrupt
/// in its stead. On QEMU, OpenSBI's PMP keeps S-mode out of it; here it is not
/// mapped, so an S-mode access ends the run as a fault.
struct Clint;

impl Clint {
    const BASE: u64 = 0x0200_0000;
    const SIZE: u64 = 0x1_0000;
}

impl BusDevice for Clint {
    fn node_name(&self) -> String {
        format!("clint@{:x}", Self::BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, b: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        // Machine software and timer interrupts, as QEMU lists them.
        per_hart_interrupts(fdt, b.cpus, &[3, 7])?;
        fdt.property_array_u64("reg", &[Self::BASE, Self::SIZE])?;
        fdt.property_string_list(
            "compatible",
            vec!["sifive,clint0".into(), "riscv,clint0".into()],
        )
    }
    fn firmware_only(&self) -> bool {
        true
    }
}
