//! The flattened device tree handed to the boot CPU, describing the board the way
//! QEMU's `virt` machine does (GICv2 flavour).

use vm_fdt::FdtWriter;

use crate::gic::{CPU_IF_BASE, DIST_BASE, REGION_SIZE};
use crate::psci;
use crate::uart::{UART_BASE, UART_SIZE};

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
/// Interrupt specifier types and flags (GIC binding).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;

/// Where the boot CPU finds the device tree: QEMU puts it at RAM base + min(RAM/2, 128 MiB)
/// (0x4400_0000 for 128 MiB).
pub fn dtb_address(ram_base: u64, ram_size: u64) -> u64 {
    ram_base + (ram_size / 2).min(128 << 20)
}

/// The most the arm64 boot protocol allows a device tree (what follows it in RAM
/// may start this far after it).
pub const DTB_MAX_SIZE: u64 = 2 << 20;

pub struct BoardDescription<'a> {
    pub cpus: usize,
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: &'a str,
    /// The initrd's physical `[start, end)`, if there is one.
    pub initrd: Option<(u64, u64)>,
}

pub fn build(board: &BoardDescription<'_>) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "percpu-lab virt")?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    chosen_and_memory(&mut fdt, board, &format!("/pl011@{UART_BASE:x}"))?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for cpu in 0..board.cpus {
        let node = fdt.begin_node(&format!("cpu@{cpu}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,cortex-a72")?;
        fdt.property_u32("reg", psci::mpidr_of(cpu) as u32)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(node)?;
    }
    fdt.end_node(cpus)?;

    let psci_node = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", vec!["arm,psci-0.2".into(), "arm,psci".into()])?;
    fdt.property_string("method", "hvc")?;
    fdt.property_u32("cpu_suspend", psci::CPU_SUSPEND)?;
    fdt.property_u32("cpu_off", psci::CPU_OFF)?;
    fdt.property_u32("cpu_on", psci::CPU_ON)?;
    fdt.property_u32("migrate", psci::MIGRATE)?;
    fdt.end_node(psci_node)?;

    let gic = fdt.begin_node(&format!("intc@{DIST_BASE:x}"))?;
    fdt.property_string("compatible", "arm,cortex-a15-gic")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_array_u64("reg", &[DIST_BASE, REGION_SIZE, CPU_IF_BASE, REGION_SIZE])?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(gic)?;

    // PPI flags carry a mask of the CPUs the interrupt is wired to (GICv2 binding).
    let ppi_flags = (((1u32 << board.cpus) - 1) << 8) | IRQ_LEVEL_HIGH;
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    // Secure, non-secure physical, virtual, hypervisor: PPIs 13, 14, 11, 10.
    let ppis: Vec<u32> = [13, 14, 11, 10]
        .iter()
        .flat_map(|&p| [GIC_PPI, p, ppi_flags])
        .collect();
    fdt.property_array_u32("interrupts", &ppis)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", 24_000_000)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;

    let uart = fdt.begin_node(&format!("pl011@{UART_BASE:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl011".into(), "arm,primecell".into()],
    )?;
    fdt.property_array_u64("reg", &[UART_BASE, UART_SIZE])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, 1, IRQ_LEVEL_HIGH])?;
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    fdt.end_node(uart)?;

    fdt.end_node(root)?;
    fdt.finish()
}

/// `/chosen` (bootargs, the console, the initrd) and the memory node: the same on
/// both boards.
fn chosen_and_memory(
    fdt: &mut FdtWriter,
    board: &BoardDescription<'_>,
    stdout_path: &str,
) -> Result<(), vm_fdt::Error> {
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", board.bootargs)?;
    fdt.property_string("stdout-path", stdout_path)?;
    if let Some((start, end)) = board.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", board.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[board.ram_base, board.ram_size])?;
    fdt.end_node(memory)
}

/// The device tree of the RISC-V board (QEMU's riscv64 `virt` as far as the guest
/// reads it): `/chosen`, memory, the harts (with the timebase and each hart's
/// local interrupt controller) and the NS16550A.
pub fn build_riscv(board: &BoardDescription<'_>) -> Result<Vec<u8>, vm_fdt::Error> {
    use crate::riscv;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "percpu-lab riscv-virtio")?;

    let uart = format!("serial@{:x}", riscv::UART_BASE);
    chosen_and_memory(&mut fdt, board, &format!("/soc/{uart}"))?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", riscv::TIMEBASE_HZ as u32)?;
    for hart in 0..board.cpus {
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
    fdt.end_node(cpus)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;
    let serial = fdt.begin_node(&uart)?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[riscv::UART_BASE, riscv::UART_SIZE])?;
    fdt.property_u32("clock-frequency", 3_686_400)?;
    fdt.end_node(serial)?;
    fdt.end_node(soc)?;

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_parser_reads_the_board_back() {
        let blob = build(&BoardDescription {
            cpus: 3,
            ram_base: 0x4000_0000,
            ram_size: 128 << 20,
            bootargs: "scenario=smoke seed=3",
            initrd: Some((0x4420_0000, 0x4420_1234)),
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
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
        let blob = build_riscv(&BoardDescription {
            cpus: 4,
            ram_base: crate::riscv::RAM_BASE,
            ram_size: 128 << 20,
            bootargs: "scenario=storm",
            initrd: None,
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
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
}
