//! Sharded schedule exploration on a real (one-node) Slurm cluster: the array job of
//! `tools/slurm/explore.sbatch`, one shard per task, merged with `explore --merge`.
//! The cluster is `tools/slurm/local-cluster.sh` (see `common::slurm`); the tests skip
//! when not run as root and fail when Slurm is not installed (`./setup.sh --deps`).

mod common;

use common::slurm::{describe, slurm_tools, LocalSlurm};
use std::path::Path;

const SHARDS: usize = 4;

/// A stand-in for `percpu-lab` that writes its arguments, one a line, to `OUT/args`
/// (OUT from `--out`) and exits with `$STAND_IN_EXIT`.
const STAND_IN: &str = r#"#!/bin/sh
out= prev=
for arg in "$@"; do [ "$prev" = --out ] && out=$arg; prev=$arg; done
mkdir -p "$out" && printf '%s\n' "$@" >"$out/args"
exit "$STAND_IN_EXIT"
"#;

/// The sbatch script's contract, checked with a stand-in binary (so it needs no
/// `explore`): task K of 4 runs `explore ARGS… --shard K/4 --out OUT/shard-K --jobs 1`;
/// findings (exit 1) are not a task failure, other exit codes are passed on.
#[test]
fn explore_sbatch_runs_one_shard_per_array_task() {
    let Some(cluster) = LocalSlurm::start(&common::scratch("cluster-stand-in")) else {
        return;
    };
    let stand_in = cluster.dir().join("percpu-lab-stand-in");
    std::fs::write(&stand_in, STAND_IN).unwrap();
    set_executable(&stand_in);
    let script = slurm_tools().join("explore.sbatch");
    let explore = [
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
        "--schedules",
        "8",
    ];

    let out = cluster.dir().join("results");
    let mut args = vec![out.to_str().unwrap()];
    args.extend(explore);
    let lab = stand_in.to_str().unwrap();
    let sbatch = cluster.run_array(
        300,
        SHARDS,
        &script,
        &args,
        &[("PERCPU_LAB", lab), ("STAND_IN_EXIT", "1")],
    );
    assert!(
        sbatch.status.success(),
        "a shard with findings (exit 1) failed its array task:\n{}\n{}",
        describe(&sbatch),
        cluster.task_outputs(SHARDS)
    );
    for shard in 0..SHARDS {
        let recorded = std::fs::read_to_string(out.join(format!("shard-{shard}/args")))
            .unwrap_or_else(|e| {
                panic!(
                    "shard {shard} did not run ({e}):\n{}",
                    cluster.task_outputs(SHARDS)
                )
            });
        let mut expected: Vec<String> = ["explore"]
            .iter()
            .chain(&explore)
            .map(|s| s.to_string())
            .collect();
        expected.extend([
            "--shard".into(),
            format!("{shard}/{SHARDS}"),
            "--out".into(),
            format!("{}/shard-{shard}", out.display()),
            "--jobs".into(),
            "1".into(),
        ]);
        assert_eq!(
            recorded.lines().collect::<Vec<_>>(),
            expected,
            "shard {shard}"
        );
        assert!(
            cluster
                .task_output(shard)
                .contains(&format!("shard {shard}/{SHARDS} has findings")),
            "task {shard} does not mention its findings:\n{}",
            cluster.task_output(shard)
        );
    }

    // A shard that does not run to the end fails its task, and so the array.
    let out = cluster.dir().join("broken");
    let mut args = vec![out.to_str().unwrap()];
    args.extend(explore);
    let sbatch = cluster.run_array(
        300,
        SHARDS,
        &script,
        &args,
        &[("PERCPU_LAB", lab), ("STAND_IN_EXIT", "3")],
    );
    assert_eq!(
        sbatch.status.code(),
        Some(3),
        "an explore error (exit 3) was not passed on:\n{}\n{}",
        describe(&sbatch),
        cluster.task_outputs(SHARDS)
    );

    let took = cluster.stop();
    eprintln!("local Slurm cluster stopped in {:.1} s", took.as_secs_f64());
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// 8 `pct` schedules of `fs-reclaim` on the mutex variant, in 4 shards on Slurm, merged:
/// the same summary as one `explore` of the 8 schedules on this machine.
#[test]
fn sharded_explore_on_slurm_merges_to_the_single_machine_summary() {
    let Some(cluster) = LocalSlurm::start(&common::scratch("cluster-explore")) else {
        return;
    };
    let explore = [
        "--scenario",
        "fs-reclaim",
        "--variant",
        "mutex",
        "--schedules",
        "8",
        "--sched",
        "pct",
    ];
    let out = cluster.dir().join("results");
    let mut args = vec![out.to_str().unwrap()];
    args.extend(explore);
    let sbatch = cluster.run_array(
        900,
        SHARDS,
        &slurm_tools().join("explore.sbatch"),
        &args,
        &[("PERCPU_LAB", env!("CARGO_BIN_EXE_percpu-lab"))],
    );
    assert!(
        sbatch.status.success(),
        "the array job failed:\n{}\n{}",
        describe(&sbatch),
        cluster.task_outputs(SHARDS)
    );
    let shards: Vec<String> = (0..SHARDS)
        .map(|k| out.join(format!("shard-{k}")).to_str().unwrap().to_string())
        .collect();
    for shard in &shards {
        assert!(
            Path::new(shard).join("summary.json").is_file(),
            "no {shard}/summary.json:\n{}",
            cluster.task_outputs(SHARDS)
        );
    }
    // The daemons are not needed any more.
    let took = cluster.stop();
    eprintln!("local Slurm cluster stopped in {:.1} s", took.as_secs_f64());

    let merged_dir = common::scratch("explore-merged");
    let mut merge = vec!["explore", "--merge"];
    merge.extend(shards.iter().map(String::as_str));
    merge.extend(["--out", merged_dir.to_str().unwrap()]);
    let merged = common::percpu_lab(&merge);

    let single_dir = common::scratch("explore-single");
    let mut single = vec!["explore"];
    single.extend(explore);
    single.extend(["--out", single_dir.to_str().unwrap()]);
    let single = common::percpu_lab(&single);

    // The mutex variant's fs-reclaim has its lock-order cycle on every schedule.
    assert_eq!(
        single.code,
        1,
        "explore found nothing:\n{}",
        single.describe()
    );
    assert_eq!(
        merged.code,
        single.code,
        "the merge's exit status differs from the single run's:\n{}",
        merged.describe()
    );
    let merged = summary(&merged_dir);
    let single = summary(&single_dir);
    assert!(
        merged == single,
        "4 shards merged differ from one run of the same schedules\n--- merged\n{}\n--- single\n{}",
        serde_json::to_string_pretty(&merged).unwrap(),
        serde_json::to_string_pretty(&single).unwrap()
    );
}

/// `DIR/summary.json` without its `elapsed` and `host` fields (at any depth), which
/// depend on where and when it ran.
fn summary(dir: &Path) -> serde_json::Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()));
    strip_run_fields(&mut value);
    value
}

fn strip_run_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("elapsed");
            map.remove("host");
            // Where the failing traces were written (a shard's directory or the
            // single run's) is not part of the result.
            map.remove("replay");
            map.values_mut().for_each(strip_run_fields);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_run_fields),
        _ => {}
    }
}
