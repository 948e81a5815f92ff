"""`submit` where Slurm is not reachable: one line, never a run on this machine by accident; and
`--cluster local`, which runs the job here on purpose and honours `--wait` as a Slurm job does.

Real processes throughout: the CLI with a PATH that has no Slurm commands, and submitit's local
executor running the real trainer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dist_scripts.train_fixtures import env, tiny_config, write_config

pytestmark = pytest.mark.slow


def _without_slurm() -> dict[str, str]:
    """The test environment with a PATH that holds Python's folder alone (no sbatch, no sinfo)."""
    return {**env(), "PATH": str(Path(sys.executable).parent)}


def _submit(config: Path, *extra: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "--log-level",
            "WARNING",
            "submit",
            "train",
            "--config",
            str(config),
            "--time",
            "10",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=config.parent,
    )


def test_no_slurm_is_one_line_and_local_runs_here_on_purpose(shards, tmp_path):
    config = write_config(tmp_path / "local.yaml", tiny_config(shards, tmp_path / "runs", "local", epochs=1))
    refused = _submit(config, environment=_without_slurm())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "mmimdb-dist submit: error: Slurm is not reachable from here (no sbatch on PATH); on a cluster, submit from "
        "a node with Slurm's commands and SLURM_CONF, or pass --cluster local to run the job on this machine on "
        "purpose (--cluster debug: in this process)"
    ]
    assert not (tmp_path / "runs" / "local").exists()  # nothing ran, nothing was written

    # --cluster local without --wait: said before it starts, returns at once, the job runs on
    start = time.monotonic()
    submitted = _submit(config, "--cluster", "local", environment=_without_slurm())
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    assert "--cluster local: the job runs on this machine, not on a Slurm cluster" in submitted.stderr
    assert "runs on in the background" in submitted.stdout
    assert "best checkpoint" not in submitted.stdout
    final = tmp_path / "runs" / "local" / "final_metrics.json"
    while not final.is_file() and time.monotonic() - start < 240:
        time.sleep(1)
    assert final.is_file(), "the local job did not outlive the command that submitted it"
    assert json.loads(final.read_text())["last_epoch"] == 0

    # with --wait it waits and prints the metrics, as for a Slurm job
    again = write_config(tmp_path / "waited.yaml", tiny_config(shards, tmp_path / "runs", "waited", epochs=1))
    waited = _submit(again, "--cluster", "local", "--wait", environment=_without_slurm())
    assert waited.returncode == 0, waited.stderr[-2000:]
    assert "best checkpoint" in waited.stdout
    assert "tuned_on_dev" in waited.stdout
    assert os.path.isfile(tmp_path / "runs" / "waited" / "final_metrics.json")
