//! The arguments of `percpu-lab run` and the value types they are made of, shared
//! by every command that runs or describes a run (run, replay, explore, bench, the
//! trace header), apart from what each command does with them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use emu::{MachineConfig, MmuMode, SchedulerKind};

use crate::BadInput;

/// How a command prints its report.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Instructions a CPU runs before the scheduler picks again (slices end at the
/// first translation-block boundary past this budget).
pub const DEFAULT_QUANTUM: u64 = 2_000;
/// Total guest instructions (all CPUs) after which the watchdog ends the run.
pub const DEFAULT_MAX_INSNS: u64 = 2_000_000_000;
/// Guest RAM (MiB) unless `--ram` says otherwise.
pub const DEFAULT_RAM_MIB: u64 = 128;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Variant {
    /// The final patch exactly as in 2009 (pcpu_alloc_mutex + irq-safe
    /// pcpu_lock), with its latent hazards.
    Fine,
    /// The final patch with the later corrections: clean.
    Fixed,
    /// The patch's first version: free_percpu with spin_lock_irq.
    Irq,
    /// The seed's note read literally: free_percpu with plain spin_lock.
    IrqPlain,
    /// Before the patch: one pcpu_mutex around alloc and free.
    Mutex,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Sched {
    /// CPUs take turns in order.
    Rr,
    /// A seeded random CPU and slice length each time.
    Random,
    /// Probabilistic concurrency testing: random CPU priorities, `--pct-depth` − 1
    /// priority change points among the run's scheduling points.
    Pct,
    /// Systematic: each CPU runs until it waits, skipping the running CPU at the
    /// `--change-points` (delay-bounded exploration enumerates them).
    Delay,
}

/// Default `--pct-depth`.
pub const DEFAULT_PCT_DEPTH: u32 = 3;
/// Default `--pct-steps`: about the scheduling points of a default-size scenario.
pub const DEFAULT_PCT_STEPS: u64 = 20_000;

/// Seeded bugs the guest can be told to make (to prove the checks find them).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Inject {
    /// Skip the TLB flush when a per-CPU chunk's virtual area is unmapped.
    SkipTlbFlush,
    /// Map extension drops pcpu_lock but the search does not restart (the
    /// seed's dead `restart`, in any variant; meant for `fixed`).
    ExtendNoRestart,
    /// Reclaim unlinks and frees chunks holding only pcpu_lock, without
    /// pcpu_alloc_mutex.
    ReclaimOneLock,
    /// free_percpu takes no lock.
    FreeUnlocked,
    /// The kernel's TLB flush invalidates only the flushing CPU's TLB (`tlbi
    /// vaae1`, `dsb nsh`): a port that forgot remote shootdowns.
    LocalFlushOnly,
    /// The allocator's TLB flush runs under pcpu_lock with IRQs off; with
    /// `--flush ipi` (which it needs) the flusher waits for IPI handlers of CPUs
    /// that may spin on pcpu_lock with IRQs masked: a real deadlock.
    IpiFlushIrqsOff,
}

/// `--inject ipi-flush-irqs-off` only means something with `--flush ipi`.
pub fn check_inject_with_flush(inject: Option<Inject>, flush: Flush) -> Result<(), BadInput> {
    if matches!(inject, Some(Inject::IpiFlushIrqsOff)) && flush != Flush::Ipi {
        return Err(BadInput(
            "--inject ipi-flush-irqs-off needs --flush ipi (the other strategies send no IPI)"
                .into(),
        ));
    }
    Ok(())
}

/// How the guest's `flush_tlb_kernel_range` reaches the other CPUs (the bootarg
/// `flush=`): the TLB-shootdown side of porting the allocator to an
/// architecture without broadcast invalidation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Flush {
    /// `tlbi vaae1is` per page: ARM64's hardware broadcast.
    #[default]
    Broadcast,
    /// A call-function IPI to every other CPU, each invalidating its own TLB
    /// (`tlbi vaae1`): the RISC-V/x86 way; the flushing CPU must have IRQs on.
    Ipi,
    /// `tlbi vmalle1is`: everything, on every CPU.
    Full,
    /// Broadcast, but the allocator's reclaim defers its flushes and the page
    /// frees behind them, and flushes their union once at its end (everything
    /// past 512 pages).
    Batched,
}

