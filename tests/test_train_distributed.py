"""The trainer under a real 2-process `accelerate launch` (DDP over gloo, CPU).

Each rank runs tests/dist_scripts/train_ranks.py, which trains the tiny early-fusion config
and records its weights' fingerprint and its share of dev. The dev metrics of the 2-process
run must equal a plain 1-process evaluation of the checkpoint it selected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dist_scripts.loader_fixtures import manifest_ids
from dist_scripts.ports import free_port
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, evaluate_checkpoint, tiny_config, train_shards, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "dist_scripts" / "train_ranks.py"
EPOCHS = 2


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(shards, run folder, per-rank reports) of one 2-process training run."""
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.mktemp("train-ddp")
    data = tiny_config(shards, root / "runs", "ddp", epochs=EPOCHS)
    # Modality dropout hides a plot or a poster in some samples: the missing embeddings then get
    # gradients in some batches and zeros in others, all without DDP's unused-parameter search.
    data["model"]["modality_dropout"] = 0.3
    config = write_config(root / "ddp.yaml", data)
    # --multi_gpu starts the processes; the Accelerator inside runs them on CPU over gloo.
    launcher = [
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
    result = subprocess.run(
        [*launcher, str(SCRIPT), str(config), str(root)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((root / f"rank{rank}.json").read_text()) for rank in range(2)]
    return shards, root / "runs" / "ddp", reports


def test_both_ranks_end_training_with_identical_parameters(launched):
    _, _, reports = launched
    assert [(r["rank"], r["world_size"], r["device"].split(":")[0]) for r in reports] == [(0, 2, "cpu"), (1, 2, "cpu")]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    # DDP ran without the per-step search for unused parameters (no built-in model leaves any)
    assert [r["find_unused_parameters"] for r in reports] == [False, False]
    assert reports[0]["best_checkpoint"] == reports[1]["best_checkpoint"]


def test_every_dev_sample_is_evaluated_once_across_ranks(launched):
    shards, run_dir, reports = launched
    rank0, rank1 = (set(r["dev_ids"]) for r in reports)
    assert len(rank0) == len(reports[0]["dev_ids"])
    assert len(rank1) == len(reports[1]["dev_ids"])
    assert not rank0 & rank1
    assert rank0 | rank1 == set(manifest_ids(shards, "dev"))
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["dev"]["threshold_0.5"]["num_samples"] == len(rank0 | rank1)
    assert final["test"]["threshold_0.5"]["num_samples"] == len(set(manifest_ids(shards, "test")))


def test_two_process_metrics_equal_a_one_process_evaluation_of_the_same_checkpoint(launched):
    from mmimdb_dist.metrics import evaluation_report, tune_thresholds

    shards, run_dir, _ = launched
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    # Per rank: floor(train / (2 ranks x 16)) batches per epoch; one evaluation per epoch.
    evals = read_records(run_dir / METRICS_LOG)
    train_count = len(manifest_ids(shards, "train"))
    assert [r["step"] for r in evals if r["type"] == "eval"] == [
        (train_count // 32) * epoch for epoch in range(1, EPOCHS + 1)
    ]

    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    dev, test = evaluate_checkpoint(checkpoint, "dev"), evaluate_checkpoint(checkpoint, "test")
    thresholds = tune_thresholds(dev.labels, dev.probs)
    single = {
        "dev": evaluation_report(dev.labels, dev.probs, thresholds),
        "test": evaluation_report(test.labels, test.probs, thresholds),
    }
    for split in ("dev", "test"):
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            for key in ("num_samples", "f1_macro", "f1_micro", "f1_samples", "hamming_loss"):
                assert final[split][protocol][key] == pytest.approx(single[split][protocol][key], abs=1e-9), (
                    split,
                    protocol,
                    key,
                )
            for key in ("mean_average_precision", "roc_auc_macro", "roc_auc_micro"):
                assert final[split][protocol][key] == pytest.approx(single[split][protocol][key], abs=1e-6)
