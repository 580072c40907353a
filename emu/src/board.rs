//! The board: the state every core's hooks share (devices and time), and the
//! board's devices, each registered once.
//!
//! A registration ([`BusDevice`]) says where a device's MMIO windows lie, how a
//! guest load or store there reaches the device's state on the [`Board`], and
//! which device-tree node describes it. Each core maps the windows of its
//! board's list and [`device_tree`] writes the nodes of the same list, so no
//! device is mapped without being described, nor described where it does not
//! answer. A new device is a type implementing [`BusDevice`] and one entry in a
//! board's list (`arch/<isa>/board.rs`).

use vm_fdt::FdtWriter;

use crate::arch::aarch64::gic::Gic;
use crate::arch::riscv64::plic::Plic;
use crate::fdt::{self, BoardDescription};
use crate::timer::{VirtualClock, VirtualTimer, VTIMER_INTID};
use crate::uart::Uart;
use crate::Isa;

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
    /// RISC-V's interrupt controller for devices (no source wired).
    pub(crate) plic: Plic,
    pub(crate) uart: Uart,
    pub(crate) timers: Vec<VirtualTimer>,
    pub(crate) clock: VirtualClock,
    /// Cores running during the current slice (the clock's divisor).
    pub(crate) running: u64,
    /// Each CPU's event register (WFE/SEV, `arch/aarch64/wfe.rs`).
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
    /// Whether its registers belong to the firmware the host plays: its node
    /// (with its `reg`) is written, its window is not mapped for the guest.
    fn firmware_only(&self) -> bool {
        false
    }
}

/// What tells the boards apart: the root node, the CPUs and the devices.
pub(crate) struct BoardKind {
    pub(crate) compatible: &'static str,
    pub(crate) model: &'static str,
    /// The root's `interrupt-parent`, where every device's interrupts go.
    pub(crate) interrupt_parent: Option<u32>,
    /// Writes `/cpus`.
    pub(crate) cpus: fn(&mut FdtWriter, usize) -> Result<(), vm_fdt::Error>,
    /// The `simple-bus` node the devices sit under (`None`: the root).
    pub(crate) bus_node: Option<&'static str>,
    /// The devices, in device-tree order.
    pub(crate) devices: &'static [&'static dyn BusDevice],
}

impl BoardKind {
    pub(crate) fn of(isa: Isa) -> &'static BoardKind {
        isa.arch().board()
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
        if device.firmware_only() {
            // The device-tree specification's mark for a device that works but
            // is another software component's (here, the firmware's).
            fdt.property_string("status", "reserved")?;
        }
        fdt.end_node(node)?;
    }
    if let Some(node) = bus {
        fdt.end_node(node)?;
    }
    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::gic::{CPU_IF_BASE, DIST_BASE};
    use crate::fdt::dtb_address;
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
                ram_base: crate::arch::riscv64::hart::RAM_BASE,
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
            crate::arch::riscv64::hart::UART_BASE
        );
        assert_eq!(
            fdt.chosen().stdout().map(|n| n.name),
            Some("serial@10000000")
        );
        // The PLIC and the CLINT as QEMU describes them: every hart's external
        // (11 M, 9 S) and software and timer (3, 7) interrupts.
        let cells = |node: ::fdt::node::FdtNode<'_, '_>| -> Vec<u32> {
            let bytes = node.property("interrupts-extended").unwrap().value;
            bytes
                .chunks(4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                .collect()
        };
        let intc = |hart: usize| {
            fdt.find_node(&format!("/cpus/cpu@{hart}/interrupt-controller"))
                .unwrap()
                .property("phandle")
                .unwrap()
                .as_usize()
                .unwrap() as u32
        };
        let plic = fdt.find_compatible(&["riscv,plic0"]).unwrap();
        assert_eq!(plic.name, "plic@c000000");
        assert_eq!(
            plic.property("riscv,ndev").unwrap().as_usize(),
            Some(crate::arch::riscv64::plic::SOURCES as usize)
        );
        let expected: Vec<u32> = (0..4).flat_map(|h| [intc(h), 11, intc(h), 9]).collect();
        assert_eq!(cells(plic), expected);
        let plic_phandle = plic.property("phandle").unwrap().as_usize();
        assert_eq!(
            uart.property("interrupt-parent").unwrap().as_usize(),
            plic_phandle
        );
        assert_eq!(uart.property("interrupts").unwrap().as_usize(), Some(10));
        let clint = fdt.find_compatible(&["riscv,clint0"]).unwrap();
        let expected: Vec<u32> = (0..4).flat_map(|h| [intc(h), 3, intc(h), 7]).collect();
        assert_eq!(cells(clint), expected);
        assert_eq!(
            clint.reg().unwrap().next().unwrap().starting_address as u64,
            0x0200_0000
        );
        assert_eq!(
            clint.property("status").and_then(|p| p.as_str()),
            Some("reserved")
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
                if device.firmware_only() {
                    assert!(mapped.is_empty() && !described.is_empty(), "{isa:?} {path}");
                } else {
                    assert_eq!(described, mapped, "{isa:?} {path}");
                }
                windows_mapped += mapped.len();
                if device.is_console() {
                    assert_eq!(tree.chosen().stdout().unwrap().name, device.node_name());
                }
            }
            assert!(windows_mapped > 0, "{isa:?}");
        }
    }
}
