#!/usr/bin/env bash
# Builds the release guest kernel.
#
#   guest/build.sh OUT_DIR [aarch64|riscv64]
#
# aarch64 (the default) writes OUT_DIR/percpu-guest.elf (with symbols and debug
# info) and OUT_DIR/Image (the flat arm64 Image); riscv64 writes
# OUT_DIR/percpu-guest-riscv64.elf. Uses CARGO_TARGET_DIR if set, else
# <repo>/target/guest.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: guest/build.sh OUT_DIR [aarch64|riscv64]" >&2
    exit 2
fi
case "${2:-aarch64}" in
    aarch64) target=aarch64-unknown-none-softfloat ;;
    riscv64) target=riscv64gc-unknown-none-elf ;;
    *) echo "guest/build.sh: unknown ISA '$2' (aarch64 or riscv64)" >&2; exit 2 ;;
esac
guest_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$guest_dir")"
mkdir -p "$1"
out="$(cd "$1" && pwd)"

rustc=/usr/bin/rustc
cargo=/usr/bin/cargo
rust_src=/usr/lib/rustlib/src/rust/library/core
for need in "$rustc" "$cargo" "$rust_src" "$(command -v ld.lld || true)" "$(command -v llvm-objcopy || true)"; do
    if [ -z "$need" ] || [ ! -e "$need" ]; then
        echo "guest/build.sh: the guest toolchain (Debian rustc-web, rust-web-src, lld, llvm) is missing; run ./setup.sh --deps" >&2
        exit 1
    fi
done

# An outer cargo (tools/build.rs) may leave its own settings in the environment:
# drop every CARGO_* (but CARGO_HOME and CARGO_TARGET_DIR), RUSTC*, RUSTFLAGS,
# RUSTDOC* and make jobserver variable, so the guest's flags come only from
# guest/.cargo/config.toml and the command below.
while IFS= read -r name; do
    case "$name" in
        CARGO_HOME | CARGO_TARGET_DIR) ;;
        CARGO_* | CARGO | RUSTC* | RUSTFLAGS | RUSTDOC* | MAKEFLAGS | MFLAGS | TARGET | HOST | OUT_DIR | PROFILE | OPT_LEVEL | DEBUG | NUM_JOBS) unset "$name" ;;
    esac
done < <(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p')

target_dir="${CARGO_TARGET_DIR:-$repo/target/guest}"

# The guest must be the same bytes wherever the repository was cloned: its
# instruction counts, hence every schedule and report, follow from them.
# - Source paths in panic messages and DWARF start at /percpu-lab instead of the
#   repository's directory (emu::GUEST_SOURCE_ROOT, which reports leave off). The
#   allocator, reached through the guest/allocator link, is named by cargo
#   relative to guest/ and mapped back to /percpu-lab/allocator.
# - Cargo hashes a path dependency's absolute path into crate metadata, hence
#   into symbol names and the layout of the whole image, unless it lies under the
#   guest's workspace root: that is why the allocator is reached through the
#   guest/allocator link and not as ../allocator.
case "$repo" in
    *'"'* | *\\*) echo "guest/build.sh: the repository path may not contain \" or \\: $repo" >&2; exit 2 ;;
esac
remap="target.$target.rustflags=[\"--remap-path-prefix=$repo=/percpu-lab\", \"--remap-path-prefix=allocator=/percpu-lab/allocator\"]"

cd "$guest_dir"
RUSTC="$rustc" RUSTC_BOOTSTRAP=1 "$cargo" build --release --target "$target" \
    --target-dir "$target_dir" -Zbuild-std=core,compiler_builtins \
    -Zbuild-std-features=compiler-builtins-mem --config "$remap"

elf="$target_dir/$target/release/percpu-guest"
# Temporary names of this process's own: the debug and release host builds may run
# this at once (test.sh), and each rename must move a file that is complete.
if [ "$target" = riscv64gc-unknown-none-elf ]; then
    cp "$elf" "$out/percpu-guest-riscv64.elf.tmp$$"
    mv "$out/percpu-guest-riscv64.elf.tmp$$" "$out/percpu-guest-riscv64.elf"
    exit 0
fi
cp "$elf" "$out/percpu-guest.elf.tmp$$"
mv "$out/percpu-guest.elf.tmp$$" "$out/percpu-guest.elf"
llvm-objcopy -O binary "$out/percpu-guest.elf" "$out/Image.tmp$$"
mv "$out/Image.tmp$$" "$out/Image"
