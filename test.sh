#!/usr/bin/env bash
# Runs percpu-lab's whole test suite (installing whatever is missing first).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --deps
# The lockdep kernel of tools/tests/linux.rs builds meanwhile, on the cores compiling
# and testing leave idle (that test waits for it: the build script takes a lock).
# Not so the `determinism`-profile percpu-lab of tools/tests/determinism.rs: a build
# at nice 19 here would make that test wait on a low-priority build.
mkdir -p target
nice -n 19 tools/linux/build-lockdep-kernel.sh >target/linux-lockdep-build.log 2>&1 &
kernel_build=$!
tests=0
cargo test --workspace --release --no-fail-fast || tests=$?
wait "$kernel_build" || { cat target/linux-lockdep-build.log >&2; exit 1; }
[ "$tests" -eq 0 ] || exit "$tests"

# The trace reader's fuzz targets, briefly and with a fixed seed (cargo-fuzz passes
# -Z flags, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1).
command -v cargo-fuzz >/dev/null || cargo install --locked --version 0.13.2 cargo-fuzz
for target in read_trace read_chunk; do
    (cd traces && RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir ../target/fuzz "$target" \
        -- -max_total_time=10 -seed=1 2>&1 | tail -n 1)
done
