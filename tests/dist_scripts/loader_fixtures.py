"""Shared test data for the loader tests: a small synthetic shard set and a real tokenizer.

Both are built once per pytest session (synthetic posters are the slow part) under the
session's base temp folder, and reused by the single-process and the multi-process tests.
"""

from __future__ import annotations

import json
from pathlib import Path

NUM_MOVIES = 250  # split 150 / 25 / 75
SAMPLES_PER_SHARD = 20  # 150 train samples -> 8 shards, enough for 2 ranks x 2 workers


def data_root(tmp_path_factory) -> Path:
    """Where the loader tests keep their shared data within one pytest session."""
    root = tmp_path_factory.getbasetemp() / "loader-data"
    root.mkdir(exist_ok=True)
    return root


def build_shards(
    root: Path, num_movies: int = NUM_MOVIES, samples_per_shard: int = SAMPLES_PER_SHARD, name: str = "shards"
) -> Path:
    """synth -> shard, the real path; returns the shard folder (cached under `root`)."""
    from mmimdb_dist.data.shard import shard_dataset
    from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset
    from mmimdb_dist.schema import load_config

    shards = root / name
    if (shards / "manifest.json").is_file():
        return shards
    raw_root = root / f"raw-{num_movies}"
    if not (raw_root / "mmimdb" / "split.json").is_file():
        generate_dataset(raw_root, num_movies, seed=7, workers=2)
    cfg = load_config(
        None,
        [
            f"data.raw_dir={raw_root / 'mmimdb'}",
            f"shard.out_dir={shards}",
            "shard.poster_short_side=48",
            f"shard.samples_per_shard={samples_per_shard}",
            "shard.min_shards=1",
            "shard.workers=1",
        ],
    )
    shard_dataset(cfg)
    return shards


def build_tokenizer(root: Path, shards: Path) -> Path:
    """A real WordPiece tokenizer trained on the shard set's plots, saved as a HF folder."""
    import tarfile

    from dist_scripts.wordpiece import train_wordpiece

    folder = root / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    plots = []
    for tar_path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            plots += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    train_wordpiece(plots, folder, vocab_size=2000)
    return folder


def build_vocabulary(root: Path, shards: Path) -> Path:
    """A word vocabulary (the BiLSTM's TokenEncoder) of the train plots, saved as JSON."""
    import tarfile

    from mmimdb_dist.data.vocab import Vocabulary

    path = root / "vocabulary.json"
    if path.is_file():
        return path
    plots = []
    for tar_path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            plots += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    Vocabulary.build(plots).save(path)
    return path


def manifest_ids(shards: Path, split: str) -> list[str]:
    """Every sample id of a split, read straight from the tars (not through the loader)."""
    import tarfile

    manifest = json.loads((shards / "manifest.json").read_text())
    ids = []
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(shards / shard["name"]) as tar:
            ids += [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".json")]
    return ids
