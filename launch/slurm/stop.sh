#!/usr/bin/env bash
# Stop the single-node Slurm started by start.sh (same folder argument or MMIMDB_SLURM_DIR):
# slurmd, slurmctld (which saves its state), slurmdbd and MariaDB, each by its pid file, waiting
# for each to exit. munged is shared with the machine and is left running. Idempotent.
#   launch/slurm/stop.sh [FOLDER] [--purge]   # --purge also deletes the folder (state, database)
set -euo pipefail
purge=0
args=()
for arg in "$@"; do
    if [[ $arg == --purge ]]; then purge=1; else args+=("$arg"); fi
done
set -- "${args[@]+"${args[@]}"}"
source "$(dirname "$0")/common.sh"

stop_daemon() {
    local name=$1 pidfile=$RUN_DIR/$1.pid pid
    pid=$(live_pid "$pidfile") || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { note "$name stopped"; rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    note "$name (pid $pid) did not exit within 30 s of SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# Jobs still running would be orphaned by slurmd: cancel them first, briefly.
if ctld_works && [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
    note "cancelling the jobs still queued or running"
    scancel --full --quiet $(squeue -h -o %i) 2>/dev/null || true
    for _ in $(seq 1 50); do
        [[ -z $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
        sleep 0.2
    done
fi
stop_daemon slurmd
stop_daemon slurmctld
stop_daemon slurmdbd
stop_daemon mariadbd
if ((purge)); then
    rm -rf "$SLURM_DIR"
    note "removed $SLURM_DIR"
fi
