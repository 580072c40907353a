//! What the kernel learns from the device tree at boot: RAM, the CPUs, and the
//! bootargs (`scenario=`, `seed=`, `variant=`, `inject=`, `flush=`, `scale=`). Copied out of the blob
//! once, by the boot CPU, before any other CPU runs and before the page allocator
//! may reuse the blob's memory; read-only afterwards.

use core::cell::UnsafeCell;

use crate::config::MAX_CPUS;
use crate::fdt;

const WORD_MAX: usize = 32;

/// A short string copied out of the device tree.
#[derive(Clone, Copy)]
pub struct Word {
    bytes: [u8; WORD_MAX],
    len: usize,
}

impl Word {
    /// CONTEXT: any (const).
    const fn empty() -> Self {
        Word {
            bytes: [0; WORD_MAX],
            len: 0,
        }
    }

    /// CONTEXT: boot CPU while parsing the device tree.
    fn from(s: &str) -> Self {
        let mut word = Word::empty();
        word.len = s.len().min(WORD_MAX);
        word.bytes[..word.len].copy_from_slice(&s.as_bytes()[..word.len]);
        word
    }

    /// CONTEXT: any.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

/// Which allocator variant the run uses (DESIGN.md, "The allocator
/// variants"); its names are the allocator's own.
pub use allocator::Variant;

pub struct BootInfo {
    pub ram_base: u64,
    pub ram_size: u64,
    /// MPIDR affinity of each logical CPU; index 0 is the boot CPU.
    pub cpu_mpidr: [u64; MAX_CPUS],
    pub cpu_count: usize,
    /// CPUs the device tree listed beyond MAX_CPUS (left off).
    pub cpus_ignored: usize,
    pub scenario: Word,
    pub seed: u64,
    pub variant: Variant,
    pub inject: Option<Word>,
    /// How `flush_tlb_kernel_range` reaches the other CPUs (`flush=`).
    pub flush: crate::mmu::FlushStrategy,
    /// Workload size: the allocator scenarios run this many times their rounds.
    pub scale: u64,
    /// A bootargs word the kernel did not understand (reported, then ignored).
    pub unknown_arg: Option<Word>,
}

struct BootInfoCell(UnsafeCell<BootInfo>);
// SAFETY: written only by the boot CPU in `parse`, before any other CPU starts;
// read-only from then on.
unsafe impl Sync for BootInfoCell {}

static BOOT_INFO: BootInfoCell = BootInfoCell(UnsafeCell::new(BootInfo {
    ram_base: 0,
    ram_size: 0,
    cpu_mpidr: [0; MAX_CPUS],
    cpu_count: 0,
    cpus_ignored: 0,
    scenario: Word::empty(),
    seed: 0,
    variant: Variant::Fine,
    inject: None,
    flush: crate::mmu::FlushStrategy::Broadcast,
    scale: 1,
    unknown_arg: None,
}));

/// The boot information (valid after `parse`).
///
/// CONTEXT: any, after boot.
pub fn boot_info() -> &'static BootInfo {
    // SAFETY: see BootInfoCell.
    unsafe { &*BOOT_INFO.0.get() }
}

/// CONTEXT: any; pure.
fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// CONTEXT: boot CPU inside `parse`, alone.
fn apply_bootargs(info: &mut BootInfo, args: &str) {
    for word in args.split_ascii_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let understood = match key {
            "scenario" => {
                info.scenario = Word::from(value);
                true
            }
            "seed" => parse_u64(value).map(|seed| info.seed = seed).is_some(),
            "variant" => Variant::from_name(value)
                .map(|v| info.variant = v)
                .is_some(),
            "inject" => {
                info.inject = Some(Word::from(value));
                true
            }
            "flush" => crate::mmu::FlushStrategy::from_name(value)
                .map(|flush| info.flush = flush)
                .is_some(),
            "scale" => parse_u64(value)
                .filter(|&scale| scale >= 1)
                .map(|scale| info.scale = scale)
                .is_some(),
            _ => false,
        };
        if !understood && info.unknown_arg.is_none() {
            info.unknown_arg = Some(Word::from(word));
        }
    }
}

/// Reads the device tree at `dtb` into the boot information. `boot_mpidr` becomes
/// logical CPU 0; the other CPUs follow in device-tree order.
///
/// CONTEXT: boot CPU only, once, before secondaries start; IRQs masked.
pub fn parse(dtb: usize, boot_mpidr: u64) -> Result<(), fdt::FdtError> {
    // SAFETY: called once by the only running CPU; nobody reads BOOT_INFO yet.
    let info = unsafe { &mut *BOOT_INFO.0.get() };
    info.scenario = Word::from("smoke");
    info.cpu_mpidr[0] = boot_mpidr;
    info.cpu_count = 1;
    // SAFETY: the boot protocol hands over a device tree at x0 that nothing else
    // touches until the page allocator starts.
    let blob = unsafe { fdt::blob_at(dtb)? };
    fdt::walk_properties(blob, |at, name, value| {
        let mut cursor = 0;
        match (at.depth, name) {
            (1, "reg") if at.node.starts_with("memory") && info.ram_size == 0 => {
                let base = fdt::read_cells(value, &mut cursor, at.address_cells);
                let size = fdt::read_cells(value, &mut cursor, at.size_cells);
                if let (Some(base), Some(size)) = (base, size) {
                    info.ram_base = base;
                    info.ram_size = size;
                }
            }
            (1, "bootargs") if at.node == "chosen" => {
                let text = value.split(|&b| b == 0).next().unwrap_or(&[]);
                apply_bootargs(info, core::str::from_utf8(text).unwrap_or(""));
            }
            (2, "reg") if at.parent == "cpus" && at.node.starts_with("cpu@") => {
                let Some(mpidr) = fdt::read_cells(value, &mut cursor, at.address_cells) else {
                    return;
                };
                let mpidr = mpidr & 0xff_00ff_ffff;
                if mpidr == boot_mpidr {
                    return;
                }
                if info.cpu_count < MAX_CPUS {
                    info.cpu_mpidr[info.cpu_count] = mpidr;
                    info.cpu_count += 1;
                } else {
                    info.cpus_ignored += 1;
                }
            }
            _ => {}
        }
    })
}
