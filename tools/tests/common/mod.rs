//! Helpers shared by the CLI integration tests: they run the real `percpu-lab`
//! binary with the built-in guest, as a user would.

#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Output};

pub mod slurm;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn percpu_lab(args: &[&str]) -> Run {
    Run::of(
        Command::new(env!("CARGO_BIN_EXE_percpu-lab"))
            .args(args)
            .output()
            .expect("the percpu-lab binary runs"),
    )
}

impl Run {
    /// The result of a finished `percpu-lab` process.
    pub fn of(output: Output) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = output;
        Run {
            code: status
                .code()
                .expect("percpu-lab was not killed by a signal"),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    /// The guest console lines, without the host's `[cpuN] ` prefix, from whichever
    /// stream carried the console.
    pub fn console_lines(&self, cpu: usize) -> Vec<String> {
        let prefix = format!("[cpu{cpu}] ");
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn all_console_lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|line| line.starts_with("[cpu"))
            .filter_map(|line| line.split_once("] ").map(|(_, rest)| rest.to_string()))
            .collect()
    }

    /// Whether some guest console line contains `text`.
    pub fn console_contains(&self, text: &str) -> bool {
        self.all_console_lines().iter().any(|l| l.contains(text))
    }

    /// Whether the host's report names some PC as `0x… <symbol+0x…>`.
    pub fn shows_symbolised_pc(&self) -> bool {
        self.stdout
            .lines()
            .any(|l| l.contains(" <") && l.contains("+0x"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", self.stdout))
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Boots the guest's flat `Image` on QEMU's `virt` board (GICv2, Cortex-A72, 128 MiB,
/// `cpus` cores) with `bootargs` and returns its console lines. The guest ends QEMU
/// with PSCI SYSTEM_OFF; a guest that does not within two minutes fails the test.
/// The vCPUs run round-robin on one host thread (`-accel tcg,thread=single`): see
/// guest/test-qemu.sh for why (with one thread per vCPU a loaded host trips the
/// guest's bring-up watchdog).
pub fn qemu_console(cpus: usize, bootargs: &str) -> Vec<String> {
    qemu_console_tcg(cpus, bootargs, "tcg,thread=single")
}

/// [`qemu_console`] with QEMU's `-accel` setting `accel` (e.g. `tcg,thread=multi`).
pub fn qemu_console_tcg(cpus: usize, bootargs: &str, accel: &str) -> Vec<String> {
    qemu_console_of(
        std::path::Path::new(env!("PERCPU_GUEST_IMAGE")),
        cpus,
        bootargs,
        accel,
    )
}

/// [`qemu_console_tcg`], run again (three runs at most) while the guest's progress
/// watchdog fires: under QEMU the guest's timer follows host time, so a loaded host
/// that deschedules a lock holder's vCPU thread for a few seconds trips it (on our
/// machine time is virtual and this cannot happen).
pub fn qemu_console_patient(cpus: usize, bootargs: &str, accel: &str) -> Vec<String> {
    patiently(|| qemu_console_tcg(cpus, bootargs, accel))
}

/// The console lines of `boot`, booted again (three runs at most) while the guest's
/// progress watchdog fires (see [`qemu_console_patient`]).
fn patiently(boot: impl Fn() -> Vec<String>) -> Vec<String> {
    let watchdog = |lines: &[String]| lines.iter().any(|l| l.starts_with("PANIC: watchdog:"));
    let mut lines = boot();
    for _ in 1..3 {
        if !watchdog(&lines) {
            break;
        }
        lines = boot();
    }
    lines
}

/// [`qemu_riscv64_console`], patient as [`qemu_console_patient`] is.
pub fn qemu_riscv64_console_patient(cpus: usize, bootargs: &str) -> Vec<String> {
    patiently(|| qemu_riscv64_console(cpus, bootargs))
}

/// The console lines of `qemu-system-aarch64 -M virt` booting the flat `image`
/// (ours or a Linux `Image`), which must end QEMU (power-off, or a reset with
/// `-no-reboot`) within two minutes.
pub fn qemu_console_of(
    image: &std::path::Path,
    cpus: usize,
    bootargs: &str,
    accel: &str,
) -> Vec<String> {
    let output = Command::new("timeout")
        .args([
            "120",
            "qemu-system-aarch64",
            "-M",
            "virt,gic-version=2",
            "-cpu",
            "cortex-a72",
        ])
        .args([
            "-smp",
            &cpus.to_string(),
            "-m",
            "128M",
            "-nographic",
            "-monitor",
            "none",
            "-accel",
            accel,
        ])
        .args(["-no-reboot", "-kernel"])
        .arg(image)
        .args(["-append", bootargs])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("qemu-system-aarch64 is installed by ./setup.sh (package qemu-system-arm)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_ne!(
        output.status.code(),
        Some(124),
        "the guest did not power QEMU off: {bootargs}\n{text}"
    );
    text.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The console lines of `qemu-system-riscv64 -M virt` (OpenSBI as the firmware,
/// 128 MiB, `cpus` harts on one host thread) booting the RISC-V guest ELF with
/// `bootargs`: the guest's lines only, from its first (`cpu0: online`) on, as
/// OpenSBI's banner names the hart that won its boot lottery.
pub fn qemu_riscv64_console(cpus: usize, bootargs: &str) -> Vec<String> {
    qemu_riscv64_console_tcg(cpus, bootargs, "tcg,thread=single")
}

/// [`qemu_riscv64_console`] with QEMU's `-accel` setting `accel`.
pub fn qemu_riscv64_console_tcg(cpus: usize, bootargs: &str, accel: &str) -> Vec<String> {
    let output = Command::new("timeout")
        .args([
            "120",
            "qemu-system-riscv64",
            "-M",
            "virt",
            "-bios",
            "default",
        ])
        .args(["-smp", &cpus.to_string(), "-m", "128M", "-nographic"])
        .args(["-monitor", "none", "-accel", accel, "-no-reboot"])
        .arg("-kernel")
        .arg(env!("PERCPU_GUEST_RISCV64_ELF"))
        .args(["-append", bootargs])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("qemu-system-riscv64 is installed by ./setup.sh (package qemu-system-misc)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_ne!(
        output.status.code(),
        Some(124),
        "the RISC-V guest did not power QEMU off: {bootargs}\n{text}"
    );
    text.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .skip_while(|l| l != "cpu0: online")
        .filter(|l| !l.is_empty())
        .collect()
}

/// This test process's scratch directory, `target/tmp/percpu-lab-<test>-<pid>`:
/// inside `target/`, never in the system's temporary directory. The directories
/// that finished processes of the same test left there are removed when it is
/// first asked for, so a run leaves at most one behind per test binary.
pub fn scratch_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = format!("percpu-lab-{}-", env!("CARGO_CRATE_NAME"));
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A path for a scratch file, in [`scratch_dir`].
pub fn scratch(name: &str) -> std::path::PathBuf {
    scratch_dir().join(name)
}

/// `percpu-lab run --trace PATH ARGS…`.
pub fn record(path: &std::path::Path, args: &[&str]) -> Run {
    let mut argv = vec!["run", "--trace", path.to_str().unwrap()];
    argv.extend_from_slice(args);
    percpu_lab(&argv)
}

/// `percpu-lab replay PATH`.
pub fn replay(path: &std::path::Path) -> Run {
    percpu_lab(&["replay", path.to_str().unwrap()])
}

/// Every event of the trace at `path`.
pub fn load(path: &std::path::Path) -> traces::Trace {
    traces::read_trace(&std::fs::read(path).unwrap()).unwrap()
}

/// Writes `trace` (its header, strings and events, changed or not) to `path` as a
/// cleanly finished file.
pub fn rewrite(trace: &traces::Trace, path: &std::path::Path) {
    let mut writer = traces::TraceWriter::new(
        Vec::new(),
        &trace.header.config,
        traces::WriterOptions::default(),
    )
    .unwrap();
    for event in &trace.events {
        writer.write(event, &trace.strings).unwrap();
    }
    std::fs::write(path, writer.finish().unwrap().0).unwrap();
}

/// The `findings` of a run's JSON report.
pub fn findings(run: &Run) -> Vec<serde_json::Value> {
    run.json()["findings"]
        .as_array()
        .expect("findings is an array")
        .clone()
}

/// The kinds of a run's JSON findings, in order.
pub fn kinds(run: &Run) -> Vec<String> {
    findings(run)
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

/// A JSON finding's key and detail lines as one text.
pub fn finding_text(finding: &serde_json::Value) -> String {
    let mut all = finding["key"].as_str().unwrap_or("").to_string();
    for line in finding["details"].as_array().into_iter().flatten() {
        all.push('\n');
        all.push_str(line.as_str().unwrap_or(""));
    }
    all
}

/// `docs/report.schema.json`.
pub fn schema() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn schema_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema is a valid JSON Schema")
}

/// The schema's complaints about `report`, one line each.
pub fn schema_errors(validator: &jsonschema::Validator, report: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The first seed whose `fs-reclaim` run on the mutex variant really deadlocks
/// (which seeds do depends on the guest build).
pub fn deadlocking_fs_reclaim_seed() -> String {
    (0..20)
        .map(|seed: u32| seed.to_string())
        .find(|seed| {
            let run = percpu_lab(&[
                "run",
                "--variant",
                "mutex",
                "--scenario",
                "fs-reclaim",
                "--seed",
                seed,
            ]);
            run.stdout.contains("== stopped: deadlock")
        })
        .expect("some seed of fs-reclaim deadlocks")
}
