#!/usr/bin/env bash
# Runs percpu-lab's whole test suite (installing whatever is missing first).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --deps
cargo test --workspace --release
