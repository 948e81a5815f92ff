"""Modern encoders through the real commands: train, SIGKILL + exact resume, predict from the
checkpoint alone (the pretrained folder gone), and cache-features equal to the encoders.

Runs are tiny: a CLIP-style dual encoder (2 layers, width 32, 16-position text windows) and
a DINOv2-style backbone beside the BiLSTM, on the 600-movie synthetic shards at 32 px.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_scripts.report_fixtures import cli, raw_folder
from dist_scripts.tiny_encoders import IMAGE_SIZE, STATS, TEXT_POSITIONS, save_tiny
from dist_scripts.train_fixtures import env, run_train, tiny_config, train_command, train_shards, write_config

from mmimdb_dist.schema import load_config

pytestmark = pytest.mark.slow

METRICS = ("f1_macro", "f1_micro", "mean_average_precision", "roc_auc_macro")


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def dual_run_config(shards: Path, root: Path, name: str, model_folder: Path) -> dict:
    config = tiny_config(
        shards, root / "runs", name, epochs=2, checkpoint_every_steps=5, keep_checkpoints=2, lr=0.003, encoder_lr=0.001
    )
    config["loader"].update(image_size=None, max_text_length=4 * TEXT_POSITIONS)
    config["model"].update(
        text={"kind": "clip", "name": str(model_folder)},
        image={"kind": "clip", "name": str(model_folder), "patch_grid": 2},
    )
    return config


@pytest.fixture(scope="module")
def dual(tmp_path_factory) -> dict:
    """A finished 2-epoch dual-encoder run, its config, and a copy of the model folder it read."""
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.mktemp("dual-e2e")
    folder = save_tiny("clip", root / "clip-model")
    config = write_config(root / "dual.yaml", dual_run_config(shards, root, "dual", folder))
    run_train(config)
    return {"root": root, "shards": shards, "folder": folder, "config": config, "run_dir": root / "runs" / "dual"}


def test_dual_run_records_the_backbones_preprocessing_and_learns(dual) -> None:
    saved = load_config(dual["run_dir"] / "config.yaml")
    assert saved.loader.image_size == IMAGE_SIZE  # null resolved to the image processor's size
    assert saved.model.image.pixel_mean == pytest.approx(STATS["clip"][0])
    final = _final(dual["run_dir"])
    # Both towers were fine-tuned at encoder_lr: every parameter trains.
    assert final["trainable_parameters"] == final["num_parameters"]
    test = final["test"]["threshold_0.5"]
    assert all(np.isfinite(test[key]) for key in METRICS)


def test_sigkill_then_resume_gives_identical_metrics(dual, tmp_path) -> None:
    from mmimdb_dist.run.checkpoints import TrainerState, complete_checkpoints

    config = write_config(tmp_path / "killed.yaml", dual_run_config(dual["shards"], tmp_path, "killed", dual["folder"]))
    run_dir = tmp_path / "runs" / "killed"
    process = subprocess.Popen(
        train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=tmp_path
    )
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and killed_at is None:
            for checkpoint in complete_checkpoints(run_dir / "checkpoints"):
                state = TrainerState.read(checkpoint / "trainer_state.json")
                if state.batch_in_epoch > 0 and state.step >= 5:
                    killed_at = state
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert killed_at is not None
    assert process.returncode == -signal.SIGKILL
    run_train(config, "--resume", "auto")
    resumed, uninterrupted = _final(run_dir), _final(dual["run_dir"])
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    for split in ("dev", "test"):
        for key in METRICS:
            assert resumed[split]["threshold_0.5"][key] == pytest.approx(
                uninterrupted[split]["threshold_0.5"][key], abs=1e-6
            ), (split, key)


def test_predict_needs_only_the_checkpoint(dual, tmp_path) -> None:
    """The pretrained folder moved away: predict rebuilds both towers from the export and
    reproduces the trainer's test metrics on the raw movies."""
    from mmimdb_dist.data.sources.mmimdb.genres import map_genres, multi_hot
    from mmimdb_dist.metrics import compute_metrics

    moved = dual["folder"].with_name("moved-away")
    shutil.move(dual["folder"], moved)
    try:
        raw = raw_folder(dual["shards"])
        out = tmp_path / "test.jsonl"
        result = cli(
            "predict", "--run", str(dual["run_dir"]), "--input", str(raw), "--split", "test", "--output", str(out)
        )
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        shutil.move(moved, dual["folder"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    probs = np.array([[r["probabilities"][g] for g in r["probabilities"]] for r in records])
    labels = []
    for record in records:
        genres = json.loads((raw / "dataset" / f"{record['id']}.json").read_text())["genres"]
        labels.append(multi_hot(map_genres(genres)[0]))
    report = compute_metrics(np.array(labels), probs)
    expected = _final(dual["run_dir"])["test"]["threshold_0.5"]
    for key in ("f1_macro", "f1_micro", "mean_average_precision"):
        assert report[key] == pytest.approx(expected[key], abs=1e-4), key


def test_cache_features_equal_the_dual_encoders_output(dual, tmp_path) -> None:
    import webdataset as wds

    from mmimdb_dist.data.batches import collate_samples
    from mmimdb_dist.data.codecs import IMAGE_MEMBER, TEXT_MEMBER, ShardCodec
    from mmimdb_dist.data.device import to_device
    from mmimdb_dist.data.images import decode_poster
    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.data.tokens import build_token_encoder, token_encoder_size
    from mmimdb_dist.models.registry import build_model

    out = tmp_path / "features"
    result = cli("cache-features", "--config", str(dual["config"]), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = load_config(out / "config.yaml")
    assert cfg.loader.image_size == IMAGE_SIZE
    tokens = build_token_encoder(cfg.model.text)
    torch.manual_seed(0)
    model = build_model(cfg.model, num_labels=23, vocab_size=token_encoder_size(tokens), pad_id=tokens.pad_id).eval()
    source = load_manifest(cfg.loader.shards_dir)
    shard = source.split("dev").shards[0].name
    raws = list(wds.tariterators.tarfile_samples([{"url": str(source.directory / shard)}]))[:4]
    samples = [ShardCodec(tokens, cfg.loader.max_text_length).parse(raw) for raw in raws]
    batch = to_device(
        collate_samples(
            samples, [decode_poster(s.jpeg, IMAGE_SIZE, augment=False) for s in samples], 0, pad_id=tokens.pad_id
        ),
        "cpu",
    )
    with torch.no_grad():
        text = model.text_encoder(batch["input_ids"], batch["attention_mask"])
        image = model.image_encoder(batch["pixel_values"])
    rows = {raw["__key__"]: raw for raw in wds.tariterators.tarfile_samples([{"url": str(out / shard)}])}
    for i, sample in enumerate(samples):
        text_rows = np.load(io.BytesIO(rows[sample.id][TEXT_MEMBER]))
        image_rows = np.load(io.BytesIO(rows[sample.id][IMAGE_MEMBER]))
        windows = int(text.mask[i].sum())
        assert text_rows.shape == (1 + windows, 24)  # pooled + one row per real window, joint space
        np.testing.assert_allclose(text_rows[0], text.pooled[i].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image_rows[0], image.pooled[i].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image_rows[1:], image.patches[i].numpy(), rtol=1e-5, atol=1e-6)
    # A head trains on them.
    run_train(
        dual["config"],
        "--set",
        f"loader.features_dir={out}",
        "--set",
        f"output_dir={tmp_path / 'runs'}",
        "--set",
        "model.name=attention_fusion",
        "--set",
        "model.fusion.heads=2",
    )
    assert _final(tmp_path / "runs" / "dual")["trainable_parameters"] < 40_000


def test_hf_backbone_with_the_bilstm_in_attention_fusion(dual, tmp_path) -> None:
    folder = save_tiny("dinov2", tmp_path / "dinov2")
    config = tiny_config(dual["shards"], tmp_path / "runs", "dino", epochs=1)
    config["loader"]["image_size"] = None
    config["model"].update(
        name="attention_fusion", image={"kind": "hf", "name": str(folder), "patch_grid": 2, "freeze_layers": 1}
    )
    config["model"]["fusion"]["heads"] = 2
    run_train(write_config(tmp_path / "dino.yaml", config))
    final = _final(tmp_path / "runs" / "dino")
    assert 0 < final["trainable_parameters"] < final["num_parameters"]  # embeddings + block 1 frozen
    result = cli("evaluate", "--run", str(tmp_path / "runs" / "dino"), "--split", "test")
    assert result.returncode == 0, result.stderr[-3000:]
