#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying `reproduce.py --executor slurm`
# and for its tests: munged, MariaDB, slurmdbd (accounting, which submitit needs to see job
# states), slurmctld and slurmd, all run as root with their configuration, state, spool,
# sockets and logs in one folder; nothing under /etc is changed.
#
#   sudo tests/support/slurm_cluster.sh start     # prints the line to give SLURM's commands the cluster
#   export SLURM_CONF=/tmp/temp-deepemocluster-slurm/slurm.conf
#   sudo tests/support/slurm_cluster.sh status
#   sudo tests/support/slurm_cluster.sh stop      # stops what start started, by its recorded pids
#
# The folder is $SLURM_CLUSTER_DIR (default /tmp/temp-deepemocluster-slurm). The partition
# `debug` holds the machine's cores; a job of the partition `urgent` preempts its jobs (SLURM
# sends them their --signal, then requeues them after 60 s of grace); `short` allows a job at
# most 5 minutes, 1 CPU and 1024 MB of the node (limits a sweep's request is checked against).
# Ports are free ones picked at start. Needs Debian's packages slurm-wlm munge slurmdbd
# mariadb-server (apt-get install -y ...).
set -euo pipefail

DIR="${SLURM_CLUSTER_DIR:-/tmp/temp-deepemocluster-slurm}"
CLUSTER=deepemocluster
DAEMONS="munged mysqld slurmdbd slurmctld slurmd"      # in start order
export SLURM_CONF="$DIR/slurm.conf"
export PATH="$PATH:/usr/sbin:/sbin"                    # the daemons, also for a user's PATH

say() { echo "slurm_cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pid_of() {    # the recorded pid of a daemon, if that process still lives
    local pid
    pid="$(cat "$DIR/run/$1.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until the command succeeds
    local seconds="$1" deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${seconds}s; see $DIR/log"
        sleep 0.2
    done
}

free_ports() {  # N distinct TCP ports free on this machine now
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

check_can_start() {
    [ "$(id -u)" = 0 ] || die "must run as root (sudo): slurmd and munged run as root"
    local missing=""
    for cmd in munged mungekey munge unmunge mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd \
               sacctmgr scontrol sinfo python3; do
        command -v "$cmd" >/dev/null || missing="$missing $cmd"
    done
    [ -z "$missing" ] || die "missing:$missing (apt-get install -y slurm-wlm munge slurmdbd mariadb-server)"
}

write_configs() {
    local host="$1" cpus="$2" mem_mb="$3" ctld_port="$4" slurmd_port="$5" dbd_port="$6" db_port="$7"
    cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
EOF
    chmod 600 "$DIR/slurmdbd.conf"
    cat > "$SLURM_CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
JobAcctGatherType=jobacct_gather/linux
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
PartitionName=short Nodes=$host MaxTime=5 MaxCPUsPerNode=1 MaxMemPerNode=1024 State=UP PriorityTier=1
EOF
    chmod 644 "$SLURM_CONF"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    # SLURM's accounting connections reach munged only on its default socket, so the
    # cluster uses the machine's munged where one answers there (and leaves it running).
    if munge_works; then
        say "using the munged already running on this machine"
        return
    fi
    mkdir -p "$DIR/munge" /run/munge
    [ -f /etc/munge/munge.key ] || mungekey -c
    munged --force --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munged.seed" \
        --log-file="$DIR/log/munged.log" 2>>"$DIR/log/munged.log"
    wait_for 10 munged munge_works
}

start_mysqld() {
    if [ ! -d "$DIR/db/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" --skip-test-db \
            --auth-root-authentication-method=socket > "$DIR/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" \
        --bind-address=127.0.0.1 --port="$1" --pid-file="$DIR/run/mysqld.pid.own" \
        --log-error="$DIR/log/mysqld.log" --skip-log-bin </dev/null >/dev/null 2>&1 &
    echo $! > "$DIR/run/mysqld.pid"
    wait_for 60 MariaDB mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -uroot -e "SELECT 1"
    mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -uroot -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start() {
    check_can_start
    if pid_of slurmctld >/dev/null || pid_of munged >/dev/null; then
        die "already running from $DIR (stop it first: $0 stop)"
    fi
    mkdir -p "$DIR"/{run,log,state,spool}
    chmod 755 "$DIR"
    local host cpus mem_mb ports
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    read -r -a ports <<< "$(free_ports 4)"
    write_configs "$host" "$cpus" "$mem_mb" "${ports[@]}"
    start_munged
    start_mysqld "${ports[3]}"
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    slurmctld
    wait_for 30 slurmctld scontrol ping
    slurmd
    wait_for 30 "the node" sh -c 'sinfo -h -N -o %T | grep -qx idle'
    say "up: partition debug, $cpus CPU(s) on $host; state, logs and config in $DIR"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid NAME: SIGTERM to the recorded pid, then wait up to 30 s for it to end
    local pid
    pid="$(pid_of "$1")" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    say "$1 (pid $pid) did not stop within 30 s"
    return 1
}

stop() {
    [ -d "$DIR/run" ] || { say "nothing started in $DIR"; return 0; }
    if pid_of slurmctld >/dev/null; then
        # Jobs first: a job's slurmstepd outlives slurmd and waits forever for a controller
        # to hear that its job ended.
        local jobs
        jobs="$(squeue -h -o %A 2>/dev/null)" || jobs=""
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 60 "the end of the cancelled jobs" sh -c '[ -z "$(squeue -h -o %A)" ]'
        fi
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    local failed=0
    for daemon in slurmd slurmctld slurmdbd mysqld munged; do
        stop_pid "$daemon" || failed=1
    done
    [ "$failed" = 0 ] && say "stopped (state and logs kept in $DIR)"
    return "$failed"
}

status() {
    local down=0
    for daemon in $DAEMONS; do
        if pid="$(pid_of "$daemon")"; then
            echo "$daemon: running (pid $pid)"
        else
            echo "$daemon: not running"
            down=1
        fi
    done
    [ "$down" = 0 ] && sinfo
    return "$down"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (folder: \$SLURM_CLUSTER_DIR, default $DIR)" >&2; exit 2 ;;
esac
