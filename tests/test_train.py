"""`mmimdb-dist train` on one process: learning, run folder, checkpoints, SIGKILL + exact resume,
early stopping with best-checkpoint testing, bf16, and the optimizer's parameter groups.

Training runs are real CLI processes on a 600-movie synthetic shard set with a tiny model;
single-process evaluations of saved checkpoints are made here, from their inference exports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from dist_scripts.train_fixtures import env, evaluate_checkpoint, run_train, tiny_config, train_command, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def _records(run_dir: Path, kind: str) -> list[dict]:
    return read_records(run_dir / METRICS_LOG, kind)


def _num_samples(shards: Path, split: str) -> int:
    from mmimdb_dist.data.manifest import load_manifest

    return load_manifest(shards).split(split).num_samples


def _batches_per_epoch(shards: Path) -> int:
    return _num_samples(shards, "train") // 16


def _split_labels(shards: Path, split: str) -> np.ndarray:
    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.data.plots import read_shard_split_texts

    return np.array(read_shard_split_texts(load_manifest(shards), split).labels)


# --------------------------------------------------------------------------- the reference run


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> tuple[Path, Path]:
    """fp32, 4 epochs, step checkpoints every 10 steps, 2 kept: (config file, run folder)."""
    root = tmp_path_factory.mktemp("train-reference")
    config = write_config(
        root / "reference.yaml",
        tiny_config(shards, root / "runs", "reference", checkpoint_every_steps=10, keep_checkpoints=2),
    )
    run_train(config)
    return config, root / "runs" / "reference"


def test_learns_well_above_trivial_baselines(reference, shards):
    from sklearn.metrics import average_precision_score, f1_score

    final = _final(reference[1])
    train, dev = _split_labels(shards, "train"), _split_labels(shards, "dev")
    # Constant predictors: the k most frequent train genres for every movie, best k on dev.
    order = np.argsort(-train.sum(0))
    top_k = []
    for k in range(1, 8):
        predicted = np.zeros_like(dev)
        predicted[:, order[:k]] = 1
        top_k.append(f1_score(dev, predicted, average="micro", zero_division=0))
    with_positives = dev.sum(0) > 0
    prior = np.tile(train.mean(0), (len(dev), 1))
    prior_map = average_precision_score(dev[:, with_positives], prior[:, with_positives], average="macro")

    report = final["dev"]["threshold_0.5"]
    assert report["num_samples"] == _num_samples(shards, "dev") == len(dev)
    assert report["f1_micro"] > max(top_k) + 0.05, (report["f1_micro"], max(top_k))
    assert report["mean_average_precision"] > 1.5 * prior_map, (report["mean_average_precision"], prior_map)
    assert final["test"]["threshold_0.5"]["num_samples"] == _num_samples(shards, "test")


def test_run_folder_holds_config_logs_tensorboard_and_bounded_checkpoints(reference, shards):
    from mmimdb_dist.run.checkpoints import TrainerState
    from mmimdb_dist.schema import load_config

    _config, run_dir = reference
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.train.checkpoint_every_steps == 10
    assert cfg.model.name == "early_fusion"
    assert (run_dir / "vocabulary.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    batches_per_epoch = _batches_per_epoch(shards)
    train_records = _records(run_dir, "train")
    assert train_records
    assert all(set(r["lr"]) == {"head", "head_no_decay"} for r in train_records)
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 for r in train_records)
    evals = _records(run_dir, "eval")
    assert [r["step"] for r in evals] == [batches_per_epoch * e for e in range(1, 5)]
    assert [r["epoch"] for r in evals] == [0, 1, 2, 3]

    final = _final(run_dir)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    # The 2 newest plus the best; no temp folder left behind.
    assert len(checkpoints) <= 3
    assert final["best_checkpoint"] in checkpoints
    assert not [name for name in checkpoints if name.startswith(".")]
    # The weights are on disk once: the inference export shares Accelerate's file (two names).
    for name in checkpoints:
        folder = run_dir / "checkpoints" / name
        assert (folder / "model.safetensors").stat().st_ino == (
            folder / "inference" / "model.safetensors"
        ).stat().st_ino
    newest = TrainerState.read(run_dir / "checkpoints" / checkpoints[-1] / "trainer_state.json")
    assert (newest.epoch, newest.batch_in_epoch, newest.step) == (3, batches_per_epoch, 4 * batches_per_epoch)
    # The best checkpoint is the one of best dev mAP (the default select_metric); ties keep the earlier.
    assert final["select_metric"] == "mean_average_precision"
    best_eval = max(evals, key=lambda r: (r["mean_average_precision"], -r["step"]))
    assert final["best_step"] == best_eval["step"]
    assert final["best_epoch"] == best_eval["epoch"]
    assert final["best_dev_metric"] == pytest.approx(best_eval["mean_average_precision"], abs=1e-12)
    assert [r["best"] for r in evals] == [
        r["mean_average_precision"] > max([e["mean_average_precision"] for e in evals[:i]], default=-1.0)
        for i, r in enumerate(evals)
    ]
    # Every evaluation also records F1 under thresholds tuned on dev (never below F1 at 0.5).
    assert all(r["f1_macro_tuned"] >= r["f1_macro"] - 1e-12 for r in evals)
    # Cost figures for `compare`: every train sample of 4 epochs, a positive time and rate.
    assert newest.samples_trained == 4 * batches_per_epoch * 16
    assert final["num_parameters"] >= final["trainable_parameters"] > 0
    assert final["train_seconds"] > 0
    assert final["train_samples_per_s"] == pytest.approx(newest.samples_trained / final["train_seconds"])


def test_best_checkpoint_reloads_for_inference_with_the_reported_dev_metrics(reference, shards):
    from mmimdb_dist.metrics import compute_metrics

    run_dir = reference[1]
    final = _final(run_dir)
    dev = evaluate_checkpoint(run_dir / "checkpoints" / final["best_checkpoint"], "dev")
    assert len(dev.ids) == len(set(dev.ids)) == _num_samples(shards, "dev")
    metrics = compute_metrics(dev.labels, dev.probs)
    assert metrics["f1_macro"] == pytest.approx(final["dev"]["threshold_0.5"]["f1_macro"], abs=1e-9)
    assert metrics["mean_average_precision"] == pytest.approx(
        final["dev"]["threshold_0.5"]["mean_average_precision"], abs=1e-6
    )


def test_sigkill_mid_epoch_then_resume_auto_ends_with_identical_metrics(reference, shards, tmp_path):
    from mmimdb_dist.run.checkpoints import TrainerState, complete_checkpoints

    config_data = json.loads(json.dumps(__import__("yaml").safe_load(reference[0].read_text())))
    config_data["name"] = "killed"
    config_data["output_dir"] = str(tmp_path / "runs")
    config = write_config(tmp_path / "killed.yaml", config_data)
    run_dir = tmp_path / "runs" / "killed"

    process = subprocess.Popen(
        train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=tmp_path
    )
    killed_at = None
    batches_per_epoch = _batches_per_epoch(shards)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            for checkpoint in complete_checkpoints(run_dir / "checkpoints"):
                state = TrainerState.read(checkpoint / "trainer_state.json")
                if 0 < state.batch_in_epoch < batches_per_epoch and state.step >= 30:
                    killed_at = state
                    break
            if killed_at:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert killed_at is not None, "no mid-epoch step checkpoint appeared before the run ended"
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "final_metrics.json").exists()

    run_train(config, "--resume", "auto")
    resumed, uninterrupted = _final(run_dir), _final(reference[1])
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    for split in ("dev", "test"):
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            a, b = resumed[split][protocol], uninterrupted[split][protocol]
            for key in ("f1_macro", "f1_micro", "mean_average_precision", "roc_auc_macro", "hamming_loss"):
                assert a[key] == pytest.approx(b[key], abs=1e-6), (split, protocol, key)
        assert resumed[split]["thresholds"] == uninterrupted[split]["thresholds"]
    # The log was rewound to the checkpoint, so each step is logged once.
    steps = [r["step"] for r in _records(run_dir, "train")]
    assert steps == sorted(set(steps))


def test_early_stopping_stops_and_tests_the_best_not_the_last_weights(shards, tmp_path):
    from mmimdb_dist.metrics import compute_metrics

    # Evaluate every 4 steps with patience 1, selecting on dev macro-F1 at 0.5 (train.select_metric):
    # training stops at the first one that does not beat the best so far, long before the 20
    # configured epochs.
    config = write_config(
        tmp_path / "early.yaml",
        tiny_config(
            shards,
            tmp_path / "runs",
            "early",
            epochs=20,
            eval_every=4,
            early_stopping_patience=1,
            keep_checkpoints=1,
            select_metric="f1_macro",
        ),
    )
    run_train(config)
    run_dir = tmp_path / "runs" / "early"
    final = _final(run_dir)
    evals = _records(run_dir, "eval")
    assert final["stopped_early"] is True
    assert final["last_step"] == evals[-1]["step"] < 20 * _batches_per_epoch(shards)
    assert final["select_metric"] == "f1_macro"
    assert evals[-1]["f1_macro"] <= final["best_dev_metric"]
    assert not evals[-1]["best"]
    assert final["best_step"] < final["last_step"]
    assert final["dev"]["threshold_0.5"]["f1_macro"] == pytest.approx(final["best_dev_metric"], abs=1e-12)

    checkpoints = {p.name: p for p in (run_dir / "checkpoints").iterdir()}
    last = max(checkpoints)
    assert final["best_checkpoint"] in checkpoints
    assert last != final["best_checkpoint"]
    best_dev = compute_metrics(*_labels_probs(evaluate_checkpoint(checkpoints[final["best_checkpoint"]], "dev")))
    last_dev = compute_metrics(*_labels_probs(evaluate_checkpoint(checkpoints[last], "dev")))
    reported = final["dev"]["threshold_0.5"]["mean_average_precision"]
    assert best_dev["mean_average_precision"] == pytest.approx(reported, abs=1e-6)
    assert last_dev["mean_average_precision"] != pytest.approx(reported, abs=1e-6)


def _labels_probs(predictions) -> tuple[np.ndarray, np.ndarray]:
    return predictions.labels, predictions.probs


def test_bf16_late_fusion_with_accumulation_trains_and_reports(shards, tmp_path):
    data = tiny_config(
        shards,
        tmp_path / "runs",
        "bf16",
        epochs=1,
        mixed_precision="bf16",
        grad_accum_steps=3,
        schedule="linear",
        warmup_ratio=0.2,
    )
    data["model"]["name"] = "late_fusion"
    run_dir = tmp_path / "runs" / "bf16"
    # What an earlier start that died before its first checkpoint left: forgotten, not appended to.
    (run_dir / "tensorboard").mkdir(parents=True)
    (run_dir / "tensorboard" / "events.out.tfevents.stale").write_bytes(b"stale")
    (run_dir / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 999, "batches_seen": 999}) + "\n")
    run_train(write_config(tmp_path / "bf16.yaml", data))
    assert 999 not in [r["step"] for r in _records(run_dir, "train")]
    assert not (run_dir / "tensorboard" / "events.out.tfevents.stale").exists()
    final = _final(run_dir)
    assert final["mixed_precision"] == "bf16"
    # Batches in groups of 3, the last group of the epoch possibly shorter.
    assert final["last_step"] == -(-_batches_per_epoch(shards) // 3)
    assert all(np.isfinite(r["loss"]) for r in _records(run_dir, "train"))
    assert final["test"]["threshold_0.5"]["num_samples"] == _num_samples(shards, "test")
    lrs = [r["lr"]["head"] for r in _records(run_dir, "train")]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # linear decay reaches 0 at the last step


def test_user_errors_are_one_line_and_exit_2(shards, tmp_path):
    config = write_config(tmp_path / "bad.yaml", tiny_config(shards, tmp_path / "runs", "bad", eval_every="often"))
    result = run_train(config, check=False)
    assert result.returncode == 2
    assert "train.eval_every" in result.stderr
    assert "'often'" in result.stderr

    config = write_config(tmp_path / "ok.yaml", tiny_config(shards, tmp_path / "runs", "ok"))
    result = run_train(config, "--resume", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2
    assert "nowhere" in result.stderr
    assert "trainer_state.json" in result.stderr


# --------------------------------------------------------------------------- optimizer pieces


def test_parameter_groups_exempt_norms_and_biases_and_slow_down_pretrained_encoders():
    from mmimdb_dist.models.registry import build_model
    from mmimdb_dist.schema import ModelConfig, TrainConfig
    from mmimdb_dist.train.optim import param_groups

    cfg = ModelConfig(name="early_fusion")
    cfg.text.embed_dim, cfg.text.hidden, cfg.text.attention_dim = 8, 8, 8
    cfg.image.kind, cfg.image.cnn_channels = "cnn", [4, 4, 4, 4]
    cfg.fusion.hidden = 8
    model = build_model(cfg, num_labels=23, vocab_size=50, pad_id=0)
    train = TrainConfig(lr=1e-3, encoder_lr=1e-5, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(model, cfg, train)}
    assert set(groups) == {"head", "head_no_decay"}  # nothing pretrained here
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == 0.05
    no_decay = set(groups["head_no_decay"]["param_names"])
    assert "text_proj.1.weight" in no_decay
    assert "text_proj.0.bias" in no_decay
    assert "text_proj.0.weight" in groups["head"]["param_names"]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == sum(1 for p in model.parameters() if p.requires_grad)

    # An image encoder configured as pretrained gets encoder_lr.
    cfg.image.kind, cfg.image.pretrained = "resnet18", True
    model.image_encoder.requires_grad_(True)
    groups = {g["name"]: g for g in param_groups(model, cfg, train)}
    assert groups["encoder"]["lr"] == 1e-5
    assert groups["head"]["lr"] == 1e-3
    assert all(name.startswith("image_encoder.") for name in groups["encoder"]["param_names"])


def test_schedules_warm_up_then_decay():
    from mmimdb_dist.train.optim import lr_multiplier

    assert [lr_multiplier(s, 10, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, 10, 4, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(7, 10, 4, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(10, 10, 4, "cosine") == pytest.approx(0.0)
    assert lr_multiplier(7, 10, 4, "linear") == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 0, "constant") == 1.0


def test_accelerate_launch_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig

    folder = Path(__file__).parents[1] / "launch" / "accelerate"
    parsed = {path.stem: ClusterConfig.from_yaml_file(str(path)) for path in folder.glob("*.yaml")}
    assert {"single_gpu", "multi_gpu_bf16", "multi_node"} <= set(parsed)
    assert parsed["single_gpu"].num_processes == 1
    assert parsed["multi_gpu_bf16"].mixed_precision == "bf16"
    assert parsed["multi_node"].num_machines == 2
