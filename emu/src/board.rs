//! The board: the state every core's hooks share (devices and time), and the
//! board's devices, each registered once.
//!
//! A registration ([`BusDevice`]) says where a device's MMIO windows lie, how a
//! guest load or store there reaches the device's state on the [`Board`], and
//! which device-tree node describes it. Each core maps the windows of its
//! board's list and [`device_tree`] writes the nodes of the same list, so no
//! device is mapped without being described, nor described where it does not
//! answer. A new device is a type implementing [`BusDevice`] and one entry in a
//! board's list ([`BoardKind::of`]).

use vm_fdt::FdtWriter;

use crate::fdt::{self, BoardDescription};
use crate::gic::{self, Gic};
use crate::timer::{VirtualClock, VirtualTimer, VTIMER_INTID};
use crate::uart::{self, Uart};
use crate::{psci, riscv, Isa};

/// What a slice's block hook watches for on its core's IRQ line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IrqWatch {
    /// Instructions into the slice after which the core's virtual timer fires.
    pub(crate) timer_fires_after: Option<u64>,
    /// The line is asserted as the slice starts (with PSTATE.I set, or the IRQ would
    /// have been taken).
    pub(crate) line_high: bool,
}

/// Devices and time, shared by every core's hooks.
#[derive(Clone)]
pub(crate) struct Board {
    pub(crate) gic: Gic,
    pub(crate) uart: Uart,
    pub(crate) timers: Vec<VirtualTimer>,
    pub(crate) clock: VirtualClock,
    /// Cores running during the current slice (the clock's divisor).
    pub(crate) running: u64,
    /// Each CPU's event register (WFE/SEV, events.rs).
    pub(crate) events: Vec<bool>,
    /// The cores' instruction set: on RISC-V QEMU delivers interrupts itself and
    /// the GIC is not on the board.
    pub(crate) isa: Isa,
}

impl Board {
    /// Which board this is.
    pub(crate) fn kind(&self) -> &'static BoardKind {
        BoardKind::of(self.isa)
    }

    /// The time seen by an instruction of the running slice after `retired`
    /// instructions of it.
    pub(crate) fn now_at(&self, retired: u64) -> u64 {
        self.clock.now_during_slice(retired, self.running)
    }

    pub(crate) fn update_timer_lines(&mut self) {
        let now = self.clock.now();
        for cpu in 0..self.timers.len() {
            self.update_timer_line(cpu, now);
        }
    }

    /// Sets `cpu`'s timer PPI to the timer's output at time `now`, and returns it.
    pub(crate) fn update_timer_line(&mut self, cpu: usize, now: u64) -> bool {
        let level = self.timers[cpu].irq_level(now);
        self.gic.set_ppi_level(cpu, VTIMER_INTID, level);
        level
    }

    /// The earliest deadline among the timers of CPUs other than `cpu`.
    pub(crate) fn next_deadline_except(&self, cpu: usize) -> Option<u64> {
        let now = self.clock.now();
        let others = self.timers.iter().enumerate().filter(|&(c, _)| c != cpu);
        others.filter_map(|(_, t)| t.deadline(now)).min()
    }

    /// Moves virtual time to `cpu`'s timer deadline, if that timer is armed and
    /// its deadline still ahead (a scheduler's timer arrival).
    pub(crate) fn fire_timer_now(&mut self, cpu: usize) {
        if let Some(deadline) = self
            .timers
            .get(cpu)
            .and_then(|t| t.deadline(self.clock.now()))
        {
            self.clock.skip_to(deadline);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let now = self.clock.now();
        self.timers.iter().filter_map(|t| t.deadline(now)).min()
    }

    /// What the block hook of `cpu` watches for in a slice that starts now with
    /// `running` CPUs.
    pub(crate) fn irq_watch(&self, cpu: usize, running: u64) -> IrqWatch {
        let deadline = self.timers[cpu].deadline(self.clock.now());
        IrqWatch {
            timer_fires_after: deadline.map(|t| self.clock.insns_until(t, running)),
            line_high: self.isa == Isa::Aarch64 && self.gic.irq_line(cpu),
        }
    }
}

/// A range of guest-physical addresses a device answers at.
pub(crate) struct Window {
    pub(crate) base: u64,
    pub(crate) size: u64,
    /// What mapping it is called in an error.
    pub(crate) mapping: &'static str,
}

/// One guest load or store in a device's window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MmioAccess {
    /// The CPU that made it.
    pub(crate) cpu: usize,
    /// Which of the device's [`BusDevice::windows`].
    pub(crate) window: usize,
    /// The offset into that window.
    pub(crate) offset: u64,
    /// Bytes accessed.
    pub(crate) size: usize,
}

