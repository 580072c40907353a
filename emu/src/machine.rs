//! The machine: one Unicorn instance per core over shared RAM, devices, and the run
//! loop that hands out slices, delivers interrupts and ends the run.

use std::cell::RefCell;
use std::rc::Rc;

use crate::arch::aarch64::exception::Synchronous;
use crate::arch::aarch64::gic::{self, Gic};
use crate::arch::riscv64::plic::Plic;
use crate::arch::Arch;
use crate::board::{self, Board, IrqWatch};
use crate::cpu::Core;
pub(crate) use crate::cpu::Hooks;
pub use crate::cpu::{CpuState, TakenException};
pub use crate::error::EmuError;
use crate::fdt::{self, BoardDescription};
use crate::hardware::Hardware;
pub use crate::hardware::RunEnd;
use crate::kernel::KernelImage;
use crate::memory::read_insn;
use crate::memory::{GuestMemory, GuestRam, OutOfRam};
use crate::probe::{self, CallProbe, CallStats, ProbeId};
use crate::record::{EventSink, RecordOptions, Recorder, Recording};
use crate::sched::{make_scheduler, SchedView, Scheduler, SchedulerKind};
use crate::simmu::SimMmu;
use crate::slice_counter::IrqStop;
use crate::timer::{VirtualClock, VirtualTimer};
use crate::tlb::MmuStats;
use crate::uart::Uart;

mod snapshot;
pub use snapshot::Snapshot;

/// What to build and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Number of emulated CPUs.
    pub cpus: usize,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// The host scheduling strategy.
    pub sched: SchedulerKind,
    /// Scheduling points at which a timer arrival is armed (see
    /// [`crate::sched::IrqArrivals`]); empty: the clock alone decides.
    pub irq_points: Vec<u64>,
    /// The scheduler's seed.
    pub seed: u64,
    /// Slice length in instructions (the random scheduler varies it around this).
    pub quantum: u64,
    /// Watchdog: instructions over all CPUs before the run is stopped.
    pub max_insns: u64,
    /// The kernel command line, in the device tree's `/chosen`.
    pub bootargs: String,
    /// An initial RAM disk, placed in RAM after the device tree and named in its
    /// `/chosen` (`linux,initrd-start`/`-end`), as QEMU's `-initrd` does.
    pub initrd: Option<std::sync::Arc<[u8]>>,
    /// Which MMU translates guest addresses (see [`MmuMode`]).
    pub mmu: MmuMode,
    /// Test aid: flush every core's Unicorn soft TLB every this many translation blocks
    /// (0: never), so refills come at other moments than usual, as on a slower or
    /// loaded host. Nothing a run reports or records may change with it.
    pub churn_soft_tlb: u64,
}

/// Who translates guest addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MmuMode {
    /// Unicorn's built-in MMU (QEMU's walker and soft TLB); no model, no checks.
    Builtin,
    /// Our walker and per-CPU TLB model ([`crate::tlb`]), without the checks.
    Simulated,
    /// The simulated MMU with page-table write tracking, barrier hooks and the
    /// TLB-shootdown checks.
    #[default]
    Checked,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            cpus: 4,
            ram_size: 128 << 20,
            sched: SchedulerKind::RoundRobin,
            irq_points: Vec::new(),
            seed: 0,
            quantum: 10_000,
            max_insns: 2_000_000_000,
            bootargs: "scenario=smoke".into(),
            initrd: None,
            mmu: MmuMode::default(),
            churn_soft_tlb: 0,
        }
    }
}

/// See [`Machine::stop_request`].
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Rc<RefCell<Option<String>>>);

impl StopRequest {
    /// Ends the run after the slice being run, as [`RunEnd::Stopped`].
    pub fn stop(&self, reason: impl Into<String>) {
        self.0.borrow_mut().get_or_insert_with(|| reason.into());
    }
}

/// One CPU at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuReport {
    /// Its number.
    pub cpu: usize,
    /// Whether it was running, waiting or off.
    pub state: CpuState,
    /// Where it stopped.
    pub pc: u64,
    /// Instructions retired: SVC, HVC and WFI count; an instruction that faults
    /// (abort, UDF, BRK) does not, as it did not complete.
    pub insns: u64,
    /// Interrupts it took.
    pub irqs: u64,
    /// Return addresses from the frame-pointer chain, innermost first.
    pub backtrace: Vec<u64>,
    /// The last synchronous exception this CPU took (what an "unexpected exception"
    /// panic is about).
    pub last_exception: Option<TakenException>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How it ended.
    pub end: RunEnd,
    /// Each CPU at the end.
    pub cpus: Vec<CpuReport>,
    /// Instructions retired over all CPUs.
    pub total_insns: u64,
    /// Scheduler slices run.
    pub slices: u64,
}

