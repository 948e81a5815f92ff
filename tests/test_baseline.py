"""`mmimdb-dist baseline` on a real synthetic shard set and raw folder: outputs and bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmimdb_dist.baseline import evaluate_baseline
from mmimdb_dist.cli import main
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.plots import TextSplit, read_raw_texts, read_shard_texts
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.genres import GENRES, NUM_GENRES
from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset
from mmimdb_dist.errors import ConfigError, DataError
from mmimdb_dist.metrics import MIN_DEV_POSITIVES, THRESHOLD_BOUNDS
from mmimdb_dist.schema import BaselineConfig, load_config


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    # A few defects, so some movies are skipped (and must be counted) on both paths.
    return generate_dataset(tmp_path_factory.mktemp("synth"), num_movies=120, seed=1, defect_rate=0.05, workers=1)


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    cfg = load_config(
        overrides=[
            f"data.raw_dir={raw}",
            f"shard.out_dir={out}",
            "shard.poster_short_side=32",
            "shard.samples_per_shard=16",
            "shard.workers=1",
        ]
    )
    shard_dataset(cfg)
    return out


@pytest.fixture(scope="module")
def shard_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "baseline"
    assert (
        main(
            [
                "baseline",
                "--shards",
                str(shards),
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "baseline.ngram_max=1",
                "--set",
                "baseline.min_df=1",
            ]
        )
        == 0
    )
    return out


def test_shard_run_writes_config_metrics_and_per_label_csv(shards, shard_run, capsys):
    manifest = load_manifest(shards)
    metrics = json.loads((shard_run / "metrics.json").read_text())
    assert metrics["model"] == "tfidf_logreg"
    assert metrics["source"] == {"kind": "shards", "path": str(shards)}
    assert metrics["num_samples"] == {s: manifest.split(s).num_samples for s in ("train", "dev", "test")}
    for split in ("dev", "test"):
        report = metrics[split]
        assert set(report) == {"threshold_0.5", "tuned_on_dev", "thresholds"}
        assert report["threshold_0.5"]["num_samples"] == manifest.split(split).num_samples
        assert [g["label"] for g in report["tuned_on_dev"]["per_label"]] == list(GENRES)
    thresholds = metrics["dev"]["thresholds"]
    assert len(thresholds) == NUM_GENRES
    assert all(0 < t < 1 for t in thresholds)
    # One set of thresholds, from dev, applied to both splits.
    assert metrics["test"]["thresholds"] == thresholds
    assert [g["threshold"] for g in metrics["test"]["tuned_on_dev"]["per_label"]] == thresholds
    # On dev itself, a genre with enough dev positives for a threshold of its own can only match
    # or beat 0.5; the rarer ones share one threshold (see metrics.tune_thresholds).
    shared = set()
    for tuned, at_half in zip(
        metrics["dev"]["tuned_on_dev"]["per_label"], metrics["dev"]["threshold_0.5"]["per_label"], strict=True
    ):
        if tuned["support"] >= MIN_DEV_POSITIVES:
            assert tuned["f1"] >= at_half["f1"] - 1e-12
        else:
            shared.add(tuned["threshold"])
    assert len(shared) <= 1
    assert all(THRESHOLD_BOUNDS[0] <= t <= THRESHOLD_BOUNDS[1] for t in thresholds)

    rows = list(csv.DictReader((shard_run / "per_label.csv").open()))
    assert [(r["split"], r["label"]) for r in rows] == [(s, g) for s in ("dev", "test") for g in GENRES]
    assert [int(r["support"]) for r in rows if r["split"] == "test"] == manifest.split("test").label_counts

    resolved = load_config(shard_run / "config.yaml")
    assert resolved.loader.shards_dir == str(shards)
    assert resolved.baseline == BaselineConfig(ngram_max=1, min_df=1)
    assert not list(shard_run.glob(".*.tmp"))


def test_raw_and_shards_yield_the_same_samples(raw, shards):
    from_shards = read_shard_texts(shards, progress=False)
    from_raw, report = read_raw_texts(raw, progress=False)
    manifest = load_manifest(shards)
    assert report.total == sum(manifest.skipped_counts.values()) > 0
    for split in ("train", "dev", "test"):
        a, b = from_shards[split], from_raw[split]
        by_id_shards = {i: (t, list(y)) for i, t, y in zip(a.ids, a.texts, a.labels, strict=True)}
        by_id_raw = {i: (t, list(y)) for i, t, y in zip(b.ids, b.texts, b.labels, strict=True)}
        assert by_id_shards == by_id_raw
        assert len(by_id_raw) == len(b) > 0


def test_raw_run_records_skipped_movies(raw, shards, shard_run, tmp_path):
    out = tmp_path / "raw_run"
    assert (
        main(
            [
                "baseline",
                "--raw",
                str(raw),
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "baseline.ngram_max=1",
                "--set",
                "baseline.min_df=1",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = load_manifest(shards)
    assert metrics["source"]["kind"] == "raw"
    assert metrics["source"]["skipped"] == manifest.skipped_counts
    assert sorted(m["id"] for m in metrics["source"]["skipped_movies"]) == sorted(m.id for m in manifest.skipped)
    assert load_config(out / "config.yaml").data.raw_dir == str(raw)
    shard_metrics = json.loads((shard_run / "metrics.json").read_text())
    assert metrics["num_samples"] == shard_metrics["num_samples"]


# --------------------------------------------------------------------------- bad input


def _rewrite_shard(path: Path, edit) -> None:
    """Rewrite a tar shard through `edit(members: dict[name, bytes]) -> dict[name, bytes]`."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    members = edit(members)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _copy(shards: Path, tmp_path: Path) -> Path:
    target = tmp_path / "set"
    shutil.copytree(shards, target)
    return target


