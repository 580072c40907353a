//! Real Linux as a guest: the small lockdep kernel that
//! `tools/linux/build-lockdep-kernel.sh` builds from Debian's `linux-source-6.1`
//! (built here on first use, then kept under `target/`), booted by the arm64 boot
//! protocol, with its own locking self-test as the oracle of our validator.
//! Needs the packages `./setup.sh --deps` installs; fails with that advice
//! without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{percpu_lab, qemu_console_of};

/// Builds the kernel unless the build script finds it up to date (once per test
/// process: two builds into one directory would trample each other).
fn lockdep_kernel() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    run_build_script("build-lockdep-kernel.sh", "the lockdep kernel")
        .join("target/linux-lockdep/vmlinux")
}

/// Runs `tools/linux/<script>` (which does nothing when its output is up to date);
/// returns the repository's root.
fn run_build_script(script: &str, what: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("tools/linux").join(script))
        .status()
        .unwrap_or_else(|e| panic!("{script} does not run: {e}"));
    assert!(
        status.success(),
        "building {what} failed ({status}); run ./setup.sh --deps first"
    );
    root
}

/// `percpu-lab run --kernel <the lockdep kernel> ARGS…`.
fn run_linux(args: &[&str]) -> common::Run {
    let vmlinux = lockdep_kernel();
    let mut argv = vec!["run", "--kernel", vmlinux.to_str().unwrap()];
    argv.extend_from_slice(args);
    percpu_lab(&argv)
}

/// The oracle's run: one CPU, Unicorn's MMU (the self-test is all there is to it).
const ORACLE: &[&str] = &[
    "--cpus",
    "1",
    "--mmu",
    "builtin",
    "--oracle",
    "lockdep-selftest",
];

/// The self-test's table, from its header to its verdict line, in `lines`.
fn selftest_table(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|l| l.contains("| Locking API testsuite:"));
    let end = lines
        .iter()
        .position(|l| l.contains("testcases passed") || l.contains("FAILED"));
    match (start, end) {
        (Some(start), Some(end)) if start < end => lines[start..=end].to_vec(),
        _ => Vec::new(),
    }
}

/// The same kernel prints the same self-test table on our board and on QEMU's
/// `virt` (one CPU: the self-test runs before the others are up).
#[test]
fn the_self_test_table_is_the_same_on_qemu() {
    let vmlinux = lockdep_kernel();
    let image = vmlinux.with_file_name("Image");
    let cmdline = "earlycon keep_bootcon panic=-1";
    let qemu = qemu_console_of(&image, 1, cmdline, "tcg,thread=single");
    let ours = run_linux(&[ORACLE, &["--cmdline", cmdline]].concat());
    let table = selftest_table(&ours.console_lines(0));
    assert!(table.len() > 100, "{}", ours.describe());
    assert!(table
        .last()
        .unwrap()
        .contains("Good, all 349 testcases passed!"));
    assert_eq!(table, selftest_table(&qemu));
}

/// Every case of the kernel's locking self-test is judged: none disagrees with
/// the kernel's lockdep, and the cases kept out say why. The figures are
/// deterministic (same kernel, same machine); a change in them is a change in
/// what the validator models.
#[test]
fn the_validator_agrees_with_the_kernels_lockdep_on_its_self_test() {
    let run = run_linux(ORACLE);
    assert_eq!(run.code, 0, "{}", run.describe());
    // The kernel itself passed its self-test on our board, as it does on QEMU.
    assert!(
        run.console_contains("Good, all 349 testcases passed!"),
        "{}",
        run.describe()
    );
    let summary = run.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        summary,
        "oracle: 313/349 locking self-test cases agree (0 disagree, 36 unmodelled: \
         nest-lock 26, ww-mutex 36)",
        "{}",
        run.describe()
    );
    let table: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("[cpu") && !l.starts_with("=="))
        .collect();
    assert_eq!(table.len(), 349 + 1);
    // A case per kind the validator reports, each agreeing.
    assert_cases_agree(
        &run,
        &[
            ("AA_spin", "recursive-locking"),
            ("ABBA_spin", "circular-dependency"),
            ("double_unlock_spin", "bad-unlock"),
            ("init_held_spin", "held-lock-freed"),
            ("irqsafe1_hard_spin_12", "inconsistent-irq-state"),
            ("local_lock_2", "clean"),
            ("rlock_AA1", "clean"),
            ("rsem_AA1", "recursive-locking"),
        ],
    );
}

