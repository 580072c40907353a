//! Builds the guest kernel (guest/build.sh) so that `percpu-lab run` works with no
//! `--kernel`: the ELF is embedded in the binary and the flat `Image` path is
//! exported for the QEMU cross-check test, as is the RISC-V build's ELF. Also records what `--version` prints:
//! the git commit built from and the guest ELF's SHA-256.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let tools_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let repo = tools_dir
        .parent()
        .expect("tools/ lives in the repository root");
    let out = repo.join("target").join("guest");

    for input in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/build.sh",
        "guest/.cargo",
        "guest/link.ld",
        "guest/link-riscv64.ld",
        "allocator/src",
        "allocator/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(input).display());
    }

    build_guest(repo, &out, "aarch64");
    build_guest(repo, &out, "riscv64");
    println!(
        "cargo:rustc-env=PERCPU_GUEST_RISCV64_ELF={}",
        out.join("percpu-guest-riscv64.elf").display()
    );
    println!(
        "cargo:rustc-env=PERCPU_GUEST_ELF={}",
        out.join("percpu-guest.elf").display()
    );
    println!(
        "cargo:rustc-env=PERCPU_GUEST_IMAGE={}",
        out.join("Image").display()
    );
    let guest = std::fs::read(out.join("percpu-guest.elf")).expect("the guest was just built");
    let sha256: String = Sha256::digest(&guest)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PERCPU_GUEST_SHA256={sha256}");
    println!("cargo:rustc-env=PERCPU_GIT_COMMIT={}", git_commit(repo));
}

/// The commit HEAD names, or "unknown" outside a git checkout. Asks cargo to run
/// this script again when HEAD moves: HEAD itself (a checkout), the branch it
/// points at and packed-refs (a commit), each only if it exists (cargo would rerun
/// every build for a missing one).
fn git_commit(repo: &Path) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_string();
    };
    let mut watched = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &branch]) {
            watched.push(path);
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watched.push(packed);
    }
    for path in watched {
        let path = repo.join(path); // --git-path may answer relative to `repo`
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    commit
}

/// Runs the guest's own build script with a clean environment: the variables an
/// outer cargo sets for build scripts (RUSTC, RUSTFLAGS, CARGO_*, TARGET, jobserver
/// flags) would otherwise leak into the guest's cross build.
fn build_guest(repo: &Path, out: &Path, isa: &str) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("guest/build.sh"))
        .arg(out)
        .arg(isa)
        .current_dir(repo)
        .env_clear();
    for keep in ["PATH", "HOME", "CARGO_HOME", "LANG", "TMPDIR"] {
        if let Some(value) = std::env::var_os(keep) {
            cmd.env(keep, value);
        }
    }
    let result = cmd.output();
    let output = match result {
        Ok(output) => output,
        Err(e) => panic!("cannot run guest/build.sh: {e}"),
    };
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building the guest kernel failed (see above); run ./setup.sh --deps to install its toolchain");
    }
}
