"""Real MM-IMDb plots for tests: a fixed train / held-out split and the trivial baseline to beat.

The CSV in ../shared/data holds 1,608 real dev movies (plot text + 23 genre columns). Text
models and the classical baseline are trained on four fifths of it and must beat "predict the
k most frequent genres" on the held-out fifth, which is what a model that learned nothing
from the text scores on imbalanced multi-label data.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from mmimdb_dist.data.sources.mmimdb.genres import GENRES

# The read-only real-data samples: ../shared/data beside the checkout (CI has it), or the folder
# MMIMDB_SHARED_DATA names. A clone without them skips the tests that read them, saying how to
# provide them, and everything else passes.
SHARED_DATA = Path(os.environ.get("MMIMDB_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
REAL_PLOTS_CSV = SHARED_DATA / "mmimdb_dev_plots_sample.csv"
REAL_SPLIT_JSON = SHARED_DATA / "mmimdb_split.json"


def shared_file(path: Path) -> Path:
    """`path` when it is there; otherwise skip the calling test with the way to provide it."""
    if not path.is_file():
        import pytest

        pytest.skip(
            f"{path.name} not found in {path.parent}: it is real MM-IMDb test material kept outside "
            "the project (../shared/data beside the checkout); set MMIMDB_SHARED_DATA to the folder "
            "holding it to run this test"
        )
    return path


HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass
class RealPlotsSplit:
    """Plots and 0/1 labels (columns in GENRES order) for the training part and the held-out part."""

    train_texts: list[str]
    train_labels: np.ndarray  # int64, N_train x 23
    test_texts: list[str]
    test_labels: np.ndarray  # int64, N_test x 23


def read_real_plots(path: Path = REAL_PLOTS_CSV) -> tuple[list[str], np.ndarray]:
    """All plots and labels, the genre columns reordered by name into GENRES order."""
    shared_file(path)
    csv.field_size_limit(1 << 30)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        missing = [g for g in GENRES if g not in header]
        if "plots" not in header or missing:
            raise ValueError(f"{path}: header lacks columns {['plots'] * ('plots' not in header) + missing}")
        text_col = header.index("plots")
        genre_cols = [header.index(g) for g in GENRES]
        texts: list[str] = []
        labels: list[list[int]] = []
        for row in reader:
            texts.append(row[text_col])
            labels.append([int(row[c]) for c in genre_cols])
    return texts, np.asarray(labels, dtype=np.int64)


def load_real_plots_split(
    path: Path = REAL_PLOTS_CSV, holdout_fraction: float = HOLDOUT_FRACTION, seed: int = SPLIT_SEED
) -> RealPlotsSplit:
    """The same held-out fifth on every call (fixed seed), so figures are comparable across models."""
    texts, labels = read_real_plots(path)
    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = round(len(texts) * holdout_fraction)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return RealPlotsSplit(
        train_texts=[texts[i] for i in train_idx],
        train_labels=labels[train_idx],
        test_texts=[texts[i] for i in test_idx],
        test_labels=labels[test_idx],
    )


def trivial_topk_baseline(train_labels: np.ndarray, test_labels: np.ndarray, ks: tuple[int, ...] = (1, 2, 3)) -> dict:
    """Micro and macro F1 of predicting the k most frequent training genres for every movie.

    Returns the best micro and best macro F1 over `ks` (each maximised separately, which makes
    the bar higher) and the figures for every k.
    """
    frequency_order = np.argsort(-np.asarray(train_labels).sum(axis=0), kind="stable")
    by_k: dict[int, dict[str, float]] = {}
    for k in ks:
        predictions = np.zeros_like(test_labels)
        predictions[:, frequency_order[:k]] = 1
        by_k[k] = {
            "micro_f1": float(f1_score(test_labels, predictions, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(test_labels, predictions, average="macro", zero_division=0)),
        }
    return {
        "micro_f1": max(v["micro_f1"] for v in by_k.values()),
        "macro_f1": max(v["macro_f1"] for v in by_k.values()),
        "by_k": by_k,
    }


def write_real_plots_raw(out_dir: Path, path: Path = REAL_PLOTS_CSV) -> Path:
    """The real plots as a raw MM-IMDb folder without posters (for `shard.require_poster: false`).

    train: the first four fifths of the training part; dev: its last fifth (the slice the
    in-process tests tune on); test: the held-out fifth of `load_real_plots_split`. Ids are
    made up (the sample carries none); genres are written by name, as in the real files.
    """
    import json

    data = load_real_plots_split(path)
    n_dev = len(data.train_texts) // 5
    parts = {
        "train": (data.train_texts[n_dev:], data.train_labels[n_dev:]),
        "dev": (data.train_texts[:n_dev], data.train_labels[:n_dev]),
        "test": (data.test_texts, data.test_labels),
    }
    root = out_dir / "mmimdb"
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    split: dict[str, list[str]] = {}
    number = 1
    for name, (texts, labels) in parts.items():
        split[name] = []
        for text, row in zip(texts, labels, strict=True):
            movie_id = f"{number:07d}"
            number += 1
            genres = [GENRES[i] for i in np.flatnonzero(row)]
            record = {"title": f"movie {movie_id}", "plot": [text], "genres": genres}
            (root / "dataset" / f"{movie_id}.json").write_text(json.dumps(record), encoding="utf-8")
            split[name].append(movie_id)
    (root / "split.json").write_text(json.dumps(split), encoding="utf-8")
    return root
