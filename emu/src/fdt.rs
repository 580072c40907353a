//! Where the device tree goes in guest RAM, and the nodes every board has
//! (`/chosen`, memory); the rest of the tree comes from the board's device list
//! (`board.rs`).

use vm_fdt::FdtWriter;

/// Where the boot CPU finds the device tree: QEMU puts it at RAM base + min(RAM/2, 128 MiB)
/// (0x4400_0000 for 128 MiB).
pub fn dtb_address(ram_base: u64, ram_size: u64) -> u64 {
    ram_base + (ram_size / 2).min(128 << 20)
}

/// The most the arm64 boot protocol allows a device tree (what follows it in RAM
/// may start this far after it).
pub const DTB_MAX_SIZE: u64 = 2 << 20;

/// What a board's device tree describes beyond its fixed devices.
pub struct BoardDescription<'a> {
    /// Number of CPUs.
    pub cpus: usize,
    /// RAM's physical address.
    pub ram_base: u64,
    /// RAM's size in bytes.
    pub ram_size: u64,
    /// The kernel command line (`/chosen/bootargs`).
    pub bootargs: &'a str,
    /// The initrd's physical `[start, end)`, if there is one.
    pub initrd: Option<(u64, u64)>,
}

/// `/chosen` (bootargs, the console, the initrd) and the memory node: the same on
/// both boards.
pub(crate) fn chosen_and_memory(
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
