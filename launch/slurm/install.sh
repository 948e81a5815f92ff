#!/usr/bin/env bash
# Install the Debian packages of a single-node Slurm with accounting: the controller, the node
# daemon, the client commands, the accounting daemon and its database, and munge for
# authentication. Idempotent: packages already installed are not asked for again. Needs root
# (or sudo) on a Debian or Ubuntu machine.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} == 0)); then
    echo "launch/slurm: all of ${PACKAGES[*]} are installed" >&2
    exit 0
fi
command -v apt-get >/dev/null || {
    echo "launch/slurm: error: ${missing[*]} missing and no apt-get here; install Slurm 22.05+ with slurmdbd, munge and MariaDB by other means" >&2
    exit 1
}
SUDO=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "launch/slurm: error: installing ${missing[*]} needs root" >&2; exit 1; }
    SUDO=(sudo)
fi
echo "launch/slurm: installing ${missing[*]}" >&2
# Services the packages may start on a systemd machine do not get in the way: start.sh runs
# its own daemons on other ports under its own folder, and shares only munged.
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
