"""The figures of an evaluation report, as PNG files a person can open.

matplotlib's object API on a bare `Figure` (no pyplot): it renders with the Agg backend,
needs no display, keeps no global figure registry, and so works in headless jobs and in
worker processes alike. Each figure is rendered to memory and written atomically.

* `training_curves`: train and dev loss, dev metrics per evaluation (the best one marked)
  and the learning rate of each distinct schedule, from a run's `metrics.jsonl`.
* `per_label_f1`: F1 per genre at threshold 0.5 and at the tuned thresholds, with support.
* `pr_curves`: one precision-recall curve per genre, with average precision and the
  operating points of both protocols.
* `cooccurrence`: how often each pair of genres appears together in the true labels and
  in the predictions (each on its own colour scale), and the difference (pairs the model
  over- or under-predicts).
* `attention_maps`: for attention fusion, where the plot's words look on the poster: the
  text-to-poster attention averaged over heads and over the plot's real tokens, over
  the patch grid, laid over the poster.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes

DPI = 110


def _figure(width: float, height: float, **margins: float):
    """A bare Figure with fixed margins: an automatic layout engine measures every tick label
    with an extra draw, which costs more than the drawing itself on 23-genre grids."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(**margins)
    return fig


def _save(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def training_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss, dev metrics and learning rates against the optimizer step, as a PNG."""
    return _save(training_curves_figure(records, title), path)


def training_curves_figure(records: Sequence[dict[str, Any]], title: str = ""):
    """The Figure of `training_curves`: panels loss (train and dev), dev metrics, learning rate."""
    train = [r for r in records if r.get("type") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("type") == "eval"]
    fig = _figure(13, 3.8, left=0.05, right=0.99, bottom=0.13, top=0.86, wspace=0.22)
    loss_ax, dev_ax, lr_ax = fig.subplots(1, 3)
    if train:
        loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1.2, label="train")
    dev_loss = [(r["step"], r["loss"]) for r in evals if r.get("loss") is not None]
    if dev_loss:
        loss_ax.plot(*zip(*dev_loss, strict=True), color="tab:red", marker="o", ms=3, lw=1.2, label="dev (fused head)")
        loss_ax.legend(fontsize=7)
    loss_ax.set(title="loss", xlabel="optimizer step", ylabel="loss")
    curves = (
        ("f1_macro", "macro-F1 @0.5", "tab:red"),
        ("f1_micro", "micro-F1 @0.5", "tab:orange"),
        ("mean_average_precision", "mAP", "tab:green"),
        ("roc_auc_macro", "ROC-AUC", "tab:purple"),
    )
    for key, label, color in curves:
        points = [(r["step"], r[key]) for r in evals if r.get(key) is not None]
        if points:
            dev_ax.plot(*zip(*points, strict=True), marker="o", ms=3, lw=1.2, label=label, color=color)
    best = [r for r in evals if r.get("best")]
    if best:
        dev_ax.axvline(best[-1]["step"], color="grey", ls="--", lw=1, label=f"best (step {best[-1]['step']})")
    dev_ax.set(title="dev metrics", xlabel="optimizer step", ylim=(0, 1))
    if evals:
        dev_ax.legend(fontsize=7, loc="lower right")
    groups = learning_rate_curves(train)
    for names, points in groups.items():
        lr_ax.plot(*zip(*points, strict=True), lw=1.2, label=", ".join(names))
    lr_ax.set(title="learning rate", xlabel="optimizer step")
    if groups:
        lr_ax.legend(fontsize=7)
    if not train and not evals:
        loss_ax.text(0.5, 0.5, "no records in metrics.jsonl", ha="center", transform=loss_ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def learning_rate_curves(train: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[tuple[int, float]]]:
    """One curve per distinct schedule: parameter groups that share every learning rate (the
    decayed and undecayed halves of one rate) are one line named after all of them, not
    several lines drawn on top of each other."""
    names = sorted({name for r in train for name in (r.get("lr") or {})})
    curves: dict[tuple[tuple[int, float], ...], list[str]] = {}
    for name in names:
        points = tuple((r["step"], r["lr"][name]) for r in train if name in (r.get("lr") or {}))
        curves.setdefault(points, []).append(name)
    return {tuple(group): list(points) for points, group in curves.items()}


def per_label_f1(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Grouped bars: F1 per label at 0.5 and tuned (one bar per class, at the arg-max, for a
    multiclass report); the tick labels carry each label's support."""
    if "argmax" in report:
        return _per_class_f1(report["argmax"], path, title)
    fixed, tuned = report["threshold_0.5"], report["tuned_on_dev"]
    names = [g["label"] for g in fixed["per_label"]]
    x = np.arange(len(names))
    fig = _figure(13, 4.5, left=0.05, right=0.99, bottom=0.25, top=0.93)
    ax = fig.subplots()
    ax.bar(
        x - 0.2,
        [g["f1"] for g in fixed["per_label"]],
        0.4,
        label=f"threshold 0.5 (macro {fixed['f1_macro']:.3f})",
        color="tab:blue",
    )
    ax.bar(
        x + 0.2,
        [g["f1"] for g in tuned["per_label"]],
        0.4,
        label=f"tuned on dev (macro {tuned['f1_macro']:.3f})",
        color="tab:orange",
    )
    ax.set_xticks(
        x,
        [f"{n}\n{g['support']}" for n, g in zip(names, fixed["per_label"], strict=True)],
        fontsize=7,
        rotation=60,
        ha="right",
    )
    ax.set(ylabel="F1", ylim=(0, 1), title=title or "F1 per label (tick: label, support)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _per_class_f1(metrics: dict[str, Any], path: str | Path, title: str) -> Path:
    rows = metrics["per_label"]
    x = np.arange(len(rows))
    fig = _figure(max(6, 0.55 * len(rows) + 2), 4.5, left=0.07, right=0.99, bottom=0.25, top=0.93)
    ax = fig.subplots()
    ax.bar(
        x,
        [r["f1"] for r in rows],
        0.6,
        color="tab:blue",
        label=f"arg-max (macro {metrics['f1_macro']:.3f}, accuracy {metrics['accuracy']:.3f})",
    )
    ax.set_xticks(x, [f"{r['label']}\n{r['support']}" for r in rows], fontsize=7, rotation=60, ha="right")
    ax.set(ylabel="F1", ylim=(0, 1), title=title or "F1 per class (tick: class, support)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix of a multiclass report, rows (true class) normalised to 1, counts
    written in the cells: the figure a multiclass task has instead of label co-occurrence."""
    counts = np.asarray(matrix, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(5.0, 0.5 * len(names) + 2)
    fig = _figure(side + 1, side, left=0.2, right=0.98, bottom=0.2, top=0.92)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            ax.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if rates[row, column] > 0.5 else "black",
            )
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (share of each true class)")
    fig.colorbar(image, ax=ax, shrink=0.75, label="share of the true class")
    return _save(fig, path)


def pr_curves(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    path: str | Path,
    genres: Sequence[str],
    title: str = "",
) -> Path:
    """Small multiples: each label's precision-recall curve, AP, and the 0.5 / tuned points."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    columns = 6
    rows = int(np.ceil(len(genres) / columns))
    fig = _figure(2.6 * columns, 2.3 * rows, left=0.05, right=0.99, bottom=0.07, top=0.93, wspace=0.12, hspace=0.3)
    axes = np.asarray(fig.subplots(rows, columns, sharex=True, sharey=True)).ravel()
    for index, genre in enumerate(genres):
        ax = axes[index]
        truth, prob = y_true[:, index], y_prob[:, index]
        positives = int(truth.sum())
        if positives == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_title(f"{genre} (n=0)", fontsize=8)
            continue
        precision, recall, _ = precision_recall_curve(truth, prob)
        ax.plot(recall, precision, lw=1.2, color="tab:blue")
        ax.axhline(positives / len(truth), color="grey", lw=0.8, ls=":")  # a random ranking
        for cut, marker, color in ((0.5, "o", "tab:blue"), (thresholds[index], "s", "tab:orange")):
            predicted = prob >= cut
            if predicted.any():
                hits = (predicted & (truth == 1)).sum()
                ax.plot(hits / positives, hits / predicted.sum(), marker=marker, color=color, ms=4)
        ap = average_precision_score(truth, prob)
        ax.set_title(f"{genre} AP {ap:.2f} (n={positives})", fontsize=8)
    for ax in axes[len(genres) :]:
        ax.axis("off")
    for ax in axes[: len(genres)]:
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=7)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.suptitle(
        title or "precision-recall per label (circle: threshold 0.5, square: tuned; dotted: base rate)", fontsize=10
    )
    return _save(fig, path)


def cooccurrence(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, genres: Sequence[str], title: str = ""
) -> Path:
    """Label pair counts in the labels and in the predictions, and predicted minus true, as a PNG."""
    return _save(cooccurrence_figure(y_true, y_pred, genres, title), path)


def cooccurrence_figure(y_true: np.ndarray, y_pred: np.ndarray, genres: Sequence[str], title: str = ""):
    """The Figure of `cooccurrence`.

    Each count panel has its own colour scale, set by its largest pair count (off the
    diagonal): a model that over-predicts (every movie a Drama) would otherwise squash the
    true labels into one colour, and the diagonal (movies per genre, the per-genre figure's
    subject) would squash the pairs. The diagonal saturates; its counts are in the tick labels."""
    from matplotlib.colors import PowerNorm, TwoSlopeNorm

    true_counts = y_true.T.astype(np.int64) @ y_true.astype(np.int64)
    pred_counts = y_pred.T.astype(np.int64) @ y_pred.astype(np.int64)
    difference = pred_counts - true_counts
    fig = _figure(19, 6.6, left=0.07, right=0.99, bottom=0.22, top=0.9, wspace=0.38)
    axes = fig.subplots(1, 3)
    span = max(int(np.abs(difference).max()), 1)
    panels = (
        (true_counts, "true labels", "viridis", PowerNorm(gamma=0.5, vmin=0, vmax=pair_scale(true_counts))),
        (
            pred_counts,
            "predicted (tuned thresholds)",
            "viridis",
            PowerNorm(gamma=0.5, vmin=0, vmax=pair_scale(pred_counts)),
        ),
        (difference, "predicted - true", "RdBu_r", TwoSlopeNorm(vcenter=0, vmin=-span, vmax=span)),
    )
    ticks = np.arange(len(genres))
    for ax, (counts, label, cmap, panel_norm) in zip(axes, panels, strict=True):
        image = ax.imshow(counts, cmap=cmap, norm=panel_norm)
        ax.set_xticks(ticks, genres, rotation=90, fontsize=7)
        ax.set_yticks(ticks, [f"{genre} ({counts[i, i]})" for i, genre in enumerate(genres)], fontsize=7)
        ax.set_title(label)
        fig.colorbar(image, ax=ax, shrink=0.75, label="samples")
    fig.suptitle(title or "label co-occurrence (diagonal: samples per label, in the row labels)")
    return fig


def pair_scale(counts: np.ndarray) -> int:
    """The colour scale's top for a co-occurrence panel: its largest off-diagonal count."""
    off_diagonal = counts[~np.eye(len(counts), dtype=bool)]
    return max(int(off_diagonal.max()) if off_diagonal.size else 0, 1)


def attention_maps(
    posters: np.ndarray, weights: np.ndarray, captions: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Posters (N x 3 x S x S uint8) with their patch attention (N x g x g) laid over them."""
    count = len(posters)
    fig = _figure(3.2 * count, 3.9, left=0.02, right=0.98, bottom=0.03, top=0.78, wspace=0.25)
    axes = np.atleast_1d(fig.subplots(1, count))
    for ax, poster, grid, caption in zip(axes, posters, weights, captions, strict=True):
        side = poster.shape[-1]
        ax.imshow(np.transpose(poster, (1, 2, 0)))
        overlay = ax.imshow(
            grid, cmap="inferno", alpha=0.55, extent=(-0.5, side - 0.5, side - 0.5, -0.5), interpolation="nearest"
        )
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
        fig.colorbar(overlay, ax=ax, shrink=0.7)
    fig.suptitle(
        title or "where the plot looks on the poster (text-to-poster attention, mean over heads and words)", fontsize=9
    )
    return _save(fig, path)
