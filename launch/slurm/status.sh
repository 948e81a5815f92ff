#!/usr/bin/env bash
# Is the single-node Slurm of start.sh (same folder argument or MMIMDB_SLURM_DIR) usable?
# Prints one line per daemon and the node's state; exits 0 when every part answers (munge,
# MariaDB, slurmdbd, slurmctld, an idle or busy node), 1 otherwise.
set -euo pipefail
source "$(dirname "$0")/common.sh"

ok=0
check() {
    local name=$1
    shift
    if "$@"; then
        printf '%-10s up\n' "$name"
    else
        printf '%-10s DOWN\n' "$name"
        ok=1
    fi
}
[[ -f $SLURM_CONF ]] || { echo "no cluster configured in $SLURM_DIR (run launch/slurm/start.sh)"; exit 1; }
check munge munge_works
check mariadb db_works
check slurmdbd dbd_works
check slurmctld ctld_works
check node node_idle
if ((ok == 0)); then
    sinfo -h -o "partition %P: %D node(s), %c CPUs, %m MB, state %t" 2>/dev/null
    echo "export SLURM_CONF=$SLURM_CONF"
fi
exit $ok