/// A device of a board: its device-tree node and, if it has any, its MMIO
/// windows and how accesses there reach its state on the [`Board`]. A device
/// without windows (firmware, system-register timers, fixed clocks) is only
/// described.
pub(crate) trait BusDevice: Sync {
    /// Its node's name (`name@unit-address` for a device with windows).
    fn node_name(&self) -> String;
    /// Writes the properties of its node (the node is open).
    fn describe(
        &self,
        fdt: &mut FdtWriter,
        board: &BoardDescription<'_>,
    ) -> Result<(), vm_fdt::Error>;
    /// Its MMIO windows, in the order of its `reg` property.
    fn windows(&self) -> &'static [Window] {
        &[]
    }
    /// A guest load; only called for an access inside [`Self::windows`].
    fn read(&self, _board: &mut Board, _access: MmioAccess) -> u64 {
        0
    }
    /// A guest store; returns the writer's IRQ line after it when the device
    /// drives that line (an interrupt controller).
    fn write(&self, _board: &mut Board, _access: MmioAccess, _value: u64) -> Option<bool> {
        None
    }
    /// Whether `/chosen/stdout-path` names it.
    fn is_console(&self) -> bool {
        false
    }
}

/// What tells the boards apart: the root node, the CPUs and the devices.
pub(crate) struct BoardKind {
    compatible: &'static str,
    model: &'static str,
    /// The root's `interrupt-parent`, where every device's interrupts go.
    interrupt_parent: Option<u32>,
    /// Writes `/cpus`.
    cpus: fn(&mut FdtWriter, usize) -> Result<(), vm_fdt::Error>,
    /// The `simple-bus` node the devices sit under (`None`: the root).
    bus_node: Option<&'static str>,
    /// The devices, in device-tree order.
    pub(crate) devices: &'static [&'static dyn BusDevice],
}

/// QEMU's arm64 `virt` with a GICv2.
const AARCH64_VIRT: BoardKind = BoardKind {
    compatible: "linux,dummy-virt",
    model: "percpu-lab virt",
    interrupt_parent: Some(GIC_PHANDLE),
    cpus: arm_cpus,
    bus_node: None,
    devices: &[&Psci, &GicV2, &ArchTimer, &ApbClock, &Pl011],
};

/// QEMU's riscv64 `virt`, as far as the guest reads it (the host is the SBI
/// firmware, so no CLINT or PLIC is described).
const RISCV64_VIRT: BoardKind = BoardKind {
    compatible: "riscv-virtio",
    model: "percpu-lab riscv-virtio",
    interrupt_parent: None,
    cpus: riscv_harts,
    bus_node: Some("soc"),
    devices: &[&Ns16550],
};

impl BoardKind {
    pub(crate) fn of(isa: Isa) -> &'static BoardKind {
        match isa {
            Isa::Aarch64 => &AARCH64_VIRT,
            Isa::Riscv64 => &RISCV64_VIRT,
        }
    }
}

/// The flattened device tree handed to the boot CPU: the board described the
/// way QEMU's `virt` describes itself, its devices from the board's list.
pub(crate) fn device_tree(
    isa: Isa,
    board: &BoardDescription<'_>,
) -> Result<Vec<u8>, vm_fdt::Error> {
    let kind = BoardKind::of(isa);
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", kind.compatible)?;
    fdt.property_string("model", kind.model)?;
    if let Some(parent) = kind.interrupt_parent {
        fdt.property_u32("interrupt-parent", parent)?;
    }
    let parent_path = kind
        .bus_node
        .map_or(String::new(), |node| format!("/{node}"));
    let console = kind.devices.iter().find(|d| d.is_console());
    let stdout_path = console.map_or(String::new(), |c| {
        format!("{parent_path}/{}", c.node_name())
    });
    fdt::chosen_and_memory(&mut fdt, board, &stdout_path)?;
    (kind.cpus)(&mut fdt, board.cpus)?;
    let bus = match kind.bus_node {
        Some(name) => {
            let node = fdt.begin_node(name)?;
            fdt.property_u32("#address-cells", 2)?;
            fdt.property_u32("#size-cells", 2)?;
            fdt.property_string("compatible", "simple-bus")?;
            fdt.property_null("ranges")?;
            Some(node)
        }
        None => None,
    };
    for device in kind.devices {
        let node = fdt.begin_node(&device.node_name())?;
        device.describe(&mut fdt, board)?;
        fdt.end_node(node)?;
    }
    if let Some(node) = bus {
        fdt.end_node(node)?;
    }
    fdt.end_node(root)?;
    fdt.finish()
}

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

