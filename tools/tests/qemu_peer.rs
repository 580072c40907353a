//! Cross-check against a peer nobody here wrote: the same guest `Image` booted by
//! QEMU's `virt` board must print the same lines as on our machine, order aside.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QEMU_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Boots the flat Image under qemu-system-aarch64 and returns its console lines.
fn qemu_console(cpus: usize, bootargs: &str) -> Vec<String> {
    let mut child = Command::new("qemu-system-aarch64")
        .args([
            "-M",
            "virt,gic-version=2",
            "-cpu",
            "cortex-a72",
            "-smp",
            &cpus.to_string(),
        ])
        .args([
            "-nographic",
            "-monitor",
            "none",
            "-kernel",
            env!("PERCPU_GUEST_IMAGE"),
            "-append",
            bootargs,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-aarch64 is installed by ./setup.sh (package qemu-system-arm)");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waiting on qemu").is_some() {
            break;
        }
        if started.elapsed() > QEMU_TIME_LIMIT {
            child.kill().ok();
            panic!("the guest did not power QEMU off within {QEMU_TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    output
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn smoke_prints_the_same_lines_under_qemu() {
    let ours = common::percpu_lab(&["run", "--scenario", "smoke", "--cpus", "4"]);
    assert_eq!(ours.code, 0, "{}", ours.describe());
    let mut ours_lines = ours.all_console_lines();
    let mut qemu_lines = qemu_console(4, "scenario=smoke");
    ours_lines.sort();
    qemu_lines.sort();
    assert!(!qemu_lines.is_empty());
    assert_eq!(ours_lines, qemu_lines, "QEMU and percpu-lab disagree");
}

/// The guest's own checks under QEMU (every scenario's expected lines, panic and
/// fault reports, irqmask, the hang): guest/test-qemu.sh, which is the guest
/// crate's test suite since it cannot be built for the host.
#[test]
fn guest_scenarios_pass_under_qemu() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest/test-qemu.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(env!("PERCPU_GUEST_IMAGE"))
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "guest/test-qemu.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all QEMU checks passed"), "{stdout}");
}
