//! A one-node Slurm cluster for a test: `tools/slurm/local-cluster.sh start DIR`, and
//! `stop DIR` when the [`LocalSlurm`] guard is dropped (also when the test panics).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The repository's `tools/slurm` directory.
pub fn slurm_tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm")
}

/// A running one-node cluster; stopped (exactly the daemons its start started) on drop.
pub struct LocalSlurm {
    dir: PathBuf,
    stopped: bool,
    // One cluster at a time in this process: two would share munged, and the one that
    // started it would stop it under the other.
    _alone: MutexGuard<'static, ()>,
}

impl LocalSlurm {
    /// Starts a cluster with its configuration, state and logs in `dir` (created).
    /// Returns `None`, after printing why, when the test cannot run Slurm because it
    /// does not run as root. Missing Slurm or munge packages fail the test: `./setup.sh
    /// --deps` installs them, and CI runs it as root.
    pub fn start(dir: &Path) -> Option<LocalSlurm> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED: a local Slurm cluster needs root (slurmd, munged as user munge); \
                 run the test as root to include it"
            );
            return None;
        }
        let missing: Vec<&str> = ["slurmctld", "slurmd", "sbatch", "sinfo", "munged", "munge"]
            .into_iter()
            .filter(|program| !installed(program))
            .collect();
        assert!(
            missing.is_empty(),
            "Slurm is not installed (no {}): run ./setup.sh --deps, which installs the \
             Debian packages slurm-wlm and munge",
            missing.join(", ")
        );
        static CLUSTER: Mutex<()> = Mutex::new(());
        let alone = CLUSTER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let began = Instant::now();
        let output = local_cluster("start", dir);
        // From here on the guard stops whatever was started, even after a failed start
        // (the script cleans up after itself too; stopping twice is harmless).
        let cluster = LocalSlurm {
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            stopped: false,
            _alone: alone,
        };
        assert!(
            output.status.success(),
            "the local Slurm cluster did not start:\n{}",
            describe(&output)
        );
        eprintln!(
            "local Slurm cluster in {} up after {:.1} s",
            cluster.dir.display(),
            began.elapsed().as_secs_f64()
        );
        Some(cluster)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `SLURM_CONF` for the Slurm commands.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm command (`sbatch`, `sinfo`, …) for this cluster, run under `timeout
    /// seconds` so that nothing waits forever.
    pub fn command(&self, seconds: u32, program: &str) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["-k", "10", &seconds.to_string(), program])
            .env("SLURM_CONF", self.conf());
        command
    }

    /// Submits `script ARGS…` as an array job of `tasks` tasks (indices 0..tasks-1) with
    /// `env` added to the environment, and waits (at most `seconds`) until every task
    /// has ended. Task K's output is `DIR/task-K.out` ([`Self::task_output`]).
    pub fn run_array(
        &self,
        seconds: u32,
        tasks: usize,
        script: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut sbatch = self.command(seconds, "sbatch");
        sbatch
            .arg("--wait")
            .arg(format!("--array=0-{}", tasks - 1))
            .arg(format!("--output={}/task-%a.out", self.dir.display()))
            .arg(script)
            .args(args)
            .envs(env.iter().copied());
        let output = sbatch.output().expect("sbatch runs");
        assert!(
            !timed_out(&output),
            "sbatch --wait did not return within {seconds} s:\n{}",
            describe(&output)
        );
        output
    }

    /// The output (stdout and stderr) of task `index` of the last [`Self::run_array`].
    pub fn task_output(&self, index: usize) -> String {
        let path = self.dir.join(format!("task-{index}.out"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no output of array task {index} ({}): {e}", path.display()))
    }

    /// Every task output, for a failure message.
    pub fn task_outputs(&self, tasks: usize) -> String {
        (0..tasks)
            .map(|k| {
                let text = std::fs::read_to_string(self.dir.join(format!("task-{k}.out")))
                    .unwrap_or_else(|e| format!("(none: {e})\n"));
                format!("--- task {k}\n{text}")
            })
            .collect()
    }

    /// Stops the cluster now and checks that its daemons are gone; returns how long
    /// the stop took.
    pub fn stop(mut self) -> std::time::Duration {
        let began = Instant::now();
        let result = self.stop_daemons();
        let took = began.elapsed();
        self.stopped = true;
        if let Err(message) = result {
            panic!("{message}");
        }
        let conf = self.conf();
        assert!(
            !running_with(&conf.to_string_lossy()),
            "a daemon of {} still runs after stop",
            conf.display()
        );
        took
    }

    fn stop_daemons(&self) -> Result<(), String> {
        let output = local_cluster("stop", &self.dir);
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the local Slurm cluster in {} did not stop cleanly:\n{}",
                self.dir.display(),
                describe(&output)
            ))
        }
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Err(message) = self.stop_daemons() {
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// `tools/slurm/local-cluster.sh ACTION DIR`, given at most three minutes (its own
/// waits are bounded well below that).
fn local_cluster(action: &str, dir: &Path) -> Output {
    let output = Command::new("timeout")
        .args(["-k", "10", "180"])
        .arg(slurm_tools().join("local-cluster.sh"))
        .arg(action)
        .arg(dir)
        .output()
        .expect("tools/slurm/local-cluster.sh runs");
    assert!(
        !timed_out(&output),
        "local-cluster.sh {action} {} did not end within 3 minutes:\n{}",
        dir.display(),
        describe(&output)
    );
    output
}

/// Whether `timeout -k …` ended the command (TERM: 124, then KILL: 137).
fn timed_out(output: &Output) -> bool {
    matches!(output.status.code(), Some(124 | 137))
}

/// Whether `program` is on PATH or in /usr/sbin, /sbin (where Debian puts the daemons).
fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

/// Whether some live process has `text` in its command line.
fn running_with(text: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && std::fs::read(entry.path().join("cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
                .unwrap_or(false)
    })
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
