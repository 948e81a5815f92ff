"""Training through submitit on a real single-node Slurm (launch/slurm/start.sh).

Every job is sent with the real `mmimdb-dist submit` command at the start of the module, so
they share the machine's two CPUs while the tests wait for them one by one: a run that
reaches its time limit (and its uninterrupted twin), a 2-task distributed run, and a sweep
of two runs as one job array.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dist_scripts.slurm_fixtures import submit_all, wait_until_done
from dist_scripts.train_fixtures import env, evaluate_checkpoint, tiny_config, train_shards, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

METRIC_KEYS = ("f1_macro", "f1_micro", "mean_average_precision", "roc_auc_macro", "hamming_loss")
# The time-limited run is sent with a 10-minute limit and SIGUSR2 SIGNAL_DELAY_S before it.
# Once it is training, its limit is cut to the first whole minute at least 45 s away: the
# warning is then due at once, and Slurm, which looks at time limits every 30 s, sends it
# within about 35 s, before the limit's own SIGTERM and while the run is still training.
SIGNAL_DELAY_S = 100
TIME_LIMIT_EPOCHS = 12
JOB_TIMEOUT_S = 280


@pytest.fixture(scope="module")
def submitted(slurm_cluster, tmp_path_factory):
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.mktemp("slurm")
    runs = root / "runs"
    configs = {
        name: write_config(root / f"{name}.yaml", tiny_config(shards, runs, name, **train))
        for name, train in {
            "reference": {"epochs": TIME_LIMIT_EPOCHS},
            "limited": {"epochs": TIME_LIMIT_EPOCHS},
            "ranks": {"epochs": 1},
            "grid": {"epochs": 1},
        }.items()
    }
    search = root / "search.yaml"
    search.write_text(
        yaml.safe_dump(
            {
                "name": "search",
                "base_config": str(configs["grid"]),
                "storage_path": str(root / "tune"),
                "space": {"train.lr": {"grid": [0.01]}},
                "search": {"algorithm": "grid", "num_samples": 1},
                "scheduler": {"name": "fifo"},
                "resources": {"cpu": 1, "max_concurrent": 1},
            }
        ),
        encoding="utf-8",
    )
    grid = root / "sweep.yaml"
    grid.write_text("name: lr\ngrid:\n  train.lr: [0.01, 0.02]\n", encoding="utf-8")
    common = ("--cluster", "slurm", "--partition", "debug")
    # The two long runs first (they share the two CPUs), then the others together.
    jobs = submit_all(
        {
            "limited": (
                "train",
                "--config",
                str(configs["limited"]),
                *common,
                "--time",
                "10",
                "--signal-delay-s",
                str(SIGNAL_DELAY_S),
            ),
            "reference": ("train", "--config", str(configs["reference"]), *common, "--time", "10"),
        },
        cwd=root,
    )
    jobs |= submit_all(
        {
            "sweep": (
                "sweep",
                "--config",
                str(configs["grid"]),
                "--grid",
                str(grid),
                "--parallel",
                "2",
                *common,
                "--time",
                "5",
            ),
            "ranks": ("train", "--config", str(configs["ranks"]), *common, "--tasks-per-node", "2", "--time", "5"),
            "tune": ("tune", "--config", str(search), "--out", str(root / "tune-job"), *common, "--time", "5"),
        },
        cwd=root,
    )
    yield root, runs, jobs
    # A failed test leaves nothing running on a cluster that outlives the module.
    subprocess.run(["scancel", *(job_id for job_id, _ in jobs.values())], capture_output=True, timeout=60)


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def _rank0_log(run_dir: Path, job_id: str) -> str:
    return (run_dir / "slurm" / job_id / f"{job_id}_0_log.err").read_text(errors="replace")


def _results(folder: Path, job_id: str, tasks: int) -> list[dict]:
    import submitit

    return submitit.SlurmJob(folder=folder / "%j", job_id=job_id, tasks=tuple(range(tasks))).results()


def _wait_until_training(run_dir: Path, job_id: str, timeout: float = 240) -> int:
    """Seconds the job has run once its trainer logged a step (metrics.jsonl)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_records(run_dir / METRICS_LOG, "train"):
            minutes, _, seconds = (
                subprocess.run(
                    ["squeue", "-h", "-j", job_id, "-o", "%M"], capture_output=True, text=True, check=True, timeout=60
                )
                .stdout.strip()
                .rpartition(":")
            )
            return int(minutes or 0) * 60 + int(seconds)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} logged no training step in {timeout} s")


