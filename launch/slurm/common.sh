# Shared settings of the single-node Slurm scripts (sourced, not run).
#
# Everything the cluster writes lives under one folder, MMIMDB_SLURM_DIR (default
# /tmp/mmimdb-dist-slurm): slurm.conf and slurmdbd.conf, the MariaDB data, the controller's
# state, spool, logs and pid files. Two such clusters cannot run on one machine at once: the
# ports below are fixed per folder (MMIMDB_SLURM_PORT, default 16817, and the next three).

set -euo pipefail

SLURM_DIR=${MMIMDB_SLURM_DIR:-${1:-/tmp/mmimdb-dist-slurm}}
SLURM_DIR=$(realpath -m "$SLURM_DIR")
PORT_BASE=${MMIMDB_SLURM_PORT:-16817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER_NAME=${MMIMDB_SLURM_CLUSTER:-mmimdb}
ACCOUNT_NAME=${MMIMDB_SLURM_ACCOUNT:-mmimdb}
PARTITION_NAME=${MMIMDB_SLURM_PARTITION:-debug}
NODE_NAME=localhost

CONF_DIR=$SLURM_DIR/etc
RUN_DIR=$SLURM_DIR/run
LOG_DIR=$SLURM_DIR/log
STATE_DIR=$SLURM_DIR/state
DB_DIR=$SLURM_DIR/mysql
DB_SOCKET=$RUN_DIR/mysqld.sock
export SLURM_CONF=$CONF_DIR/slurm.conf

MUNGE_SOCKET=/run/munge/munge.socket.2

die() {
    echo "launch/slurm: error: $*" >&2
    exit 1
}

note() {
    echo "launch/slurm: $*" >&2
}

# The pid recorded in a pid file, if that process is alive.
live_pid() {
    local file=$1 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Wait up to $2 seconds for the command "${@:3}" to succeed; $1 names what is awaited.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
    note "$what is up"
}

munge_works() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

db_works() {
    mariadb --no-defaults --socket="$DB_SOCKET" -uroot -e 'SELECT 1' >/dev/null 2>&1
}

dbd_works() {
    sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1
}

ctld_works() {
    scontrol ping 2>/dev/null | grep -q 'is UP'
}

node_idle() {
    sinfo -h -n "$NODE_NAME" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}
