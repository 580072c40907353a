//! Bad input gets one clear line on stderr and exit code 2, never a panic.

mod common;
use common::percpu_lab;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goblin::elf::{
    header,
    program_header::{PF_X, PT_LOAD},
    section_header::SHT_SYMTAB,
    Elf,
};

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
    let path = common::scratch(name);
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

/// Runs `percpu-lab args`, failing the test (instead of hanging it) if it has not
/// ended after a minute: the cases below used to block forever.
fn percpu_lab_not_blocking(args: &[&str]) -> common::Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_percpu-lab"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("percpu-lab {args:?} blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    common::Run::of(child.wait_with_output().unwrap())
}

fn assert_refused_at_once(args: &[&str], expect: &str) {
    let run = percpu_lab_not_blocking(args);
    assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [format!("percpu-lab: error: {expect}")],
        "{args:?}: {}",
        run.describe()
    );
}

fn fifo(name: &str) -> PathBuf {
    let path = temp_file(name, b"");
    std::fs::remove_file(&path).unwrap();
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

#[test]
fn a_fifo_as_kernel_or_trace_is_refused_without_opening_it() {
    let path = fifo("fifo");
    let p = path.to_str().unwrap();
    let expect = format!("{p} is a FIFO, not a regular file");
    assert_refused_at_once(&["run", "--kernel", p], &expect);
    assert_refused_at_once(&["scenarios", "--kernel", p], &expect);
    assert_refused_at_once(&["replay", p], &expect);
    assert_refused_at_once(&["check", p], &expect);
    assert_refused_at_once(&["export", p, "--perfetto", "/dev/null"], &expect);
}

#[test]
fn a_directory_or_device_as_kernel_or_trace_is_refused() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    assert_refused_at_once(
        &["run", "--kernel", d],
        &format!("{d} is a directory, not a regular file"),
    );
    assert_refused_at_once(
        &["replay", "/dev/zero"],
        "/dev/zero is a character device, not a regular file",
    );
}

/// The built guest ELF with `patch` applied to its bytes, written to a file.
fn patched_guest(name: &str, patch: impl FnOnce(&mut [u8], &Elf)) -> PathBuf {
    let mut bytes = std::fs::read(env!("PERCPU_GUEST_ELF")).unwrap();
    let original = bytes.clone();
    let elf = Elf::parse(&original).unwrap();
    patch(&mut bytes, &elf);
    temp_file(name, &bytes)
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Index in the program header table of the `nth` PT_LOAD.
fn load_header_index(elf: &Elf, nth: usize) -> usize {
    elf.program_headers
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.p_type == PT_LOAD)
        .nth(nth)
        .expect("the guest has that many PT_LOADs")
        .0
}

/// File offset of field `field` (a byte offset in an Elf64_Phdr) of the program
/// header of the `nth` PT_LOAD.
fn load_header_field(elf: &Elf, nth: usize, field: usize) -> usize {
    elf.header.e_phoff as usize
        + load_header_index(elf, nth) * elf.header.e_phentsize as usize
        + field
}

/// File offset of `st_value` of symbol `name` in `.symtab`.
fn symbol_value_offset(elf: &Elf, name: &str) -> usize {
    let symtab = elf
        .section_headers
        .iter()
        .find(|sh| sh.sh_type == SHT_SYMTAB)
        .expect("the guest has a symbol table");
    let index = elf
        .syms
        .iter()
        .position(|s| elf.strtab.get_at(s.st_name) == Some(name))
        .unwrap_or_else(|| panic!("the guest has no symbol {name}"));
    symtab.sh_offset as usize + index * symtab.sh_entsize as usize + ST_VALUE
}

const E_TYPE: usize = 16;
const E_ENTRY: usize = 24;
const P_VADDR: usize = 16;
const P_PADDR: usize = 24;
const ST_VALUE: usize = 8;

#[test]
fn relocatable_and_position_independent_kernels_are_refused() {
    for (e_type, name, expect) in [
        (header::ET_REL, "rel", "relocatable object file (ET_REL)"),
        (
            header::ET_DYN,
            "dyn",
            "position-independent/shared object (ET_DYN)",
        ),
    ] {
        let path = patched_guest(name, |b, _| put_u16(b, E_TYPE, e_type));
        assert_one_line_kernel_error(&path, expect);
    }
}

/// The start of the guest's second PT_LOAD, its read-only data: loaded, but not
/// executable.
fn rodata_start() -> u64 {
    let bytes = std::fs::read(env!("PERCPU_GUEST_ELF")).unwrap();
    let elf = Elf::parse(&bytes).unwrap();
    let rodata = &elf.program_headers[load_header_index(&elf, 1)];
    assert_eq!(rodata.p_flags & PF_X, 0, "the second PT_LOAD is not code");
    rodata.p_vaddr
}

#[test]
fn an_entry_point_outside_the_code_is_refused() {
    let rodata = rodata_start();
    let path = patched_guest("entry", |b, _| put_u64(b, E_ENTRY, rodata));
    assert_one_line_kernel_error(
        &path,
        &format!("kernel entry point {rodata:#x} lies outside every executable PT_LOAD segment"),
    );
    let path = patched_guest("entry-nowhere", |b, _| put_u64(b, E_ENTRY, 0x10));
    assert_one_line_kernel_error(&path, "entry point 0x10 lies outside");
}

