"""Resharding: shard contents against the raw data, determinism, crash safety, --verify, CLI."""

from __future__ import annotations

import functools
import io
import json
import operator
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds
from dist_scripts.raw_data import make_raw, read_all_movies
from PIL import Image

from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.data.sources.mmimdb.shards import spread
from mmimdb_dist.data.verify import verify_shards
from mmimdb_dist.errors import DataError
from mmimdb_dist.schema import ExperimentConfig, load_config

SHORT_SIDE = 48
NUM_GOOD = 40


def raw_movies() -> dict[str, dict]:
    """40 usable movies (varied genres, sizes, formats) and one of each kind of defect."""
    movies: dict[str, dict] = {}
    for i in range(NUM_GOOD):
        movies[f"{1000000 + i * 7919:07d}"] = {
            "genres": [GENRES[i % 23], GENRES[(i * 5 + 3) % 23]] + (["News"] if i % 9 == 0 else []),
            "plot": [f"Plot number {i}.", f"A longer plot for movie {i}, " + "more " * i],
            "title": f"Movie {i}",
            "year": 1950 + i,
            "size": (60 + i, 90 + (i * 3) % 40) if i % 4 else (90 + i, 60),  # some landscape
            "poster": ("RGB", "RGB", "RGB", "png", "CMYK", "L")[i % 6],
        }
    first, second = list(movies)[5:7]
    movies[first]["plot"] = "A plot given as a plain string."  # kept, counted as repaired
    movies[second]["genres"] = movies[second]["genres"] + ["Cooking"]  # unknown, ignored
    movies["0000001"] = {"plot": []}
    movies["0000002"] = {"poster": None}
    movies["0000003"] = {"genres": ["Adult"]}
    movies["0000004"] = {"poster": "truncated", "size": (200, 300)}  # fails only at decode
    return movies


def make_config(raw: Path, out: Path, strict: bool = False, **shard: object) -> ExperimentConfig:
    settings = {"poster_short_side": SHORT_SIDE, "samples_per_shard": 6, "min_shards": 1, "workers": 1, **shard}
    return load_config(
        overrides=[f"data.raw_dir={raw}", f"data.strict={strict}", f"shard.out_dir={out}", "seed=3"]
        + [f"shard.{k}={v}" for k, v in settings.items()]
    )


def read_samples(paths: list[Path]) -> list[dict]:
    return list(wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False))


