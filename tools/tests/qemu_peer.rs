//! Cross-check against a peer nobody here wrote: the same guest `Image` booted by
//! QEMU's `virt` board must print the same lines as on our machine, order aside.

mod common;

use std::process::{Command, Stdio};

#[test]
fn smoke_prints_the_same_lines_under_qemu() {
    let ours = common::percpu_lab(&["run", "--scenario", "smoke", "--cpus", "4"]);
    assert_eq!(ours.code, 0, "{}", ours.describe());
    let mut ours_lines = ours.all_console_lines();
    let mut qemu_lines = common::qemu_console(4, "scenario=smoke");
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
