"""Single-process tests of the streaming loaders on a real synth -> shard set.

Ranks are simulated by building the loader of each rank in turn (the split depends only on
rank and world_size); real multi-process runs are in test_loader_distributed.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from dist_scripts.loader_fixtures import build_shards, build_tokenizer, data_root, manifest_ids

from mmimdb_dist.data.device import jitter_colors, jitter_factors, to_device
from mmimdb_dist.data.loader import build_eval_loader, build_train_loader
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.sources.mmimdb.genres import NUM_GENRES
from mmimdb_dist.data.text import HFTokenEncoder
from mmimdb_dist.errors import ConfigError
from mmimdb_dist.schema import LoaderConfig


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return build_shards(data_root(tmp_path_factory))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, shards) -> HFTokenEncoder:
    return HFTokenEncoder.from_pretrained(build_tokenizer(data_root(tmp_path_factory), shards))


def small_cfg(**changes) -> LoaderConfig:
    base = LoaderConfig(
        batch_size=8,
        eval_batch_size=16,
        num_workers=0,
        shuffle_buffer=32,
        image_size=32,
        max_text_length=256,
        bucket_pool_batches=4,
    )
    return dataclasses.replace(base, **changes)


def epoch_ids(loader) -> list[list[str]]:
    return [batch["ids"] for batch in loader]


# --------------------------------------------------------------------------- text


def test_hf_encoder_gives_real_word_pieces_and_truncates(encoder):
    tokenizer = encoder.tokenizer
    unk = tokenizer.unk_token_id
    ids = encoder.encode("A detective investigates a murder in the city", 64)
    assert ids[0] == tokenizer.cls_token_id
    assert ids[-1] == tokenizer.sep_token_id
    assert sum(i == unk for i in ids) == 0, tokenizer.convert_ids_to_tokens(ids)
    long_ids = encoder.encode("the city " * 200, 16)
    assert len(long_ids) == 16
    assert long_ids[-1] == tokenizer.sep_token_id
    assert encoder.pad_id == tokenizer.pad_token_id == 0


# --------------------------------------------------------------------------- batches


def test_train_batch_format_matches_the_shards(shards, encoder):
    manifest = load_manifest(shards)
    loader = build_train_loader(small_cfg(), manifest, encoder, rank=0, world_size=1, epoch=0, seed=0)
    assert len(loader) == manifest.split("train").num_samples // 8
    labels_by_id = {}
    for path in manifest.shard_paths("train"):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    labels_by_id[meta["id"]] = meta["labels"]
    batches = list(loader)
    assert len(batches) == len(loader)
    for batch in batches:
        b, length = batch["input_ids"].shape
        assert b == 8
        assert batch["pixel_values"].shape == (8, 3, 32, 32)
        assert batch["pixel_values"].dtype == torch.uint8
        assert batch["labels"].shape == (8, NUM_GENRES)
        assert batch["labels"].dtype == torch.float32
        assert batch["attention_mask"].dtype == torch.int64
        lengths = batch["attention_mask"].sum(1)
        assert int(lengths.max()) == length  # padded to the longest plot of the batch
        assert bool((batch["input_ids"][batch["attention_mask"] == 0] == encoder.pad_id).all())
        for row, sample_id in enumerate(batch["ids"]):
            assert batch["labels"][row].tolist() == labels_by_id[sample_id]
        assert batch["skipped"] == 0
    assert loader.skipped == 0


def test_to_device_scales_pixels_to_unit_range(shards, encoder):
    manifest = load_manifest(shards)
    batch = next(iter(build_eval_loader(small_cfg(), manifest, "dev", encoder, rank=0, world_size=1)))
    moved = to_device(batch, "cpu", dtype=torch.float64)
    expected = batch["pixel_values"].double() / 255  # normalising is each image encoder's own
    assert moved["pixel_values"].dtype == torch.float64
    assert torch.allclose(moved["pixel_values"], expected)
    assert moved["labels"].dtype == torch.float64
    assert moved["ids"] == batch["ids"]


def test_device_color_jitter_matches_torchvision_and_is_seeded_per_sample(shards, encoder):
    import torchvision.transforms.v2.functional as F

    manifest = load_manifest(shards)
    batch = next(iter(build_eval_loader(small_cfg(), manifest, "dev", encoder, rank=0, world_size=1)))
    pixels = batch["pixel_values"].double() / 255
    factors = jitter_factors(batch["ids"], 0.4, seed=3)
    assert factors.shape == (3, len(batch["ids"]))
    assert bool(((factors >= 0.6) & (factors <= 1.4)).all())
    jittered = jitter_colors(pixels.clone(), factors)
    for row in range(len(batch["ids"])):
        brightness, contrast, saturation = factors[:, row].tolist()
        expected = F.adjust_saturation(
            F.adjust_contrast(F.adjust_brightness(pixels[row], brightness), contrast), saturation
        )
        assert torch.allclose(jittered[row], expected, atol=1e-6)
        single = jitter_colors(pixels.float()[row : row + 1].clone(), factors[:, row : row + 1])  # float32, as trained
        assert torch.allclose(single[0], expected.float(), atol=1e-5)

    moved = to_device(batch, "cpu", torch.float64, color_jitter=0.4, jitter_seed=3)
    assert torch.allclose(moved["pixel_values"], jittered)
    # Per-sample seeding: a sample's jitter does not depend on the batch it lands in.
    alone = jitter_factors(batch["ids"][1:2], 0.4, seed=3)
    assert torch.equal(alone[:, 0], factors[:, 1])
    assert not torch.equal(jitter_factors(batch["ids"], 0.4, seed=4), factors)


def test_bucketing_reduces_mean_padded_length(shards, encoder):
    manifest = load_manifest(shards)

    def mean_padded(bucket: bool) -> float:
        cfg = small_cfg(bucket_by_length=bucket, bucket_pool_batches=8)
        loader = build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=0, seed=0)
        widths = [batch["input_ids"].shape[1] for batch in loader]
        return sum(widths) / len(widths)

    with_buckets, without = mean_padded(True), mean_padded(False)
    assert with_buckets < 0.8 * without, (with_buckets, without)


# --------------------------------------------------------------------------- order and resume


def test_same_seed_same_order_and_epochs_differ(shards, encoder):
    manifest = load_manifest(shards)
    cfg = small_cfg(num_workers=2)

    def run(epoch: int, seed: int) -> list[list[str]]:
        return epoch_ids(build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=epoch, seed=seed))

    first = run(0, 0)
    assert run(0, 0) == first
    assert run(1, 0) != first
    assert run(0, 1) != first
    flat = [i for batch in first for i in batch]
    assert len(flat) == len(set(flat))  # 150 samples, 144 drawn: no repeat needed, none made


@pytest.mark.parametrize("skip", [3, 4])
def test_skip_batches_resumes_exactly(shards, encoder, skip):
    manifest = load_manifest(shards)
    cfg = small_cfg(num_workers=2)
    full = list(build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=2, seed=5))
    resumed_loader = build_train_loader(
        cfg, manifest, encoder, rank=0, world_size=1, epoch=2, seed=5, skip_batches=skip
    )
    resumed = list(resumed_loader)
    assert len(resumed_loader) == len(full) - skip == len(resumed)
    for expected, got in zip(full[skip:], resumed, strict=True):
        assert got["ids"] == expected["ids"]
        assert torch.equal(got["pixel_values"], expected["pixel_values"])  # same augmentation
        assert torch.equal(got["input_ids"], expected["input_ids"])


def test_bad_rank_batch_size_and_skip_are_config_errors(shards, encoder):
    manifest = load_manifest(shards)
    with pytest.raises(ConfigError, match="batch_size"):
        build_train_loader(small_cfg(batch_size=100), manifest, encoder, rank=0, world_size=2, epoch=0, seed=0)
    with pytest.raises(ConfigError, match="skip_batches"):
        build_train_loader(small_cfg(), manifest, encoder, rank=0, world_size=1, epoch=0, seed=0, skip_batches=999)
    with pytest.raises(ConfigError, match="rank 2"):
        build_eval_loader(small_cfg(), manifest, "dev", encoder, rank=2, world_size=2)


# --------------------------------------------------------------------------- ranks and slots


@pytest.mark.parametrize(("world_size", "num_workers"), [(2, 2), (3, 1)])
def test_eval_covers_every_sample_once_across_ranks(shards, encoder, world_size, num_workers):
    manifest = load_manifest(shards)
    cfg = small_cfg(num_workers=num_workers)
    seen, lengths = [], []
    for rank in range(world_size):
        loader = build_eval_loader(cfg, manifest, "test", encoder, rank=rank, world_size=world_size)
        batches = epoch_ids(loader)
        lengths.append((len(loader), len(batches)))
        seen += [i for batch in batches for i in batch]
    assert sorted(seen) == sorted(manifest_ids(shards, "test"))
    assert all(expected == got for expected, got in lengths)


def test_fewer_shards_than_slots_splits_by_sample(shards, encoder, caplog):
    """dev has 2 shards. 2 ranks x 2 workers = 4 slots: each rank reads its shard and its
    workers keep every 2nd sample. 4 ranks: every slot reads both shards and keeps every 4th
    sample. Either way nothing hangs, nothing is lost and nothing is read twice."""
    manifest = load_manifest(shards)
    assert len(manifest.split("dev").shards) == 2
    cfg = small_cfg(num_workers=2, batch_size=2)  # 25 samples: 6 batches per rank, 6 samples per slot
    dev_ids = manifest_ids(shards, "dev")

    for world_size in (2, 4):
        seen = []
        for rank in range(world_size):
            loader = build_eval_loader(cfg, manifest, "dev", encoder, rank=rank, world_size=world_size)
            batches = epoch_ids(loader)
            assert len(batches) == len(loader)
            seen += [i for batch in batches for i in batch]
        assert sorted(seen) == sorted(dev_ids)

    # Train on the dev shards: same batch count per rank, each rank's stream disjoint.
    dev_as_train = dataclasses.replace(manifest, splits={**manifest.splits, "train": manifest.split("dev")})
    per_rank = [
        epoch_ids(build_train_loader(cfg, dev_as_train, encoder, rank=rank, world_size=2, epoch=0, seed=0))
        for rank in range(2)
    ]
    expected_batches = len(dev_ids) // (2 * 2)
    assert [len(batches) for batches in per_rank] == [expected_batches, expected_batches]
    sightings = [i for batches in per_rank for batch in batches for i in batch]
    assert len(sightings) == len(set(sightings)) == 2 * expected_batches * 2

    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.data.loader"):
        list(build_eval_loader(small_cfg(num_workers=0), manifest, "dev", encoder, rank=0, world_size=4))
    assert "shards are read by every slot" in caplog.text


def test_uneven_shards_still_give_every_rank_the_same_batch_count(shards, encoder):
    """test has 4 shards of 18-19 samples over 3 ranks: one rank reads two shards, the others
    one each, fewer samples than their 25-sample quota, so they repeat (and only they do)."""
    manifest = load_manifest(shards)
    split = manifest.split("test")
    assert [s.num_samples for s in split.shards] == [19, 19, 19, 18]
    test_as_train = dataclasses.replace(manifest, splits={**manifest.splits, "train": split})
    cfg = small_cfg(num_workers=1, batch_size=5)
    per_rank = [
        [
            i
            for batch in epoch_ids(
                build_train_loader(cfg, test_as_train, encoder, rank=rank, world_size=3, epoch=0, seed=0)
            )
            for i in batch
        ]
        for rank in range(3)
    ]
    assert [len(ids) for ids in per_rank] == [25, 25, 25]
    sightings = [i for ids in per_rank for i in ids]
    # Padding needed: two ranks hold 18 or 19 samples for 25 slots each -> at most 7 + 7 repeats.
    assert len(sightings) - len(set(sightings)) <= 14


# --------------------------------------------------------------------------- bad data


def _rewrite_shard(path: Path, corrupt_jpeg_index: int, bad_json_index: int) -> tuple[str, str]:
    """Replace one poster with garbage and one JSON with broken text; return their ids."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    bad_jpeg, bad_json = keys[corrupt_jpeg_index], keys[bad_json_index]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member, data in members:
            if member.name == f"{bad_jpeg}.jpg":
                data = b"\xff\xd8\xff\xe0 not really a jpeg" * 4
            elif member.name == f"{bad_json}.json":
                data = b'{"id": "' + bad_json.encode() + b'", "labels": [1, 0'
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return bad_jpeg, bad_json


