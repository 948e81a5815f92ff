"""Trainer faults: stop signals (SIGTERM / SIGUSR2) and a rank that dies under `accelerate launch`.

Real `mmimdb-dist train` processes on the synthetic shard set of the trainer tests; signals are
sent with os.kill once metrics.jsonl shows training under way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dist_scripts.ports import free_port
from dist_scripts.train_fixtures import env, run_train, tiny_config, train_command, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

RANKS_SCRIPT = Path(__file__).parent / "dist_scripts" / "faults_signal_ranks.py"
EPOCHS = 2
METRIC_KEYS = ("f1_macro", "f1_micro", "mean_average_precision", "roc_auc_macro", "hamming_loss")


def _launcher() -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
    ]


def _launch(root: Path, config: Path, *extra: str) -> subprocess.Popen:
    command = [
        *_launcher(),
        str(RANKS_SCRIPT),
        str(root),
        "--log-level",
        "WARNING",
        "train",
        "--config",
        str(config),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=root)


def _wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 240) -> None:
    """Until metrics.jsonl logs a train step >= `step` (the run is then mid-epoch 0)."""
    log = run_dir / METRICS_LOG
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be signalled"
        if any(record["step"] >= step for record in read_records(log, "train")):  # a line being written is skipped
            return
        time.sleep(0.05)
    raise AssertionError(f"no train step {step} logged in {log} within {timeout} s")


def _pid(root: Path, rank: int) -> int:
    return int((root / f"pid-rank{rank}").read_text())


def _checkpoint_states(run_dir: Path) -> list[dict]:
    from mmimdb_dist.run.checkpoints import complete_checkpoints

    return [
        json.loads((c / "trainer_state.json").read_text()) | {"name": c.name}
        for c in complete_checkpoints(run_dir / "checkpoints")
    ]


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def _assert_same_final_metrics(resumed: dict, uninterrupted: dict) -> None:
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    assert resumed["last_step"] == uninterrupted["last_step"]
    for split in ("dev", "test"):
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            for key in METRIC_KEYS:
                assert resumed[split][protocol][key] == pytest.approx(uninterrupted[split][protocol][key], abs=1e-6), (
                    split,
                    protocol,
                    key,
                )
        assert resumed[split]["thresholds"] == uninterrupted[split]["thresholds"]


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_a_stop_signal_checkpoints_at_the_step_boundary_exits_75_and_resume_matches_an_uninterrupted_run(
    shards, tmp_path, stop
):
    """SIGTERM (Slurm, a scheduler) and SIGINT (Ctrl-C) both finish the step and checkpoint."""
    from mmimdb_dist.train.signals import EXIT_CHECKPOINTED

    # Only epoch-end checkpoints are scheduled: the mid-epoch one can only come from the signal.
    reference = write_config(tmp_path / "reference.yaml", tiny_config(shards, tmp_path / "runs", "reference", epochs=1))
    run_train(reference)
    config = write_config(tmp_path / "stopped.yaml", tiny_config(shards, tmp_path / "runs", "stopped", epochs=1))
    run_dir = tmp_path / "runs" / "stopped"

    process = subprocess.Popen(
        train_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path
    )
    try:
        _wait_for_step(process, run_dir, 5)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == EXIT_CHECKPOINTED == 75, stderr[-3000:]
    assert not (run_dir / "final_metrics.json").exists()
    [state] = _checkpoint_states(run_dir)
    assert state["epoch"] == 0
    assert 5 <= state["step"] == state["batch_in_epoch"] < 360 // 16
    assert state["best_checkpoint"] is None  # no evaluation yet: the stop did not fake one
    assert f"stopped by {stop.name}" in stderr
    assert f"step {state['step']}" in stderr
    assert state["name"] in stderr
    assert "--resume auto" in stderr

    result = run_train(config, "--resume", "auto")
    assert "stopped by" not in result.stderr
    _assert_same_final_metrics(_final(run_dir), _final(tmp_path / "runs" / "reference"))
    train_steps = [record["step"] for record in read_records(run_dir / METRICS_LOG, "train")]
    assert train_steps == sorted(set(train_steps))


@pytest.mark.parametrize("stop", [signal.SIGUSR2, signal.SIGINT], ids=["SIGUSR2", "ctrl-c"])
def test_a_second_stop_signal_kills_at_once(shards, tmp_path, stop):
    """The first signal asks for a checkpoint; a second one is the default: terminate now
    (a second Ctrl-C does not wait for the step to end)."""
    from mmimdb_dist.train.signals import StopRequests

    code = (
        "import os, signal, time\n"
        "from mmimdb_dist.train.signals import StopRequests\n"
        "with StopRequests() as stops:\n"
        f"    os.kill(os.getpid(), signal.{stop.name})\n"
        "    print(stops.received.name, flush=True)\n"
        f"    os.kill(os.getpid(), signal.{stop.name})\n"
        "    time.sleep(30)\n"
        "print('not reached', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env())
    assert result.returncode == -stop, result
    assert result.stdout == f"{stop.name}\n", result
    # Leaving the block restores what was there before.
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests():
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


# --------------------------------------------------------------------------- two processes


def test_sigusr2_to_rank_0_only_stops_both_ranks_at_the_same_step_with_a_checkpoint(shards, tmp_path):
    config = write_config(tmp_path / "ddp.yaml", tiny_config(shards, tmp_path / "runs", "ddp", epochs=EPOCHS))
    run_dir = tmp_path / "runs" / "ddp"
    process = _launch(tmp_path, config)
    try:
        _wait_for_step(process, run_dir, 5)
        os.kill(_pid(tmp_path, 0), signal.SIGUSR2)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Both ranks exit 75; the launcher reports them and fails (it knows no "retry" status).
    assert process.returncode != 0, output[-3000:]
    assert output.count("exitcode  : 75") == 2, output[-3000:]
    [state] = _checkpoint_states(run_dir)
    assert state["epoch"] == 0
    assert 5 <= state["step"] == state["batch_in_epoch"] < 360 // 32
    assert f"stopped by SIGUSR2 at epoch 0 step {state['step']}" in output
    # Every rank took part in the checkpoint: each one's RNG state is in it.
    saved = {p.name for p in (run_dir / "checkpoints" / state["name"]).iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= saved, saved


def test_a_rank_killed_mid_training_fails_the_launch_within_the_dist_timeout(shards, tmp_path):
    config = write_config(
        tmp_path / "dying.yaml", tiny_config(shards, tmp_path / "runs", "dying", epochs=EPOCHS, dist_timeout_s=20)
    )
    run_dir = tmp_path / "runs" / "dying"
    process = _launch(tmp_path, config)
    try:
        _wait_for_step(process, run_dir, 5)
        os.kill(_pid(tmp_path, 1), signal.SIGKILL)
        # Far below the 30-minute default of torch.distributed: the launch must not hang.
        output, _ = process.communicate(timeout=150)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "SIGKILL" in output, output[-3000:]
    assert "rank      : 1" in output, output[-3000:]
    assert not (run_dir / "final_metrics.json").exists()


def test_a_rank_that_hangs_fails_the_others_after_the_dist_timeout(shards, tmp_path):
    """SIGSTOP freezes rank 1 mid-training (a stuck NFS read, a deadlocked data worker): rank 0
    waits in its next collective for train.dist_timeout_s, then fails, and the launch ends."""
    config = write_config(
        tmp_path / "hanging.yaml", tiny_config(shards, tmp_path / "runs", "hanging", epochs=EPOCHS, dist_timeout_s=15)
    )
    run_dir = tmp_path / "runs" / "hanging"
    process = _launch(tmp_path, config)
    stopped = None
    try:
        _wait_for_step(process, run_dir, 5)
        stopped = _pid(tmp_path, 1)
        os.kill(stopped, signal.SIGSTOP)
        output, _ = process.communicate(timeout=150)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
    assert process.returncode != 0
    # The first failure is rank 0's, by gloo's own timeout ("Application timeout caused pair
    # closure", or "Timed out waiting ..." depending on where rank 0 was waiting), not a kill
    # from outside; the launcher then takes the frozen rank down.
    assert "[rank0]" in output, output[-3000:]
    assert re.search(r"time(d )?out", output, re.IGNORECASE), output[-3000:]
    root_cause = output.split("Root Cause")[-1]
    assert "rank      : 0" in root_cause, output[-3000:]
    assert "exitcode  : 1" in root_cause, output[-3000:]
    assert not (run_dir / "final_metrics.json").exists()


# --------------------------------------------------------------------------- non-finite loss


def test_a_non_finite_loss_stops_before_the_optimizer_step_naming_the_last_good_checkpoint(shards, tmp_path):
    import re

    import torch

    from mmimdb_dist.run.export import load_for_inference

    # lr 1e30: the first step is finite but throws the weights so far that the next loss is not.
    config = write_config(
        tmp_path / "nan.yaml",
        tiny_config(shards, tmp_path / "runs", "nan", epochs=1, lr=1e30, warmup_steps=0, checkpoint_every_steps=1),
    )
    run_dir = tmp_path / "runs" / "nan"
    result = run_train(config, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = [text for text in result.stderr.splitlines() if "mmimdb-dist train: error:" in text]
    match = re.search(
        r"error: loss (nan|inf|-inf) at batch (\d+) \(epoch 0, before optimizer step (\d+)\); "
        r"no step was taken with it\. Last complete checkpoint: (\S+)\.",
        line,
    )
    assert match, line
    batch, step, last = int(match[2]), int(match[3]), Path(match[4])
    assert batch == step >= 2  # one batch per step: the failing batch's step was never taken
    assert "train.lr" in line
    assert "--resume" in line
    assert last.parent == run_dir / "checkpoints"
    assert last.is_dir()
    assert json.loads((last / "trainer_state.json").read_text())["step"] == step - 1
    model, _, _ = load_for_inference(last)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())
    assert not (run_dir / "final_metrics.json").exists()