/// The harts, with the timebase and each hart's local interrupt controller.
fn riscv_harts(fdt: &mut FdtWriter, count: usize) -> Result<(), vm_fdt::Error> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", riscv::TIMEBASE_HZ as u32)?;
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
        format!("serial@{:x}", riscv::UART_BASE)
    }
    fn describe(&self, fdt: &mut FdtWriter, _: &BoardDescription<'_>) -> Result<(), vm_fdt::Error> {
        fdt.property_string("compatible", "ns16550a")?;
        fdt.property_array_u64("reg", &[riscv::UART_BASE, riscv::UART_SIZE])?;
        fdt.property_u32("clock-frequency", 3_686_400)
    }
    fn windows(&self) -> &'static [Window] {
        &[Window {
            base: riscv::UART_BASE,
            size: riscv::UART_SIZE,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::dtb_address;
    use crate::gic::{CPU_IF_BASE, DIST_BASE};
    use crate::uart::UART_BASE;

    #[test]
    fn an_ordinary_parser_reads_the_board_back() {
        let blob = device_tree(
            Isa::Aarch64,
            &BoardDescription {
                cpus: 3,
                ram_base: 0x4000_0000,
                ram_size: 128 << 20,
                bootargs: "scenario=smoke seed=3",
                initrd: Some((0x4420_0000, 0x4420_1234)),
            },
        )
        .unwrap();
        let fdt = ::fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.chosen().bootargs(), Some("scenario=smoke seed=3"));
        let chosen = fdt.find_node("/chosen").unwrap();
        let u64_of = |name| {
            let bytes = chosen.property(name).unwrap().value;
            u64::from_be_bytes(bytes.try_into().unwrap())
        };
        assert_eq!(u64_of("linux,initrd-start"), 0x4420_0000);
        assert_eq!(u64_of("linux,initrd-end"), 0x4420_1234);
        let region = fdt.memory().regions().next().unwrap();
        assert_eq!(region.starting_address as u64, 0x4000_0000);
        assert_eq!(region.size, Some(128 << 20));
        let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(ids, [0, 1, 2]);
        let psci = fdt.find_compatible(&["arm,psci-0.2"]).unwrap();
        assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
        let uart = fdt.find_compatible(&["arm,pl011"]).unwrap();
        assert_eq!(
            uart.reg().unwrap().next().unwrap().starting_address as u64,
            UART_BASE
        );
        let gic = fdt.find_compatible(&["arm,cortex-a15-gic"]).unwrap();
        let regs: Vec<u64> = gic
            .reg()
            .unwrap()
            .map(|r| r.starting_address as u64)
            .collect();
        assert_eq!(regs, [DIST_BASE, CPU_IF_BASE]);
        assert_eq!(dtb_address(0x4000_0000, 128 << 20), 0x4400_0000);
    }

    #[test]
    fn an_ordinary_parser_reads_the_riscv_board_back() {
        let blob = device_tree(
            Isa::Riscv64,
            &BoardDescription {
                cpus: 4,
                ram_base: crate::riscv::RAM_BASE,
                ram_size: 128 << 20,
                bootargs: "scenario=storm",
                initrd: None,
            },
        )
        .unwrap();
        let fdt = ::fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.chosen().bootargs(), Some("scenario=storm"));
        let region = fdt.memory().regions().next().unwrap();
        assert_eq!(region.starting_address as u64, 0x8000_0000);
        let harts: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(harts, [0, 1, 2, 3]);
        let hart = fdt.cpus().next().unwrap();
        assert_eq!(hart.timebase_frequency(), 10_000_000);
        assert_eq!(
            hart.property("mmu-type").unwrap().as_str(),
            Some("riscv,sv39")
        );
        let uart = fdt.find_compatible(&["ns16550a"]).unwrap();
        assert_eq!(
            uart.reg().unwrap().next().unwrap().starting_address as u64,
            crate::riscv::UART_BASE
        );
        assert_eq!(
            fdt.chosen().stdout().map(|n| n.name),
            Some("serial@10000000")
        );
    }

    /// The registration contract: each device's node gives exactly the windows
    /// the cores map for it, and `stdout-path` leads to the console's node.
    #[test]
    fn every_node_describes_the_windows_its_device_answers_at() {
        for isa in [Isa::Aarch64, Isa::Riscv64] {
            let blob = device_tree(
                isa,
                &BoardDescription {
                    cpus: 2,
                    ram_base: isa.ram_base(),
                    ram_size: 128 << 20,
                    bootargs: "",
                    initrd: None,
                },
            )
            .unwrap();
            let tree = ::fdt::Fdt::new(&blob).unwrap();
            let kind = BoardKind::of(isa);
            let parent = kind.bus_node.map_or(String::new(), |n| format!("/{n}"));
            let mut windows_mapped = 0;
            for device in kind.devices {
                let path = format!("{parent}/{}", device.node_name());
                let node = tree.find_node(&path).unwrap_or_else(|| panic!("{path}"));
                let described: Vec<(u64, u64)> = node.reg().map_or(Vec::new(), |regs| {
                    regs.map(|r| (r.starting_address as u64, r.size.unwrap() as u64))
                        .collect()
                });
                let mapped: Vec<(u64, u64)> =
                    device.windows().iter().map(|w| (w.base, w.size)).collect();
                assert_eq!(described, mapped, "{isa:?} {path}");
                windows_mapped += mapped.len();
                if device.is_console() {
                    assert_eq!(tree.chosen().stdout().unwrap().name, device.node_name());
                }
            }
            assert!(windows_mapped > 0, "{isa:?}");
        }
    }
}
