//! `percpu-lab`: runs the percpu-lab guest kernel on the emulated multicore ARM64
//! machine and reports what happened.
//!
//! Exit codes (DESIGN.md): 0 ran with no findings, 1 findings, 2 bad input or usage,
//! 3 guest fault (panic, unhandled exception, watchdog), 130 interrupted (SIGINT/SIGTERM).

mod analysis;
mod args;
mod atomic_file;
mod bench;
mod bench_alloc;
mod bench_check;
mod bench_explore;
mod bench_flush;
mod bench_lockdep;
mod bench_machine;
mod bench_mmu;
mod bench_run;
mod bench_trace;
mod check;
mod explore;
mod export;
mod graph;
mod input_file;
mod interrupt;
mod kernel;
mod mmu_report;
mod oracle;
mod perfetto_tasks;
mod progress;
mod replay;
mod report;
mod run;
mod tracefile;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// What a command ended with, mapped onto the documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Findings,
    GuestFault,
    /// A signal ended the run (its trace and report are complete so far).
    Interrupted,
}

impl Verdict {
    fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Verdict::Clean => 0,
            Verdict::Findings => 1,
            Verdict::GuestFault => 3,
            Verdict::Interrupted => 130,
        })
    }
}

/// Bad input from the user: printed as one line, exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl<E: std::fmt::Display> From<E> for BadInput {
    fn from(e: E) -> Self {
        BadInput(e.to_string())
    }
}

/// `--version`: what was built, from which commit, around which guest (the SHA-256
/// a trace's header records for the built-in guest).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("PERCPU_GIT_COMMIT"),
    "\nguest ELF sha256: ",
    env!("PERCPU_GUEST_SHA256"),
);

#[derive(Parser)]
#[command(
    name = "percpu-lab",
    version,
    long_version = LONG_VERSION,
    about = "Study kernel per-CPU allocator concurrency on emulated multicore ARM64"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the guest kernel on the emulated machine and run one scenario.
    Run(run::RunArgs),
    /// List the scenarios the guest kernel implements.
    Scenarios {
        /// Guest kernel ELF (default: the built-in guest).
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
    /// Measure emulation speed (guest MIPS per core count, against raw Unicorn).
    Bench(bench::BenchArgs),
    /// Re-execute a recorded run (`run --trace`) and check that it gives the same events.
    Replay(replay::ReplayArgs),
    /// Analyse a recorded trace with the lock validator (same findings as its run).
    Check(check::CheckArgs),
    /// Run many schedules of a scenario (random, PCT or delay-bounded), fold the
    /// findings by cause and save a replayable trace of each.
    Explore(explore::ExploreArgs),
    /// Convert a trace for viewers: `--perfetto OUT.json` for ui.perfetto.dev.
    Export(export::ExportArgs),
    /// Print a shell completion script on stdout (e.g. `percpu-lab completions bash`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `percpu-lab man | man -l -`).
    Man,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if is_missing_subcommand(&e) => {
            eprintln!("{}", usage_line());
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.verbose);
    // Runs end cleanly on a signal; every other command may simply die.
    if matches!(cli.command, Command::Run(_) | Command::Replay(_)) {
        interrupt::install();
    }
    // `run` does this itself once its trace is safe.
    if !matches!(cli.command, Command::Run(_)) {
        end_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Scenarios { kernel } => list_scenarios(kernel.as_deref()),
        Command::Bench(args) => bench::bench(&args),
        Command::Replay(args) => replay::replay(&args),
        Command::Export(args) => export::export(&args),
        Command::Explore(args) => explore::explore(&args),
        Command::Check(args) => check::check(&args),
        Command::Completions { shell } => print_completions(shell),
        Command::Man => print_man_page(),
    };
    match result {
        Ok(verdict) => verdict.exit_code(),
        Err(BadInput(message)) => {
            eprintln!("percpu-lab: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe panics. Once a command has
/// nothing left to save (a trace is finished before this is called), let a closed
/// stdout end the process quietly, as it does for any Unix tool.
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn is_missing_subcommand(e: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// One line naming the subcommands this build has (not clap's full help page).
fn usage_line() -> String {
    let cli = Cli::command();
    let names: Vec<&str> = cli
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_name())
        .collect();
    format!(
        "usage: percpu-lab <{}> [ARGS] (see percpu-lab --help)",
        names.join("|")
    )
}

fn print_completions(shell: clap_complete::Shell) -> Result<Verdict, BadInput> {
    let mut cli = Cli::command();
    clap_complete::generate(shell, &mut cli, "percpu-lab", &mut std::io::stdout());
    Ok(Verdict::Clean)
}

fn print_man_page() -> Result<Verdict, BadInput> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .map_err(|e| BadInput(format!("cannot write the man page: {e}")))?;
    Ok(Verdict::Clean)
}

/// Colour only for a person at a terminal: escapes in a log file or a pipe are noise
/// (NO_COLOR, by the common convention, turns it off there too).
fn stderr_wants_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERCPU_LAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_wants_colour())
        .with_target(false)
        .init();
}

fn list_scenarios(kernel_path: Option<&std::path::Path>) -> Result<Verdict, BadInput> {
    let kernel = kernel::load(kernel_path, None)?;
    let scenarios = kernel::scenarios(&kernel)?;
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for scenario in &scenarios {
        println!("{:width$}  {}", scenario.name, scenario.summary);
    }
    Ok(Verdict::Clean)
}
