#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for tests/test_slurm.py (and for trying the SLURM
# profile by hand). Everything lives in one directory: config files, state, logs, PID files and
# a private munge daemon. Nothing under /etc is read or written; clients find the cluster
# through SLURM_CONF. Needs root and Debian's slurm-wlm + munge (`install` adds them).
#
#   tests/slurm/minicluster.sh install         apt-get install slurm-wlm munge (if missing)
#   tests/slurm/minicluster.sh start DIR       start munged, slurmctld, slurmd; wait for the node
#   export SLURM_CONF=DIR/slurm.conf PATH=DIR/bin:$PATH   then sbatch, squeue, snakemake ...
#   tests/slurm/minicluster.sh stop DIR        cancel jobs, stop the three daemons by PID
#
# The node pretends to have 16 CPUs, 250 GB and 4 GPUs (SlurmdParameters=config_overrides and a
# File-less GPU gres), so jobs sized by profiles/slurm are accepted on a small machine; GPU jobs
# are scheduled but get no device. Ports: SLURMCTLD_PORT / SLURMD_PORT (default 16817/16818).
set -euo pipefail

die() { echo "minicluster: $*" >&2; exit 1; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "installing slurm-wlm and munge needs root"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get install -y --no-install-recommends slurm-wlm munge \
        || { timeout 300 apt-get update && \
             timeout 300 apt-get install -y --no-install-recommends slurm-wlm munge; }
}

# pid FILE: the PID recorded in FILE, if that process is alive.
pid() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }

start() {
    local dir host cpus=16 mem=256000 ctld_port=${SLURMCTLD_PORT:-16817}
    local slurmd_port=${SLURMD_PORT:-16818}
    dir=$(realpath "$1")
    host=$(hostname -s)
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 700 "$dir/munge"
    [ -s "$dir/munge/munge.key" ] || {
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$dir/munge/munge.key"
    }
    cat >"$dir/slurm.conf" <<CONF
# written by tests/slurm/minicluster.sh
ClusterName=ddaetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    # four fake GPU "devices" (a File is needed for gres/gpu to be counted)
    printf 'NodeName=%s Name=gpu File=%s\n' "$host" /dev/null "$host" /dev/zero "$host" /dev/full \
        "$host" /dev/urandom >"$dir/gres.conf"
    : >"$dir/plugstack.conf"
    # Real clusters keep slurm.conf where every client finds it (/etc/slurm or configless);
    # this one is only found through SLURM_CONF, which snakemake's jobstep plugin drops from
    # the environment of the `srun` it starts inside a job. DIR/bin/srun puts it back: put DIR/bin
    # first on PATH.
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$dir/slurm.conf" \
        "$(command -v srun)" >"$dir/bin/srun"
    chmod +x "$dir/bin/srun"
    export SLURM_CONF=$dir/slurm.conf

    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    slurmctld -c -f "$dir/slurm.conf"
    slurmd -c -f "$dir/slurm.conf" -N "$host"

    local state=""
    for _ in $(seq 60); do
        state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
        case "$state" in
            idle*) echo "minicluster: node $host idle; export SLURM_CONF=$dir/slurm.conf PATH=$dir/bin:\$PATH"; return 0 ;;
            drain* | down*) timeout 5 scontrol update nodename="$host" state=resume || true ;;
        esac
        sleep 1
    done
    die "node $host did not become idle (state '${state}'); see $dir/*.log"
}

stop() {
    local dir
    dir=$(realpath "$1")
    export SLURM_CONF=$dir/slurm.conf
    if [ -n "$(pid "$dir/slurmctld.pid")" ]; then
        timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 20); do
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    local file p
    for file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        p=$(pid "$file") || continue
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        rm -f "$file"
    done
    return 0
}

case "${1:-}" in
    install) install ;;
    start) [ $# = 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
