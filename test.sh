#!/usr/bin/env bash
# Runs percpu-lab's whole test suite (installing whatever is missing first).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --deps
cargo test --workspace --release --no-fail-fast

# The trace reader's fuzz targets, briefly and with a fixed seed (cargo-fuzz passes
# -Z flags, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1).
command -v cargo-fuzz >/dev/null || cargo install --locked --version 0.13.2 cargo-fuzz
for target in read_trace read_chunk; do
    (cd traces && RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir ../target/fuzz "$target" \
        -- -max_total_time=10 -seed=1 2>&1 | tail -n 1)
done
