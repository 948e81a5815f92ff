"""A source (raw MM-IMDb, or a table: `data.source`) -> WebDataset tar shards + `manifest.json`.

Why reshard at all: training reads 25,959 small JSON files and full-size posters otherwise,
which is slow on network filesystems and re-decodes every poster every epoch. Shards are
few large sequential files with posters already resized, which is what many ranks and
loader workers can stream.

Reproducibility is part of the contract: the same raw data and settings give the same
bytes, whatever the worker count or the order of split.json. Hence a seeded shuffle of the
sorted ids, tar headers with fixed mtime/owner/mode, members in a fixed order, and JPEG
encoding with fixed settings. A shard's sha256 in the manifest then identifies its content.

Crash safety: every file is written atomically; the old manifest is removed before any
shard is rewritten and the new one is written last, so a folder with a manifest is always
a consistent set, and a folder without one is an interrupted run to be re-run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import DataError
from ..labels import LabelSet
from ..outputs import claim_output_dir
from ..progress import progress as progress_bar
from ..schema import ExperimentConfig, save_config
from .codecs import shard_members
from .manifest import MANIFEST_NAME, SPLITS, Manifest, ShardInfo, SkippedMovie, SplitInfo, num_shards
from .raw import (
    BAD_POSTER,
    MISSING_POSTER,
    MMIMDB_LABELS,
    Movie,
    MovieSkipped,
    SkipReport,
    iter_movies,
    load_poster,
    read_movie,
    read_split,
    resize_and_encode,
    resolve_raw_dir,
)
from .table import SPLIT_FILE, TableShardTask, plan_table, spool_file, table_samples
from .tario import write_sample_tar

log = logging.getLogger(__name__)

SHARD_NAME = re.compile(r"(train|dev|test)-(\d{6})\.tar")
# atomic.py's temporary files: ".<final name>.<random>.tmp"
TEMP_FILE = re.compile(r"\..+\.tmp")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


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


# --------------------------------------------------------------------------- one shard


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


@dataclass
class ShardResult:
    split: str
    label_counts: list[int]
    info: ShardInfo | None = None
    skipped: list[SkippedMovie] = field(default_factory=list)
    posterless: int = 0
    # Label names outside the label set, met in this shard's records (counted, then dropped).
    unknown_labels: Counter[str] = field(default_factory=Counter)


def encode_poster(movie: Movie, short_side: int, quality: int) -> bytes:
    """Resize so the short side is `short_side` (Lanczos) and encode as baseline JPEG."""
    return resize_and_encode(load_poster(movie, min_short_side=short_side), short_side, quality)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (full disk, size limit, no permission) becomes a one-line DataError
    naming the file; the atomic write has already removed its temporary file."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc}); the shard set has no "
                        "manifest: free some space and re-run `mmimdb-dist shard`") from None


def write_shard(task: ShardTask) -> ShardResult:
    """Encode a shard's posters and write its tar atomically (runs in a worker process)."""
    label_counts = [0] * len(MMIMDB_LABELS)
    skipped: list[SkippedMovie] = []
    posterless = 0

    def samples() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
        nonlocal posterless
        for movie_id in task.ids:
            try:
                movie = read_movie(task.raw_dir, movie_id, task.split, task.plot_policy,
                                   require_poster=task.require_poster)
                jpeg = encode_poster(movie, task.poster_short_side, task.jpeg_quality)
            except OSError as exc:  # kept apart from the tar's own write errors (_writing)
                raise DataError(f"{task.raw_dir}: movie {movie_id}: cannot read ({exc.strerror or exc})") from None
            except MovieSkipped as skip:
                if not task.require_poster and skip.record.reason in (MISSING_POSTER, BAD_POSTER):
                    jpeg = None  # kept as a plot-only movie
                elif task.strict:
                    raise DataError(f"{skip} (strict mode: a movie that cannot become a sample "
                                    "is an error)") from None
                else:
                    skipped.append(skip.record)
                    continue
            posterless += jpeg is None
            for i, flag in enumerate(movie.labels):
                label_counts[i] += flag
            yield movie.id, shard_members(movie.metadata(), movie.plot, jpeg)

    path = Path(task.out_dir) / task.name
    with _writing(path):
        written = write_sample_tar(path, samples())
    info = ShardInfo(name=written.name, num_samples=written.num_samples, sha256=written.sha256,
                     bytes=written.bytes)
    return ShardResult(split=task.split, info=info, label_counts=label_counts, skipped=skipped,
                       posterless=posterless)


def write_table_shard(task: TableShardTask) -> ShardResult:
    """A table shard: its rows read back from the spool, images encoded, the tar written atomically."""
    result = ShardResult(split=task.split, label_counts=[0] * len(task.labels))
    path = Path(task.out_dir) / task.name
    with _writing(path):
        written = write_sample_tar(path, table_samples(task, result))
    result.info = ShardInfo(name=written.name, num_samples=written.num_samples, sha256=written.sha256,
                            bytes=written.bytes)
    return result