def test_a_run_that_reaches_its_time_limit_is_requeued_and_ends_with_the_uninterrupted_metrics(submitted):
    _root, runs, jobs = submitted
    job_id, _stdout = jobs["limited"]
    run_dir = runs / "limited"
    elapsed = _wait_until_training(run_dir, job_id)
    minutes = math.ceil((elapsed + 45) / 60)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"], check=True, timeout=60)
    released: list[str] = []
    records = wait_until_done(job_id, JOB_TIMEOUT_S, released, time_limit_after_requeue=10)
    # One sacct record per attempt: the first was requeued, the second completed.
    assert records == [(job_id, "REQUEUED"), (job_id, "COMPLETED")]
    assert released == [job_id]

    log = _rank0_log(run_dir, job_id)
    # The trainer stopped on SIGUSR2 at a step boundary with a checkpoint, rank 0 requeued
    # once, and the second attempt resumed from that checkpoint, mid-run.
    stop = re.search(r"stopped by SIGUSR2 at epoch (\d+) step (\d+); checkpoint (\S+);", log)
    assert stop, log[-3000:]
    assert log.count("stopped by SIGUSR2") == 1, log[-3000:]
    assert log.count(f"requeueing job {job_id}") == 1
    assert "Caught signal SIGUSR2" not in log
    assert "DUE TO TIME LIMIT" not in log
    checkpoint = Path(stop.group(3)).name
    assert f"resumed from {run_dir / 'checkpoints' / checkpoint}" in log
    assert 0 < int(stop.group(2)) < TIME_LIMIT_EPOCHS * (360 // 16)
    [result] = _results(run_dir / "slurm", job_id, 1)
    assert result["restarts"] == 1

    wait_until_done(jobs["reference"][0], JOB_TIMEOUT_S)
    resumed, uninterrupted = _final(run_dir), _final(runs / "reference")
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    assert resumed["last_step"] == uninterrupted["last_step"] == TIME_LIMIT_EPOCHS * (360 // 16)
    for split in ("dev", "test"):
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            for key in METRIC_KEYS:
                assert resumed[split][protocol][key] == pytest.approx(uninterrupted[split][protocol][key], abs=1e-6), (
                    split,
                    protocol,
                    key,
                )
    steps = [record["step"] for record in read_records(run_dir / METRICS_LOG, "train")]
    assert steps == sorted(set(steps))  # the resumed attempt dropped what it redid


def test_a_training_job_runs_to_completion_and_leaves_its_logs_in_the_run_folder(submitted):
    _root, runs, jobs = submitted
    job_id, stdout = jobs["reference"]
    records = wait_until_done(job_id, JOB_TIMEOUT_S)
    assert records == [(job_id, "COMPLETED")]
    run_dir = runs / "reference"
    job_folder = run_dir / "slurm" / job_id
    assert f"submitted job {job_id}" in stdout
    assert str(job_folder / f"{job_id}_0_log.err") in stdout
    assert (job_folder / f"{job_id}_submission.sh").read_text().count("#SBATCH --partition=debug") == 1
    [result] = _results(run_dir / "slurm", job_id, 1)
    final = _final(run_dir)
    assert result["best_checkpoint"] == final["best_checkpoint"]
    assert result["world_size"] == final["world_size"] == 1
    assert result["test_f1_macro"] == pytest.approx(final["test"]["threshold_0.5"]["f1_macro"])
    [submission] = json.loads((run_dir / "submissions.json").read_text())
    assert submission["job_id"] == job_id
    assert submission["cluster"] == "slurm"
    assert (run_dir / "checkpoints" / final["best_checkpoint"] / "inference" / "model.safetensors").is_file()


def test_submitting_a_run_whose_folder_holds_checkpoints_needs_resume_auto(submitted):
    root, runs, jobs = submitted
    wait_until_done(jobs["reference"][0], JOB_TIMEOUT_S)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "submit",
            "train",
            "--config",
            str(root / "reference.yaml"),
            "--cluster",
            "slurm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=root,
    )
    assert result.returncode == 2
    assert f"{runs / 'reference' / 'checkpoints'} already holds checkpoints; pass --resume auto" in result.stderr
    assert len(json.loads((runs / "reference" / "submissions.json").read_text())) == 1  # nothing submitted


def test_a_two_task_job_trains_one_model_over_gloo_and_its_ranks_agree(submitted):
    _root, runs, jobs = submitted
    job_id, _ = jobs["ranks"]
    assert wait_until_done(job_id, JOB_TIMEOUT_S) == [(job_id, "COMPLETED")]
    run_dir = runs / "ranks"
    ranks = _results(run_dir / "slurm", job_id, 2)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2}
    for key in ("best_checkpoint", "last_step", "test_f1_macro", "test_f1_micro"):
        assert ranks[0][key] == ranks[1][key], key
    final = _final(run_dir)
    assert final["world_size"] == 2
    assert final["last_step"] == 360 // (2 * 16)
    rank1_log = (run_dir / "slurm" / job_id / f"{job_id}_1_log.err").read_text()
    assert "task 1 of 2" in rank1_log
    # The two ranks' evaluation, each on its share of test, equals one process on all of it.
    from mmimdb_dist.metrics import compute_metrics

    predictions = evaluate_checkpoint(run_dir / "checkpoints" / final["best_checkpoint"], "test")
    plain = compute_metrics(predictions.labels, predictions.probs)
    for key in METRIC_KEYS:
        assert final["test"]["threshold_0.5"][key] == pytest.approx(plain[key], abs=1e-6), key


