//! Builds the guest kernel (guest/build.sh) so that `percpu-lab run` works with no
//! `--kernel`: the ELF is embedded in the binary and the flat `Image` path is
//! exported for the QEMU cross-check test.

use std::path::{Path, PathBuf};
use std::process::Command;

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
        "allocator/src",
        "allocator/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(input).display());
    }

    build_guest(repo, &out);
    println!(
        "cargo:rustc-env=PERCPU_GUEST_ELF={}",
        out.join("percpu-guest.elf").display()
    );
    println!(
        "cargo:rustc-env=PERCPU_GUEST_IMAGE={}",
        out.join("Image").display()
    );
}

/// Runs the guest's own build script with a clean environment: the variables an
/// outer cargo sets for build scripts (RUSTC, RUSTFLAGS, CARGO_*, TARGET, jobserver
/// flags) would otherwise leak into the guest's cross build.
fn build_guest(repo: &Path, out: &Path) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("guest/build.sh"))
        .arg(out)
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
