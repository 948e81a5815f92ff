"""`mmimdb-dist cache-features` and training a fusion head on its output, as real CLI runs."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_scripts.train_fixtures import env, run_train, tiny_config, train_shards, write_config

from mmimdb_dist.data.features import FeatureSpec, load_feature_set
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.errors import ConfigError
from mmimdb_dist.schema import load_config

PATCHES = 4  # tiny_config's CNN: patch_grid 2


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, Path]:
    """(features folder, the config that made it)."""
    shards = train_shards(tmp_path_factory)
    folder = tmp_path_factory.mktemp("features")
    config = write_config(folder / "tiny.yaml", tiny_config(shards, folder / "runs", "head", epochs=3))
    out = folder / "features"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "--log-level",
            "WARNING",
            "cache-features",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--set loader.features_dir={out}" in result.stdout
    return out, config


def _member_ids(tar_path: Path, suffix: str) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return [m.name[: -len(suffix)] for m in tar.getmembers() if m.name.endswith(suffix)]


def test_features_mirror_the_shards(cached) -> None:
    out, config = cached
    features = load_feature_set(out)
    source = load_manifest(load_config(config).loader.shards_dir)
    assert features.spec == FeatureSpec(text_dim=64, image_dim=16, sequences=True, dtype="float32")
    for split, info in source.splits.items():
        cached_split = features.manifest.split(split)
        assert cached_split.num_samples == info.num_samples
        assert cached_split.label_counts == info.label_counts
        assert [s.name for s in cached_split.shards] == [s.name for s in info.shards]
        for shard in info.shards:  # same movies, same order, one sample each
            assert _member_ids(out / shard.name, ".text.npy") == _member_ids(source.directory / shard.name, ".txt")


def test_features_equal_the_encoders_output(cached) -> None:
    """Rows of a cached dev shard equal the saved encoders run on the same movies."""
    import webdataset as wds
    from safetensors.torch import load_file

    from mmimdb_dist.data.batches import collate_samples
    from mmimdb_dist.data.codecs import IMAGE_MEMBER, TEXT_MEMBER, ShardCodec
    from mmimdb_dist.data.device import to_device
    from mmimdb_dist.data.images import decode_poster
    from mmimdb_dist.data.vocab import Vocabulary
    from mmimdb_dist.models.registry import build_model

    out, _config = cached
    cfg = load_config(out / "config.yaml")
    vocabulary = Vocabulary.load(out / "vocabulary.json")
    model = build_model(cfg.model, num_labels=23, vocab_size=len(vocabulary), pad_id=vocabulary.pad_id).eval()
    missing, unexpected = model.load_state_dict(load_file(str(out / "encoders.safetensors")), strict=False)
    assert not unexpected
    assert all(not k.startswith(("text_encoder.", "image_encoder.")) for k in missing)

    source = load_manifest(cfg.loader.shards_dir)
    shard = source.split("dev").shards[0].name
    raws = list(wds.tariterators.tarfile_samples([{"url": str(source.directory / shard)}]))[:5]
    samples = [ShardCodec(vocabulary, cfg.loader.max_text_length).parse(raw) for raw in raws]
    pixels = [decode_poster(s.jpeg, cfg.loader.image_size, augment=False) for s in samples]
    batch = to_device(collate_samples(samples, pixels, 0, pad_id=vocabulary.pad_id), "cpu")
    with torch.no_grad():
        text = model.text_encoder(batch["input_ids"], batch["attention_mask"])
        image = model.image_encoder(batch["pixel_values"])
    cached_rows = {raw["__key__"]: raw for raw in wds.tariterators.tarfile_samples([{"url": str(out / shard)}])}
    for row, sample in enumerate(samples):
        raw = cached_rows[sample.id]
        text_rows = np.load(__import__("io").BytesIO(raw[TEXT_MEMBER]))
        image_rows = np.load(__import__("io").BytesIO(raw[IMAGE_MEMBER]))
        n_tokens = len(sample.input_ids)
        assert text_rows.shape == (1 + n_tokens, 64)
        assert image_rows.shape == (1 + PATCHES, 16)
        np.testing.assert_allclose(text_rows[0], text.pooled[row].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(text_rows[1:], text.tokens[row, :n_tokens].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image_rows[0], image.pooled[row].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image_rows[1:], image.patches[row].numpy(), rtol=1e-5, atol=1e-6)
        assert json.loads(raw["json"])["labels"] == sample.labels


def test_fusion_head_learns_on_cached_features(cached, tmp_path: Path) -> None:
    """A GMU head on the cached features beats the constant predictor on held-out test movies."""
    out, config = cached
    run_train(
        config,
        "--set",
        f"loader.features_dir={out}",
        "--set",
        f"output_dir={tmp_path}",
        "--set",
        "model.name=gmu",
        "--set",
        "loss.name=weighted_bce",
        "--set",
        "loader.batch_size=8",
        "--set",
        "train.lr=0.01",
    )
    final = json.loads((tmp_path / "head" / "final_metrics.json").read_text())
    test = final["test"]["threshold_0.5"]
    labels = np.array([json.loads(raw)["labels"] for raw in _json_members(out, "test")])
    present = labels.sum(0) > 0
    constant_map = float(labels.mean(0)[present].mean())  # average precision of a constant score
    assert test["mean_average_precision"] > constant_map + 0.03, (test["mean_average_precision"], constant_map)
    dev_labels = np.array([json.loads(raw)["labels"] for raw in _json_members(out, "dev")])
    dev_constant_map = float(dev_labels.mean(0)[dev_labels.sum(0) > 0].mean())
    assert final["dev"]["threshold_0.5"]["mean_average_precision"] > dev_constant_map + 0.03
    assert final["trainable_parameters"] == final["num_parameters"] < 40_000  # the head alone
    # `evaluate` reads the same features again and reproduces the trainer's test metrics.
    from mmimdb_dist.report.evaluation import evaluate_checkpoint

    evaluation = evaluate_checkpoint(tmp_path / "head", "best", "test", attention_movies=0)
    for key in ("f1_macro", "f1_micro", "mean_average_precision"):
        assert evaluation.report["threshold_0.5"][key] == pytest.approx(test[key], abs=1e-6), key
    assert all(path.stat().st_size > 0 for path in evaluation.figures)


def _json_members(out: Path, split: str) -> list[bytes]:
    found = []
    for shard in load_feature_set(out).manifest.split(split).shards:
        with tarfile.open(out / shard.name) as tar:
            found += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]
    return found


def test_attention_fusion_reads_token_and_patch_sequences(cached) -> None:
    """Batches of the features loader carry padded token rows and the patch grid to the head."""
    from mmimdb_dist.data.device import to_device
    from mmimdb_dist.data.loader import build_eval_loader
    from mmimdb_dist.models.registry import build_model

    out, config = cached
    cfg = load_config(config, [f"loader.features_dir={out}", "model.name=attention_fusion"])
    features = load_feature_set(out)
    loader = build_eval_loader(cfg.loader, features.manifest, "dev", None, rank=0, world_size=1)
    batches = [to_device(b, "cpu") for b in loader]
    assert sum(len(b["ids"]) for b in batches) == features.manifest.split("dev").num_samples
    batch = batches[0]
    assert batch["text_features"].shape[1] == batch["attention_mask"].shape[1] + 1
    assert batch["image_features"].shape[1:] == (1 + PATCHES, 16)
    model = build_model(cfg.model, num_labels=23, features=features.spec).eval()
    with torch.no_grad():
        outputs = model(batch)
    assert outputs["logits"].shape == (len(batch["ids"]), 23)
    assert outputs["attention"].shape[-2:] == (batch["attention_mask"].shape[1], PATCHES)
    assert torch.isfinite(outputs["logits"]).all()


def test_attention_fusion_needs_sequences() -> None:
    from mmimdb_dist.models.registry import build_model
    from mmimdb_dist.schema import ModelConfig

    pooled = FeatureSpec(text_dim=8, image_dim=8, sequences=False, dtype="float32")
    with pytest.raises(ConfigError, match="attention_fusion needs token and patch sequences"):
        build_model(ModelConfig(name="attention_fusion"), num_labels=23, features=pooled)
    model = build_model(ModelConfig(name="gmu"), num_labels=23, features=pooled)
    batch = {
        "text_features": torch.randn(3, 1, 8),
        "attention_mask": torch.ones(3, 1, dtype=torch.long),
        "image_features": torch.randn(3, 1, 8),
    }
    assert model(batch)["logits"].shape == (3, 23)
    raw = {
        "input_ids": torch.ones(3, 5, dtype=torch.long),
        "attention_mask": torch.ones(3, 5, dtype=torch.long),
        "pixel_values": torch.zeros(3, 3, 32, 32),
    }
    with pytest.raises(ValueError, match="trained on cached encoder features"):
        model(raw)  # never silently read as two missing modalities


def test_features_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    from mmimdb_dist.errors import DataError

    with pytest.raises(DataError, match="no features manifest"):
        load_feature_set(tmp_path)


@pytest.mark.parametrize(("model", "unused"), [("text_only", "image"), ("image_only", "text")])
def test_a_unimodal_config_caches_its_one_encoder_and_trains_on_it(cached, tmp_path: Path, model, unused) -> None:
    """A text-only (image-only) config caches plot (poster) features alone; a head of that kind
    trains on them, and a fusion head asking for the missing modality is one clear error."""
    _, config = cached
    out = tmp_path / "features"
    kind_off = [f"model.{unused}.kind=none"]
    base = ["--set", f"model.name={model}", *[a for k in kind_off for a in ("--set", k)]]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "--log-level",
            "WARNING",
            "cache-features",
            "--config",
            str(config),
            "--out",
            str(out),
            *base,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spec = load_feature_set(out).spec
    assert (spec.text_dim, spec.image_dim) == ((64, 0) if model == "text_only" else (0, 16))
    member = ".image.npy" if unused == "image" else ".text.npy"
    for shard in load_feature_set(out).manifest.split("dev").shards:
        with tarfile.open(out / shard.name) as tar:
            assert not [m for m in tar.getnames() if m.endswith(member)]
    run_train(config, "--set", f"loader.features_dir={out}", "--set", f"output_dir={tmp_path}", *base)
    final = json.loads((tmp_path / "head" / "final_metrics.json").read_text())
    assert final["test"]["threshold_0.5"]["num_samples"] == load_feature_set(out).manifest.split("test").num_samples
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "train",
            "--config",
            str(config),
            "--set",
            f"loader.features_dir={out}",
            "--set",
            f"output_dir={tmp_path / 'no'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert f"reads {unused} features, but the features set holds none" in refused.stderr