impl Flush {
    /// The `flush=` bootarg word, if not the default.
    pub fn bootarg(self) -> Option<String> {
        (self != Flush::Broadcast).then(|| {
            let name = self.to_possible_value().expect("no skipped strategies");
            format!("flush={}", name.get_name())
        })
    }
}

/// Who translates guest addresses.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mmu {
    /// The simulated MMU with the TLB-shootdown checks.
    Checked,
    /// The simulated MMU (walker and per-CPU TLB model) without checks.
    Simulated,
    /// Unicorn's built-in MMU: no model, no checks.
    Builtin,
}

/// Where the recorder sees a Linux kernel's locking (`--lock-hooks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LockHooks {
    /// lockdep if the kernel has it, else the lock primitives.
    Auto,
    /// lockdep's `lock_acquire`/`lock_release` (and its IRQ-state hooks).
    Lockdep,
    /// `_raw_spin_lock*`, `mutex_lock*`, `down_*`/`up_*`…, as on a kernel
    /// without lockdep.
    Primitives,
}

/// The instruction set of the built-in guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// ARMv8-A on the arm64 `virt` board (recording and every analysis).
    Aarch64,
    /// RV64 on the riscv64 `virt` board with the host as SBI firmware (recording,
    /// the lock validator and the TLB check; no Linux oracle).
    Riscv64,
}

impl Arch {
    /// The machine's name for it.
    pub fn isa(self) -> emu::Isa {
        match self {
            Arch::Aarch64 => emu::Isa::Aarch64,
            Arch::Riscv64 => emu::Isa::Riscv64,
        }
    }
}

