#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on this machine, for the test suite
# (tools/tests/slurm.rs) and for trying tools/slurm/explore.sbatch by hand.
#
#   tools/slurm/local-cluster.sh start DIR   start munged (unless one answers already),
#                                            slurmctld and slurmd; wait until the node is idle
#   tools/slurm/local-cluster.sh stop DIR    cancel the cluster's jobs, stop exactly the
#                                            daemons `start DIR` started (by their PID files)
#
# Needs root and the Debian packages slurm-wlm and munge (./setup.sh --deps).
# Everything the cluster writes is under DIR: slurm.conf, state/, spool/, the PID files
# and the logs (slurmctld.log, slurmd.log). The cluster listens on two free TCP ports
# (picked at start, in slurm.conf), so it runs beside any other Slurm on the machine.
#
# `start` prints one line, `export SLURM_CONF=DIR/slurm.conf`, which the Slurm commands
# (sinfo, sbatch, squeue, …) need to find this cluster:
#
#   eval "$(tools/slurm/local-cluster.sh start /tmp/c)"
#   sbatch --wait --array=0-3 --output=/tmp/c/out-%a job.sh
#   tools/slurm/local-cluster.sh stop /tmp/c
#
# munged is shared by the whole machine (/run/munge/munge.socket.2): if one already
# answers, `start` uses it and `stop` leaves it running; if `start` had to start it,
# `stop` stops it (so do not stop a cluster while another still relies on its munged).
#
# Nothing waits without a bound: at most LOCAL_CLUSTER_TIMEOUT seconds (default 60)
# for the node to become idle, a few seconds for each daemon to start or stop, and
# every Slurm or munge command runs under `timeout`. On any failure `start` shows the
# logs' tails, stops what it started and exits 1.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
say() { echo "local-cluster: $*" >&2; }
die() {
    say "$*"
    exit 1
}

[ $# -eq 2 ] || usage
action=$1
[ -n "$2" ] || usage
case $action in
start) mkdir -p "$2" ;;
stop) [ -d "$2" ] || { say "no directory $2: nothing to stop"; exit 0; } ;;
*) usage ;;
esac
dir=$(cd "$2" && pwd)
[[ $dir != *[[:space:]]* ]] || die "DIR must not contain white space (slurm.conf paths): $dir"
conf=$dir/slurm.conf
export SLURM_CONF=$conf
node=$(hostname -s)

