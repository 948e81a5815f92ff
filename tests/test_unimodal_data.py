"""Plot-only movies and text-only runs: `shard.require_poster: false` and loaders that skip posters.

A text model does not need a poster, so a movie without one need not be lost: sharded with
`require_poster: false` it becomes a plot-only sample (counted in the manifest), which a
fusion model reads as a missing poster. A model without an image encoder gets batches with
no poster decoded at all.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmimdb_dist.data.loader import build_eval_loader
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.plots import read_shard_split_texts
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset
from mmimdb_dist.data.verify import verify_shards
from mmimdb_dist.data.vocab import Vocabulary
from mmimdb_dist.schema import load_config

POSTER_DEFECTS = ("missing_poster", "zero_byte_poster")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("unimodal")
    generate_dataset(root / "data", 90, seed=3, defect_rate=0.2)
    defects = json.loads((root / "data" / "mmimdb" / "defects.json").read_text())["movies"]
    return root, defects


def _shard(root, out: str, require_poster: bool):
    cfg = load_config(
        None,
        [
            f"data.raw_dir={root / 'data' / 'mmimdb'}",
            f"shard.out_dir={root / out}",
            f"shard.require_poster={str(require_poster).lower()}",
            "shard.workers=1",
            "shard.min_shards=2",
            f"loader.shards_dir={root / out}",
            "loader.num_workers=0",
            "loader.image_size=32",
        ],
    )
    return cfg, shard_dataset(cfg)


def test_plot_only_movies_are_kept_counted_and_verified(raw) -> None:
    root, defects = raw
    posterless = {movie for movie, kind in defects.items() if kind in POSTER_DEFECTS}
    assert posterless, "the synthetic defects include no missing poster"
    _, strict = _shard(root, "with_posters", require_poster=True)
    cfg, kept = _shard(root, "plot_ok", require_poster=False)
    assert strict.skipped_counts.get("missing_poster", 0) + strict.skipped_counts.get("bad_poster", 0) == len(
        posterless
    )
    assert "missing_poster" not in kept.skipped_counts
    assert "bad_poster" not in kept.skipped_counts
    assert kept.repaired["kept_without_poster"] == len(posterless)
    total = lambda m: sum(s.num_samples for s in m.splits.values())  # noqa: E731 (one line, read beside its use)
    assert total(kept) == total(strict) + len(posterless)
    assert kept.settings["require_poster"] is False
    assert "require_poster" not in strict.settings
    assert verify_shards(cfg.shard.out_dir) == []

    manifest = load_manifest(cfg.shard.out_dir)
    vocabulary = Vocabulary.build(read_shard_split_texts(manifest, "train").texts)
    seen_without = set()
    for split in ("train", "dev", "test"):
        for batch in build_eval_loader(cfg.loader, manifest, split, vocabulary, rank=0, world_size=1):
            for movie, present, pixels in zip(batch["ids"], batch["image_present"], batch["pixel_values"], strict=True):
                assert bool(present) == (movie not in posterless)
                if not present:
                    seen_without.add(movie)
                    assert int(pixels.abs().sum()) == 0
    assert seen_without == posterless


def test_a_text_only_loader_decodes_no_poster(raw, monkeypatch) -> None:
    root, _ = raw
    cfg, manifest = _shard(root, "text_only", require_poster=False)
    vocabulary = Vocabulary.build(read_shard_split_texts(manifest, "train").texts)

    def never(*args, **kwargs):
        raise AssertionError("a poster was decoded for a text-only loader")

    monkeypatch.setattr("mmimdb_dist.data.loader.decode_poster", never)
    batches = list(build_eval_loader(cfg.loader, manifest, "dev", vocabulary, rank=0, world_size=1, images=False))
    assert sum(len(b["ids"]) for b in batches) == manifest.split("dev").num_samples
    assert all("pixel_values" not in b and b["input_ids"].dtype == torch.int64 for b in batches)