/// An independent judge of the run's analyses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Oracle {
    /// Linux's locking self-test (`CONFIG_DEBUG_LOCKING_API_SELFTESTS`): each case
    /// judged by a fresh validator and compared with the kernel's lockdep.
    LockdepSelftest,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Instruction set of the built-in guest (default aarch64); with `--kernel`,
    /// the kernel's own, which this must match if given.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Number of emulated CPUs (1 to 8: GICv2's limit).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub cpus: u64,
    /// Allocator locking variant, passed to the guest at boot.
    #[arg(long, value_enum, default_value_t = Variant::Fine)]
    pub variant: Variant,
    /// Guest workload (see `percpu-lab scenarios`).
    #[arg(long, default_value = "storm")]
    pub scenario: String,
    /// Seed for the guest workload and (unless `--sched-seed`) the scheduler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Host scheduling strategy.
    #[arg(long, value_enum, default_value_t = Sched::Random)]
    pub sched: Sched,
    /// Seed for the scheduler alone (default: `--seed`); `explore` prints the one
    /// of each schedule.
    #[arg(long)]
    pub sched_seed: Option<u64>,
    /// PCT's depth d: d − 1 priority change points (finds bugs of d ordering
    /// constraints).
    #[arg(long, default_value_t = DEFAULT_PCT_DEPTH, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pct_depth: u32,
    /// PCT: how many scheduling points the change points are drawn from (`explore`
    /// counts a run's points first).
    #[arg(long, default_value_t = DEFAULT_PCT_STEPS, value_parser = clap::value_parser!(u64).range(1..))]
    pub pct_steps: u64,
    /// Explicit scheduling points (1-based, comma-separated): PCT's change points
    /// instead of drawn ones, in priority order, or `--sched delay`'s delays.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub change_points: Option<Vec<u64>>,
    /// Timer arrivals as scheduling decisions (1-based scheduling points,
    /// comma-separated): from each point on, the next CPU to take a lock has its
    /// timer fire right there (needs recording; see `emu/src/sched/irq_arrival.rs`).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_parser = clap::value_parser!(u64).range(1..))]
    pub irq_points: Option<Vec<u64>>,
    /// Instructions per scheduling slice.
    #[arg(long, default_value_t = DEFAULT_QUANTUM, value_parser = clap::value_parser!(u64).range(1..))]
    pub quantum: u64,
    /// Watchdog: end the run as a guest fault after this many instructions (all CPUs).
    #[arg(long, default_value_t = DEFAULT_MAX_INSNS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_insns: u64,
    /// Guest kernel (default: the built-in guest): a percpu-lab guest ELF, or a
    /// Linux arm64 `vmlinux` or bare `Image` (loaded by the arm64 boot protocol;
    /// the analyses see only what they recognise in it).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// A bare `Image`'s symbols: the `vmlinux` it was made from (names, and the
    /// DWARF the Linux recorder needs), or its `System.map` (names only).
    #[arg(long, value_name = "VMLINUX|SYSTEM.MAP")]
    pub symbols: Option<PathBuf>,
    /// Replay aid: the SHA-256 the `--symbols` file had when the trace was recorded
    /// (other symbols are refused).
    #[arg(long, hide = true, requires = "symbols")]
    pub symbols_sha256: Option<String>,
    /// The kernel command line (`/chosen/bootargs`), instead of the one made from
    /// `--scenario`, `--seed`, `--variant`, `--inject`, `--flush` and `--scale`
    /// (a Linux kernel gets an empty one by default, `earlycon keep_bootcon` with
    /// `--oracle`).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// An initial RAM disk, put in guest RAM after the device tree and named in its
    /// `/chosen` (`linux,initrd-start`/`-end`).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Judge the lock validator against an independent oracle instead of
    /// reporting the run's findings.
    #[arg(long, value_enum)]
    pub oracle: Option<Oracle>,
    /// Where the recorder sees a Linux kernel's locking: lockdep's entry points
    /// (a kernel built with lockdep and DWARF), the out-of-line lock primitives
    /// (any kernel; partial: lock instances as classes, IRQ state sampled at lock
    /// calls), or auto: lockdep if the kernel has it. No effect on our guest.
    #[arg(long, value_enum, default_value_t = LockHooks::Auto)]
    pub lock_hooks: LockHooks,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_RAM_MIB, value_parser = clap::value_parser!(u64).range(16..=8192))]
    pub ram: u64,
    /// Report format on stdout; with `json`, the guest console goes to stderr.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// A seeded bug for the guest to make (passed as the bootarg `inject=`).
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
    /// How the kernel's TLB flush reaches the other CPUs (bootarg `flush=`).
    #[arg(long, value_enum, default_value_t = Flush::Broadcast)]
    pub flush: Flush,
    /// Workload size: multiplies the rounds of the allocator scenarios (`storm`,
    /// `irq-free`, `fs-reclaim`, `reclaim`, `reclaim-reuse`), passed as the bootarg
    /// `scale=`; deterministic like everything else.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub scale: u64,
    /// Which MMU translates guest addresses (default: checked; builtin, the only
    /// one, on riscv64).
    #[arg(long, value_enum)]
    pub mmu: Option<Mmu>,
    /// Record the run's events into this trace file (for `replay` and `export`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write the lock validator's dependency graph here: Graphviz DOT, or SVG
    /// (rendered by `dot`) if the name ends in `.svg`; reported cycles are red.
    #[arg(long, value_name = "OUT")]
    pub graph: Option<PathBuf>,
    /// Test aid: flush Unicorn's soft TLB every N translation blocks, as a loaded host's
    /// timing would; reports and traces must not change (not recorded in the trace).
    #[arg(long, hide = true, default_value_t = 0)]
    pub churn_soft_tlb: u64,
    /// Bench aid: the machine alone, with no recording and no analyses (no
    /// findings; the report has the run's end and counts only).
    #[arg(long, hide = true, conflicts_with_all = ["trace", "graph"])]
    pub bare: bool,
}

impl RunArgs {
    /// The kernel command line: `--cmdline`, or the percpu-lab guest's own words.
    pub fn bootargs(&self) -> String {
        if let Some(cmdline) = &self.cmdline {
            return cmdline.clone();
        }
        let variant = self
            .variant
            .to_possible_value()
            .expect("no skipped variants");
        let mut bootargs = format!(
            "scenario={} seed={} variant={}",
            self.scenario,
            self.seed,
            variant.get_name()
        );
        if let Some(inject) = self.inject {
            let name = inject.to_possible_value().expect("no skipped injects");
            bootargs += &format!(" inject={}", name.get_name());
        }
        if let Some(flush) = self.flush.bootarg() {
            bootargs += &format!(" {flush}");
        }
        if self.scale != 1 {
            bootargs += &format!(" scale={}", self.scale);
        }
        bootargs
    }

