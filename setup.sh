#!/usr/bin/env bash
# Sets percpu-lab up on a Debian machine and runs the default job.
#
#   ./setup.sh          install what is missing, build guest + host, run the default job
#   ./setup.sh --deps   only install what is missing (used by ./test.sh and CI)
#
# Idempotent: packages already present are not touched, and apt is only asked
# when something is missing.
set -euo pipefail
cd "$(dirname "$0")"

# cmake, libclang-dev: build Unicorn and its bindings.
# rustc-web, rust-web-src: Debian's rustc + library source, which can build `core`
#   for the bare-metal guest (-Zbuild-std); the rustup toolchain cannot.
# lld, llvm: link the guest and make its flat Image (llvm-objcopy).
# qemu-system-arm, qemu-system-misc: the independent peers the guest is
#   cross-checked against (qemu-system-aarch64; qemu-system-riscv64 with OpenSBI,
#   whose firmware comes with qemu-system-data).
# graphviz: renders the lock dependency graph (`--graph OUT.svg`).
# slurm-wlm, munge: the one-node Slurm cluster the sharded-exploration test starts
#   (tools/slurm/local-cluster.sh; munge's package creates /etc/munge/munge.key).
# pkgconf: lets a second profile's build link the Unicorn core the first one built
#   (tools/tests/determinism.rs).
# linux-source-6.1 gcc-aarch64-linux-gnu flex bison bc libssl-dev libelf-dev cpio:
#   the small Linux with lockdep that the validator is checked against
#   (tools/linux/build-lockdep-kernel.sh, run by the test that needs it).
packages=(cmake libclang-dev rustc-web rust-web-src lld llvm qemu-system-arm qemu-system-misc graphviz
          slurm-wlm munge pkgconf
          linux-source-6.1 gcc-aarch64-linux-gnu flex bison bc libssl-dev libelf-dev cpio)

# busybox-static:arm64 is downloaded, never installed, by tools/linux/build-initramfs.sh
# (the Linux guest's user-space workload): apt needs the arm64 package lists for it.
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
lists_stale=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "setup: adding the arm64 architecture to apt (for busybox-static:arm64)"
    "${as_root[@]}" dpkg --add-architecture arm64
    lists_stale=1
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) || ((lists_stale)); then
    "${as_root[@]}" apt-get update -q
fi
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    # A qemu-utils of another QEMU release (some machines come with a backported
    # one) breaks the distribution's qemu-system packages: take the one that
    # matches them.
    extra=()
    qemu=$(apt-cache policy qemu-system-arm | awk '/Candidate:/ {print $2}')
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$utils" ] && [ -n "$qemu" ] && [ "$utils" != "$qemu" ] \
            && ! dpkg-query -W -f='${Status}' qemu-system-arm 2>/dev/null | grep -q "install ok installed"; then
        echo "setup: qemu-utils $utils does not go with qemu-system-arm $qemu; installing qemu-utils $qemu"
        extra=(--allow-downgrades "qemu-utils=$qemu")
    fi
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${missing[@]}" "${extra[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: no cargo on PATH; install Rust (rustup) first" >&2
    exit 1
fi

[ "${1:-}" = "--deps" ] && exit 0

# Building the host tool builds the guest kernel too (tools/build.rs) and embeds it.
cargo build --release -p percpu-lab
# The default job is the 2009 seed (`fine` on `storm`): it reports the seed's latent
# hazard (its reclaim frees pages a TLB still holds), so exit 1 (findings) is what a
# working setup gives; anything else is passed on.
status=0
target/release/percpu-lab run || status=$?
if [ "$status" -eq 1 ]; then
    echo "setup: done; the default job reported the seed's findings above (exit 1 = findings)"
    exit 0
fi
exit "$status"