def test_a_sweep_is_one_job_array_and_its_summary_ranks_both_runs(submitted):
    root, runs, jobs = submitted
    array_id, _stdout = jobs["sweep"]
    records = wait_until_done(array_id, JOB_TIMEOUT_S)
    assert sorted(records) == [(f"{array_id}_0", "COMPLETED"), (f"{array_id}_1", "COMPLETED")]
    sweep_dir = runs / "lr"
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [run["job_id"] for run in record["runs"]] == [f"{array_id}_0", f"{array_id}_1"]
    assert [run["overrides"] for run in record["runs"]] == [{"train.lr": 0.01}, {"train.lr": 0.02}]
    for run in record["runs"]:
        config = (Path(run["run_dir"]) / "config.yaml").read_text()
        assert f"lr: {run['overrides']['train.lr']}" in config

    result = subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", "submit", "summary", str(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (sweep_dir / "model_comparison.md").read_text()
    for run in record["runs"]:
        assert run["name"] in result.stdout
        assert run["name"] in table
    finals = {run["name"]: _final(Path(run["run_dir"]))["test"]["threshold_0.5"]["f1_macro"] for run in record["runs"]}
    best = max(finals, key=finals.get)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1 ")]
    assert len(rows) == 1
    assert best in rows[0]


def test_a_grid_with_a_misspelt_key_is_refused_before_anything_is_submitted(tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "shards", tmp_path / "runs", "c"))
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  train.lr_rate: [0.1, 0.2]\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "submit",
            "sweep",
            "--config",
            str(config),
            "--grid",
            str(grid),
            "--cluster",
            "slurm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(grid) in result.stderr
    assert "unknown config key 'train.lr_rate'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tune_search_runs_on_a_ray_cluster_started_inside_the_allocation(submitted):
    from mmimdb_dist.slurm.ray_cluster import RayPorts

    root, _runs, jobs = submitted
    job_id, _stdout = jobs["tune"]
    assert wait_until_done(job_id, JOB_TIMEOUT_S) == [(job_id, "COMPLETED")]
    log = (root / "tune-job" / "slurm" / job_id / f"{job_id}_0_log.err").read_text(errors="replace")
    port = RayPorts.for_job(job_id).base  # the job's own block of ports, from its id
    assert "starting Ray head with 1 CPU(s) and 0 GPU(s)" in log
    assert f"--port={port}" in log
    assert f"Ray cluster at localhost:{port}: 1 node(s)" in log
    assert f"tune --config {root / 'search.yaml'} --address localhost:{port}" in log
    results = (root / "tune" / "search" / "results.md").read_text()
    assert results.count("| finished |") == 1, results
    assert "| 0.01 |" in results, results
    # The per-submission token is gone, and no Ray process of the job outlived it.
    assert not list((root / "tune-job" / "slurm").glob(".ray-token-*"))
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"ray-{job_id}" not in processes