/// The same judgement as JSON, and the guest console on stderr.
#[test]
fn the_oracle_reports_as_json_too() {
    let run = run_linux(&[ORACLE, &["--report", "json", "--max-insns", "200000000"]].concat());
    // Cut short by the watchdog: the self-test did not finish, a guest failure.
    assert_eq!(run.code, 3, "{}", run.describe());
    let report = run.json();
    assert_eq!(report["oracle"], "lockdep-selftest");
    assert_eq!(report["finished"], false);
    let cases = report["cases"].as_array().unwrap();
    assert!(!cases.is_empty() && cases.len() < 349, "{}", cases.len());
    assert_eq!(cases[0]["name"], "AA_spin");
    assert_eq!(cases[0]["verdict"], "agree");
    assert!(run.stderr.contains("[cpu0] Booting Linux"));
}

/// A kernel without the self-test cannot be an oracle: a usage error.
#[test]
fn the_oracle_needs_a_kernel_with_the_self_test() {
    let run = percpu_lab(&["run", "--oracle", "lockdep-selftest"]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(
        run.stderr.contains("DEBUG_LOCKING_API_SELFTESTS"),
        "{}",
        run.describe()
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.describe());
}

/// A Linux run's trace replays identically (its command line and kernel too) and
/// `check` re-derives its findings offline.
#[test]
fn a_linux_trace_replays_and_checks() {
    let vmlinux = lockdep_kernel();
    let kernel = vmlinux.to_str().unwrap();
    let trace = common::scratch("linux.trace");
    let run = common::record(
        &trace,
        &[
            "--kernel",
            kernel,
            "--cpus",
            "2",
            "--cmdline",
            "earlycon keep_bootcon",
            "--max-insns",
            "300000000",
            "--report",
            "json",
        ],
    );
    assert!(!common::kinds(&run).is_empty(), "{}", run.describe());
    replays_and_checks(&trace, kernel, &run);
}

/// `trace`, recorded by `run` on `kernel`, replays identically and `check` gives
/// its findings again; returns the check.
fn replays_and_checks(trace: &Path, kernel: &str, run: &common::Run) -> common::Run {
    let trace = trace.to_str().unwrap();
    let replay = percpu_lab(&["replay", trace, "--kernel", kernel]);
    assert_eq!(replay.code, 0, "{}", replay.describe());
    assert!(replay.stdout.contains("identical"), "{}", replay.describe());
    let check = percpu_lab(&["check", trace, "--kernel", kernel, "--report", "json"]);
    assert_eq!(check.code, 1, "{}", check.describe());
    assert_eq!(common::kinds(&check), common::kinds(run));
    check
}

/// The lockdep kernel's `vmlinux`, `Image` and `System.map`.
fn lockdep_kernel_files() -> (String, String, String) {
    let vmlinux = lockdep_kernel();
    let file = |name: &str| vmlinux.with_file_name(name).to_str().unwrap().to_string();
    (file("vmlinux"), file("Image"), file("System.map"))
}

/// A short run of the lockdep kernel, 2 CPUs, well into its self-test.
const SHORT_RUN: &[&str] = &[
    "--cpus",
    "2",
    "--cmdline",
    "earlycon keep_bootcon",
    "--max-insns",
    "60000000",
    "--report",
    "json",
];

/// A bare `Image` runs as its `vmlinux` does when the vmlinux names it (`--symbols`):
/// the same report, lock findings included (the recorder reads lockdep through the
/// vmlinux's DWARF), and a trace that replays. With its `System.map` it is named
/// and its locking is seen through the lock primitives only (no DWARF to read
/// lockdep's maps with), and the run says so.
#[test]
fn a_bare_image_runs_named_by_its_vmlinux_or_its_system_map() {
    let (vmlinux, image, map) = lockdep_kernel_files();
    let (vmlinux, image, map) = (vmlinux.as_str(), image.as_str(), map.as_str());
    let of_vmlinux = run_linux(SHORT_RUN);
    assert!(
        !common::kinds(&of_vmlinux).is_empty(),
        "{}",
        of_vmlinux.describe()
    );
    let trace = common::scratch("image.trace");
    let of_image = common::record(
        &trace,
        &[&["--kernel", image, "--symbols", vmlinux], SHORT_RUN].concat(),
    );
    assert_eq!(of_image.code, of_vmlinux.code, "{}", of_image.describe());
    assert_eq!(of_image.stdout, of_vmlinux.stdout, "the same report");
    // `check` names code through the symbols the trace was recorded with.
    let check = replays_and_checks(&trace, image, &of_image);
    let named = |run: &common::Run| {
        common::findings(run)
            .iter()
            .any(|f| common::finding_text(f).contains("dotest+0x"))
    };
    assert!(named(&of_image) && named(&check), "{}", check.describe());

    // With names only, lockdep's maps cannot be read: the locking is seen
    // through the lock primitives, and the run says so.
    let mapped = percpu_lab(&[&["run", "--kernel", image, "--symbols", map], SHORT_RUN].concat());
    assert_eq!(mapped.code, 1, "findings: {}", mapped.describe());
    assert!(mapped.stderr.contains("no DWARF"), "{}", mapped.describe());
    let report = mapped.json();
    let coverage = report["stats"]["lockdep"]["coverage"]
        .as_str()
        .unwrap_or_default();
    assert!(coverage.starts_with("lock primitives"), "{coverage}");
    assert!(
        common::kinds(&mapped).contains(&"circular-dependency".to_string()),
        "the self-test's ABBA cases: {}",
        mapped.describe()
    );
    let frame = &report["stats"]["cpus"][0]["backtrace"][0];
    let symbol = frame["symbol"].as_str().unwrap_or_default();
    assert!(symbol.contains("+0x"), "named: {frame}");
    assert!(
        frame["file"].is_null(),
        "a System.map has no lines: {frame}"
    );
}

/// Symbols that cannot name the Image are one-line usage errors (exit 2).
#[test]
fn an_image_without_usable_symbols_is_a_usage_error() {
    let (vmlinux, image, map) = lockdep_kernel_files();
    let (vmlinux, image, map) = (vmlinux.as_str(), image.as_str(), map.as_str());
    // Another build's map: the kernel image ends elsewhere.
    let other_map = common::scratch("other-System.map");
    let text = std::fs::read_to_string(map).unwrap();
    let shifted: String = text
        .lines()
        .map(|l| match l.strip_suffix(" B _end") {
            Some(addr) => format!(
                "{:016x} B _end\n",
                u64::from_str_radix(addr, 16).unwrap() + 0x1000
            ),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&other_map, shifted).unwrap();
    let other_map = other_map.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--kernel", image],
            "--mmu checked needs the kernel's link addresses",
        ),
        (
            vec![
                "--kernel",
                image,
                "--symbols",
                map,
                "--oracle",
                "lockdep-selftest",
            ],
            "a System.map has no DWARF",
        ),
        (
            vec!["--kernel", vmlinux, "--symbols", map],
            "--symbols is for a bare arm64 Image",
        ),
        (
            vec!["--kernel", image, "--symbols", other_map],
            "not those of this Image",
        ),
        (vec!["--symbols", map], "give the Image with --kernel"),
    ] {
        let run = percpu_lab(&[&["run"], &args[..]].concat());
        assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{args:?}: {}",
            run.describe()
        );
        assert!(run.stderr.contains(says), "{args:?}: {}", run.describe());
    }
}