# Whether PID (from a PID file) is alive and its command line contains TEXT: a PID file
# left behind must not make us signal whatever process got its number since.
is_ours() {
    local pid=$1 text=$2
    [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$text"
}

pid_in() { cat "$1" 2>/dev/null || true; }

# Sends TERM to the process of PIDFILE if it is ours (see is_ours), waits up to 10 s,
# then KILL and up to 5 s more.
stop_daemon() {
    local pidfile=$1 text=$2 name=$3 pid i
    pid=$(pid_in "$pidfile")
    if ! is_ours "$pid" "$text"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        is_ours "$pid" "$text" || break
        sleep 0.1
    done
    if is_ours "$pid" "$text"; then
        say "$name (pid $pid) did not stop on TERM within 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            is_ours "$pid" "$text" || break
            sleep 0.1
        done
        is_ours "$pid" "$text" && die "$name (pid $pid) is still alive after KILL"
    fi
    rm -f "$pidfile"
    say "stopped $name (pid $pid)"
}

munge_answers() {
    timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1
}

controller_alive() { is_ours "$(pid_in "$dir/slurmctld.pid")" "$conf"; }

stop() {
    # Jobs first, while the controller still runs: a job step left behind would outlive
    # slurmd (slurmstepd is a daemon of its own).
    if controller_alive; then
        local jobs i
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086 # one argument per job id
            timeout 10 scancel $jobs || true
            for ((i = 0; i < 30; i++)); do
                [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ] && break
                sleep 1
            done
        fi
    fi
    stop_daemon "$dir/slurmd.pid" "$conf" slurmd
    stop_daemon "$dir/slurmctld.pid" "$conf" slurmctld
    # munged only if `start` started it (its PID copied to DIR/munged.pid).
    stop_daemon "$dir/munged.pid" munged munged
}

# Waits up to SECONDS for PIDFILE to name a live process of ours.
wait_pidfile() {
    local pidfile=$1 name=$2 seconds=$3 i
    for ((i = 0; i < seconds * 10; i++)); do
        is_ours "$(pid_in "$pidfile")" "$conf" && return 0
        sleep 0.1
    done
    die "$name did not start within $seconds s (no live process in $pidfile)"
}

start_munged() {
    if munge_answers; then
        say "using the munged already running"
        return 0
    fi
    command -v munged >/dev/null || die "munged not found: install munge (./setup.sh --deps)"
    [ -e /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 0755 /run/munge
    # munged forks and writes /run/munge/munged.pid; the parent returns once it runs.
    timeout 10 runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
    local i
    for ((i = 0; i < 100; i++)); do
        munge_answers && break
        sleep 0.1
    done
    munge_answers || die "munged started but does not answer within 10 s"
    local pid
    pid=$(pid_in /run/munge/munged.pid)
    is_ours "$pid" munged || die "munged runs but /run/munge/munged.pid does not name it"
    echo "$pid" >"$dir/munged.pid"
    say "started munged (pid $pid)"
}

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

write_conf() {
    local port i
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 20000))
        port_free "$port" && port_free $((port + 1)) && break
    done
    port_free "$port" && port_free $((port + 1)) || die "found no two free TCP ports"
    # 127.0.0.1 as the addresses: the host name need not resolve. CR_CPU: CPUs are the
    # consumable resource; the default (CR_Core_Memory) would give each job the whole
    # node's memory and so run one job at a time.
    cat >"$conf" <<EOF
# Written by tools/slurm/local-cluster.sh: a one-node cluster on $node, stopped with
# \`tools/slurm/local-cluster.sh stop $dir\`.
ClusterName=percpu-lab-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

show_logs() {
    local f
    for f in "$dir/slurmctld.log" "$dir/slurmd.log"; do
        [ -s "$f" ] && { say "--- last lines of $f"; tail -n 15 "$f" >&2; }
    done
    return 0
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd runs jobs as any user)"
    local cmd
    for cmd in slurmctld slurmd sinfo sbatch squeue scancel munge unmunge runuser ss; do
        command -v "$cmd" >/dev/null ||
            die "$cmd not found: install slurm-wlm and munge (./setup.sh --deps)"
    done
    if controller_alive || is_ours "$(pid_in "$dir/slurmd.pid")" "$conf"; then
        die "a cluster already runs in $dir (stop it first)"
    fi
    local t0=$SECONDS
    # From here on, a failure stops whatever was started.
    trap 'status=$?; if [ $status -ne 0 ]; then show_logs; say "start failed; stopping what was started"; stop || true; fi' EXIT
    rm -rf "$dir/state" "$dir/spool"
    rm -f "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munged.pid"
    mkdir -p "$dir/state" "$dir/spool"
    start_munged
    write_conf
    timeout 30 slurmctld -f "$conf" || die "slurmctld -f $conf failed"
    wait_pidfile "$dir/slurmctld.pid" slurmctld 15
    timeout 30 slurmd -f "$conf" || die "slurmd -f $conf failed"
    wait_pidfile "$dir/slurmd.pid" slurmd 15
    local limit=${LOCAL_CLUSTER_TIMEOUT:-60} state=""
    while :; do
        state=$(timeout 5 sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n 1 || true)
        [ "$state" = idle ] && break
        ((SECONDS - t0 < limit)) ||
            die "node $node is not idle after $limit s (sinfo says '${state:-nothing}')"
        sleep 0.2
    done
    trap - EXIT
    say "node $node idle after $((SECONDS - t0)) s; stop with: $0 stop $dir"
    echo "export SLURM_CONF=$conf"
}

case $action in
start) start ;;
stop) stop ;;
*) usage ;;
esac
