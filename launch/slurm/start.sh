#!/usr/bin/env bash
# Start a single-node Slurm with accounting, from the Debian packages (install.sh):
#
#   eval "$(launch/slurm/start.sh)"        # prints `export SLURM_CONF=...` on stdout
#   launch/slurm/start.sh /path/to/folder  # or MMIMDB_SLURM_DIR=/path/to/folder
#
# munged (as user munge, shared with the machine), MariaDB and slurmdbd (so that `sacct`, which
# submitit polls for job states, answers), slurmctld and slurmd, all run by hand: no systemd
# needed. Config and state live under the folder (see common.sh). Idempotent: daemons already
# running are left alone. A first start clears the controller state (`slurmctld -c`); later
# starts keep it, so job ids keep counting up and match the accounting records.
# Every process that submits jobs needs SLURM_CONF in its environment.
set -euo pipefail
source "$(dirname "$0")/common.sh"

for tool in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr scontrol sinfo; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$tool" >/dev/null || die "$tool not found: run launch/slurm/install.sh first"
done
((EUID == 0)) || die "the daemons run as root here (SlurmUser=root); run as root"

mkdir -p "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/ctld" "$STATE_DIR/spool"

# ---------------------------------------------------------------- configuration
# The node as slurmd sees it (CPUs, sockets, cores, threads, memory), every CPU schedulable
# on its own, and a default memory per CPU so that jobs without --mem do not take the node.
write_config() {
    local hardware cpus memory
    hardware=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')
    cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$hardware")
    memory=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hardware")
    [[ $cpus =~ ^[0-9]+$ && $memory =~ ^[0-9]+$ ]] || die "cannot read CPUs and memory from 'slurmd -C': $hardware"
    cat >"$CONF_DIR/slurm.conf.new" <<CONF
# Written by launch/slurm/start.sh: a single-node cluster for trying jobs and for the tests.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE_NAME
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
PlugStackConfig=$CONF_DIR/plugstack.conf
# No cgroups needed: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((memory / cpus))
MpiDefault=none
SchedulerType=sched/backfill
# Requeued and newly eligible jobs start within seconds instead of the default minute.
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit.
KillWait=10
OverTimeLimit=0
InactiveLimit=0
MinJobAge=600
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE_NAME
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
NodeName=$NODE_NAME $hardware State=UNKNOWN
PartitionName=$PARTITION_NAME Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
CONF
    sed -i -E 's/ UpTime=[^ ]+//' "$CONF_DIR/slurm.conf.new"
    mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
    : >"$CONF_DIR/plugstack.conf"
    if [[ ! -s $CONF_DIR/db_password ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$CONF_DIR/db_password")
    fi
    (umask 077 && cat >"$CONF_DIR/slurmdbd.conf" <<CONF
# Written by launch/slurm/start.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE_NAME
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(<"$CONF_DIR/db_password")
StorageLoc=slurm_acct_db
CONF
    )
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

# ---------------------------------------------------------------- daemons
start_munge() {
    if munge_works; then
        return
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        note "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0600 /etc/munge/munge.key
    fi
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" || die "munged did not start (see /var/log/munge/munged.log)"
    wait_for munged 10 munge_works || die "munged started but 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"
}

start_database() {
    if db_works; then
        return
    fi
    if [[ ! -d $DB_DIR/mysql ]]; then
        note "initialising the accounting database in $DB_DIR"
        mariadb-install-db --no-defaults --datadir="$DB_DIR" --user=root --auth-root-authentication-method=socket \
            >"$LOG_DIR/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $LOG_DIR/mariadb-install.log)"
    fi
    setsid mariadbd --no-defaults --datadir="$DB_DIR" --user=root --socket="$DB_SOCKET" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$RUN_DIR/mariadbd.pid" \
        --log-error="$LOG_DIR/mariadbd.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1 &
    wait_for MariaDB 60 db_works || die "MariaDB did not answer on $DB_SOCKET (see $LOG_DIR/mariadbd.log)"
    local password
    password=$(<"$CONF_DIR/db_password")
    mariadb --no-defaults --socket="$DB_SOCKET" -uroot <<SQL || die "cannot create the database user for slurmdbd"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_dbd() {
    if ! live_pid "$RUN_DIR/slurmdbd.pid" >/dev/null; then
        slurmdbd || die "slurmdbd did not start (see $LOG_DIR/slurmdbd.log)"
    fi
    wait_for slurmdbd 30 dbd_works || die "slurmdbd does not answer sacctmgr (see $LOG_DIR/slurmdbd.log)"
    # Register the cluster before slurmctld connects, and an account for root, so that jobs
    # and their states show in sacct.
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER_NAME"; then
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || die "sacctmgr add cluster $CLUSTER_NAME failed"
    fi
    if ! sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT_NAME"; then
        sacctmgr -i add account "$ACCOUNT_NAME" cluster="$CLUSTER_NAME" description=mmimdb-dist organization=mmimdb-dist \
            >/dev/null || die "sacctmgr add account $ACCOUNT_NAME failed"
    fi
    if ! sacctmgr -n -P show association where user=root account="$ACCOUNT_NAME" format=user | grep -qx root; then
        sacctmgr -i add user root account="$ACCOUNT_NAME" defaultaccount="$ACCOUNT_NAME" >/dev/null \
            || die "sacctmgr add user root failed"
    fi
}

start_ctld() {
    if ! live_pid "$RUN_DIR/slurmctld.pid" >/dev/null; then
        local clear=()
        [[ -e $STATE_DIR/ctld/job_state ]] || clear=(-c)
        slurmctld "${clear[@]}" || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
    fi
    wait_for slurmctld 30 ctld_works || die "slurmctld does not answer 'scontrol ping' (see $LOG_DIR/slurmctld.log)"
}

start_slurmd() {
    if ! live_pid "$RUN_DIR/slurmd.pid" >/dev/null; then
        slurmd -N "$NODE_NAME" || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
    fi
    if ! wait_for "node $NODE_NAME" 30 node_idle; then
        scontrol update nodename="$NODE_NAME" state=resume >/dev/null 2>&1 || true
        wait_for "node $NODE_NAME" 15 node_idle \
            || die "node $NODE_NAME is not usable: $(sinfo -h -n "$NODE_NAME" -o '%t %E') (see $LOG_DIR/slurmd.log)"
    fi
}

write_config
start_munge
start_database
start_dbd
start_ctld
start_slurmd
note "single-node Slurm up: partition $PARTITION_NAME, $(sinfo -h -n "$NODE_NAME" -o '%c CPUs, %m MB'), folder $SLURM_DIR"
echo "export SLURM_CONF=$SLURM_CONF"