/// The trace keeps the `--symbols` file's hash: once the file changes, replay
/// refuses it in one line (it would diverge for no visible reason) and `check`
/// names no code.
#[test]
fn a_trace_refuses_symbols_changed_since_it_was_recorded() {
    let (_, image, map) = lockdep_kernel_files();
    let copy = common::scratch("recorded-System.map");
    std::fs::copy(&map, &copy).unwrap();
    let trace = common::scratch("symbols.trace");
    let (copy, trace_path) = (copy.to_str().unwrap(), trace.to_str().unwrap());
    let run = common::record(
        &trace,
        &[
            "--kernel",
            &image,
            "--symbols",
            copy,
            "--cpus",
            "1",
            "--max-insns",
            "5000000",
        ],
    );
    assert_eq!(run.code, 3, "a watchdog end: {}", run.describe());
    let replay = percpu_lab(&["replay", trace_path, "--kernel", &image]);
    assert_eq!(replay.code, 0, "{}", replay.describe());

    let mut text = std::fs::read_to_string(copy).unwrap();
    text.push_str("ffffffc008000000 t added_later\n");
    std::fs::write(copy, text).unwrap();
    let replay = percpu_lab(&["replay", trace_path, "--kernel", &image]);
    assert_eq!(replay.code, 2, "{}", replay.describe());
    assert_eq!(replay.stderr.lines().count(), 1, "{}", replay.describe());
    assert!(
        replay
            .stderr
            .contains("not the symbols file the trace was recorded with"),
        "{}",
        replay.describe()
    );
    let check = percpu_lab(&["check", trace_path, "--kernel", &image]);
    assert!(
        check.stderr.contains("symbols file changed"),
        "{}",
        check.describe()
    );
}

