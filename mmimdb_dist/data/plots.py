"""The plots and labels of a dataset, without its posters, from a shard set or a raw folder.

What the TF-IDF baseline trains on, what the BiLSTM's word vocabulary is built from, and
what `inspect` counts words in. A damaged shard is an error here (naming the file and the
sample), not a skip: a baseline or a vocabulary must see every sample the manifest lists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..progress import progress as progress_bar
from .codecs import Plot, decode_plot
from .manifest import SPLITS, Manifest, load_manifest
from .sources.common import SkipReport
from .sources.mmimdb.raw import MMIMDB_LABELS, iter_movies
from .tario import iter_samples, skip_rest_of_tar

logger = logging.getLogger(__name__)


@dataclass
class TextSplit:
    """Plots and labels (columns in the label set's order) of one split."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int64, N x number of labels

    def __len__(self) -> int:
        return len(self.texts)


def _text_split(ids: list[str], texts: list[str], labels: list[list[int]], num_labels: int) -> TextSplit:
    array = np.asarray(labels, dtype=np.int64).reshape(len(labels), num_labels)
    return TextSplit(ids=ids, texts=texts, labels=array)


def iter_plots(shard_paths: list[Path], strict: bool = True, num_labels: int | None = None) -> Iterator[Plot]:
    """The plots of every sample in `shard_paths`, in shard order (posters not decoded).

    `strict=False` skips what the loaders skip (a damaged sample, a truncated shard's tail)
    with a warning, for tools that report on a set rather than train on it (`inspect`).
    """
    for path in shard_paths:
        for raw in iter_samples(path, on_error=None if strict else skip_rest_of_tar):
            try:
                yield decode_plot(raw, num_labels)
            except DataError as exc:
                if strict:
                    raise
                logger.warning("skipped: %s", exc)


def read_shard_split_texts(manifest: Manifest, split: str) -> TextSplit:
    """Plot text and labels of every sample of `split`, in shard order (posters not decoded)."""
    num_labels = len(manifest.labels)
    plots = list(iter_plots(manifest.shard_paths(split), num_labels=num_labels))
    return _text_split([p.id for p in plots], [p.text for p in plots], [p.labels for p in plots], num_labels)


def read_shard_texts(shards_dir: str | Path, progress: bool = True) -> dict[str, TextSplit]:
    """Texts of all three splits of a shard set, checked against its manifest's counts."""
    manifest = load_manifest(shards_dir)
    splits: dict[str, TextSplit] = {}
    for split in progress_bar(SPLITS, desc="reading shard texts", unit="split", disable=not progress):
        data = read_shard_split_texts(manifest, split)
        expected = manifest.split(split).num_samples
        if len(data) != expected:
            raise DataError(
                f"{manifest.path}: splits.{split}.num_samples says {expected} samples, "
                f"the shards hold {len(data)} (re-run `mmimdb-dist shard --verify`)"
            )
        splits[split] = data
    return splits


def read_raw_texts(
    raw_dir: str | Path, plot_policy: str = "longest", strict: bool = False, progress: bool = True
) -> tuple[dict[str, TextSplit], SkipReport]:
    """Texts of all three splits straight from a raw MM-IMDb folder, plus the reader's SkipReport.

    Movies are kept or skipped by the same rules as when sharding, so both sources give the
    same samples.
    """
    report = SkipReport()
    rows: dict[str, tuple[list[str], list[str], list[list[int]]]] = {s: ([], [], []) for s in SPLITS}
    for movie in iter_movies(raw_dir, SPLITS, plot_policy, strict, report, progress):
        ids, texts, labels = rows[movie.split]
        ids.append(movie.id)
        texts.append(movie.plot)
        labels.append(movie.labels)
    if report.total:
        logger.warning("%s: %s", raw_dir, report.summary())
    return {split: _text_split(*rows[split], len(MMIMDB_LABELS)) for split in SPLITS}, report
