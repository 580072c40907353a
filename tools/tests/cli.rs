//! CLI conventions: one usage line without a subcommand, `--version` naming the
//! commit and the embedded guest, completions and a man page from the clap
//! definitions, and no colour escapes when stderr is not a terminal.

mod common;
use common::percpu_lab;

use std::process::Command;

const SUBCOMMANDS: [&str; 6] = ["run", "scenarios", "bench", "replay", "check", "export"];

#[test]
fn no_subcommand_prints_one_usage_line_and_exits_2() {
    for args in [&[][..], &["-v"]] {
        let run = percpu_lab(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
        assert!(run.stdout.is_empty(), "{}", run.describe());
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line: {}", run.describe());
        let line = lines[0];
        assert!(line.starts_with("usage: percpu-lab <"), "{line}");
        for sub in SUBCOMMANDS {
            assert!(line.contains(sub), "{sub} missing from {line}");
        }
    }
}

#[test]
fn other_usage_errors_still_exit_2() {
    let run = percpu_lab(&["replay"]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(run.stderr.contains("<FILE>"), "{}", run.describe());
}

/// The commit `git` says this checkout is at ("unknown" outside a checkout).
fn checkout_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

#[test]
fn version_names_the_commit_and_the_embedded_guest() {
    let run = percpu_lab(&["--version"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let guest = std::fs::read(env!("PERCPU_GUEST_ELF")).unwrap();
    let expected = format!(
        "percpu-lab {}\ncommit: {}\nguest ELF sha256: {}\n",
        env!("CARGO_PKG_VERSION"),
        checkout_commit(),
        traces::ElfHash::of(&guest).to_hex()
    );
    assert_eq!(run.stdout, expected);
}

#[test]
fn completions_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let run = percpu_lab(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.describe());
        for sub in SUBCOMMANDS {
            assert!(run.stdout.contains(sub), "{shell}: no {sub}");
        }
        assert!(
            run.stdout.contains("--perfetto"),
            "{shell}: no export flags"
        );
    }
    let run = percpu_lab(&["completions", "tcsh"]);
    assert_eq!(run.code, 2, "{}", run.describe());
}

#[test]
fn man_page_is_roff_from_the_clap_definitions() {
    let run = percpu_lab(&["man"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(run.stdout.starts_with('.'), "not roff: {}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with(".TH percpu-lab 1")),
        "no .TH header"
    );
    for sub in SUBCOMMANDS {
        assert!(run.stdout.contains(sub), "man page lacks {sub}");
    }
}

#[test]
fn no_colour_escapes_when_stderr_is_a_pipe() {
    // Logs (-v) and a usage error both go to stderr, which is a pipe here.
    for args in [
        &["-v", "run", "--scenario", "smoke"][..],
        &["run", "--cpus", "0"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_percpu-lab"))
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!stderr.is_empty(), "{args:?} logged nothing");
        assert!(!stderr.contains('\x1b'), "{args:?}: escapes in {stderr:?}");
    }
}

#[test]
fn export_to_standard_output_writes_in_place() {
    let dir = common::scratch_dir();
    let trace = dir.join("smoke.trace");
    let recorded = percpu_lab(&[
        "run",
        "--scenario",
        "smoke",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(recorded.code, 0, "{}", recorded.describe());
    // /dev/stdout cannot be replaced by a rename: it is written as it is.
    let run = percpu_lab(&[
        "export",
        trace.to_str().unwrap(),
        "--perfetto",
        "/dev/stdout",
    ]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let json = run.json();
    assert!(!json["traceEvents"].as_array().unwrap().is_empty());
}