/// The initramfs of the user-space workload (tools/linux/build-initramfs.sh:
/// Debian's static arm64 busybox, parallel shells mounting and unmounting tmpfs).
fn workload_initramfs() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            run_build_script("build-initramfs.sh", "the workload's initramfs")
                .join("target/linux-workload/initramfs.cpio")
        })
        .clone()
}

/// Real user space on 4 CPUs under the checked MMU with recording on. The lockdep
/// kernel boots them (secondaries by PSCI, their spin waits woken by the stores that
/// end them: `ldxr`/`wfe` with no SEV), and the TLB checker, which sees its early
/// code run at physical addresses and its fixmap and rodata updates, stays silent
/// from boot to power-off. busybox's shells (EL0, one ASID each) mount and unmount
/// tmpfs in parallel, so the real mm/percpu.c allocates and frees per-CPU counters,
/// and the machine powers off as on QEMU. Every lock finding comes from the
/// kernel's own self-test, which provokes them on purpose; the recorder names the
/// allocator's real locks, taken by the workload's `mount`s, and the IPIs the
/// kernel sends; the trace replays identically (the initramfs too) and `check`
/// re-derives the findings from it.
#[test]
fn a_busybox_workload_exercises_the_real_percpu_allocator_on_four_cpus() {
    let vmlinux = lockdep_kernel();
    let kernel = vmlinux.to_str().unwrap();
    let initrd = workload_initramfs();
    let trace = common::scratch("workload.trace");
    // Recorded with Unicorn's soft TLB flushed every 997 blocks, as a loaded host's
    // timing would, and replayed without: a TLBI by VA leaves three of a page's four
    // 1 KiB target pages in Unicorn's TLB unless the machine flushes them, and the
    // trace then depends on when the host's timing evicted them.
    let run = common::record(
        &trace,
        &[
            "--kernel",
            kernel,
            "--initrd",
            initrd.to_str().unwrap(),
            "--cpus",
            "4",
            "--cmdline",
            "earlycon keep_bootcon workers=4 rounds=3",
            "--report",
            "json",
            "--churn-soft-tlb",
            "997",
        ],
    );
    assert!(
        run.console_contains("smp: Brought up 1 node, 4 CPUs"),
        "{}",
        run.describe()
    );
    for w in 1..=4 {
        assert!(
            run.console_contains(&format!("workload: shell {w} done")),
            "{}",
            run.describe()
        );
    }
    assert!(run.console_contains("workload: done"), "{}", run.describe());
    assert!(!run.console_contains("failed"), "{}", run.describe());
    let report = run.json();
    let end = report["end"]["summary"].as_str().unwrap_or_default();
    assert!(end.starts_with("powered off"), "{end}");
    let findings = common::findings(&run);
    let tlb_kinds = [
        "stale-tlb",
        "missing-tlb-flush",
        "break-before-make",
        "missing-barrier",
        "freed-page-in-tlb",
    ];
    let tlb_findings: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| tlb_kinds.contains(&f["kind"].as_str().unwrap_or_default()))
        .collect();
    assert!(tlb_findings.is_empty(), "{tlb_findings:#?}");
    let outside_selftest = findings_outside_the_self_test(&run);
    assert!(outside_selftest.is_empty(), "{outside_selftest:#?}");

    let bytes = std::fs::read(&trace).unwrap();
    let recorded = traces::read_trace(&bytes).unwrap();
    let taken_by = allocator_locks_taken(&recorded);
    let mut user_fills = 0;
    // IPIs sent, by Linux's message number (arm64's `ipi_msg_type`).
    let mut ipis = std::collections::BTreeMap::<u32, u32>::new();
    // Per interrupt: how often the machine entered it, and hard-IRQ contexts of it.
    let mut interrupts = std::collections::BTreeMap::<u32, [u32; 2]>::new();
    // Each task's name and pid by the trace's task number as the markers go, and
    // every (name, pid) a task had.
    let (mut names, mut pids) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut named_pids = std::collections::BTreeSet::new();
    for e in &recorded.events {
        match e.kind {
            traces::EventKind::Marker { label, value } => {
                let label = recorded.strings.get(label).unwrap_or_default();
                if let Some(name) = label.strip_prefix("task:") {
                    names.insert(value, name.to_string());
                } else if let Some(pid) = label.strip_prefix("task-pid:") {
                    pids.insert(value, pid.parse::<u32>().unwrap());
                }
                if let (Some(name), Some(&pid)) = (names.get(&value), pids.get(&value)) {
                    named_pids.insert((name.clone(), pid));
                }
            }
            traces::EventKind::TlbFill(fill) if fill.user.read && !fill.global => user_fills += 1,
            traces::EventKind::IpiSend { target, msg, intid } => {
                // Only an IRQ work (5) is raised on the sender itself; each message
                // is the SGI of its number.
                assert!(
                    target.0 < 4 && (target == e.cpu) == (msg == 5) && intid == msg,
                    "{}",
                    e.display(&recorded.strings)
                );
                *ipis.entry(msg).or_default() += 1;
            }
            traces::EventKind::IrqInject { intid, .. } => {
                *interrupts.entry(intid).or_default().first_mut().unwrap() += 1
            }
            traces::EventKind::HardIrqEnter { intid } => {
                *interrupts.entry(intid).or_default().last_mut().unwrap() += 1
            }
            _ => {}
        }
    }
    // A hard-IRQ context carries the interrupt the machine entered for it: no
    // more contexts of an interrupt than it was entered, and every timer tick
    // (the virtual timer's PPI 27, whose handler always takes locks) is one.
    for (intid, [entered, contexts]) in &interrupts {
        assert!(*intid == 0 || contexts <= entered, "{interrupts:?}");
    }
    assert!(
        interrupts
            .get(&27)
            .is_some_and(|&[entered, contexts]| entered == contexts && entered > 100),
        "{interrupts:?}"
    );
    // Reschedules and cross-CPU calls (IPI_RESCHEDULE, IPI_CALL_FUNC), and the
    // power-off's IPI_CPU_STOP to the three other CPUs.
    assert!(
        ipis.get(&0).is_some_and(|&n| n > 0) && ipis.get(&1).is_some_and(|&n| n > 0),
        "{ipis:?}"
    );
    assert_eq!(ipis.get(&2), Some(&3), "{ipis:?}");
    // Each of the 12 mounts allocates the superblock's per-CPU counters.
    assert_mounts_took_the_allocators_locks(&taken_by, 12);
    // Every task named has its pid read (task_struct::pid, from DWARF; a
    // task_struct freed and given to another task is named anew): the boot task
    // is 0, busybox's /init 1, and the 12 mounts are 12 processes.
    assert!(
        names.keys().all(|task| pids.contains_key(task)),
        "{names:?} {pids:?}"
    );
    let pids_of = |comm: &str| -> Vec<u32> {
        (named_pids.iter())
            .filter(|(name, _)| name == comm)
            .map(|&(_, pid)| pid)
            .collect()
    };
    assert_eq!(pids_of("swapper"), [0]);
    // (The script's subshells keep its name until they exec.)
    assert_eq!(pids_of("init").first(), Some(&1));
    let mounts = pids_of("mount");
    assert!(mounts.len() >= 12, "{mounts:?}");
    assert!(user_fills > 100, "{user_fills} user-page TLB fills");

    replays_and_checks(&trace, kernel, &run);
}