#[test]
fn overlapping_load_segments_are_refused() {
    // The second PT_LOAD moved to start inside the first (the code).
    let path = patched_guest("overlap", |b, elf| {
        let text = &elf.program_headers[load_header_index(elf, 0)];
        let inside = text.p_vaddr + text.p_memsz / 2;
        put_u64(b, load_header_field(elf, 1, P_VADDR), inside);
        put_u64(b, load_header_field(elf, 1, P_PADDR), inside);
    });
    assert_one_line_kernel_error(&path, "PT_LOAD segments at physical");
}

#[test]
fn a_probed_function_outside_the_loaded_code_is_refused() {
    // Before: probes that never fire, so every mutex looked held forever (a false
    // `deadlock`). Read-only data and an address past every segment.
    for (name, addr) in [
        ("probe-rodata", rodata_start() + 0x10),
        ("probe-nowhere", 0x5000_0000),
    ] {
        let path = patched_guest(name, |b, elf| {
            put_u64(b, symbol_value_offset(elf, "mutex_unlock"), addr)
        });
        let p = path.to_str().unwrap();
        for args in [
            &["run", "--kernel", p, "--scenario", "smoke"][..],
            &[
                "run",
                "--kernel",
                p,
                "--variant",
                "mutex",
                "--scenario",
                "fs-reclaim",
            ],
        ] {
            let run = percpu_lab(args);
            assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
            assert_eq!(
                run.stderr.lines().collect::<Vec<_>>(),
                [format!(
                    "percpu-lab: error: kernel function `mutex_unlock` (probed by the recorder) \
                     at {addr:#x} lies outside the loaded code"
                )],
                "{}",
                run.describe()
            );
        }
    }
}

/// Runs `percpu-lab args` as if the disk were full: with RLIMIT_FSIZE at `limit`
/// bytes and SIGXFSZ ignored, a write past it fails with EFBIG.
fn percpu_lab_with_file_size_limit(args: &[&str], limit: u64) -> common::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_percpu-lab"));
    cmd.args(args);
    // SAFETY: between fork and exec the closure calls only async-signal-safe
    // functions (signal, setrlimit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    common::Run::of(cmd.output().unwrap())
}

/// An empty directory for one test's outputs.
fn empty_dir(name: &str) -> PathBuf {
    let dir = common::scratch(&format!("{name}.d"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_failed_write_left_nothing(run: &common::Run, dir: &Path, out: &Path) {
    assert_eq!(run.code, 2, "{}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {}", run.describe());
    assert!(
        lines[0].starts_with("percpu-lab: error: cannot write"),
        "{}",
        run.describe()
    );
    assert!(lines[0].contains("File too large"), "{}", run.describe());
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{} left {left:?}", out.display());
}

#[test]
fn a_full_disk_leaves_no_partial_trace() {
    let dir = empty_dir("full-trace");
    let out = dir.join("smoke.trace");
    let run = percpu_lab_with_file_size_limit(
        &[
            "run",
            "--scenario",
            "smoke",
            "--trace",
            out.to_str().unwrap(),
        ],
        4096,
    );
    assert_failed_write_left_nothing(&run, &dir, &out);
}

#[test]
fn a_full_disk_leaves_no_partial_export() {
    let trace = empty_dir("full-export-input").join("smoke.trace");
    let recorded = percpu_lab(&[
        "run",
        "--scenario",
        "smoke",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(recorded.code, 0, "{}", recorded.describe());
    // The same export without the limit succeeds: the limit is what fails it.
    let dir = empty_dir("full-export");
    let out = dir.join("smoke.json");
    let args = [
        "export",
        trace.to_str().unwrap(),
        "--perfetto",
        out.to_str().unwrap(),
    ];
    let limited = percpu_lab_with_file_size_limit(&args, 64 * 1024);
    assert_failed_write_left_nothing(&limited, &dir, &out);
    let free = percpu_lab(&args);
    assert_eq!(free.code, 0, "{}", free.describe());
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out).unwrap()).unwrap();
}

/// `check` and `export` name code with the kernel `--kernel` gives: one that
/// cannot be read is refused as `run` refuses it, not passed over.
#[test]
fn an_unreadable_kernel_for_check_or_export_is_refused() {
    let trace = common::scratch("bad-kernel.trace");
    let run = common::record(&trace, &["--scenario", "smoke", "--cpus", "1"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let t = trace.to_str().unwrap();
    let missing = "/nonexistent/vmlinux";
    let expect = format!("cannot open {missing}: No such file or directory (os error 2)");
    assert_refused_at_once(&["check", t, "--kernel", missing], &expect);
    let out = common::scratch("bad-kernel.txt");
    let export = [
        "export",
        t,
        "--text",
        out.to_str().unwrap(),
        "--kernel",
        missing,
    ];
    assert_refused_at_once(&export, &expect);
    assert!(!out.exists(), "nothing is written for a refused export");
    let not_elf = temp_file("not-a-kernel", b"hello");
    assert_refused_at_once(
        &["check", t, "--kernel", not_elf.to_str().unwrap()],
        "kernel is neither an ELF file nor an arm64 Image",
    );
}