# --------------------------------------------------------------------------- the whole set


def _clean_stale_files(out_dir: Path, keep: set[str]) -> None:
    """Remove temp files of an interrupted run and shards that the new set does not have."""
    for path in out_dir.iterdir():
        stale = bool(SHARD_NAME.fullmatch(path.name) or TEMP_FILE.fullmatch(path.name)) and path.name not in keep
        if path.is_file() and stale:
            log.info("removing stale %s", path)
            path.unlink()


def _usable_ids(cfg: ExperimentConfig) -> tuple[dict[str, list[str]], SkipReport]:
    """The ids of the movies that can become samples, per split, and what was skipped or
    repaired. Only ids are kept (about 60 bytes a movie, where whole records were 2.2 KB):
    the shard workers read each movie again when they write it."""
    report = SkipReport()
    ids: dict[str, list[str]] = {split: [] for split in SPLITS}
    for movie in iter_movies(cfg.data.raw_dir, SPLITS, cfg.data.plot_policy, cfg.data.strict,
                             report, progress=True, require_poster=cfg.shard.require_poster):
        ids[movie.split].append(movie.id)
    return ids, report


def _run_tasks(tasks: list[Any], write: Callable[[Any], ShardResult], workers: int,
               total: int) -> list[ShardResult]:

    results: list[ShardResult] = []
    with progress_bar(total=total, desc="encoding posters", unit="poster") as progress:
        if workers <= 1:
            for task in tasks:
                results.append(write(task))
                progress.update(task.size)
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(write, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    results.append(future.result())
                    progress.update(futures[future].size)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return results


def settings_of(cfg: ExperimentConfig) -> dict[str, Any]:
    return {"plot_policy": cfg.data.plot_policy, "poster_short_side": cfg.shard.poster_short_side,
            "jpeg_quality": cfg.shard.jpeg_quality, "samples_per_shard": cfg.shard.samples_per_shard,
            "min_shards": cfg.shard.min_shards, "seed": cfg.seed,
            **({} if cfg.shard.require_poster else {"require_poster": False})}


def owns_shard_file(name: str) -> bool:
    """The names a shard set's folder holds (what `shard --out` may find there and replace)."""
    return (bool(SHARD_NAME.fullmatch(name) or TEMP_FILE.fullmatch(name))
            or name in (MANIFEST_NAME, "config.yaml", SPLIT_FILE))


def shard_dataset(cfg: ExperimentConfig) -> Manifest:
    """Reshard `cfg.data.raw_dir` into `cfg.shard.out_dir`; returns the manifest written.

    The output folder must be new, empty or a shard set (anything else is refused untouched),
    and is locked for the whole run (see mmimdb_dist/outputs.py)."""

    out_dir = Path(cfg.shard.out_dir)
    if cfg.data.source == "mmimdb":
        read_split(cfg.data.raw_dir)  # fail on a bad split.json before touching the output folder
    with claim_output_dir(out_dir, "--out", "shard", "a shard set", owns_shard_file):
        return _shard_into(cfg, out_dir)


@dataclass
class ShardPlan:
    """What a source hands the writer: tasks for worker processes (and the function that writes
    one), the label set, what was skipped before any shard was written, and where skipped
    records' paths are made relative to."""

    tasks: list[Any]
    write: Callable[[Any], ShardResult]
    labels: LabelSet
    report: SkipReport
    root: Path
    settings: dict[str, Any]
    dropped_labels: dict[str, int] = field(default_factory=dict)


def _mmimdb_plan(cfg: ExperimentConfig, out_dir: Path) -> ShardPlan:
    ids, report = _usable_ids(cfg)
    root = resolve_raw_dir(cfg.data.raw_dir)
    tasks: list[ShardTask] = []
    for split in SPLITS:
        count = num_shards(len(ids[split]), cfg.shard.samples_per_shard, cfg.shard.min_shards)
        chunks = spread(shuffled(ids[split], cfg.seed, split), count)
        tasks += [ShardTask(split=split, name=shard_name(split, i), ids=chunk, raw_dir=str(root),
                            plot_policy=cfg.data.plot_policy, out_dir=str(out_dir),
                            poster_short_side=cfg.shard.poster_short_side,
                            jpeg_quality=cfg.shard.jpeg_quality, strict=cfg.data.strict,
                            require_poster=cfg.shard.require_poster)
                  for i, chunk in enumerate(chunks)]
    return ShardPlan(tasks=tasks, write=write_shard, labels=MMIMDB_LABELS, report=report, root=root,
                     settings=settings_of(cfg))


def _table_plan(cfg: ExperimentConfig, out_dir: Path, spool: Path) -> ShardPlan:
    plan = plan_table(cfg, out_dir, spool)
    table = Path(cfg.data.table)  # type: ignore[arg-type]
    report = SkipReport()
    for record in plan.skipped:
        report.add(record)
    tasks: list[TableShardTask] = []
    for split, ranges in plan.splits.items():
        for index, (low, size) in enumerate(ranges):
            high = ranges[index + 1][0] if index + 1 < len(ranges) else None
            tasks.append(TableShardTask(
                split=split, name=shard_name(split, index), size=size, spool=str(spool), low=low, high=high,
                table_dir=str(table.parent), table=str(table), labels=plan.label_set,
                poster_short_side=cfg.shard.poster_short_side, jpeg_quality=cfg.shard.jpeg_quality,
                require_image=cfg.shard.require_poster, has_image_column=bool(cfg.data.columns.image),
                strict=cfg.data.strict, out_dir=str(out_dir)))
    settings = {**settings_of(cfg), "source": "table", "table": table.name,
                "split": "generated" if plan.generated_split else "column",
                **({"split_fractions": list(cfg.data.split_fractions)} if plan.generated_split else {}),
                "min_label_count": cfg.data.min_label_count}
    return ShardPlan(tasks=tasks, write=write_table_shard, labels=plan.label_set, report=report,
                     root=table.parent, settings=settings, dropped_labels=plan.dropped_labels)


def _shard_into(cfg: ExperimentConfig, out_dir: Path) -> Manifest:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest until the set is consistent
    with spool_file(out_dir) as spool:
        plan = _table_plan(cfg, out_dir, spool) if cfg.data.source == "table" else _mmimdb_plan(cfg, out_dir)
        return _write_shards(cfg, out_dir, plan, keep={spool.name})


def _write_shards(cfg: ExperimentConfig, out_dir: Path, plan: ShardPlan, keep: set[str]) -> Manifest:
    tasks, report, root = plan.tasks, plan.report, plan.root
    sizes: Counter[str] = Counter()
    for task in tasks:
        sizes[task.split] += task.size
    for split in ("train", "dev"):
        if not sizes[split]:
            log.warning("split %r has no usable sample: training needs train and dev samples "
                        "(a run on this set will stop with an error before its first step)", split)
    _clean_stale_files(out_dir, keep={task.name for task in tasks} | keep)

    workers = cfg.shard.workers or os.cpu_count() or 1
    total = sum(task.size for task in tasks)
    results = {r.info.name: r for r in _run_tasks(tasks, plan.write, min(workers, len(tasks)), total)}

    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        shard_results = [results[t.name] for t in tasks if t.split == split]
        label_counts = [sum(col) for col in zip(*(r.label_counts for r in shard_results))]
        splits[split] = SplitInfo(num_samples=sum(r.info.num_samples for r in shard_results),
                                  shards=[r.info for r in shard_results], label_counts=label_counts)
        for r in shard_results:
            for record in r.skipped:
                report.add(record)
            if r.posterless:
                report.repaired["kept_without_poster"] += r.posterless
            report.unknown_labels.update(r.unknown_labels)

    split_order = {name: i for i, name in enumerate(SPLITS)}
    skipped = sorted((_relative_to_raw(m, root) for m in report.movies),
                     key=lambda m: (split_order.get(m.split, -1), m.id, m.reason, m.file))
    manifest = Manifest(directory=out_dir, labels=plan.labels, settings=plan.settings,
                        splits=splits, skipped_counts=dict(sorted(report.counts.items())),
                        skipped=skipped, repaired=dict(sorted(report.repaired.items())),
                        unknown_labels=dict(sorted(report.unknown_labels.items())),
                        dropped_labels=dict(sorted(plan.dropped_labels.items())))
    with _writing(out_dir / "config.yaml"):
        save_config(cfg, out_dir)
    with _writing(out_dir / MANIFEST_NAME):
        atomic_write_json(out_dir / MANIFEST_NAME, manifest.to_dict())
    return manifest


def _relative_to_raw(record: SkippedMovie, root: Path) -> SkippedMovie:
    """Paths relative to the raw folder, so the manifest does not depend on where it lives."""
    prefix = str(root) + os.sep
    file = record.file[len(prefix):] if record.file.startswith(prefix) else record.file
    return dataclasses.replace(record, file=file, detail=record.detail.replace(prefix, ""))


def summary(manifest: Manifest) -> str:
    lines = [f"shard set {manifest.directory}:"]
    for name, info in manifest.splits.items():
        lines.append(f"  {name:5s} {info.num_samples:6d} samples in {len(info.shards)} shards")
    counts = manifest.skipped_counts
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"
    lines.append(f"  skipped {sum(counts.values())}: {skipped}")
    if manifest.repaired:
        lines.append("  repaired (kept): " + ", ".join(f"{k} {n}" for k, n in manifest.repaired.items()))
    lines.append(f"  labels: {manifest.labels.describe()}")
    if manifest.unknown_labels:
        lines.append("  unknown labels (ignored): "
                     + ", ".join(f"{k!r} {n}" for k, n in manifest.unknown_labels.items()))
    if manifest.dropped_labels:
        lines.append(f"  labels dropped (fewer train rows than data.min_label_count): "
                     + ", ".join(f"{k!r} {n}" for k, n in manifest.dropped_labels.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- verify
