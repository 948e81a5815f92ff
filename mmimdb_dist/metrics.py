"""Metrics of both task kinds, threshold tuning on dev, and report writers.

All figures come from scikit-learn. Label names come with the data (`labels.LabelSet`); a
call without names numbers the columns.

Multi-label: two protocols are reported side by side because papers on MM-IMDb mix them: a
fixed 0.5 threshold, and thresholds tuned on dev then applied unchanged to the evaluated
split. Tuning on the evaluated split itself would report an optimistic figure, so
`evaluation_report` only takes thresholds as an input. Tuning is guarded against small dev
splits (`tune_thresholds`), and every report gives the mean number of labels predicted per
sample beside the true mean, so a protocol that predicts too many labels shows.

Multiclass: one protocol, `argmax` (the most probable class is the answer, no threshold):
accuracy, top-5 accuracy (with at least 5 classes), macro-, weighted- and micro-F1, one-vs-
rest mAP and ROC-AUC, per-class figures and the confusion matrix.

ROC-AUC and average precision are undefined for a label whose truth is all 0 (or all 1)
in the evaluated set, which happens for rare labels on small splits; such labels are left
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
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from .atomic import atomic_write_json, atomic_write_text

DEFAULT_THRESHOLD = 0.5
# Includes 0.5, so a tuned threshold never does worse on dev than the fixed one.
THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
# Tuned thresholds stay inside these bounds: 0.01 on a rare label means "every sample".
THRESHOLD_BOUNDS = (0.05, 0.95)
# A label needs this many dev positives for a threshold of its own (else it shares one).
MIN_DEV_POSITIVES = 20


def _names(names: Sequence[str] | None, width: int) -> Sequence[str]:
    return names if names is not None else [str(i) for i in range(width)]


def _check_inputs(
    y_true: Any, y_prob: Any, genres: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, Sequence[str]]:
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape}: expected the same N x G shape")
    genres = _names(genres, y_true.shape[1])
    if y_true.shape[1] != len(genres):
        raise ValueError(f"{y_true.shape[1]} label columns but {len(genres)} label names")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true: expected 0/1 labels")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob: contains NaN or infinite values (did the model diverge?)")
    return y_true.astype(np.int64), y_prob, genres


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


def compute_metrics(
    y_true: Any,
    y_prob: Any,
    thresholds: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
    genres: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All multi-label metrics of one split under one set of thresholds (a label is predicted
    when p >= t)."""
    y_true, y_prob, genres = _check_inputs(y_true, y_prob, genres)
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
        "roc_auc_macro": (
            float(roc_auc_score(y_true[:, defined], y_prob[:, defined], average="macro")) if defined.size else None
        ),
        "roc_auc_labels_skipped": int(len(genres) - defined.size),
        "mean_average_precision": (
            float(average_precision_score(y_true[:, with_positives], y_prob[:, with_positives], average="macro"))
            if with_positives.size
            else None
        ),
        "average_precision_labels_skipped": int(len(genres) - with_positives.size),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        # Beside each other, these show a protocol that predicts too many labels per sample.
        "labels_per_sample_true": float(y_true.sum(axis=1).mean()),
        "labels_per_sample_predicted": float(y_pred.sum(axis=1).mean()),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "per_label": [
            {
                "label": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "threshold": float(cuts[i]),
            }
            for i, name in enumerate(genres)
        ],
    }


def _best_threshold(true_pos: np.ndarray, predicted: np.ndarray, positives: int, grid: np.ndarray) -> float:
    """The grid value of highest F1 (ties: the one closest to 0.5, the least extreme)."""
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted positives + actual positives)
    f1 = 2 * true_pos / np.maximum(predicted + positives, 1)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(grid[best[np.argmin(np.abs(grid[best] - DEFAULT_THRESHOLD))]])


def tune_thresholds(
    y_true_dev: Any,
    y_prob_dev: Any,
    grid: Sequence[float] | np.ndarray = THRESHOLD_GRID,
    min_positives: int = MIN_DEV_POSITIVES,
) -> np.ndarray:
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