def set_bytes(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix == ".tar" or p.name == "manifest.json"
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw"), raw_movies())


@pytest.fixture(scope="module")
def sharded(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    shard_dataset(make_config(raw, out))
    return out


# --------------------------------------------------------------------------- contents


def test_manifest_matches_the_tars_and_the_raw_data(raw, sharded):
    manifest = load_manifest(sharded)
    kept, _report = read_all_movies(raw)
    kept = [m for m in kept if m.id != "0000004"]  # its poster does not decode
    assert manifest.labels.names == GENRES
    assert manifest.labels.task == "multilabel"
    assert manifest.settings == {
        "plot_policy": "longest",
        "poster_short_side": SHORT_SIDE,
        "jpeg_quality": 90,
        "samples_per_shard": 6,
        "min_shards": 1,
        "seed": 3,
    }
    for split in ("train", "dev", "test"):
        info = manifest.split(split)
        expected = {m.id: m for m in kept if m.split == split}
        samples = read_samples(manifest.shard_paths(split))
        keys = [s["__key__"] for s in samples]
        assert sorted(keys) == sorted(expected)  # every kept movie exactly once
        assert info.num_samples == len(samples) == len(expected)
        for shard, path in zip(info.shards, manifest.shard_paths(split), strict=True):
            assert shard.num_samples == len(read_samples([path]))
            assert shard.bytes == path.stat().st_size
        assert info.label_counts == [sum(m.labels[g] for m in expected.values()) for g in range(len(GENRES))]
        for sample in samples:
            movie = expected[sample["__key__"]]
            assert json.loads(sample["json"]) == movie.metadata()
            assert sample["txt"].decode("utf-8") == movie.plot
            image = Image.open(io.BytesIO(sample["jpg"]))
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert min(image.size) == SHORT_SIDE
            width, height = Image.open(movie.poster_path).size
            assert abs(image.size[0] / image.size[1] - width / height) < 0.05
    assert sum(manifest.num_samples.values()) == NUM_GOOD


def test_skipped_movies_are_in_the_manifest(sharded):
    manifest = load_manifest(sharded)
    assert manifest.skipped_counts == {"bad_poster": 1, "missing_poster": 1, "no_kept_genre": 1, "no_plot": 1}
    by_id = {m.id: m for m in manifest.skipped}
    assert {i: m.reason for i, m in by_id.items()} == {
        "0000001": "no_plot",
        "0000002": "missing_poster",
        "0000003": "no_kept_genre",
        "0000004": "bad_poster",
    }
    assert by_id["0000004"].file == "dataset/0000004.jpeg"  # relative to the raw folder
    assert "decode" in by_id["0000004"].detail
    assert manifest.repaired == {"plot_was_string": 1}
    assert manifest.unknown_labels == {"Cooking": 1}


def test_shard_count_sizes_and_mixing(raw, sharded):
    manifest = load_manifest(sharded)
    split_ids = json.loads((raw / "split.json").read_text())
    json_pass_skips = {"0000001", "0000002", "0000003"}  # 0000004 fails later, at decode
    for split, info in manifest.splits.items():
        passed = [i for i in split_ids[split] if i not in json_pass_skips]
        assert len(info.shards) == max(1, -(-len(passed) // 6))
        sizes = [s.num_samples for s in info.shards]
        assert max(sizes) - min(sizes) <= 1 + ("0000004" in passed)
        assert [s.name for s in info.shards] == [f"{split}-{i:06d}.tar" for i in range(len(info.shards))]
    keys = [s["__key__"] for s in read_samples(manifest.shard_paths("train"))]
    assert keys != sorted(keys)  # shuffled, not in id order
    assert (sharded / "config.yaml").is_file()
    assert load_config(sharded / "config.yaml").shard.poster_short_side == SHORT_SIDE


def test_min_shards_and_spread():
    assert [len(c) for c in spread(list(range(10)), 4)] == [3, 3, 2, 2]
    assert functools.reduce(operator.iadd, spread(list(range(10)), 4), []) == list(range(10))
    assert [len(c) for c in spread([1], 3)] == [1, 0, 0]


# --------------------------------------------------------------------------- determinism


def test_rerun_is_byte_identical_whatever_workers_and_split_order(raw, sharded, tmp_path):
    out = tmp_path / "two_workers"
    shard_dataset(make_config(raw, out, workers=2))
    assert set_bytes(out) == set_bytes(sharded)

    # the same ids listed in another order in split.json give the same shards
    reordered = tmp_path / "reordered" / "mmimdb"
    reordered.mkdir(parents=True)
    (reordered / "dataset").symlink_to(raw / "dataset")
    split = json.loads((raw / "split.json").read_text())
    (reordered / "split.json").write_text(json.dumps({k: v[::-1] for k, v in split.items()}))
    out2 = tmp_path / "reordered_set"
    shard_dataset(make_config(reordered, out2))
    assert set_bytes(out2) == set_bytes(sharded)


def test_rerun_cleans_stale_shards_and_temp_files(raw, sharded, tmp_path):
    out = tmp_path / "set"
    shard_dataset(make_config(raw, out, samples_per_shard=3))
    assert len(load_manifest(out).split("train").shards) == 5  # 14 movies
    # an interrupted run: a temp file left behind, no manifest
    (out / ".train-000001.tar.abc123.tmp").write_bytes(b"half a shard")
    (out / "manifest.json").unlink()
    shard_dataset(make_config(raw, out, samples_per_shard=8, min_shards=4))
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    for split in ("train", "dev", "test"):  # 4 = min_shards > ceil(14 / 8); no stray -000004
        assert [n for n in names if n.startswith(split)] == [f"{split}-{i:06d}.tar" for i in range(4)]
    assert verify_shards(out) == []
    assert set_bytes(out)["manifest.json"] != set_bytes(sharded)["manifest.json"]


def test_strict_mode_stops_on_a_poster_that_does_not_decode(tmp_path):
    movies = {"0000001": {}, "0000004": {"poster": "truncated", "size": (200, 300)}}
    small = make_raw(tmp_path / "raw", movies, {"train": list(movies), "dev": [], "test": []})
    with pytest.raises(DataError, match=r"0000004\.jpeg.*strict mode"):
        shard_dataset(make_config(small, tmp_path / "out", strict=True))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_split_gets_min_shards_empty_shards(tmp_path):
    movies = {"0000001": {}, "0000002": {}}
    small = make_raw(tmp_path / "raw", movies, {"train": list(movies), "dev": [], "test": []})
    manifest = shard_dataset(make_config(small, tmp_path / "out", min_shards=2))
    assert [s.num_samples for s in manifest.split("train").shards] == [1, 1]
    assert [s.num_samples for s in manifest.split("dev").shards] == [0, 0]
    assert manifest.split("test").label_counts == [0] * len(GENRES)
    assert verify_shards(tmp_path / "out") == []


# --------------------------------------------------------------------------- verify


def copy_set(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_verify_passes_on_a_fresh_set(sharded):
    assert verify_shards(sharded) == []
    assert verify_shards(sharded / "manifest.json") == []


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate", "extra", "no_manifest"])
def test_verify_names_the_damaged_shard(sharded, tmp_path, damage):
    shards = copy_set(sharded, tmp_path / "copy")
    target = shards / "dev-000001.tar"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[700] ^= 0x01  # inside the first member's content
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1500])
    elif damage == "extra":
        target = shards / "train-000099.tar"
        target.write_bytes((shards / "train-000000.tar").read_bytes())
    else:
        target = shards / "manifest.json"
        target.unlink()
    problems = verify_shards(shards)
    assert problems, damage
    assert all(str(target) in p for p in problems), problems
    expected = {
        "flip": "sha256",
        "delete": "missing",
        "truncate": "bytes",
        "extra": "not listed",
        "no_manifest": "manifest missing",
    }[damage]
    assert any(expected in p for p in problems), problems
    if damage == "truncate":
        assert any("samples in the tar" in p or "not a readable tar" in p for p in problems)


def test_malformed_manifest_names_file_and_key(sharded, tmp_path):
    shards = copy_set(sharded, tmp_path / "copy")
    document = json.loads((shards / "manifest.json").read_text())
    document["splits"]["dev"]["shards"][0]["num_samples"] = "many"
    (shards / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError) as info:
        load_manifest(shards)
    assert str(shards / "manifest.json") in str(info.value)
    assert "splits.dev.shards[0].num_samples" in str(info.value)
    document = json.loads((sharded / "manifest.json").read_text())
    del document["splits"]["test"]
    (shards / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="missing key 'splits.test'"):
        load_manifest(shards)
    document = json.loads((sharded / "manifest.json").read_text())
    document["splits"]["train"]["num_samples"] += 1
    (shards / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"splits\.train\.num_samples.*sum of its shards"):
        load_manifest(shards)


# --------------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmimdb_dist.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_shard_then_verify(raw, sharded, tmp_path):
    out = tmp_path / "cli_set"
    result = cli(
        "shard",
        "--raw",
        str(raw.parent),
        "--out",
        str(out),
        "--set",
        "seed=3",
        "--poster-short-side",
        str(SHORT_SIDE),
        "--samples-per-shard",
        "6",
        "--min-shards",
        "1",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout
    assert "skipped 4" in result.stdout
    assert set_bytes(out) == set_bytes(sharded)

    ok = cli("shard", "--verify", str(out))
    assert ok.returncode == 0
    assert "all shards match" in ok.stdout
    (out / "test-000000.tar").write_bytes(b"")
    bad = cli("shard", "--verify", "--out", str(out))
    assert bad.returncode == 1
    assert str(out / "test-000000.tar") in bad.stdout


def test_cli_errors_are_one_line_with_exit_2(raw, tmp_path):
    missing = cli("shard", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "does not exist" in missing.stderr

    movies = {"0000001": {}, "0000002": {"genres": ["News"]}}
    small = make_raw(tmp_path / "small", movies, {"train": list(movies), "dev": [], "test": []})
    strict = cli("shard", "--raw", str(small), "--out", str(tmp_path / "s"), "--strict")
    assert strict.returncode == 2
    assert str(small / "dataset" / "0000002.json") in strict.stderr

    bad_set = cli("shard", "--raw", str(small), "--out", str(tmp_path / "s"), "--samples-per-shard", "0")
    assert bad_set.returncode == 2
    assert "shard.samples_per_shard" in bad_set.stderr


# --------------------------------------------------------------------------- synthetic data

DEFECT_OUTCOME = {  # synthetic defect -> reason it is skipped for (None: kept)
    "empty_plot": "no_plot",
    "missing_poster": "missing_poster",
    "zero_byte_poster": "bad_poster",
    "dropped_genres_only": "no_kept_genre",
    "bad_json": "bad_json",
    "plot_as_string": None,
    "png_poster": None,
    "cmyk_poster": None,
    "grayscale_poster": None,
}


def test_synthetic_defects_are_skipped_or_repaired_as_planted(tmp_path):
    from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset

    root = generate_dataset(tmp_path / "synth", num_movies=45, seed=5, defect_rate=0.2)
    planted = json.loads((root / "defects.json").read_text())["movies"]
    assert set(planted.values()) == set(DEFECT_OUTCOME)  # every kind planted at least once
    manifest = shard_dataset(make_config(root, tmp_path / "out", samples_per_shard=8))
    expected = {movie_id: DEFECT_OUTCOME[kind] for movie_id, kind in planted.items() if DEFECT_OUTCOME[kind]}
    assert {m.id: m.reason for m in manifest.skipped} == expected
    assert manifest.repaired == {"plot_was_string": list(planted.values()).count("plot_as_string")}
    assert sum(manifest.num_samples.values()) == 45 - len(expected)
    recoloured = [i for i, kind in planted.items() if kind.endswith("_poster") and DEFECT_OUTCOME[kind] is None]
    samples = {s["__key__"]: s for split in ("train", "dev", "test") for s in read_samples(manifest.shard_paths(split))}
    for movie_id in recoloured:
        image = Image.open(io.BytesIO(samples[movie_id]["jpg"]))
        assert image.mode == "RGB"
        assert min(image.size) == SHORT_SIDE
    assert verify_shards(tmp_path / "out") == []
