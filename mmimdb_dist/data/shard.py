"""A source (raw MM-IMDb, or a table: `data.source`) -> WebDataset tar shards + `manifest.json`.

Why reshard at all: training reads 25,959 small JSON files and full-size posters otherwise,
which is slow on network filesystems and re-decodes every poster every epoch. Shards are
few large sequential files with posters already resized, which is what many ranks and
loader workers can stream.

Each source plans its shards (`data/sources/`: which records go to which shard, in a seeded
order, and the function a worker runs to write one); this module runs the plan over worker
processes and writes the manifest. Reproducibility is part of the contract: the same source
data and settings give the same bytes, whatever the worker count or the order of the input
(seeded orders, tar headers with fixed mtime/owner/mode, members in a fixed order, JPEG
encoding with fixed settings). A shard's sha256 in the manifest then identifies its content.

Crash safety: every file is written atomically; the old manifest is removed before any
shard is rewritten and the new one is written last, so a folder with a manifest is always
a consistent set, and a folder without one is an interrupted run to be re-run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import DataError
from ..outputs import claim_output_dir
from ..progress import progress as progress_bar
from ..run.layout import CONFIG_FILE
from ..schema import ExperimentConfig, save_config
from .manifest import MANIFEST_NAME, SHARD_NAME, SPLITS, Manifest, SkippedMovie, SplitInfo, load_manifest
from .sources.common import ShardPlan, ShardResult, writing
from .sources.mmimdb.raw import read_split
from .sources.mmimdb.shards import mmimdb_plan
from .sources.table import SPLIT_FILE, spool_file, table_plan

log = logging.getLogger(__name__)

# atomic.py's temporary files: ".<final name>.<random>.tmp"
TEMP_FILE = re.compile(r"\..+\.tmp")


# --------------------------------------------------------------------------- the whole set


def _clean_stale_files(out_dir: Path, keep: set[str]) -> None:
    """Remove temp files of an interrupted run and shards that the new set does not have."""
    for path in out_dir.iterdir():
        stale = bool(SHARD_NAME.fullmatch(path.name) or TEMP_FILE.fullmatch(path.name)) and path.name not in keep
        if path.is_file() and stale:
            log.info("removing stale %s", path)
            path.unlink()


def _run_tasks(tasks: list[Any], write: Callable[[Any], ShardResult], workers: int, total: int) -> list[ShardResult]:

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


def owns_shard_file(name: str) -> bool:
    """The names a shard set's folder holds (what `shard --out` may find there and replace)."""
    return bool(SHARD_NAME.fullmatch(name) or TEMP_FILE.fullmatch(name)) or name in (
        MANIFEST_NAME,
        CONFIG_FILE,
        SPLIT_FILE,
    )


def is_shard_set(folder: Path) -> bool:
    """Whether `folder` holds a shard set by its content: a manifest that reads as one."""
    try:
        load_manifest(folder)
    except DataError:
        return False
    return True


def shard_dataset(cfg: ExperimentConfig) -> Manifest:
    """Reshard `cfg.data.raw_dir` into `cfg.shard.out_dir`; returns the manifest written.

    The output folder must be new, empty or a shard set (anything else is refused untouched),
    and is locked for the whole run (see mmimdb_dist/outputs.py)."""

    out_dir = Path(cfg.shard.out_dir)
    if cfg.data.source == "mmimdb":
        read_split(cfg.data.raw_dir)  # fail on a bad split.json before touching the output folder
    with claim_output_dir(out_dir, "--out", "shard", "a shard set", owns_shard_file, is_shard_set):
        return _shard_into(cfg, out_dir)


def _shard_into(cfg: ExperimentConfig, out_dir: Path) -> Manifest:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest until the set is consistent
    with spool_file(out_dir) as spool:
        plan = table_plan(cfg, out_dir, spool) if cfg.data.source == "table" else mmimdb_plan(cfg, out_dir)
        return _write_shards(cfg, out_dir, plan, keep={spool.name})


def _write_shards(cfg: ExperimentConfig, out_dir: Path, plan: ShardPlan, keep: set[str]) -> Manifest:
    tasks, report, root = plan.tasks, plan.report, plan.root
    sizes: Counter[str] = Counter()
    for task in tasks:
        sizes[task.split] += task.size
    for split in ("train", "dev"):
        if not sizes[split]:
            log.warning(
                "split %r has no usable sample: training needs train and dev samples "
                "(a run on this set will stop with an error before its first step)",
                split,
            )
    _clean_stale_files(out_dir, keep={task.name for task in tasks} | keep)

    workers = cfg.shard.workers or os.cpu_count() or 1
    total = sum(task.size for task in tasks)
    results = {r.shard.name: r for r in _run_tasks(tasks, plan.write, min(workers, len(tasks)), total)}

    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        shard_results = [results[t.name] for t in tasks if t.split == split]
        label_counts = [sum(col) for col in zip(*(r.label_counts for r in shard_results), strict=True)]
        splits[split] = SplitInfo(
            num_samples=sum(r.shard.num_samples for r in shard_results),
            shards=[r.shard for r in shard_results],
            label_counts=label_counts,
        )
        for r in shard_results:
            for record in r.skipped:
                report.add(record)
            if r.posterless:
                report.repaired["kept_without_poster"] += r.posterless
            report.unknown_labels.update(r.unknown_labels)

    split_order = {name: i for i, name in enumerate(SPLITS)}
    skipped = sorted(
        (_relative_to_raw(m, root) for m in report.movies),
        key=lambda m: (split_order.get(m.split, -1), m.id, m.reason, m.file),
    )
    manifest = Manifest(
        directory=out_dir,
        labels=plan.labels,
        settings=plan.settings,
        splits=splits,
        skipped_counts=dict(sorted(report.counts.items())),
        skipped=skipped,
        repaired=dict(sorted(report.repaired.items())),
        unknown_labels=dict(sorted(report.unknown_labels.items())),
        dropped_labels=dict(sorted(plan.dropped_labels.items())),
    )
    with writing(out_dir / CONFIG_FILE):
        save_config(cfg, out_dir / CONFIG_FILE)
    with writing(out_dir / MANIFEST_NAME):
        atomic_write_json(out_dir / MANIFEST_NAME, manifest.to_dict())
    return manifest


def _relative_to_raw(record: SkippedMovie, root: Path) -> SkippedMovie:
    """Paths relative to the raw folder, so the manifest does not depend on where it lives."""
    prefix = str(root) + os.sep
    file = record.file[len(prefix) :] if record.file.startswith(prefix) else record.file
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
        lines.append(
            "  unknown labels (ignored): " + ", ".join(f"{k!r} {n}" for k, n in manifest.unknown_labels.items())
        )
    if manifest.dropped_labels:
        lines.append(
            "  labels dropped (fewer train rows than data.min_label_count): "
            + ", ".join(f"{k!r} {n}" for k, n in manifest.dropped_labels.items())
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- verify