/// How one slice ended.
enum SliceEnd {
    Budget,
    /// At an instruction boundary where an IRQ is to be taken.
    Interrupt,
    Wfi,
    /// Stopped right after a WFE that found no event.
    Wfe,
    Exception(u32),
    /// A translation or permission fault from the simulated MMU.
    Abort(Synchronous),
    Error(String),
}

/// The emulated board: its CPUs (one Unicorn instance each), shared RAM, devices
/// and the host scheduler that takes turns among the CPUs.
pub struct Machine {
    /// What the instruction set's code acts on; dropped first (its cores map RAM
    /// that it drops last).
    pub(crate) hw: Hardware,
    /// Shared with the recorder, which asks it at scheduling points.
    scheduler: Rc<RefCell<Box<dyn Scheduler>>>,
    config: MachineConfig,
    /// What the kernel's instruction set does where the machine asks.
    arch: &'static dyn Arch,
    slices: u64,
    end: Option<RunEnd>,
    probes: Vec<Rc<CallProbe>>,
    /// The recorder, while events are recorded (at most one per machine).
    recorder: Option<Rc<crate::record::Recorder>>,
    /// A reason to stop, set by whoever holds a [`Machine::stop_request`] handle.
    stop: StopRequest,
}

impl Machine {
    /// Builds the machine and loads `kernel` into it, with every hook.
    pub fn new(config: MachineConfig, kernel: &KernelImage) -> Result<Self, EmuError> {
        Self::with_hooks(config, kernel, Hooks::Full)
    }