def compute_multiclass_metrics(y_true: Any, y_prob: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of one split of a multiclass task: `y_true` one-hot, `y_prob` the softmax."""
    y_true, y_prob, names = _check_inputs(y_true, y_prob, names)
    if (y_true.sum(axis=1) != 1).any():
        raise ValueError("y_true: a multiclass task expects exactly one label per sample")
    classes = np.arange(len(names))
    truth, predicted = y_true.argmax(axis=1), y_prob.argmax(axis=1)
    zero = {"zero_division": 0, "labels": classes}
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, average=None, **zero)
    defined = _defined_columns(y_true)
    with_positives = np.flatnonzero(y_true.sum(axis=0) > 0)
    top = min(5, len(names))
    top_k = np.argsort(-y_prob, axis=1, kind="stable")[:, :top]
    return {
        "num_samples": int(y_true.shape[0]),
        "accuracy": float(accuracy_score(truth, predicted)),
        # Undefined below 5 classes (it would be 1.0 by construction).
        "top5_accuracy": float((top_k == truth[:, None]).any(axis=1).mean()) if len(names) >= 5 else None,
        "f1_macro": float(f1_score(truth, predicted, average="macro", **zero)),
        "f1_weighted": float(f1_score(truth, predicted, average="weighted", **zero)),
        "f1_micro": float(f1_score(truth, predicted, average="micro", **zero)),
        "precision_macro": float(precision_score(truth, predicted, average="macro", **zero)),
        "recall_macro": float(recall_score(truth, predicted, average="macro", **zero)),
        "roc_auc_macro": (
            float(roc_auc_score(y_true[:, defined], y_prob[:, defined], average="macro")) if defined.size else None
        ),
        "roc_auc_labels_skipped": int(len(names) - defined.size),
        "mean_average_precision": (
            float(average_precision_score(y_true[:, with_positives], y_prob[:, with_positives], average="macro"))
            if with_positives.size
            else None
        ),
        "average_precision_labels_skipped": int(len(names) - with_positives.size),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        "per_label": [
            {
                "label": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        ],
    }


def evaluation_report(
    y_true: Any,
    y_prob: Any,
    dev_thresholds: Sequence[float] | np.ndarray | None,
    genres: Sequence[str] | None = None,
    task: str = "multilabel",
) -> dict[str, Any]:
    """The protocols of one split: for a multi-label task both (`dev_thresholds` must come from
    `tune_thresholds` on dev); for a multiclass one the arg-max (no thresholds)."""
    if task == "multiclass":
        return {"argmax": compute_multiclass_metrics(y_true, y_prob, genres), "thresholds": None}
    genres = _names(genres, np.asarray(y_true).shape[-1])
    thresholds = _thresholds_array(dev_thresholds if dev_thresholds is not None else DEFAULT_THRESHOLD, len(genres))
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


PER_LABEL_COLUMNS = (
    "split",
    "label",
    "support",
    "threshold_tuned",
    "precision_at_0.5",
    "recall_at_0.5",
    "f1_at_0.5",
    "precision_tuned",
    "recall_tuned",
    "f1_tuned",
)
MULTICLASS_COLUMNS = ("split", "label", "support", "precision", "recall", "f1")


def write_per_label_csv(path: str | Path, reports: Mapping[str, Mapping[str, Any]]) -> Path:
    """One row per (split, label) from `evaluation_report`s keyed by split name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    multiclass = any("argmax" in report for report in reports.values())
    writer.writerow(MULTICLASS_COLUMNS if multiclass else PER_LABEL_COLUMNS)
    for split, report in reports.items():
        if multiclass:
            for row in report["argmax"]["per_label"]:
                writer.writerow(
                    [split, row["label"], row["support"], *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1"))]
                )
            continue
        fixed, tuned = report["threshold_0.5"]["per_label"], report["tuned_on_dev"]["per_label"]
        for at_half, at_tuned in zip(fixed, tuned, strict=True):
            writer.writerow(
                [
                    split,
                    at_half["label"],
                    at_half["support"],
                    f"{at_tuned['threshold']:.2f}",
                    *(f"{at_half[k]:.4f}" for k in ("precision", "recall", "f1")),
                    *(f"{at_tuned[k]:.4f}" for k in ("precision", "recall", "f1")),
                ]
            )
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _figure(value: float | None, width: int) -> str:
    return f"{value:{width}.4f}" if value is not None else f"{'n/a':>{width}}"


def format_summary(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """A few lines for the terminal: per split, micro/macro-F1 under both protocols of a
    multi-label task, or accuracy and macro-F1 of a multiclass one."""
    if any("argmax" in report for report in reports.values()):
        lines = [f"{'split':<6} {'accuracy':>9} {'top-5':>7} {'macro-F1':>9} {'weighted-F1':>12} {'mAP':>7}"]
        for split, report in reports.items():
            m = report["argmax"]
            lines.append(
                f"{split:<6} {m['accuracy']:9.4f} {_figure(m['top5_accuracy'], 7)} {m['f1_macro']:9.4f} "
                f"{m['f1_weighted']:12.4f} {_figure(m['mean_average_precision'], 7)}"
            )
        return "\n".join(lines)
    lines = [f"{'split':<6} {'protocol':<14} {'micro-F1':>9} {'macro-F1':>9} {'mAP':>7} {'labels/sample (true)':>21}"]
    for split, report in reports.items():
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            m = report[protocol]
            per_sample = f"{m['labels_per_sample_predicted']:.2f} ({m['labels_per_sample_true']:.2f})"
            lines.append(
                f"{split:<6} {protocol:<14} {m['f1_micro']:9.4f} {m['f1_macro']:9.4f} "
                f"{_figure(m['mean_average_precision'], 7)} {per_sample:>21}"
            )
    return "\n".join(lines)
