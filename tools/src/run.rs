//! `percpu-lab run`: boot the guest with one scenario and report how it ended.

use emu::Machine;

pub use crate::args::{
    check_inject_with_flush, Flush, Inject, RunArgs, Variant, DEFAULT_MAX_INSNS, DEFAULT_PCT_DEPTH,
    DEFAULT_QUANTUM,
};
use crate::mmu_report::MmuRun;
use crate::report;
use crate::{analysis, interrupt, kernel, tracefile, BadInput, Verdict};

/// `run --bare`: what the machine costs with nothing watching it.
fn bare_run(args: &RunArgs, kernel: &emu::KernelImage, machine: &mut Machine) -> Verdict {
    let outcome = machine.run(&mut |cpu, line| report::print_console_line(args.report, cpu, line));
    let (mmu, locks) = (MmuRun::default(), analysis::LockRun::default());
    crate::end_quietly_on_closed_stdout();
    report::print(args, kernel, &outcome, &mmu, &locks);
    match report::verdict(&outcome) {
        _ if interrupt::ended(&outcome.end) => Verdict::Interrupted,
        verdict => verdict,
    }
}

/// The arguments of a run of a RISC-V kernel: everything but the Linux oracle.
fn riscv64_args(args: &RunArgs) -> Result<RunArgs, BadInput> {
    if args.oracle.is_some() {
        return Err(BadInput(
            "--oracle (it runs a Linux arm64 kernel) is not available on riscv64".into(),
        ));
    }
    Ok(args.clone())
}

/// A machine booted for `args`, with the online analyses watching it and, with
/// `--trace`, the trace being written.
pub struct Watched {
    pub machine: Machine,
    pub analyses: analysis::Online,
    pub recording: Option<tracefile::Recording<crate::atomic_file::AtomicFile>>,
    pub progress: indicatif::ProgressBar,
}

/// Boots `kernel` for `args` with every analysis (and the trace) attached.
pub fn watched(args: &RunArgs, kernel: &emu::KernelImage) -> Result<Watched, BadInput> {
    let config = args.machine_config()?;
    tracing::info!(bootargs = %config.bootargs, cpus = config.cpus, "booting");
    let mut machine = Machine::new(config, kernel)?;
    // The lock validator sees every event, with or without a trace file.
    let (analyses, validator_sink, progress) = analysed(args, kernel, &machine);
    let recording = match &args.trace {
        Some(path) => {
            let trace_config = tracefile::trace_config(args, kernel)?;
            let file = tracefile::create(path)?;
            Some(tracefile::Recording::start_with(
                &mut machine,
                file,
                &trace_config,
                args.record_options(),
                Some(validator_sink),
            )?)
        }
        None => {
            machine.record(args.record_options(), validator_sink)?;
            None
        }
    };
    Ok(Watched {
        machine,
        analyses,
        recording,
        progress,
    })
}

/// The analyses of a run of `args` on `machine`, and the sink that feeds them
/// (it stops the machine on SIGINT/SIGTERM and counts the run's progress).
pub fn analysed(
    args: &RunArgs,
    kernel: &emu::KernelImage,
    machine: &Machine,
) -> (analysis::Online, emu::EventSink, indicatif::ProgressBar) {
    let (analyses, sink) = analysis::Online::new(kernel, machine, args.checks_mmu());
    let sink = interrupt::stop_on_signal(machine.stop_request(), sink);
    let (sink, progress) = crate::progress::count_run(sink);
    (analyses, sink, progress)
}

/// What a watched run found.
pub fn verdict_of(outcome: &emu::RunOutcome, mmu: &MmuRun, locks: &analysis::LockRun) -> Verdict {
    match report::verdict(outcome) {
        _ if interrupt::ended(&outcome.end) => Verdict::Interrupted,
        // Findings (DESIGN.md exit code 1) explain a fault they led to as well.
        _ if !mmu.findings.is_empty() || !locks.findings.is_empty() => Verdict::Findings,
        verdict => verdict,
    }
}

pub fn run(args: &RunArgs) -> Result<Verdict, BadInput> {
    kernel::check_symbols_digest(args)?;
    let kernel = kernel::load_for(args.kernel.as_deref(), args.symbols.as_deref(), args.arch)?;
    let riscv64;
    let args = if kernel.isa() == emu::Isa::Riscv64 {
        riscv64 = riscv64_args(args)?;
        &riscv64
    } else {
        args
    };
    let foreign;
    let args = if kernel.is_boot_protocol_image() {
        // A Linux kernel has no scenarios, and gets only the command line it is
        // given (the oracle's stops right after the self-test, before the console
        // driver is up: it prints through the early console).
        let default = match args.oracle {
            Some(_) => crate::oracle::DEFAULT_CMDLINE,
            None => "",
        };
        foreign = RunArgs {
            cmdline: Some(args.cmdline.clone().unwrap_or_else(|| default.into())),
            ..args.clone()
        };
        &foreign
    } else {
        kernel::check_scenario(&kernel, &args.scenario)?;
        args
    };
    check_inject_with_flush(args.inject, args.flush)?;
    if !kernel.has_symbols() && args.checks_mmu() {
        // The TLB check hooks barriers at the code's link addresses.
        return Err(BadInput(
            "--mmu checked needs the kernel's link addresses: give a bare Image's \
             vmlinux or System.map as --symbols, or run it with --mmu builtin"
                .into(),
        ));
    }
    if args.oracle.is_some() {
        return crate::oracle::run(args, &kernel);
    }
    if args.bare {
        let mut machine = Machine::new(args.machine_config()?, &kernel)?;
        return Ok(bare_run(args, &kernel, &mut machine));
    }
    let Watched {
        mut machine,
        analyses,
        recording,
        progress,
    } = watched(args, &kernel)?;

    // With `--report json` stdout carries only the report. A reader that goes away
    // (`| head`) must not stop the run: the trace still has to be finished.
    let mut console = |cpu: usize, line: &str| {
        if let Some(recording) = &recording {
            recording.console_line(cpu, line);
        }
        report::print_console_line(args.report, cpu, line);
    };
    let outcome = machine.run(&mut console);
    progress.finish_and_clear();
    analyses.finish();
    let mmu = MmuRun::of(&machine, &analyses);
    let locks = analysis::LockRun::of(&analyses);
    let verdict = verdict_of(&outcome, &mmu, &locks);
    if let (Some(recording), Some(path)) = (recording, &args.trace) {
        let (_, summary) = recording.finish(&outcome)?;
        eprintln!(
            "percpu-lab: trace {}: {} events, {} bytes",
            path.display(),
            summary.events,
            summary.bytes
        );
    }
    if let Some(out) = &args.graph {
        crate::graph::write(out, &analyses.dot())?;
    }
    crate::end_quietly_on_closed_stdout();
    report::print(args, &kernel, &outcome, &mmu, &locks);
    Ok(verdict)
}
