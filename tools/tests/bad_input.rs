//! Bad input gets one clear line on stderr and exit code 2, never a panic.

mod common;
use common::percpu_lab;

fn assert_bad_input(args: &[&str], expect_in_message: &str) {
    let run = percpu_lab(args);
    assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
    assert!(
        !run.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        run.describe()
    );
    assert!(
        run.stderr
            .to_lowercase()
            .contains(&expect_in_message.to_lowercase()),
        "{args:?}: expected {expect_in_message:?} in: {}",
        run.describe()
    );
    assert!(
        run.stdout.is_empty(),
        "{args:?} printed on stdout: {}",
        run.describe()
    );
}

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("percpu-lab-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn assert_one_line_kernel_error(path: &std::path::Path, expect: &str) {
    let path = path.to_str().unwrap();
    assert_bad_input(&["run", "--kernel", path], expect);
    let run = percpu_lab(&["run", "--kernel", path]);
    assert_eq!(
        run.stderr.trim_end().lines().count(),
        1,
        "not one line: {}",
        run.describe()
    );
}

#[test]
fn missing_kernel() {
    assert_one_line_kernel_error(
        std::path::Path::new("/nonexistent/kernel.elf"),
        "/nonexistent/kernel.elf",
    );
}

#[test]
fn kernel_that_is_not_an_elf() {
    assert_one_line_kernel_error(&temp_file("not-elf", b"#!/bin/sh\necho hello\n"), "ELF");
}

#[test]
fn kernel_for_another_architecture() {
    // The test binary itself is an x86-64 ELF.
    let me = std::env::current_exe().unwrap();
    assert_one_line_kernel_error(&me, "AArch64");
}

#[test]
fn truncated_kernel() {
    let guest = std::fs::read(env!("PERCPU_GUEST_ELF")).unwrap();
    for len in [10, 64, 200, guest.len() / 2] {
        let path = temp_file(&format!("truncated-{len}"), &guest[..len]);
        let run = percpu_lab(&["run", "--kernel", path.to_str().unwrap()]);
        assert_eq!(run.code, 2, "truncated to {len}: {}", run.describe());
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    }
}

#[test]
fn bad_flags() {
    assert_bad_input(&["run", "--cpus", "0"], "--cpus");
    assert_bad_input(&["run", "--cpus", "9"], "--cpus");
    assert_bad_input(&["run", "--sched", "fifo"], "--sched");
    assert_bad_input(&["run", "--variant", "rcu"], "--variant");
    assert_bad_input(&["run", "--seed", "-1"], "-1");
    assert_bad_input(&["run", "--seed", "lots"], "--seed");
    assert_bad_input(&["run", "--quantum", "0"], "--quantum");
    assert_bad_input(&["run", "--no-such-flag"], "--no-such-flag");
    assert_bad_input(&["frobnicate"], "frobnicate");
}

#[test]
fn unknown_scenario() {
    assert_bad_input(&["run", "--scenario", "nope"], "unknown scenario 'nope'");
}
