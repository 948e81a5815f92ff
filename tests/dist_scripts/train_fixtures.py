"""Shared pieces of the trainer tests: a synthetic shard set, tiny run configs, a CLI runner.

Runs are real `mmimdb-dist train` processes with one math thread each: the CI machine has
two cores, and several processes each spinning up a thread per core slow down manyfold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from dist_scripts.loader_fixtures import build_shards, data_root

NUM_MOVIES = 600  # about 360 / 60 / 180 train / dev / test
SAMPLES_PER_SHARD = 25
RUN_TIMEOUT_S = 300


def train_shards(tmp_path_factory) -> Path:
    return build_shards(data_root(tmp_path_factory), NUM_MOVIES, SAMPLES_PER_SHARD, name="train-shards")


def tiny_config(shards: Path, output_dir: Path, name: str, **train: Any) -> dict[str, Any]:
    """A small early-fusion model (BiLSTM + 4-block CNN at 32 px) that learns in seconds."""
    return {
        "name": name,
        "seed": 3,
        "output_dir": str(output_dir),
        "loader": {
            "shards_dir": str(shards),
            "batch_size": 16,
            "eval_batch_size": 32,
            "num_workers": 0,
            "image_size": 32,
            "max_text_length": 256,
            "shuffle_buffer": 64,
            "bucket_pool_batches": 2,
        },
        "model": {
            "name": "early_fusion",
            "text": {
                "kind": "bilstm",
                "embed_dim": 32,
                "hidden": 32,
                "attention_dim": 16,
                "vocab_min_freq": 1,
                "dropout": 0.1,
            },
            "image": {"kind": "cnn", "cnn_channels": [8, 8, 16, 16], "patch_grid": 2},
            "fusion": {"hidden": 32, "dropout": 0.1},
        },
        # no end-of-run figures (seconds of matplotlib per run); tests/test_tracking.py turns them on
        "train": {"epochs": 4, "lr": 0.01, "warmup_steps": 3, "log_every": 5, "tracker_figures": False, **train},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def train_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", "train", "--config", str(config), *extra]


def run_train(config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        train_command(config, *extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=config.parent,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def evaluate_checkpoint(checkpoint: Path, split: str):
    """A plain single-process fp32 evaluation of a checkpoint's inference export, through the
    same `evaluate_split` as the trainer and `mmimdb-dist evaluate`."""
    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.run.export import load_for_inference
    from mmimdb_dist.run.predictions import evaluate_split

    model, cfg, encoder = load_for_inference(checkpoint)
    return evaluate_split(model, cfg, load_manifest(cfg.loader.shards_dir), split, encoder)