    pub(crate) fn with_hooks(
        config: MachineConfig,
        kernel: &KernelImage,
        hooks: Hooks,
    ) -> Result<Self, EmuError> {
        if !(1..=gic::MAX_CPUS).contains(&config.cpus) {
            return Err(EmuError::Config(format!(
                "{} CPUs requested; GICv2 supports 1 to 8",
                config.cpus
            )));
        }
        if config.ram_size < (16 << 20)
            || config.ram_size > (8 << 30)
            || !config.ram_size.is_multiple_of(1 << 20)
        {
            return Err(EmuError::Config(format!(
                "RAM size {:#x} must be a whole number of MiB between 16 MiB and 8 GiB",
                config.ram_size
            )));
        }
        let isa = kernel.isa();
        let ram_base = isa.ram_base();
        let mut ram = GuestRam::new(ram_base, config.ram_size)
            .ok_or_else(|| EmuError::Config("cannot allocate guest RAM".into()))?;
        kernel.check_fits(ram_base, config.ram_size)?;
        kernel.load_into(&mut ram)?;
        let dtb_addr = fdt::dtb_address(ram_base, config.ram_size);
        let initrd = match &config.initrd {
            Some(bytes) => {
                let start = dtb_addr + fdt::DTB_MAX_SIZE;
                let end = start + bytes.len() as u64;
                if end > ram_base + config.ram_size {
                    return Err(EmuError::Config(format!(
                        "the initrd ({} bytes at {start:#x}) does not fit in {} MiB of RAM",
                        bytes.len(),
                        config.ram_size >> 20
                    )));
                }
                ram.write(start, bytes)
                    .map_err(|e: OutOfRam| EmuError::Config(format!("initrd: {e}")))?;
                Some((start, end))
            }
            None => None,
        };
        let description = BoardDescription {
            cpus: config.cpus,
            ram_base,
            ram_size: config.ram_size,
            bootargs: &config.bootargs,
            initrd,
        };
        let dtb = board::device_tree(isa, &description)
            .map_err(|e| EmuError::Config(format!("cannot build the device tree: {e:?}")))?;
        if kernel.physical_end() > dtb_addr {
            return Err(EmuError::Config(format!(
                "the kernel ends at {:#x}, past the device tree at {dtb_addr:#x}",
                kernel.physical_end()
            )));
        }
        ram.write(dtb_addr, &dtb)
            .map_err(|e: OutOfRam| EmuError::Config(format!("device tree does not fit: {e}")))?;

        let board = Rc::new(RefCell::new(Board {
            gic: Gic::new(config.cpus),
            plic: Plic::new(config.cpus),
            uart: Uart::new(config.cpus),
            timers: vec![VirtualTimer::default(); config.cpus],
            clock: VirtualClock::default(),
            running: 1,
            events: vec![false; config.cpus],
            isa,
        }));
        let sim_mmu = match (hooks, config.mmu) {
            (Hooks::Full, MmuMode::Simulated | MmuMode::Checked) => Some(SimMmu::new(
                &ram,
                config.cpus,
                config.mmu == MmuMode::Checked,
                isa,
            )),
            _ => None,
        };
        let mut cores = (0..config.cpus)
            .map(|cpu| {
                Core::new(
                    cpu,
                    &ram,
                    &board,
                    hooks,
                    sim_mmu.as_ref().map(|m| &m.shared),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(m) = &sim_mmu {
            m.install_code_hooks(&mut cores, kernel)?;
        }
        let code = kernel.known_code_ranges();
        for core in &mut cores {
            crate::core_setup::skip_translation_rescans(&mut core.uc, &code)?;
        }
        if hooks == Hooks::Full {
            isa.arch().install_kernel_hooks(&cores, kernel);
        }
        for core in &cores {
            core.counter.churn_every.set(config.churn_soft_tlb);
        }
        let mut machine = Self {
            hw: Hardware {
                cores,
                board,
                kernel: kernel.clone(),
                total_insns: 0,
                observers: Vec::new(),
                mmu: sim_mmu,
                sbi_remote_fences: 0,
                ram,
            },
            scheduler: Rc::new(RefCell::new(make_scheduler(
                &config.sched,
                config.seed,
                config.quantum,
                &config.irq_points,
            ))),
            arch: isa.arch(),
            config,
            slices: 0,
            end: None,
            probes: Vec::new(),
            recorder: None,
            stop: StopRequest::default(),
        };
        isa.arch().boot(&mut machine.hw, kernel.entry(), dtb_addr)?;
        Ok(machine)
    }

    /// Counts the calls of the function named `symbol` and their instructions, on
    /// every CPU, from now on (see [`crate::probe`]).
    pub fn probe_calls(&mut self, symbol: &str) -> Result<ProbeId, EmuError> {
        let missing =
            || EmuError::Config(format!("the kernel has no function `{symbol}` to probe"));
        let entry = self.hw.kernel.symbol_address(symbol).ok_or_else(missing)?;
        let code = self.hw.kernel.symbol_bytes(symbol).ok_or_else(missing)?;
        let isa = self.hw.kernel.isa();
        let returns: Vec<u64> = probe::ret_offsets(code, isa)
            .map(|off| entry + off)
            .chain(probe::return_sites(self.hw.kernel.code_words(), entry, isa))
            .collect();
        let call_probe = Rc::new(CallProbe::new(self.hw.cores.len()));
        for (cpu, core) in self.hw.cores.iter_mut().enumerate() {
            probe::install(core, cpu, &call_probe, entry, &returns, isa)?;
        }
        self.probes.push(call_probe);
        Ok(ProbeId(self.probes.len() - 1))
    }

    /// Records guest events from now on (see [`crate::record`]); they reach `sink`
    /// after each slice, in order. The returned handle gives what the recording
    /// keeps besides events.
    pub fn record(
        &mut self,
        options: RecordOptions,
        sink: EventSink,
    ) -> Result<Recording, EmuError> {
        if self.recorder.is_some() {
            return Err(EmuError::Config("already recording".into()));
        }
        let scheduler = self.scheduler.clone();
        let gate = Box::new(move |cpu, kind: &traces::EventKind| {
            scheduler
                .borrow_mut()
                .at_point(&crate::sched::SchedPoint { cpu, kind })
        });
        let recorder = Recorder::install(&mut self.hw.cores, &self.hw.kernel, options, sink, gate)?;
        self.hw.observers.push(recorder.clone());
        self.recorder = Some(recorder.clone());
        Ok(Recording::new(recorder))
    }

    /// Runs the rest of the run under `scheduler` instead (e.g. each schedule of an
    /// exploration, after restoring a snapshot).
    pub fn set_scheduler(&mut self, scheduler: Box<dyn Scheduler>) {
        *self.scheduler.borrow_mut() = scheduler;
    }

    /// Scheduling points the scheduler has seen so far.
    pub fn sched_points(&self) -> u64 {
        self.scheduler.borrow().points()
    }

    /// A handle that stops the run after the current slice (its events are
    /// delivered first), e.g. from an event sink that found a deadlock.
    pub fn stop_request(&self) -> StopRequest {
        self.stop.clone()
    }

    /// What the probe `id` has measured so far.
    pub fn call_stats(&self, id: ProbeId) -> CallStats {
        self.probes[id.0].stats()
    }

    /// Instructions executed so far by all CPUs.
    pub fn total_insns(&self) -> u64 {
        self.hw.total_insns
    }

    /// Lets a run that the watchdog stopped go on for `insns` more instructions.
    pub fn extend_watchdog(&mut self, insns: u64) {
        self.config.max_insns = self.hw.total_insns.saturating_add(insns);
        if matches!(self.end, Some(RunEnd::Watchdog { .. })) {
            self.end = None;
        }
    }

    /// What it was built with.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Guest physical memory, e.g. to inspect it after a run.
    pub fn memory(&self) -> &dyn GuestMemory {
        &self.hw.ram
    }

    /// Runs until the machine ends; each finished console line goes to `console` with
    /// the CPU that printed it.
    pub fn run(&mut self, console: &mut dyn FnMut(usize, &str)) -> RunOutcome {
        let end = loop {
            if let Some(end) = self.end.clone() {
                break end;
            }
            self.end = self.step();
            for observer in &self.hw.observers {
                observer.slice_ended();
            }
            if let Some(reason) = self.stop.0.borrow_mut().take() {
                self.end.get_or_insert(RunEnd::Stopped { reason });
            }
            self.emit_console(console);
        };
        self.hw.board.borrow_mut().uart.flush_partial();
        self.emit_console(console);
        RunOutcome {
            end,
            cpus: self.reports(),
            total_insns: self.hw.total_insns,
            slices: self.slices,
        }
    }

    fn emit_console(&mut self, console: &mut dyn FnMut(usize, &str)) {
        let lines = self.hw.board.borrow_mut().uart.take_lines();
        for (cpu, line) in lines {
            console(cpu, &line);
        }
    }

    /// Decides and runs one slice. Returns how the run ended, if it did.
    fn step(&mut self) -> Option<RunEnd> {
        if self.hw.total_insns >= self.config.max_insns {
            return Some(RunEnd::Watchdog {
                limit: self.config.max_insns,
            });
        }
        self.update_timer_lines();
        let ram = &self.hw.ram;
        for (cpu, core) in self.hw.cores.iter_mut().enumerate() {
            if !matches!(
                core.state,
                CpuState::WaitingForInterrupt | CpuState::WaitingForEvent
            ) {
                continue;
            }
            let mut board = self.hw.board.borrow_mut();
            let irq = self.arch.irq_pending(&board, core, cpu);
            let monitor_cleared = || {
                core.monitor
                    .is_some_and(|m| m.cleared(|pa, size| ram.read_le(pa, size)))
            };
            match core.state {
                CpuState::WaitingForInterrupt if irq => core.state = CpuState::Running,
                CpuState::WaitingForEvent if irq || board.events[cpu] || monitor_cleared() => {
                    // A wake-up event (an interrupt counts, even masked) completes
                    // the WFE, which consumes it.
                    board.events[cpu] = false;
                    core.state = CpuState::Running;
                    core.monitor = None;
                }
                _ => {}
            }
        }
        let runnable: Vec<usize> = (0..self.hw.cores.len())
            .filter(|&c| self.hw.cores[c].state == CpuState::Running)
            .collect();
        if runnable.is_empty() {
            let waiting = self.hw.cores.iter().any(|c| {
                matches!(
                    c.state,
                    CpuState::WaitingForInterrupt | CpuState::WaitingForEvent
                )
            });
            let mut board = self.hw.board.borrow_mut();
            return match board.next_deadline() {
                Some(deadline) if waiting => {
                    board.clock.skip_to(deadline);
                    None
                }
                _ => Some(RunEnd::Hang),
            };
        }
        let view = SchedView {
            runnable: &runnable,
            cpus: self.hw.cores.len(),
            total_insns: self.hw.total_insns,
            slices: self.slices,
        };
        let slice = self.scheduler.borrow_mut().next(&view);
        let cpu = slice.cpu;
        for observer in &self.hw.observers {
            observer.slice_starts(cpu, slice.insns, self.hw.total_insns);
        }
        assert!(
            runnable.contains(&cpu),
            "the scheduler picked CPU {cpu}, which cannot run"
        );
        let running = runnable.len() as u64;

        if let Err(end) = self.deliver_irq(cpu) {
            return Some(end);
        }
        let mut budget = slice.insns.min(self.config.max_insns - self.hw.total_insns);
        let irqs = {
            let mut board = self.hw.board.borrow_mut();
            board.running = running;
            // Another CPU's deadline ends the slice at a block boundary near it, so
            // that a CPU waiting in WFI wakes on time; this CPU's own is exact.
            if let Some(deadline) = board.next_deadline_except(cpu) {
                budget = budget.min(board.clock.insns_until(deadline, running));
            }
            board.irq_watch(cpu, running)
        };
        if let Some(mmu) = &mut self.hw.mmu {
            mmu.before_slice(&mut self.hw.cores, cpu, self.hw.total_insns);
        }
        let (retired, mut end) = self.run_slice(cpu, budget, irqs);
        if let Some(mmu) = &mut self.hw.mmu {
            mmu.after_slice(&mut self.hw.cores, cpu);
        }
        if retired == 0 && matches!(end, SliceEnd::Budget) {
            // Nothing ran and nothing said why: stop rather than spin on empty slices.
            end = SliceEnd::Error("no instruction executed".into());
        }
        self.hw.cores[cpu].insns += retired;
        self.hw.cores[cpu].irqs += self.hw.cores[cpu].counter.interrupts_taken.get();
        self.hw.total_insns += retired;
        self.slices += 1;
        self.hw.board.borrow_mut().clock.advance(retired, running);
        let timer_now = self.scheduler.borrow_mut().take_timer_request();
        if let Some(timer_cpu) = timer_now {
            self.hw.board.borrow_mut().fire_timer_now(timer_cpu);
        }
        self.broadcast_maintenance(cpu);
        self.finish_slice(cpu, end)
    }

    /// Sets every timer's interrupt output to its level now (the GIC's PPIs on
    /// arm64, `mip.STIP` on RISC-V).
    pub(crate) fn update_timer_lines(&mut self) {
        let mut board = self.hw.board.borrow_mut();
        board.update_timer_lines();
        self.arch.drive_timer_inputs(&board, &mut self.hw.cores);
    }

    /// Takes a pending IRQ on `cpu` where the host delivers them.
    fn deliver_irq(&mut self, cpu: usize) -> Result<(), RunEnd> {
        self.arch.deliver_irq(&mut self.hw, cpu)
    }

    fn run_slice(&mut self, cpu: usize, budget: u64, irqs: IrqWatch) -> (u64, SliceEnd) {
        let core = &mut self.hw.cores[cpu];
        core.counter.start(budget, core.insns, irqs);
        let arch = self.arch;
        core.counter.trap_vector.set(arch.trap_vector(&core.uc));
        let mut result = core.uc.emu_start(core.pc, 0, 0, 0);
        if let (Ok(()), Some(IrqStop::Within(until))) = (&result, core.counter.irq_stop.get()) {
            result = match arch.step_to(core, until) {
                Some(stepped) => stepped,
                None => run_within_block(core, until, arch),
            };
        }
        core.pc = core.uc.pc_read().unwrap_or(core.pc);
        let counter = &core.counter;
        if let Err(e) = result {
            if let Some(exc) = core
                .mmu
                .as_ref()
                .and_then(|m| m.take_fault(&mut core.uc, core.pc))
            {
                return (counter.retired_before(core.pc), SliceEnd::Abort(exc));
            }
            return (
                counter.retired_before(core.pc),
                SliceEnd::Error(format!("{e:?}")),
            );
        }
        if let Some(intno) = counter.exception.take() {
            return (counter.retired_before(core.pc), SliceEnd::Exception(intno));
        }
        if counter.irq_stop.get().is_some() {
            return (counter.executed.get(), SliceEnd::Interrupt);
        }
        if counter.waits_after_wfe_at(core.pc) {
            return (counter.executed.get(), SliceEnd::Wfe);
        }
        // WFI returns from emu_start by itself, with the PC past it: at the end of
        // the last block that ran on arm64, where WFI ends its block; inside it on
        // RISC-V, whose WFI does not (the rest of the block did not run).
        let (start, size) = (counter.block_start.get(), counter.block_size.get() as u64);
        let is_wfi = |word| arch.is_wfi(word);
        if !counter.stop_requested.get()
            && start != u64::MAX
            && core.pc > start
            && core.pc <= start.wrapping_add(size)
            && read_insn(&mut core.uc, core.pc.wrapping_sub(4)).is_some_and(is_wfi)
        {
            return (counter.retired_before(core.pc), SliceEnd::Wfi);
        }
        (counter.executed.get(), SliceEnd::Budget)
    }

    /// Applies a core's inner-shareable maintenance to every other core.
    fn broadcast_maintenance(&mut self, cpu: usize) {
        let counter = self.hw.cores[cpu].counter.clone();
        let tlb = counter.tlb_broadcast.replace(false);
        let code = counter.code_broadcast.replace(false);
        if !(tlb || code) {
            return;
        }
        for (other, core) in self.hw.cores.iter_mut().enumerate() {
            if other != cpu {
                if tlb {
                    core.uc.ctl_flush_tlb().expect("TLB flush");
                }
                if code {
                    core.uc.ctl_flush_tb().expect("translation cache flush");
                }
            }
        }
    }

    fn finish_slice(&mut self, cpu: usize, end: SliceEnd) -> Option<RunEnd> {
        let pc = self.hw.cores[cpu].pc;
        let fault = |what: String| Some(RunEnd::Fault { cpu, pc, what });
        match end {
            SliceEnd::Budget => None,
            SliceEnd::Interrupt => {
                self.update_timer_lines();
                self.deliver_irq(cpu).err()
            }
            SliceEnd::Wfi => {
                self.hw.cores[cpu].state = CpuState::WaitingForInterrupt;
                None
            }
            SliceEnd::Wfe => {
                let monitor = self.arch.exclusive_monitor(&self.hw, cpu);
                let core = &mut self.hw.cores[cpu];
                core.state = CpuState::WaitingForEvent;
                core.monitor = monitor;
                None
            }
            SliceEnd::Error(e) => fault(format!("emulator stopped: {e}")),
            SliceEnd::Exception(cause) => self.arch.exception(&mut self.hw, cpu, cause),
            SliceEnd::Abort(exc) => self.arch.abort(&mut self.hw, cpu, exc),
        }
    }

    fn reports(&mut self) -> Vec<CpuReport> {
        let arch = self.arch;
        self.hw
            .cores
            .iter_mut()
            .enumerate()
            .map(|(cpu, core)| {
                let backtrace = arch.backtrace(&mut core.uc);
                CpuReport {
                    cpu,
                    state: core.state,
                    pc: core.pc,
                    insns: core.insns,
                    irqs: core.irqs,
                    backtrace,
                    last_exception: core.last_exception.clone(),
                }
            })
            .collect()
    }

    /// RISC-V: the remote fences SBI RFENCE calls asked for so far, one per
    /// target hart (the firmware's TLB shoot-down; 0 on arm64).
    pub fn sbi_remote_fences(&self) -> u64 {
        self.hw.sbi_remote_fences
    }

    /// The simulated MMU's counts (`None` with the built-in MMU).
    pub fn mmu_stats(&self) -> Option<MmuStats> {
        self.hw
            .mmu
            .as_ref()
            .map(|m| m.shared.model.borrow().stats_at(self.hw.total_insns))
    }

    /// The kernel this machine runs (for symbolising reports).
    pub fn kernel(&self) -> &KernelImage {
        &self.hw.kernel
    }
}

/// Runs `core`, stopped by its block hook at the start of a block, up to the
/// instruction at `until` inside that block, where the ISA cannot step there
/// ([`Arch::step_to`]). Unicorn honours an `until` address only when it translates
/// code, so the block's translation is dropped first; it drops the shortened one
/// itself after the run.
fn run_within_block(
    core: &mut Core,
    until: u64,
    arch: &'static dyn Arch,
) -> Result<(), unicorn_engine::uc_error> {
    let pc = core.uc.pc_read()?;
    core.uc.ctl_remove_cache(until, until + 4)?;
    core.counter.stop_requested.set(false);
    let result = core.uc.emu_start(pc, until, 0, 0);
    let stopped_at = core.uc.pc_read().unwrap_or(until);
    // A WFI that does not end its block (RISC-V's) before the deadline's
    // instruction ends the run there, and the core waits (in run_slice).
    let waits = stopped_at != until && arch.stopped_after_wfi(&mut core.uc, stopped_at);
    if waits {
        core.counter.irq_stop.set(None);
    }
    // Only an exception on the way stops it elsewhere; anything else is a late IRQ.
    debug_assert!(
        result.is_err() || waits || core.counter.exception.get().is_some() || stopped_at == until,
        "ran past {until:#x}"
    );
    result
}
