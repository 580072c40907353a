#!/usr/bin/env bash
# Builds the initramfs of the per-CPU workload for a Linux guest: Debian's static
# arm64 busybox and an /init (tools/linux/workload-init.sh) whose parallel shells
# mount and unmount tmpfs, so that the real mm/percpu.c allocates and frees per-CPU
# counters under pcpu_alloc_mutex and pcpu_lock, then power the machine off.
#
#   tools/linux/build-initramfs.sh [OUT_DIR]     (default target/linux-workload)
#
# Writes OUT_DIR/initramfs.cpio; does nothing when it is newer than this script and
# the init. Needs the arm64 package lists (`./setup.sh --deps` adds the
# architecture) to download busybox-static:arm64, and cpio.
set -euo pipefail

main() {
    here="$(cd "$(dirname "$0")" && pwd)"
    root="$(cd "$here/../.." && pwd)"
    out="${1:-$root/target/linux-workload}"
    init="$here/workload-init.sh"
    cpio_file="$out/initramfs.cpio"

    mkdir -p "$out"
    exec 9>"$out.lock"
    flock 9
    if [ -f "$cpio_file" ] && [ "$cpio_file" -nt "$0" ] && [ "$cpio_file" -nt "$init" ]; then
        exit 0
    fi

    if ! ls "$out"/busybox-static_*_arm64.deb >/dev/null 2>&1; then
        echo "build-initramfs: downloading busybox-static:arm64"
        (cd "$out" && apt-get download -q busybox-static:arm64 2>"$out/download.log") || {
            cat "$out/download.log" >&2
            echo "build-initramfs: no busybox-static:arm64 (run ./setup.sh --deps: it adds the arm64 architecture)" >&2
            exit 2
        }
    fi

    tree="$out/tree"
    rm -rf "$tree"
    mkdir -p "$tree"/{bin,proc,sys,mnt,tmp}
    deb=$(ls "$out"/busybox-static_*_arm64.deb | head -n 1)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$out" ./bin/busybox
    mv "$out/bin/busybox" "$tree/bin/busybox"
    rmdir "$out/bin"
    for applet in sh mount umount mkdir mknod echo cat sleep poweroff seq; do
        ln -s busybox "$tree/bin/$applet"
    done
    install -m 0755 "$init" "$tree/init"

    # The same bytes from every build: no build time (nor the host's inode
    # numbers) in the archive.
    find "$tree" -exec touch -h -d @0 {} +
    # /dev/console comes from the kernel's own built-in initramfs.
    (cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
        > "$cpio_file.tmp"
    mv "$cpio_file.tmp" "$cpio_file"
    echo "build-initramfs: $cpio_file"
}

main "$@"
