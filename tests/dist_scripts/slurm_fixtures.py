"""A real single-node Slurm for the tests, started with launch/slurm/start.sh when it is not up.

The cluster is left running if it was already up (a developer's, or one CI started), and
stopped at the end if this module started it. Machines without the Debian packages fail here
with the command that installs them: the Slurm tests are never skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "launch" / "slurm"
START_TIMEOUT_S = 240


def _script(name: str, folder: Path, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / name), str(folder), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MMIMDB_SLURM_DIR": str(folder)},
    )


def start_slurm_cluster():
    """SLURM_CONF of a usable single-node cluster, exported to this process and its children
    (a generator: the `slurm_cluster` fixture of conftest.py yields from it)."""
    folder = Path(os.environ.get("MMIMDB_SLURM_DIR", "/tmp/mmimdb-dist-slurm"))
    started = False
    if _script("status.sh", folder, timeout=60).returncode != 0:
        result = _script("start.sh", folder)
        if result.returncode != 0:
            pytest.fail(
                f"could not start Slurm with {SCRIPTS / 'start.sh'} (install the packages with "
                f"{SCRIPTS / 'install.sh'} as root):\n{result.stderr[-3000:]}"
            )
        started = True
    conf = str(folder / "etc" / "slurm.conf")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if started:
            _script("stop.sh", folder, timeout=120)


def submit_all(submissions: dict[str, tuple[str, ...]], cwd: Path) -> dict[str, tuple[str, str]]:
    """Run several `mmimdb-dist submit ...` commands at once, as a user would; name -> (job id, stdout).

    At once, because each command spends seconds importing before it reaches sbatch.
    """
    from dist_scripts.train_fixtures import env

    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", "submit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=cwd,
        )
        for name, args in submissions.items()
    }
    jobs = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
        match = re.search(r"submitted (?:job|\d+ runs as job array) (\d+)", stdout)
        assert match, stdout
        jobs[name] = (match.group(1), stdout)
    return jobs


def _slurm(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def queued(job_id: str) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of the job's entries still in the queue (array elements each)."""
    out = _slurm("squeue", "-h", "-j", job_id, "-o", "%i|%T|%r")
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def accounting(job_id: str) -> list[tuple[str, str]]:
    """(job id, state) of every record sacct holds for the job, requeued attempts included."""
    out = _slurm("sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "JobID,State")
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def wait_until_done(
    job_id: str, timeout: float, released: list[str] | None = None, time_limit_after_requeue: int | None = None
) -> list[tuple[str, str]]:
    """Wait until nothing of the job is queued any more; its sacct records.

    Slurm holds a requeued batch job for about two minutes (reason BeginTime) before it may
    start again; a held job is released at once with `scontrol update StartTime=now`, as a
    user who does not want to wait would (each release is appended to `released`), and given
    `time_limit_after_requeue` minutes when that is set, so that it is stopped only once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = queued(job_id)
        if not entries:
            time.sleep(1)  # the last state reaches the accounting database a moment later
            return accounting(job_id)
        for entry_id, state, reason in entries:
            if state == "PENDING" and reason == "BeginTime":
                limit = [f"TimeLimit={time_limit_after_requeue}"] if time_limit_after_requeue else []
                _slurm("scontrol", "update", f"JobId={entry_id}", "StartTime=now", *limit)
                if released is not None:
                    released.append(entry_id)
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued after {timeout} s: {queued(job_id)}")
