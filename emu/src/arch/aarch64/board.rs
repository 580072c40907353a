//! QEMU's arm64 `virt` board as described to the guest: PSCI, the GICv2, the
//! architected timer, the PL011 and its clock.

use vm_fdt::FdtWriter;

use super::{gic, psci};
use crate::board::{Board, BoardKind, BusDevice, MmioAccess, Window};
use crate::fdt::BoardDescription;
use crate::uart;

/// QEMU's arm64 `virt` with a GICv2.
pub(crate) const VIRT: BoardKind = BoardKind {
    compatible: "linux,dummy-virt",
    model: "percpu-lab virt",
    interrupt_parent: Some(GIC_PHANDLE),
    cpus: arm_cpus,
    bus_node: None,
    devices: &[&Psci, &GicV2, &ArchTimer, &ApbClock, &Pl011],
};

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
/// Interrupt specifier types and flags (GIC binding).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;

/// The arm64 CPUs: Cortex-A72s started with PSCI.
fn arm_cpus(fdt: &mut FdtWriter, count: usize) -> Result<(), vm_fdt::Error> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for cpu in 0..count {
        let node = fdt.begin_node(&format!("cpu@{cpu}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,cortex-a72")?;
        fdt.property_u32("reg", psci::mpidr_of(cpu) as u32)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(node)?;
    }
    fdt.end_node(cpus)
}

/// PSCI 0.2 over HVC: the host plays the firmware.
struct Psci;

impl BusDevice for Psci {
    fn node_name(&self) -> String {
        "psci".into()
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string_list("compatible", vec!["arm,psci-0.2".into(), "arm,psci".into()])?;
        fdt.property_string("method", "hvc")?;
        fdt.property_u32("cpu_suspend", psci::CPU_SUSPEND)?;
        fdt.property_u32("cpu_off", psci::CPU_OFF)?;
        fdt.property_u32("cpu_on", psci::CPU_ON)?;
        fdt.property_u32("migrate", psci::MIGRATE)
    }
}

/// The GICv2: its distributor, then its CPU interface (banked per CPU).
struct GicV2;

const GIC_WINDOWS: [Window; 2] = [
    Window {
        base: gic::DIST_BASE,
        size: gic::REGION_SIZE,
        mapping: "mapping the GIC distributor",
    },
    Window {
        base: gic::CPU_IF_BASE,
        size: gic::REGION_SIZE,
        mapping: "mapping the GIC CPU interface",
    },
];

impl BusDevice for GicV2 {
    fn node_name(&self) -> String {
        format!("intc@{:x}", gic::DIST_BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string("compatible", "arm,cortex-a15-gic")?;
        fdt.property_u32("#interrupt-cells", 3)?;
        fdt.property_null("interrupt-controller")?;
        let reg: Vec<u64> = GIC_WINDOWS.iter().flat_map(|w| [w.base, w.size]).collect();
        fdt.property_array_u64("reg", &reg)?;
        fdt.property_phandle(GIC_PHANDLE)
    }
    fn windows(&self) -> &'static [Window] {
        &GIC_WINDOWS
    }
    fn read(&self, board: &mut Board, a: MmioAccess) -> u64 {
        match a.window {
            0 => board.gic.dist_read(a.cpu, a.offset, a.size),
            _ => board.gic.cpu_read(a.cpu, a.offset),
        }
    }
    /// A write (an SGI to itself, an EOI, an enable, the priority mask) may
    /// assert the writer's IRQ line: its block hook then looks at the next block.
    fn write(&self, board: &mut Board, a: MmioAccess, value: u64) -> Option<bool> {
        match a.window {
            0 => board.gic.dist_write(a.cpu, a.offset, a.size, value),
            _ => board.gic.cpu_write(a.cpu, a.offset, value),
        }
        Some(board.gic.irq_line(a.cpu))
    }
}

/// The architected timer: its PPIs, wired to every CPU.
struct ArchTimer;

impl BusDevice for ArchTimer {
    fn node_name(&self) -> String {
        "timer".into()
    }
    fn describe(
        &self,
        fdt: &mut FdtWriter,
        board: &BoardDescription<'_>,
    ) -> Result<(), vm_fdt::Error> {
        // PPI flags carry a mask of the CPUs the interrupt is wired to (GICv2 binding).
        let ppi_flags = (((1u32 << board.cpus) - 1) << 8) | IRQ_LEVEL_HIGH;
        fdt.property_string("compatible", "arm,armv8-timer")?;
        // Secure, non-secure physical, virtual, hypervisor: PPIs 13, 14, 11, 10.
        let ppis: Vec<u32> = [13, 14, 11, 10]
            .iter()
            .flat_map(|&p| [GIC_PPI, p, ppi_flags])
            .collect();
        fdt.property_array_u32("interrupts", &ppis)?;
        fdt.property_null("always-on")
    }
}

/// The 24 MHz clock the PL011 names.
struct ApbClock;

impl BusDevice for ApbClock {
    fn node_name(&self) -> String {
        "apb-pclk".into()
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string("compatible", "fixed-clock")?;
        fdt.property_u32("#clock-cells", 0)?;
        fdt.property_u32("clock-frequency", 24_000_000)?;
        fdt.property_string("clock-output-names", "clk24mhz")?;
        fdt.property_phandle(CLOCK_PHANDLE)
    }
}

/// The arm64 console, transmit side ([`Uart`]).
struct Pl011;

impl BusDevice for Pl011 {
    fn node_name(&self) -> String {
        format!("pl011@{:x}", uart::UART_BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string_list(
            "compatible",
            vec!["arm,pl011".into(), "arm,primecell".into()],
        )?;
        fdt.property_array_u64("reg", &[uart::UART_BASE, uart::UART_SIZE])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, 1, IRQ_LEVEL_HIGH])?;
        fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
        fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])
    }
    fn windows(&self) -> &'static [Window] {
        &[Window {
            base: uart::UART_BASE,
            size: uart::UART_SIZE,
            mapping: "mapping the UART",
        }]
    }
    fn read(&self, board: &mut Board, a: MmioAccess) -> u64 {
        board.uart.read(a.offset)
    }
    fn write(&self, board: &mut Board, a: MmioAccess, value: u64) -> Option<bool> {
        board.uart.write(a.cpu, a.offset, value);
        None
    }
    fn is_console(&self) -> bool {
        true
    }
}
