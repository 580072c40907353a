//! The guest kernel to run: the built-in one (embedded at build time by build.rs) or
//! a user-supplied ELF, and the scenario table it exports.

use std::path::Path;

use emu::KernelImage;

use crate::args::Arch;
use crate::BadInput;

/// The guest built from `guest/` by `tools/build.rs`.
static BUILT_IN_GUEST: &[u8] = include_bytes!(env!("PERCPU_GUEST_ELF"));
/// The same guest built for RISC-V.
static BUILT_IN_RISCV64_GUEST: &[u8] = include_bytes!(env!("PERCPU_GUEST_RISCV64_ELF"));

/// The symbol under which a percpu-lab guest lists its scenarios as
/// `name<TAB>summary<LF>` lines (docs/machine.md).
const SCENARIO_TABLE_SYMBOL: &str = "PERCPU_LAB_SCENARIOS";

pub struct Scenario {
    pub name: String,
    pub summary: String,
}

/// The kernel at `path` (default: the built-in guest); a bare `Image` is named by
/// `symbols` (its `vmlinux` or `System.map`).
pub fn load(path: Option<&Path>, symbols: Option<&Path>) -> Result<KernelImage, BadInput> {
    load_for(path, symbols, None)
}

/// [`load`], with `--arch`: which built-in guest, or what the kernel at `path`
/// must be built for.
pub fn load_for(
    path: Option<&Path>,
    symbols: Option<&Path>,
    arch: Option<Arch>,
) -> Result<KernelImage, BadInput> {
    let kernel = load_file(path, symbols, arch.unwrap_or(Arch::Aarch64))?;
    match arch {
        Some(arch) if arch.isa() != kernel.isa() => Err(BadInput(format!(
            "--arch {} does not match the kernel, which is built for {}",
            arch.isa().name(),
            kernel.isa().name()
        ))),
        _ => Ok(kernel),
    }
}

fn load_file(
    path: Option<&Path>,
    symbols: Option<&Path>,
    arch: Arch,
) -> Result<KernelImage, BadInput> {
    match (path, symbols) {
        (Some(path), Some(symbols)) => {
            crate::input_file::require_regular(path)?;
            crate::input_file::require_regular(symbols)?;
            Ok(KernelImage::from_path_with_symbols(path, symbols)?)
        }
        (Some(path), None) => {
            crate::input_file::require_regular(path)?;
            Ok(KernelImage::from_path(path)?)
        }
        (None, Some(_)) => Err(BadInput(
            "--symbols names a bare Image's symbols: give the Image with --kernel".into(),
        )),
        (None, None) => KernelImage::from_bytes(match arch {
            Arch::Aarch64 => BUILT_IN_GUEST.to_vec(),
            Arch::Riscv64 => BUILT_IN_RISCV64_GUEST.to_vec(),
        })
        .map_err(|e| {
            BadInput(format!(
                "the built-in guest is unusable ({e}); rebuild with ./setup.sh"
            ))
        }),
    }
}

/// The SHA-256 of a `--symbols` file, as a trace header keeps it.
pub fn symbols_digest(path: &Path) -> Result<String, BadInput> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    Ok(traces::ElfHash::of(&bytes).to_hex())
}

/// Refuses a `--symbols` file other than the one a trace was recorded with
/// (`--symbols-sha256`, which replay passes back from the header).
pub fn check_symbols_digest(args: &crate::args::RunArgs) -> Result<(), BadInput> {
    let (Some(path), Some(recorded)) = (&args.symbols, &args.symbols_sha256) else {
        return Ok(());
    };
    let ours = symbols_digest(path)?;
    if ours == *recorded {
        return Ok(());
    }
    Err(BadInput(format!(
        "{} is not the symbols file the trace was recorded with (sha256 {recorded}; it has {ours})",
        path.display()
    )))
}

pub fn scenarios(kernel: &KernelImage) -> Result<Vec<Scenario>, BadInput> {
    let table = kernel.symbol_bytes(SCENARIO_TABLE_SYMBOL).ok_or_else(|| {
        BadInput(format!(
            "the kernel exports no {SCENARIO_TABLE_SYMBOL} table: not a percpu-lab guest"
        ))
    })?;
    let text = std::str::from_utf8(table).map_err(|_| {
        BadInput(format!(
            "the kernel's {SCENARIO_TABLE_SYMBOL} table is not UTF-8"
        ))
    })?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, summary) = line.split_once('\t').unwrap_or((line, ""));
            Scenario {
                name: name.trim().to_string(),
                summary: summary.trim().to_string(),
            }
        })
        .collect())
}

/// Checks `name` against the kernel's table before boot, so a typo is a usage
/// error and not a guest that silently runs something else.
pub fn check_scenario(kernel: &KernelImage, name: &str) -> Result<(), BadInput> {
    let scenarios = scenarios(kernel)?;
    if scenarios.iter().any(|s| s.name == name) {
        return Ok(());
    }
    let known: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    Err(BadInput(format!(
        "unknown scenario '{name}' (this kernel has: {})",
        known.join(", ")
    )))
}
