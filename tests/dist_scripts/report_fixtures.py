"""One tiny trained run (and a TF-IDF baseline on the same shards) shared by the report tests.

The run is attention fusion with modality dropout, so a single training serves every
report feature: the attention figure, predictions with a missing plot or poster, and a
comparison against the baseline. It is trained once per pytest session (cached under
the session's base temp folder, like the shard set) by a real `mmimdb-dist train` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from dist_scripts.train_fixtures import env, run_train, tiny_config, train_shards, write_config

RUN_NAME = "attention_run"


def attention_run(tmp_path_factory) -> Path:
    """runs/attention_run: 2 epochs of a tiny attention-fusion model on the 600-movie shards."""
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.getbasetemp() / "report-runs"
    run_dir = root / RUN_NAME
    if (run_dir / "final_metrics.json").is_file():
        return run_dir
    root.mkdir(exist_ok=True)
    config = tiny_config(shards, root, RUN_NAME, epochs=2)
    config["model"]["name"] = "attention_fusion"
    config["model"]["fusion"]["heads"] = 2
    config["model"]["modality_dropout"] = 0.3
    run_train(write_config(root / f"{RUN_NAME}.yaml", config))
    return run_dir


def baseline_run(tmp_path_factory) -> Path:
    """The TF-IDF baseline on the same shards, through `mmimdb-dist baseline`."""
    shards = train_shards(tmp_path_factory)
    out = tmp_path_factory.getbasetemp() / "report-runs" / "tfidf_baseline"
    if (out / "metrics.json").is_file():
        return out
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "--log-level",
            "WARNING",
            "baseline",
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "baseline.min_df=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def raw_folder(shards: Path) -> Path:
    """The raw MM-IMDb folder the shard set was made from (its config.yaml says where)."""
    config = yaml.safe_load((shards / "config.yaml").read_text(encoding="utf-8"))
    return Path(config["data"]["raw_dir"])


def best_checkpoint(run_dir: Path) -> Path:
    final = json.loads((run_dir / "final_metrics.json").read_text(encoding="utf-8"))
    return run_dir / "checkpoints" / final["best_checkpoint"]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`mmimdb-dist ARGS` as a real process with one math thread."""
    return subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
    )