def _truncate(path: Path) -> set[str]:
    """Cut a shard mid-member; return the ids whose three members survive intact."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.55) + 100])
    members: Counter[str] = Counter()
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                tar.extractfile(member).read()
                members[member.name.split(".")[0]] += 1
    except tarfile.ReadError:
        pass
    return {key for key, count in members.items() if count == 3}


@pytest.fixture
def damaged(tmp_path, shards) -> tuple[Path, dict]:
    """A copy of the shard set with, in train and test: one undecodable poster and one broken
    JSON in the first shard, and the second shard cut in the middle."""
    copy = tmp_path / "damaged"
    shutil.copytree(shards, copy)
    manifest = load_manifest(copy)
    info = {}
    for split in ("train", "test"):
        first, second = manifest.shard_paths(split)[:2]
        with tarfile.open(second) as tar:
            second_ids = {m.name.split(".")[0] for m in tar.getmembers()}
        bad = set(_rewrite_shard(first, 2, 5))
        lost = second_ids - _truncate(second)
        info[split] = {"good": set(manifest_ids(shards, split)) - bad - lost, "skips": len(bad) + len(lost)}
    return copy, info


def test_corrupt_samples_and_truncated_shards_are_skipped_and_counted(damaged, encoder, caplog):
    shards_dir, info = damaged
    manifest = load_manifest(shards_dir)

    # Eval: every readable sample exactly once, the rest counted.
    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.data.loader"):
        loader = build_eval_loader(small_cfg(), manifest, "test", encoder, rank=0, world_size=1)
        seen = [i for batch in epoch_ids(loader) for i in batch]
    assert sorted(seen) == sorted(info["test"]["good"])
    assert loader.skipped == info["test"]["skips"]
    assert "poster does not decode" in caplog.text
    assert "not valid JSON" in caplog.text
    assert "truncated or corrupt shard" in caplog.text

    # Train: batch_size 10 draws all 150 sightings, so the whole first pass is consumed; the
    # epoch still has its full length (repeat padding fills the gap) and counts each bad sample once.
    cfg = small_cfg(batch_size=10)
    loader = build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=0, seed=0)
    batches = epoch_ids(loader)
    assert len(batches) == len(loader) == 15
    seen = {i for batch in batches for i in batch}
    assert seen == info["train"]["good"]
    assert loader.skipped == info["train"]["skips"]


# --------------------------------------------------------------------------- inspect command


def test_inspect_command_reports_shapes_padding_and_skips(shards, tmp_path_factory, capsys):
    from mmimdb_dist.cli import main

    tokenizer = build_tokenizer(data_root(tmp_path_factory), shards)
    rc = main(
        [
            "inspect",
            "--shards",
            str(shards),
            "--batches",
            "3",
            "--tokenizer",
            str(tokenizer),
            "--set",
            "loader.batch_size=4",
            "--set",
            "loader.image_size=40",
            "--set",
            "loader.num_workers=0",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "pixel_values    (4, 3, 40, 40) uint8" in out
    assert "labels          (4, 23) float32" in out
    assert "batches streamed 3, samples 12" in out
    assert "mean padded length" in out
    assert "skipped 0" in out

    # Without --tokenizer: a word vocabulary of the train plots; dev streams in eval order.
    rc = main(
        [
            "inspect",
            "--shards",
            str(shards),
            "--split",
            "dev",
            "--batches",
            "1",
            "--set",
            "loader.eval_batch_size=5",
            "--set",
            "loader.image_size=24",
            "--set",
            "loader.num_workers=0",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "pixel_values    (5, 3, 24, 24) uint8" in out
    assert "batches streamed 1, samples 5" in out
    assert "the whole epoch" not in out
    rc = main(
        ["inspect", "--shards", str(shards), "--split", "dev", "--batches", "500", "--set", "loader.num_workers=0"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "(the whole epoch: --batches 500 asked for more than it holds)" in out  # it streamed one epoch silently


def test_inspect_command_missing_shards_is_a_one_line_error(tmp_path, capsys):
    from mmimdb_dist.cli import main

    assert main(["inspect", "--shards", str(tmp_path / "nope")]) == 2
    assert "shard folder does not exist" in capsys.readouterr().err


def test_a_loader_started_early_gives_the_same_epoch(shards, encoder):
    """The trainer starts the next epoch's loader before its end-of-epoch evaluation. Started
    while another epoch's workers still run, the epoch holds exactly the batches of a loader
    started when needed (the gap it saves is measured in benchmarks/bench_scale.py)."""

    manifest = load_manifest(shards)
    cfg = small_cfg(num_workers=2)

    def loader(epoch: int):
        return build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=epoch, seed=5)

    current = loader(0).start()
    next(current)  # epoch 0 under way
    early = loader(1).start()  # epoch 1's workers start now, as the trainer's do
    rest = [batch["ids"] for batch in current]
    early_ids = [batch["ids"] for batch in early]
    assert rest
    assert early_ids == epoch_ids(loader(1))