/// How often each task (by name) took the real per-CPU allocator's locks
/// (`pcpu_alloc_mutex`, `pcpu_lock`): (class, task) → acquisitions.
fn allocator_locks_taken(
    recorded: &traces::Trace,
) -> std::collections::BTreeMap<(String, String), u32> {
    let mut comm = std::collections::HashMap::new();
    let mut taken_by = std::collections::BTreeMap::new();
    for e in &recorded.events {
        match e.kind {
            traces::EventKind::Marker { label, value } => {
                let label = recorded.strings.get(label).unwrap_or_default();
                if let Some(name) = label.strip_prefix("task:") {
                    comm.insert(value as u32, name.to_string());
                }
            }
            traces::EventKind::LockAcquired { lock, .. } => {
                let class = recorded.strings.get(lock.class).unwrap_or_default();
                if class == "pcpu_alloc_mutex" || class == "pcpu_lock" {
                    let task = comm.get(&e.task.0).cloned().unwrap_or_default();
                    *taken_by.entry((class.to_string(), task)).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    taken_by
}

/// The workload's `mount`s (at least `mounts` of them) each took the
/// allocator's two locks, named as the kernel names them.
fn assert_mounts_took_the_allocators_locks(
    taken_by: &std::collections::BTreeMap<(String, String), u32>,
    mounts: u32,
) {
    for class in ["pcpu_alloc_mutex", "pcpu_lock"] {
        let by_mount = taken_by.get(&(class.to_string(), "mount".to_string()));
        assert!(by_mount.is_some_and(|&n| n >= mounts), "{taken_by:?}");
    }
}

/// The lock-validator findings of `run` that the kernel's locking self-test did
/// not provoke on purpose.
fn findings_outside_the_self_test(run: &common::Run) -> Vec<String> {
    common::findings(run)
        .iter()
        .map(common::finding_text)
        .filter(|text| !text.contains("locking_selftest"))
        .collect()
}

/// The kernel's own self-test judges the recorder's other way to see locking,
/// the lock primitives (`--lock-hooks primitives`, what a kernel without
/// lockdep gets). It agrees wherever the primitives can see what lockdep sees;
/// every disagreement is one of the cases that need lockdep itself: two locks
/// of one class (`AA` on `X1` and `X2`: without lockdep's keys a class is one
/// lock), the self-test's simulated softirqs (only lockdep's `softirq_context`
/// says so), a held lock re-initialised (`debug_check_no_locks_freed`), and
/// `fs_reclaim` (a lockdep map). The figures are deterministic.
#[test]
fn the_self_test_judges_the_lock_primitives_too() {
    let run = run_linux(&[ORACLE, &["--lock-hooks", "primitives"]].concat());
    assert_eq!(run.code, 1, "disagreements: {}", run.describe());
    let summary = run.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        summary,
        "oracle: 230/349 locking self-test cases agree (83 disagree, 36 unmodelled: \
         ww-mutex 36)",
        "{}",
        run.describe()
    );
    let needs_lockdep = |case: &str| {
        let same_class = ["AA_", "rlock_AA", "rsem_AA"]
            .iter()
            .any(|p| case.starts_with(p));
        same_class
            || case.contains("soft")
            || case.starts_with("irqsafe2A")
            || case.starts_with("init_held")
            || case.starts_with("fs_reclaim")
    };
    let mut disagree = 0;
    for line in run.stdout.lines().filter(|l| l.ends_with("DISAGREE")) {
        let case = line.split_whitespace().next().unwrap_or_default();
        assert!(needs_lockdep(case), "{line}");
        disagree += 1;
    }
    assert_eq!(disagree, 83);
    assert_cases_agree(
        &run,
        &[
            ("ABBA_spin", "circular-dependency"),
            ("ABBA_rlock", "clean"),
            ("double_unlock_mutex", "bad-unlock"),
            ("irqsafe1_hard_spin_12", "inconsistent-irq-state"),
            ("irq_inversion_hard_wlock_123", "irq-inversion"),
            ("rsem_AA1", "recursive-locking"),
        ],
    );
}

/// Each `(case, host verdict)`'s row of the oracle's table says the host found
/// that and agrees with the kernel.
fn assert_cases_agree(run: &common::Run, cases: &[(&str, &str)]) {
    for &(case, host) in cases {
        let line = (run.stdout.lines())
            .find(|l| l.split_whitespace().next() == Some(case))
            .unwrap_or_else(|| panic!("no case {case}:\n{}", run.stdout));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[3..], [host, "agree"], "{line}");
    }
}

/// The busybox workload seen through the lock primitives alone (on four CPUs):
/// the allocator's locks by their symbols, no finding but the self-test's (the
/// run queue's lock, taken by one task and released by the next, is handed on
/// at the context switch; a lock's memory reused for another lock is another
/// lock from its init on), and the IRQ and softirq context sampled from the
/// preemption count.
///
/// The size is one where a class per address, blind to inits, made nine false
/// circular dependencies (an `mm_struct`'s `mmap_lock` and a later one's
/// `page_table_lock` at the same address): which sizes show it depends on where
/// the kernel's allocations land.
#[test]
fn the_busybox_workload_seen_through_the_lock_primitives() {
    let vmlinux = lockdep_kernel();
    let kernel = vmlinux.to_str().unwrap();
    let initrd = workload_initramfs();
    let trace = common::scratch("workload-primitives.trace");
    let run = common::record(
        &trace,
        &[
            "--kernel",
            kernel,
            "--initrd",
            initrd.to_str().unwrap(),
            "--cpus",
            "4",
            "--lock-hooks",
            "primitives",
            "--cmdline",
            "earlycon keep_bootcon workers=3 rounds=3",
            "--report",
            "json",
        ],
    );
    assert!(run.console_contains("workload: done"), "{}", run.describe());
    let report = run.json();
    let coverage = report["stats"]["lockdep"]["coverage"]
        .as_str()
        .unwrap_or_default();
    // The lockdep kernel has every family of primitives out of line: 61 of the
    // table's entry points (it has the `_nested` mutex forms, not the plain
    // ones, and the spinlock and rwlock inits of `CONFIG_DEBUG_SPINLOCK`), each
    // trylock's and killable lock's result found through its tail call.
    assert!(
        coverage.starts_with("lock primitives (61 entry points;") && !coverage.contains("not seen"),
        "{coverage}"
    );
    let outside_selftest = findings_outside_the_self_test(&run);
    assert!(outside_selftest.is_empty(), "{outside_selftest:#?}");
    assert!(!common::findings(&run).is_empty(), "the self-test's own");

    let recorded = traces::read_trace(&std::fs::read(&trace).unwrap()).unwrap();
    assert_mounts_took_the_allocators_locks(&allocator_locks_taken(&recorded), 9);
    // Classes are named by their init (and the address), and an address whose
    // `mm_struct` was freed and reallocated has a second lifetime.
    let mmap_locks: Vec<&str> = (recorded.strings.iter())
        .map(|(_, text)| text)
        .filter(|text| text.starts_with("&mm->mmap_lock@0x"))
        .collect();
    assert!(
        mmap_locks.iter().any(|c| !c.contains('#')) && mmap_locks.iter().any(|c| c.contains('#')),
        "{mmap_locks:?}"
    );
    let count = |wanted: fn(&traces::EventKind) -> bool| {
        recorded.events.iter().filter(|e| wanted(&e.kind)).count()
    };
    use traces::EventKind as K;
    assert!(count(|k| matches!(k, K::HardIrqEnter { .. })) > 100);
    assert!(count(|k| matches!(k, K::SoftIrqEnter)) > 10);
    assert!(count(|k| matches!(k, K::SoftirqsOff)) > 10);
    assert!(count(|k| matches!(k, K::ReadLock { .. })) > 10);
    assert!(count(|k| matches!(k, K::IrqMask { .. })) > 1000);
    // Not a lockdep hook in sight.
    assert_eq!(count(|k| matches!(k, K::LocalLockClass { .. })), 0);
}

/// `--lock-hooks` is part of the run a trace records: a primitives trace
/// replays identically (it would not with lockdep's hooks), and `check`
/// re-derives its findings and says what the recording saw.
#[test]
fn a_lock_primitives_trace_replays() {
    let vmlinux = lockdep_kernel();
    let kernel = vmlinux.to_str().unwrap();
    let trace = common::scratch("primitives.trace");
    let args = [
        &["--kernel", kernel, "--lock-hooks", "primitives"],
        SHORT_RUN,
    ]
    .concat();
    let run = common::record(&trace, &args);
    let check = replays_and_checks(&trace, kernel, &run);
    let coverage = &check.json()["stats"]["lockdep"]["coverage"];
    assert_eq!(coverage, &run.json()["stats"]["lockdep"]["coverage"]);
    assert!(!coverage.is_null());
}

/// `--lock-hooks lockdep` needs lockdep's maps, so the kernel's DWARF: a usage
/// error without it.
#[test]
fn lockdep_hooks_need_the_kernels_dwarf() {
    let (_, image, map) = lockdep_kernel_files();
    let run = percpu_lab(&[
        "run",
        "--kernel",
        &image,
        "--symbols",
        &map,
        "--lock-hooks",
        "lockdep",
    ]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(run.stderr.contains("DWARF"), "{}", run.describe());
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.describe());
}

/// `explore` takes a Linux kernel as `run` does: every schedule boots it (here
/// 40 M instructions of the boot on two CPUs, which reach the locking self-test),
/// the findings are folded by cause, the first failing schedule of each is saved,
/// and its replay command (naming the kernel) replays it identically. The
/// percpu-lab guest's options are refused for it in one line.
#[test]
fn explore_runs_schedules_of_a_linux_kernel() {
    let vmlinux = lockdep_kernel();
    let kernel = vmlinux.to_str().unwrap();
    let dir = common::scratch("explore-linux");
    let _ = std::fs::remove_dir_all(&dir);
    let explore = |extra: &[&str]| {
        let mut argv = vec![
            "explore",
            "--kernel",
            kernel,
            "--cpus",
            "2",
            "--max-insns",
            "40000000",
            "--sched",
            "pct",
            "--report",
            "json",
        ];
        argv.extend_from_slice(extra);
        percpu_lab(&argv)
    };
    let run = explore(&["--schedules", "3", "--save-failures", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let summary = run.json();
    assert_eq!(summary["schedules_run"], 3);
    assert!(summary["config"]["scenario"].is_null(), "{summary}");
    assert!(
        summary["config"]["steps"].as_u64().unwrap() > 100,
        "{summary}"
    );
    let findings = summary["findings"].as_array().unwrap();
    let kinds: Vec<&str> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"recursive-locking"), "{kinds:?}");
    for f in findings {
        assert!((1..=3).contains(&f["count"].as_u64().unwrap()), "{f}");
    }
    let replay = findings
        .iter()
        .find(|f| f["kind"] == "recursive-locking")
        .and_then(|f| f["schedule"]["replay"].as_str())
        .expect("a saved schedule");
    let words: Vec<&str> = replay.split(' ').collect();
    assert_eq!(&words[..4], ["percpu-lab", "replay", "--kernel", kernel]);
    let replayed = percpu_lab(&words[1..]);
    assert_eq!(replayed.code, 0, "{}", replayed.describe());
    assert!(
        replayed.stdout.contains("identical"),
        "{}",
        replayed.describe()
    );

    let refused = explore(&["--schedules", "1", "--scenario", "smoke"]);
    assert_eq!(refused.code, 2, "{}", refused.describe());
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
}
