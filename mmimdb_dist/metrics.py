"""Multi-label metrics for the 23 genres, threshold tuning on dev, and report writers.

All figures come from scikit-learn. Two protocols are reported side by side because papers
on MM-IMDb mix them: a fixed 0.5 threshold, and thresholds tuned on dev then applied
unchanged to the evaluated split. Tuning on the evaluated split itself would report an
optimistic figure, so `evaluation_report` only takes thresholds as an input. Tuning is
guarded against small dev splits (`tune_thresholds`), and every report gives the mean
number of genres predicted per movie beside the true mean, so a protocol that predicts
too many genres shows.

ROC-AUC and average precision are undefined for a genre whose labels are all 0 (or all 1)
in the evaluated set, which happens for rare genres on small splits; such genres are left
out of the macro averages and the number left out is reported, never silently dropped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from .atomic import atomic_write_json, atomic_write_text
from .genres import GENRES

DEFAULT_THRESHOLD = 0.5
# Includes 0.5, so a tuned threshold never does worse on dev than the fixed one.
THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
# Tuned thresholds stay inside these bounds: 0.01 on a rare genre means "every movie".
THRESHOLD_BOUNDS = (0.05, 0.95)
# A genre needs this many dev positives for a threshold of its own (else it shares one).
MIN_DEV_POSITIVES = 20


def _check_inputs(y_true: Any, y_prob: Any, genres: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape}: expected the same N x G shape")
    if y_true.shape[1] != len(genres):
        raise ValueError(f"{y_true.shape[1]} label columns but {len(genres)} genre names")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true: expected 0/1 labels")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob: contains NaN or infinite values (did the model diverge?)")
    return y_true.astype(np.int64), y_prob


def _thresholds_array(thresholds: float | Sequence[float] | np.ndarray, num_genres: int) -> np.ndarray:
    array = np.asarray(thresholds, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(num_genres, float(array))
    if array.shape != (num_genres,):
        raise ValueError(f"thresholds: expected a number or {num_genres} values, got shape {array.shape}")
    return array


def _defined_columns(y_true: np.ndarray) -> np.ndarray:
    """Genres whose labels take both values, the ones ROC-AUC is defined for."""
    positives = y_true.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < y_true.shape[0]))


def compute_metrics(y_true: Any, y_prob: Any, thresholds: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
                    genres: Sequence[str] = GENRES) -> dict[str, Any]:
    """All metrics of one split under one set of thresholds (a genre is predicted when p >= t)."""
    y_true, y_prob = _check_inputs(y_true, y_prob, genres)
    cuts = _thresholds_array(thresholds, len(genres))
    y_pred = (y_prob >= cuts).astype(np.int64)
    zero = {"zero_division": 0}

    defined = _defined_columns(y_true)
    with_positives = np.flatnonzero(y_true.sum(axis=0) > 0)
    flat_true = y_true.ravel()
    micro_auc_defined = 0 < flat_true.sum() < flat_true.size
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, **zero)

    return {
        "num_samples": int(y_true.shape[0]),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", **zero)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", **zero)),
        "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", **zero)),
        "f1_samples": float(f1_score(y_true, y_pred, average="samples", **zero)),
        "precision_micro": float(precision_score(y_true, y_pred, average="micro", **zero)),
        "precision_macro": float(precision_score(y_true, y_pred, average="macro", **zero)),
        "recall_micro": float(recall_score(y_true, y_pred, average="micro", **zero)),
        "recall_macro": float(recall_score(y_true, y_pred, average="macro", **zero)),
        "roc_auc_micro": float(roc_auc_score(flat_true, y_prob.ravel())) if micro_auc_defined else None,
        "roc_auc_macro": (float(roc_auc_score(y_true[:, defined], y_prob[:, defined], average="macro"))
                          if defined.size else None),
        "roc_auc_genres_skipped": int(len(genres) - defined.size),
        "mean_average_precision": (float(average_precision_score(y_true[:, with_positives],
                                                                 y_prob[:, with_positives], average="macro"))
                                   if with_positives.size else None),
        "average_precision_genres_skipped": int(len(genres) - with_positives.size),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        # Beside each other, these show a protocol that predicts too many genres per movie.
        "genres_per_movie_true": float(y_true.sum(axis=1).mean()),
        "genres_per_movie_predicted": float(y_pred.sum(axis=1).mean()),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "per_genre": [
            {"genre": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i]), "threshold": float(cuts[i])}
            for i, name in enumerate(genres)
        ],
    }


def _best_threshold(true_pos: np.ndarray, predicted: np.ndarray, positives: int,
                    grid: np.ndarray) -> float:
    """The grid value of highest F1 (ties: the one closest to 0.5, the least extreme)."""
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted positives + actual positives)
    f1 = 2 * true_pos / np.maximum(predicted + positives, 1)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(grid[best[np.argmin(np.abs(grid[best] - DEFAULT_THRESHOLD))]])


def tune_thresholds(y_true_dev: Any, y_prob_dev: Any, grid: Sequence[float] | np.ndarray = THRESHOLD_GRID,
                    min_positives: int = MIN_DEV_POSITIVES) -> np.ndarray:
    """Thresholds tuned on dev that cannot degenerate on a small dev split.

    A genre with at least `min_positives` dev positives gets the threshold of its best dev
    F1. The others share one threshold, the one of best micro-F1 over all genres: tuned on
    3-10 positives, a per-genre threshold is noise, and the F1 of so few positives is
    often maximised by predicting the genre for every movie. Thresholds stay inside
    [`THRESHOLD_BOUNDS`] for the same reason.
    """
    y_true = np.asarray(y_true_dev).astype(bool)
    y_prob = np.asarray(y_prob_dev, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape}: expected the same N x G shape")
    grid = np.asarray(grid, dtype=np.float64)
    grid = grid[(grid >= THRESHOLD_BOUNDS[0]) & (grid <= THRESHOLD_BOUNDS[1])]
    predicted = y_prob[:, :, None] >= grid[None, None, :]  # N x G x T
    true_pos = (predicted & y_true[:, :, None]).sum(axis=0)  # G x T
    predicted_pos = predicted.sum(axis=0)  # G x T
    positives = y_true.sum(axis=0)  # G
    if positives.sum() == 0:
        return np.full(y_true.shape[1], DEFAULT_THRESHOLD)
    shared = _best_threshold(true_pos.sum(axis=0), predicted_pos.sum(axis=0), int(positives.sum()), grid)
    thresholds = np.full(y_true.shape[1], shared)
    for genre in np.flatnonzero(positives >= max(1, min_positives)):
        thresholds[genre] = _best_threshold(true_pos[genre], predicted_pos[genre], int(positives[genre]), grid)
    return thresholds


def evaluation_report(y_true: Any, y_prob: Any, dev_thresholds: Sequence[float] | np.ndarray,
                      genres: Sequence[str] = GENRES) -> dict[str, Any]:
    """Both protocols for one split; `dev_thresholds` must come from `tune_thresholds` on dev."""
    thresholds = _thresholds_array(dev_thresholds, len(genres))
    return {
        "threshold_0.5": compute_metrics(y_true, y_prob, DEFAULT_THRESHOLD, genres),
        "tuned_on_dev": compute_metrics(y_true, y_prob, thresholds, genres),
        "thresholds": [float(t) for t in thresholds],
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; write them as null rather than produce an unreadable file."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    atomic_write_json(path, _json_safe(metrics))
    return Path(path)


PER_GENRE_COLUMNS = ("split", "genre", "support", "threshold_tuned", "precision_at_0.5", "recall_at_0.5",
                     "f1_at_0.5", "precision_tuned", "recall_tuned", "f1_tuned")


def write_per_genre_csv(path: str | Path, reports: Mapping[str, Mapping[str, Any]]) -> Path:
    """One row per (split, genre) from `evaluation_report`s keyed by split name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_GENRE_COLUMNS)
    for split, report in reports.items():
        fixed, tuned = report["threshold_0.5"]["per_genre"], report["tuned_on_dev"]["per_genre"]
        for at_half, at_tuned in zip(fixed, tuned):
            writer.writerow([split, at_half["genre"], at_half["support"], f"{at_tuned['threshold']:.2f}",
                             *(f"{at_half[k]:.4f}" for k in ("precision", "recall", "f1")),
                             *(f"{at_tuned[k]:.4f}" for k in ("precision", "recall", "f1"))])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def format_summary(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """A few lines for the terminal: micro/macro F1 under both protocols, per split."""
    lines = [f"{'split':<6} {'protocol':<14} {'micro-F1':>9} {'macro-F1':>9} {'mAP':>7} {'genres/movie (true)':>20}"]
    for split, report in reports.items():
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            m = report[protocol]
            average_precision = m["mean_average_precision"]
            ap_text = f"{average_precision:7.4f}" if average_precision is not None else f"{'n/a':>7}"
            per_movie = f"{m['genres_per_movie_predicted']:.2f} ({m['genres_per_movie_true']:.2f})"
            lines.append(f"{split:<6} {protocol:<14} {m['f1_micro']:9.4f} {m['f1_macro']:9.4f} {ap_text} "
                         f"{per_movie:>20}")
    return "\n".join(lines)
