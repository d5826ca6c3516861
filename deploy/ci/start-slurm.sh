#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for the tests marked `slurm`.
#
#   sudo bash deploy/ci/start-slurm.sh     # run as root; idempotent: rerunning is harmless
#   bash deploy/ci/stop-slurm.sh           # stop the daemons again
#
# What it does:
#   1. installs Debian's slurm-wlm and munge (skipped when already installed);
#   2. writes /etc/slurm/slurm.conf for this host only: one node (this machine, with the
#      CPUs and memory it has), one partition `debug`, no accounting, no cgroups, and
#      /etc/slurm/cgroup.conf;
#   3. creates the munge key and starts munged, slurmctld and slurmd as plain daemons
#      (no systemd needed), restarting them when the configuration changed;
#   4. waits until `sinfo` reports the node idle, or fails printing the daemons' logs.
#
# Environment (all optional):
#   SLURM_START_TIMEOUT   seconds to wait for the node to become idle (default 60)
#   SLURM_PARTITION       name of the partition (default debug)
#   SLURM_SKIP_INSTALL=1  do not call apt-get (the packages must already be installed)
#
# This is a test fixture, not a production setup: SlurmUser is root, there is no
# accounting database and jobs are not confined (proctrack/linuxproc, task/none).
set -euo pipefail

TIMEOUT=${SLURM_START_TIMEOUT:-60}
PARTITION=${SLURM_PARTITION:-debug}
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd

log() { echo "start-slurm: $*"; }
die() { echo "start-slurm: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts system daemons)"

# --- 1. packages --------------------------------------------------------------------
if [[ ${SLURM_SKIP_INSTALL:-0} != 1 ]]; then
    missing=()
    for command in slurmctld slurmd sinfo munged; do
        command -v "$command" >/dev/null 2>&1 || missing+=("$command")
    done
    if ((${#missing[@]})); then
        log "installing slurm-wlm and munge (missing: ${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q -o DPkg::Lock::Timeout=600
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 slurm-wlm munge
    fi
fi
for command in slurmctld slurmd sinfo scontrol munged; do
    command -v "$command" >/dev/null 2>&1 || die "$command not found; install slurm-wlm and munge"
done

# --- 2. configuration -----------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc --all)
# RealMemory in MiB, slightly under what the kernel reports: slurmd drains a node whose
# configured memory exceeds the memory it finds.
MEMORY_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.97}' /proc/meminfo)

mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"

new_conf=$(cat <<CONF
# Single-node SLURM for tests; written by deploy/ci/start-slurm.sh (rerun it to refresh).
ClusterName=lensfinder-ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MailProg=/bin/true
# Finished jobs stay visible to 'scontrol show job' for 10 minutes.
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
)
new_cgroup=$(cat <<CONF
# Written by deploy/ci/start-slurm.sh. No cgroup plugin is used by slurm.conf
# (proctrack/linuxproc, task/none); these settings let slurmd start without systemd.
CgroupPlugin=autodetect
IgnoreSystemd=yes
CONF
)

changed=0
write_if_changed() {  # write_if_changed FILE CONTENT: sets changed=1 when FILE changes
    if [[ ! -f $1 ]] || [[ "$(cat "$1")" != "$2" ]]; then
        printf '%s\n' "$2" >"$1"
        changed=1
        log "wrote $1"
    fi
}
write_if_changed "$CONF_DIR/slurm.conf" "$new_conf"
write_if_changed "$CONF_DIR/cgroup.conf" "$new_cgroup"

# --- 3. daemons -----------------------------------------------------------------------
running() {  # running PIDFILE: the process named in PIDFILE is alive
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile PIDFILE: terminate that daemon and wait for it to exit
    local pid
    running "$1" || return 0
    pid=$(cat "$1")
    log "stopping $(basename "$1" .pid) (pid $pid) to apply the new configuration"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

# munge: a key shared by every node (here just this one), then munged as user munge.
MUNGE_PID=/run/munge/munged.pid
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! running "$MUNGE_PID"; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
fi
for _ in $(seq 50); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n </dev/null | unmunge >/dev/null || die "munge does not work; see /var/log/munge/munged.log"

if ((changed)); then
    # The daemons read slurm.conf at start; restart any that run with an older one.
    stop_pidfile /run/slurmd.pid
    stop_pidfile /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld
fi
if ! running /run/slurmd.pid; then
    log "starting slurmd"
    slurmd
fi

# --- 4. wait for the node -------------------------------------------------------------
print_logs() {
    for file in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        echo "----- last lines of $file" >&2
        tail -n 30 "$file" >&2 2>/dev/null || echo "(missing)" >&2
    done
}

deadline=$((SECONDS + TIMEOUT))
state=""
while ((SECONDS < deadline)); do
    state=$(sinfo --noheader --nodes="$HOST" --format=%T 2>/dev/null | head -n 1 || true)
    case $state in
        idle | mixed | allocated) break ;;
        down* | drain*)
            # ReturnToService=2 brings a node back on registration; nudge it once more.
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
case $state in
    idle | mixed | allocated)
        log "SLURM is up: node $HOST ($CPUS CPUs, $MEMORY_MB MiB) is $state in partition $PARTITION" ;;
    *)
        echo "start-slurm: error: node $HOST is not idle after ${TIMEOUT} s (state: ${state:-no answer from slurmctld})" >&2
        scontrol show node "$HOST" >&2 2>/dev/null || true
        print_logs
        exit 1 ;;
esac