def _first_key(members: dict[str, bytes]) -> str:
    return sorted(members)[0].split(".", 1)[0]


def test_bad_labels_name_the_shard_sample_and_key(shards, tmp_path):
    broken = _copy(shards, tmp_path)
    shard = broken / "train-000000.tar"
    state = {}

    def edit(members):
        key = state["key"] = _first_key(members)
        meta = json.loads(members[f"{key}.json"])
        meta["labels"] = [1, 0, 1]
        members[f"{key}.json"] = json.dumps(meta).encode()
        return members

    _rewrite_shard(shard, edit)
    with pytest.raises(
        DataError, match=rf"{shard}: sample {state['key']}: {state['key']}\.json key 'labels': expected 23 ints 0/1"
    ):
        read_shard_texts(broken, progress=False)


def test_sample_without_text_is_an_error(shards, tmp_path):
    broken = _copy(shards, tmp_path)
    shard = broken / "dev-000000.tar"
    state = {}

    def edit(members):
        key = state["key"] = _first_key(members)
        del members[f"{key}.txt"]
        return members

    _rewrite_shard(shard, edit)
    with pytest.raises(DataError, match=rf"sample {state['key']}: missing member {state['key']}\.txt"):
        read_shard_texts(broken, progress=False)


def test_shards_holding_fewer_samples_than_the_manifest_say_so(shards, tmp_path):
    broken = _copy(shards, tmp_path)

    def edit(members):
        key = _first_key(members)
        return {name: data for name, data in members.items() if not name.startswith(f"{key}.")}

    _rewrite_shard(broken / "test-000000.tar", edit)
    expected = load_manifest(broken).split("test").num_samples
    with pytest.raises(
        DataError, match=rf"splits\.test\.num_samples says {expected} samples, the shards hold {expected - 1}"
    ):
        read_shard_texts(broken, progress=False)


def test_missing_or_corrupt_shard_is_named(shards, tmp_path):
    broken = _copy(shards, tmp_path)
    (broken / "dev-000000.tar").unlink()
    with pytest.raises(DataError, match=r"dev-000000\.tar: shard listed in the manifest is missing"):
        read_shard_texts(broken, progress=False)
    shutil.copy(shards / "dev-000000.tar", broken / "dev-000000.tar")
    (broken / "train-000000.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(DataError, match=r"train-000000\.tar: not a readable tar shard"):
        read_shard_texts(broken, progress=False)


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["baseline", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "manifest.json: manifest missing" in err
    assert err.count("\n") == 1
    assert main(["baseline", "--shards", str(tmp_path), "--set", "baseline.C=0"]) == 2
    assert "baseline.C: expected a positive number, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_as_a_real_process(shards, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "baseline",
            "--shards",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "nowhere: shard folder does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_dev_split_is_refused():
    rng = np.random.default_rng(0)
    labels = (rng.random((6, NUM_GENRES)) < 0.3).astype(np.int64)
    full = TextSplit(ids=list("abcdef"), texts=["a plot"] * 6, labels=labels)
    empty = TextSplit(ids=[], texts=[], labels=np.zeros((0, NUM_GENRES), dtype=np.int64))
    with pytest.raises(DataError, match="dev split has no samples"):
        evaluate_baseline({"train": full, "dev": empty, "test": full}, BaselineConfig(min_df=1))


@pytest.mark.parametrize(("key", "value"), [("ngram_max", 0), ("min_df", 0), ("max_features", 0), ("C", -1.0)])
def test_bad_baseline_settings_name_their_key(key, value):
    with pytest.raises(ConfigError, match=rf"baseline\.{key}"):
        load_config(overrides=[f"baseline.{key}={value}"])
    with pytest.raises(ConfigError, match="baseline.class_weight"):
        load_config(overrides=["baseline.class_weight=auto"])
