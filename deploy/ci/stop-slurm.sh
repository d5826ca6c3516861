#!/usr/bin/env bash
# Stop the single-node SLURM that deploy/ci/start-slurm.sh started (run as root).
#
#   bash deploy/ci/stop-slurm.sh           # cancel all jobs, stop slurmd, slurmctld and munged
#   bash deploy/ci/stop-slurm.sh --purge   # ... and delete SLURM's saved state and logs
#
# Packages and configuration files stay; start-slurm.sh starts everything again.
# Harmless when nothing is running.
set -euo pipefail

purge=0
case ${1:-} in
    --purge) purge=1 ;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || { echo "stop-slurm: error: run as root" >&2; exit 1; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
    local pid
    [[ -s $2 ]] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop-slurm: stopping $1 (pid $pid)"
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
}

# Cancel the jobs first so that their processes do not outlive slurmd.
if command -v scancel >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
    for user in $(squeue --noheader --format=%u 2>/dev/null | sort -u); do
        scancel --quiet --user="$user" 2>/dev/null || true
    done
fi
stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid

if ((purge)); then
    echo "stop-slurm: deleting /var/spool/slurmctld, /var/spool/slurmd and /var/log/slurm"
    rm -rf /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
fi
echo "stop-slurm: SLURM is stopped"
