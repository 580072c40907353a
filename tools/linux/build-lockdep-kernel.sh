#!/usr/bin/env bash
# Builds the small lockdep kernel (Debian's linux-source-6.1, tinyconfig plus
# lockdep.config) into target/linux-lockdep/{Image,vmlinux,System.map}. Does nothing when the
# kernel there was built from the same config fragment and source tarball.
#
#   tools/linux/build-lockdep-kernel.sh [OUT_DIR]
#
# Needs linux-source-6.1 gcc-aarch64-linux-gnu flex bison bc libssl-dev libelf-dev
# cpio (./setup.sh installs them). About two minutes on two cores.
set -euo pipefail

# All in one function, so that bash has read the whole script before running it
# (editing a running script would otherwise change what it runs).
main() {
    here="$(cd "$(dirname "$0")" && pwd)"
    root="$(cd "$here/../.." && pwd)"
    out="${1:-$root/target/linux-lockdep}"
    tarball=/usr/src/linux-source-6.1.tar.xz
    fragment="$here/lockdep.config"

    [ -f "$tarball" ] || { echo "build-lockdep-kernel: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 2; }
    # One build at a time into OUT (test.sh starts one in the background, and the
    # first test that needs the kernel runs this again): a second caller waits for
    # the first, then finds the kernel up to date.
    mkdir -p "$(dirname "$out")"
    exec 9>"$out.lock"
    flock 9
    stamp="$(cat "$fragment" "$0" | sha256sum | cut -c1-16)-$(stat -c %s "$tarball")"
    if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] \
            && [ -f "$out/vmlinux" ] && [ -f "$out/Image" ] && [ -f "$out/System.map" ]; then
        exit 0
    fi

    mkdir -p "$out"
    src="$out/src"
    if [ ! -f "$src/Makefile" ]; then
        echo "build-lockdep-kernel: unpacking $tarball"
        rm -rf "$src" "$out/unpack"
        mkdir -p "$out/unpack"
        tar -xJf "$tarball" -C "$out/unpack"
        mv "$out/unpack"/linux-source-6.1 "$src"
        rmdir "$out/unpack"
    fi

    make_args=(-C "$src" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -s)
    # The same kernel from every build, on every host: the version banner would
    # otherwise carry the build's time, user, host and count, and a banner of
    # another length moves the kernel's data (and so what a run records).
    export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 2026" KBUILD_BUILD_USER=percpu-lab \
        KBUILD_BUILD_HOST=percpu-lab KBUILD_BUILD_VERSION=1
    # Nor the checkout's place: DWARF names the sources relative to the tree, so
    # a report's source lines read the same from any clone.
    export KCFLAGS="-ffile-prefix-map=$src=." KAFLAGS="-ffile-prefix-map=$src=."
    echo "build-lockdep-kernel: configuring (tinyconfig + $(basename "$fragment"))"
    quietly() { "$@" > "$out/config.log" 2>&1 || { cat "$out/config.log" >&2; exit 1; }; }
    quietly make "${make_args[@]}" tinyconfig
    options=()
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        name="${line%%=*}" value="${line#*=}"
        case "$value" in
            y) options+=(--enable "$name") ;;
            n) options+=(--disable "$name") ;;
            *) options+=(--set-val "$name" "$value") ;;
        esac
    done < "$fragment"
    "$src/scripts/config" --file "$src/.config" "${options[@]}"
    quietly make "${make_args[@]}" olddefconfig

    # Every option of the fragment must have survived olddefconfig (a missing
    # dependency silently drops one).
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        name="${line%%=*}" value="${line#*=}"
        case "$value" in
            n) grep -qx "# CONFIG_$name is not set" "$src/.config" || ! grep -q "^CONFIG_$name=" "$src/.config" ;;
            *) grep -qx "CONFIG_$name=$value" "$src/.config" ;;
        esac || { echo "build-lockdep-kernel: CONFIG_$name=$value did not take" >&2; exit 1; }
    done < "$fragment"

    echo "build-lockdep-kernel: building Image and vmlinux (about two minutes)"
    make "${make_args[@]}" -j"$(nproc)" Image vmlinux
    cp "$src/arch/arm64/boot/Image" "$out/Image.tmp" && mv "$out/Image.tmp" "$out/Image"
    cp "$src/vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
    cp "$src/System.map" "$out/System.map.tmp" && mv "$out/System.map.tmp" "$out/System.map"
    echo "$stamp" > "$out/stamp"
    echo "build-lockdep-kernel: $out/vmlinux"
}

main "$@"
