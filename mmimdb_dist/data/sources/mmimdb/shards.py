"""MM-IMDb's shard plan: the usable movies' ids per split, in a seeded order, cut into shards that
worker processes write by reading each movie again from the raw folder.

Reproducibility is part of the contract: the same raw data and settings give the same bytes,
whatever the worker count or the order of split.json. Hence a seeded shuffle of the sorted
ids, members in a fixed order and JPEG encoding with fixed settings (`data/tario.py` writes
the deterministic tar headers).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....errors import DataError
from ....schema import ExperimentConfig
from ...codecs import shard_members
from ...manifest import SPLITS, ShardInfo, SkippedMovie, num_shards, shard_name
from ...tario import write_sample_tar
from ..common import SampleSkipped, ShardPlan, ShardResult, SkipReport, resize_and_encode, shard_settings, writing
from .raw import (
    BAD_POSTER,
    MISSING_POSTER,
    MMIMDB_LABELS,
    Movie,
    iter_movies,
    load_poster,
    read_movie,
    resolve_raw_dir,
)


def spread(items: list[Any], parts: int) -> list[list[Any]]:
    """`parts` contiguous chunks whose sizes differ by at most one."""
    base, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def shuffled(ids: list[str], seed: int, split: str) -> list[str]:
    """Sorted, then shuffled by a generator seeded with (seed, split): independent of
    split.json's order, and each split's order independent of the other splits."""
    ordered = sorted(ids)
    random.Random(f"mmimdb-dist:{seed}:{split}").shuffle(ordered)
    return ordered


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: the ids of its movies, which the worker reads again from the raw
    folder (the parent keeps ids only, so its memory does not grow with plots and titles)."""

    split: str
    name: str
    ids: list[str]
    raw_dir: str
    plot_policy: str
    out_dir: str
    poster_short_side: int
    jpeg_quality: int
    strict: bool
    require_poster: bool = True

    @property
    def size(self) -> int:
        return len(self.ids)


def encode_poster(movie: Movie, short_side: int, quality: int) -> bytes:
    """Resize so the short side is `short_side` (Lanczos) and encode as baseline JPEG."""
    return resize_and_encode(load_poster(movie, min_short_side=short_side), short_side, quality)


def write_shard(task: ShardTask) -> ShardResult:
    """Encode a shard's posters and write its tar atomically (runs in a worker process)."""
    label_counts = [0] * len(MMIMDB_LABELS)
    skipped: list[SkippedMovie] = []
    posterless = 0

    def samples() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
        nonlocal posterless
        for movie_id in task.ids:
            try:
                movie = read_movie(
                    task.raw_dir, movie_id, task.split, task.plot_policy, require_poster=task.require_poster
                )
                jpeg = encode_poster(movie, task.poster_short_side, task.jpeg_quality)
            except OSError as exc:  # kept apart from the tar's own write errors (`writing`)
                raise DataError(f"{task.raw_dir}: movie {movie_id}: cannot read ({exc.strerror or exc})") from None
            except SampleSkipped as skip:
                if not task.require_poster and skip.record.reason in (MISSING_POSTER, BAD_POSTER):
                    jpeg = None  # kept as a plot-only movie
                elif task.strict:
                    raise DataError(f"{skip} (strict mode: a movie that cannot become a sample is an error)") from None
                else:
                    skipped.append(skip.record)
                    continue
            posterless += jpeg is None
            for i, flag in enumerate(movie.labels):
                label_counts[i] += flag
            yield movie.id, shard_members(movie.metadata(), movie.plot, jpeg)

    path = Path(task.out_dir) / task.name
    with writing(path):
        written = write_sample_tar(path, samples())
    info = ShardInfo(name=written.name, num_samples=written.num_samples, sha256=written.sha256, bytes=written.bytes)
    return ShardResult(split=task.split, info=info, label_counts=label_counts, skipped=skipped, posterless=posterless)


def usable_ids(cfg: ExperimentConfig) -> tuple[dict[str, list[str]], SkipReport]:
    """The ids of the movies that can become samples, per split, and what was skipped or
    repaired. Only ids are kept (about 60 bytes a movie, where whole records were 2.2 KB):
    the shard workers read each movie again when they write it."""
    report = SkipReport()
    ids: dict[str, list[str]] = {split: [] for split in SPLITS}
    for movie in iter_movies(
        cfg.data.raw_dir,
        SPLITS,
        cfg.data.plot_policy,
        cfg.data.strict,
        report,
        progress=True,
        require_poster=cfg.shard.require_poster,
    ):
        ids[movie.split].append(movie.id)
    return ids, report


def mmimdb_plan(cfg: ExperimentConfig, out_dir: Path) -> ShardPlan:
    """The shards of the raw folder `data.raw_dir`: its label set is MM-IMDb's 23 genres."""
    ids, report = usable_ids(cfg)
    root = resolve_raw_dir(cfg.data.raw_dir)
    tasks: list[ShardTask] = []
    for split in SPLITS:
        count = num_shards(len(ids[split]), cfg.shard.samples_per_shard, cfg.shard.min_shards)
        chunks = spread(shuffled(ids[split], cfg.seed, split), count)
        tasks += [
            ShardTask(
                split=split,
                name=shard_name(split, i),
                ids=chunk,
                raw_dir=str(root),
                plot_policy=cfg.data.plot_policy,
                out_dir=str(out_dir),
                poster_short_side=cfg.shard.poster_short_side,
                jpeg_quality=cfg.shard.jpeg_quality,
                strict=cfg.data.strict,
                require_poster=cfg.shard.require_poster,
            )
            for i, chunk in enumerate(chunks)
        ]
    return ShardPlan(
        tasks=tasks, write=write_shard, labels=MMIMDB_LABELS, report=report, root=root, settings=shard_settings(cfg)
    )
