#!/bin/sh
# /init of the per-CPU workload (tools/linux/build-initramfs.sh). `workers` shells
# (kernel command line `workers=N`, default 4) each mount a tmpfs, write a file in
# it and unmount it `rounds` times (`rounds=N`, default 3): every mount makes the
# kernel allocate per-CPU counters with the real mm/percpu.c, every unmount frees
# them. Then the machine is powered off.
mount -t proc proc /proc
# Background shells read /dev/null; there is no devtmpfs.
[ -e /dev/null ] || mknod /dev/null c 1 3
workers=${workers:-4}
rounds=${rounds:-3}
echo "workload: $workers shells x $rounds tmpfs mounts"
for w in $(seq "$workers"); do
    (
        mkdir -p "/mnt/$w"
        for r in $(seq "$rounds"); do
            mount -t tmpfs "tmpfs$w" "/mnt/$w" || echo "workload: shell $w: mount failed"
            echo "$w.$r" > "/mnt/$w/file"
            umount "/mnt/$w" || echo "workload: shell $w: umount failed"
        done
        echo "workload: shell $w done"
    ) &
done
wait
echo "workload: done"
poweroff -f
