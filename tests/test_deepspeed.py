"""The trainer under DeepSpeed ZeRO: `accelerate launch --use_deepspeed`, 2 CPU processes over gloo.

The launch configs are the project's own (launch/accelerate/zero{2,3}_cpu.yaml pointing at
launch/deepspeed/zero{2,3}.json), run from the repository root as documented. A ZeRO-2 run
trains for two epochs and must learn; a second launch with `--resume auto` must load the
DeepSpeed checkpoint (weights, sharded optimizer state, scheduler) and continue to the end of
a longer run. ZeRO-3 trains one short run in fp32 and must export consolidated weights.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, evaluate_checkpoint, tiny_config, train_shards, write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(stage: int, config: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed",
               "--config_file", f"launch/accelerate/zero{stage}_cpu.yaml", "--num_processes", "2",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
               "-m", "mmimdb_dist.cli", "--log-level", "WARNING", "train", "--config", str(config), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return train_shards(tmp_path_factory)


def test_zero2_trains_checkpoints_and_resumes(shards, tmp_path):
    run_dir = tmp_path / "runs" / "zero2"
    # warmup then cosine: the logged learning rates show the scheduler reaches the ZeRO optimizer
    base = tiny_config(shards, tmp_path / "runs", "zero2", epochs=2, log_every=1, grad_accum_steps=2,
                       max_grad_norm=0.5)
    launch(2, write_config(tmp_path / "zero2.yaml", base))

    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["world_size"] == 2 and final["mixed_precision"] == "no"
    train = records(run_dir, "train")
    losses = [r["loss"] for r in train]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    lrs = [r["lr"]["head"] for r in train]
    assert lrs[0] < lrs[2] and lrs[-1] < max(lrs), lrs  # warmup, then decay
    # DeepSpeed clips and reports the norm of the step it took
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in train)
    # accumulation groups of 2 batches: steps = ceil(batches / 2) per epoch
    evals = records(run_dir, "eval")
    assert len(evals) == 2 and evals[-1]["step"] == train[-1]["step"]
    assert train[-1]["batches_seen"] in (2 * train[-1]["step"], 2 * train[-1]["step"] - 2)

    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    assert sorted(p.name for p in (checkpoint / "pytorch_model").glob("*optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    # the inference export is the trained model: a plain 1-process evaluation reproduces dev
    dev = evaluate_checkpoint(checkpoint, "dev")
    from mmimdb_dist.metrics import compute_metrics

    assert compute_metrics(dev.labels, dev.probs)["f1_macro"] == pytest.approx(final["best_dev_f1_macro"], abs=1e-4)

    # a longer run resumes from the newest checkpoint instead of starting over
    newest_step = train[-1]["step"]
    longer = write_config(tmp_path / "zero2.yaml", {**base, "train": {**base["train"], "epochs": 3}})
    launch(2, longer, "--resume", "auto")
    train_after = records(run_dir, "train")
    assert train_after[:len(train)] == train  # history up to the checkpoint is kept as is
    resumed = train_after[len(train):]
    assert resumed and resumed[0]["step"] == newest_step + 1
    # the optimizer state came back: the first resumed loss continues the curve, no restart spike
    assert resumed[0]["loss"] < losses[0] * 0.9
    assert json.loads((run_dir / "final_metrics.json").read_text())["last_epoch"] == 2


def test_zero3_fp32_trains_and_exports_gathered_weights(shards, tmp_path):
    run_dir = tmp_path / "runs" / "zero3"
    launch(3, write_config(tmp_path / "zero3.yaml", tiny_config(shards, tmp_path / "runs", "zero3", epochs=1,
                                                                  log_every=2)))
    final = json.loads((run_dir / "final_metrics.json").read_text())
    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    # parameters are partitioned: each rank saved its own shard of them
    assert len(list((checkpoint / "pytorch_model").glob("zero_pp_rank_*_model_states.pt"))) == 2
    dev = evaluate_checkpoint(checkpoint, "dev")
    from mmimdb_dist.metrics import compute_metrics

    assert compute_metrics(dev.labels, dev.probs)["f1_macro"] == pytest.approx(final["best_dev_f1_macro"], abs=1e-4)
    losses = [r["loss"] for r in records(run_dir, "train")]
    assert losses[-1] < losses[0], losses