    /// The machine these arguments describe (reads the `--initrd` file).
    pub fn machine_config(&self) -> Result<MachineConfig, BadInput> {
        let initrd = match &self.initrd {
            Some(path) => {
                crate::input_file::require_regular(path)?;
                let bytes = std::fs::read(path)
                    .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
                Some(bytes.into())
            }
            None => None,
        };
        Ok(MachineConfig {
            cpus: self.cpus as usize,
            ram_size: self.ram << 20,
            initrd,
            sched: self.scheduler_kind(),
            irq_points: self.irq_points.clone().unwrap_or_default(),
            seed: self.sched_seed.unwrap_or(self.seed),
            quantum: self.quantum,
            max_insns: self.max_insns,
            bootargs: self.bootargs(),
            mmu: match self.mmu() {
                Mmu::Checked => MmuMode::Checked,
                Mmu::Simulated => MmuMode::Simulated,
                Mmu::Builtin => MmuMode::Builtin,
            },
            churn_soft_tlb: self.churn_soft_tlb,
        })
    }
}

impl RunArgs {
    /// What the recorder is asked to record.
    pub fn record_options(&self) -> emu::RecordOptions {
        emu::RecordOptions {
            linux_locks: match self.lock_hooks {
                LockHooks::Auto => emu::LinuxLocks::Auto,
                LockHooks::Lockdep => emu::LinuxLocks::Lockdep,
                LockHooks::Primitives => emu::LinuxLocks::Primitives,
            },
            ..emu::RecordOptions::default()
        }
    }

    pub fn scheduler_kind(&self) -> SchedulerKind {
        match self.sched {
            Sched::Rr => SchedulerKind::RoundRobin,
            Sched::Random => SchedulerKind::Random,
            Sched::Pct => SchedulerKind::Pct {
                depth: self.pct_depth,
                steps: self.pct_steps,
                change_points: self.change_points.clone(),
            },
            Sched::Delay => SchedulerKind::DelayBounded {
                delays: self.change_points.clone().unwrap_or_default(),
            },
        }
    }

    /// The scheduler settings beyond `--sched`, as (flag, value) pairs: in the trace
    /// header (replay passes them back) and in `explore`'s commands.
    pub fn sched_flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        if let Some(seed) = self.sched_seed {
            flags.push(("sched-seed", seed.to_string()));
        }
        if matches!(self.sched, Sched::Pct) {
            flags.push(("pct-depth", self.pct_depth.to_string()));
            flags.push(("pct-steps", self.pct_steps.to_string()));
        }
        let list = |points: &[u64]| {
            let list: Vec<String> = points.iter().map(u64::to_string).collect();
            list.join(",")
        };
        if let Some(points) = &self.change_points {
            flags.push(("change-points", list(points)));
        }
        if let Some(points) = &self.irq_points {
            flags.push(("irq-points", list(points)));
        }
        flags
    }

    /// The flags beyond scenario, variant and seed that change what the guest
    /// does, as (flag, value) pairs when not the default: in the trace header
    /// (replay passes them back).
    pub fn guest_flags(&self) -> Vec<(&'static str, String)> {
        let name = |v: Option<clap::builder::PossibleValue>| {
            v.map(|v| v.get_name().to_string()).unwrap_or_default()
        };
        let mut flags = Vec::new();
        // Only the non-default ISA: arm64 headers stay as they were.
        if self.arch == Some(Arch::Riscv64) {
            flags.push(("arch", "riscv64".to_string()));
        }
        if let Some(inject) = self.inject {
            flags.push(("inject", name(inject.to_possible_value())));
        }
        if self.flush != Flush::Broadcast {
            flags.push(("flush", name(self.flush.to_possible_value())));
        }
        if self.scale != 1 {
            flags.push(("scale", self.scale.to_string()));
        }
        if let Some(cmdline) = &self.cmdline {
            flags.push(("cmdline", cmdline.clone()));
        }
        if let Some(initrd) = &self.initrd {
            flags.push(("initrd", initrd.display().to_string()));
        }
        if let Some(symbols) = &self.symbols {
            flags.push(("symbols", symbols.display().to_string()));
        }
        if self.ram != DEFAULT_RAM_MIB {
            flags.push(("ram", self.ram.to_string()));
        }
        if self.lock_hooks != LockHooks::Auto {
            flags.push(("lock-hooks", name(self.lock_hooks.to_possible_value())));
        }
        flags
    }

    /// `--mmu`, or its default.
    pub fn mmu(&self) -> Mmu {
        self.mmu.unwrap_or(Mmu::Checked)
    }

    /// Whether the run checks TLB maintenance (its MMU events are recorded then).
    pub fn checks_mmu(&self) -> bool {
        matches!(self.mmu(), Mmu::Checked)
    }
}
