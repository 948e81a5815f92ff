"""Rank finished runs side by side: `model_comparison.csv` and a Markdown table.

A run folder is either a trained run (`final_metrics.json`, written by the trainer for its
best checkpoint, plus `config.yaml` naming the model) or a TF-IDF baseline folder
(`metrics.json` from `mmimdb-dist baseline`). Both hold the same evaluation reports, so
every row is read from the same keys: test-split metrics (or dev) under both protocols,
threshold 0.5 and per-genre thresholds tuned on dev, and the cost of training
(parameters, seconds, samples per second).

Rows are flat dicts so they go straight into a CSV: a metric that depends on the
threshold appears twice, `f1_macro@0.5` and `f1_macro@tuned`; ROC-AUC and mAP are
computed from the probabilities alone and appear once. Ranking by a threshold-dependent
metric uses the protocol asked for (`threshold_0.5` by default: the literature's fixed
threshold, which needs no tuning split).

A multiclass run (a label set of the `multiclass` kind) has no thresholds: its report is the
arg-max's, which fills both protocol columns of a threshold-dependent metric, and its rows
add `accuracy` and `top5_accuracy`. Runs of different task kinds are not ranked together.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text
from ..errors import CompareError
from ..run.layout import CONFIG_FILE, FINAL_METRICS

TRAINED_RESULTS = FINAL_METRICS
BASELINE_RESULTS = "metrics.json"
CSV_NAME = "model_comparison.csv"
MARKDOWN_NAME = "model_comparison.md"

PROTOCOLS = {"threshold_0.5": "0.5", "tuned_on_dev": "tuned"}
# Threshold-dependent metrics (one column per protocol), then threshold-free ones.
THRESHOLD_METRICS = (
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "f1_samples",
    "subset_accuracy",
    "labels_per_sample_predicted",
)
RANKING_METRICS = ("roc_auc_macro", "mean_average_precision", "labels_per_sample_true", "accuracy", "top5_accuracy")
COST_COLUMNS = ("num_parameters", "train_seconds", "train_samples_per_s")
LOWER_IS_BETTER = {"num_parameters", "train_seconds"}
ALIASES = {
    "roc_auc": "roc_auc_macro",
    "auc": "roc_auc_macro",
    "map": "mean_average_precision",
    "mAP": "mean_average_precision",
    "samples_per_s": "train_samples_per_s",
    "parameters": "num_parameters",
    "params": "num_parameters",
}

CSV_COLUMNS = (
    "rank",
    "run",
    "model",
    "split",
    "task",
    *(f"{m}@{p}" for p in PROTOCOLS.values() for m in THRESHOLD_METRICS),
    *RANKING_METRICS,
    *COST_COLUMNS,
    "path",
)

# (row key, Markdown header, kind) in table order.
_TABLE = (
    ("rank", "#", "int"),
    ("run", "run", "text"),
    ("model", "model", "text"),
    ("f1_micro@0.5", "micro-F1 @0.5", "metric"),
    ("f1_macro@0.5", "macro-F1 @0.5", "metric"),
    ("f1_weighted@0.5", "weighted-F1 @0.5", "metric"),
    ("f1_samples@0.5", "samples-F1 @0.5", "metric"),
    ("f1_micro@tuned", "micro-F1 tuned", "metric"),
    ("f1_macro@tuned", "macro-F1 tuned", "metric"),
    ("f1_weighted@tuned", "weighted-F1 tuned", "metric"),
    ("f1_samples@tuned", "samples-F1 tuned", "metric"),
    ("roc_auc_macro", "ROC-AUC", "metric"),
    ("mean_average_precision", "mAP", "metric"),
    ("subset_accuracy@0.5", "subset acc. @0.5", "metric"),
    ("subset_accuracy@tuned", "subset acc. tuned", "metric"),
    ("labels_per_sample_predicted@0.5", "labels/sample @0.5", "ratio"),
    ("labels_per_sample_predicted@tuned", "labels/sample tuned", "ratio"),
    ("labels_per_sample_true", "labels/sample true", "ratio"),
    ("num_parameters", "parameters", "count"),
    ("train_seconds", "train time", "seconds"),
    ("train_samples_per_s", "samples/s", "rate"),
)
_MULTICLASS_TABLE = (
    ("rank", "#", "int"),
    ("run", "run", "text"),
    ("model", "model", "text"),
    ("accuracy", "accuracy", "metric"),
    ("top5_accuracy", "top-5 acc.", "metric"),
    ("f1_macro@0.5", "macro-F1", "metric"),
    ("f1_weighted@0.5", "weighted-F1", "metric"),
    ("roc_auc_macro", "ROC-AUC", "metric"),
    ("mean_average_precision", "mAP", "metric"),
    ("num_parameters", "parameters", "count"),
    ("train_seconds", "train time", "seconds"),
    ("train_samples_per_s", "samples/s", "rate"),
)


def sort_key_name(sort_by: str, protocol: str = "threshold_0.5") -> str:
    """The row key that `sort_by` ranks on (`f1_macro` -> `f1_macro@0.5` under threshold_0.5)."""
    if protocol not in PROTOCOLS:
        raise CompareError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    name = ALIASES.get(sort_by, sort_by)
    if name in THRESHOLD_METRICS:
        return f"{name}@{PROTOCOLS[protocol]}"
    valid = {f"{m}@{p}" for m in THRESHOLD_METRICS for p in PROTOCOLS.values()}
    if name in valid or name in RANKING_METRICS or name in COST_COLUMNS:
        return name
    choices = ", ".join((*THRESHOLD_METRICS, *RANKING_METRICS, *COST_COLUMNS))
    raise CompareError(f"--sort-by {sort_by!r}: expected one of {choices} (or a threshold metric with @0.5 / @tuned)")


def _results_file(run_dir: Path) -> Path | None:
    for name in (TRAINED_RESULTS, BASELINE_RESULTS):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders as given; a folder without results stands for its finished sub-folders."""
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise CompareError(
                f"{path}: not a folder (expected a run folder with {TRAINED_RESULTS} "
                f"or a baseline folder with {BASELINE_RESULTS})"
            )
        if _results_file(path) is not None:
            children = [path]
        else:
            children = sorted(child for child in path.iterdir() if child.is_dir() and _results_file(child))
        if not children:
            raise CompareError(
                f"{path}: no {TRAINED_RESULTS} (an unfinished or failed run?) and no "
                f"{BASELINE_RESULTS}, here or in its sub-folders"
            )
        for child in children:  # a run named twice (a folder and its parent) is one row
            if child.resolve() not in seen:
                seen.add(child.resolve())
                found.append(child)
    return found


def _model_name(run_dir: Path, results: dict[str, Any]) -> str:
    if isinstance(results.get("model"), str):  # the baseline names itself
        return results["model"]
    config = run_dir / CONFIG_FILE
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        return str(data["model"]["name"])
    except (OSError, KeyError, TypeError, ValueError):
        return "?"


def read_run(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """One unranked row for a finished run or baseline folder."""
    run_dir = Path(run_dir)
    path = _results_file(run_dir)
    if path is None:
        raise CompareError(f"{run_dir}: no {TRAINED_RESULTS} or {BASELINE_RESULTS} (not a finished run)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: not readable JSON ({exc})") from None
    report = results.get(split) if isinstance(results, dict) else None
    multiclass = isinstance(report, dict) and isinstance(report.get("argmax"), dict)
    if not isinstance(report, dict) or (not multiclass and any(not isinstance(report.get(p), dict) for p in PROTOCOLS)):
        raise CompareError(
            f"{path}: key {split!r}: expected a report with {' and '.join(PROTOCOLS)} (or argmax, of a multiclass run)"
        )
    row: dict[str, Any] = {
        "rank": None,
        "run": run_dir.name,
        "model": _model_name(run_dir, results),
        "split": split,
        "task": "multiclass" if multiclass else "multilabel",
    }
    for protocol, suffix in PROTOCOLS.items():
        for metric in THRESHOLD_METRICS:  # a multiclass answer is the same under either protocol
            row[f"{metric}@{suffix}"] = report["argmax" if multiclass else protocol].get(metric)
    for metric in RANKING_METRICS:
        row[metric] = report["argmax" if multiclass else "threshold_0.5"].get(metric)
    for column in COST_COLUMNS:
        row[column] = results.get(column)
    row["path"] = str(run_dir)
    return row


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rank_rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Best first on `key` (ascending for costs where less is better); missing values last."""
    lower = key in LOWER_IS_BETTER
    present = [row for row in rows if not _missing(row.get(key))]
    absent = [row for row in rows if _missing(row.get(key))]
    # Stable: equal values keep the order the runs were given in.
    ranked = sorted(present, key=lambda row: row[key] if lower else -row[key]) + absent
    return [{**row, "rank": index} for index, row in enumerate(ranked, start=1)]


def compare_runs(
    run_dirs: Sequence[str | Path], sort_by: str = "f1_macro", protocol: str = "threshold_0.5", split: str = "test"
) -> list[dict[str, Any]]:
    """Rows of the comparison table, ranked best first by `sort_by` under `protocol`.

    Each row holds `rank`, `run`, `model`, `split`, every metric of `CSV_COLUMNS`, the cost
    columns and `path`; `sort_metric` names the key the ranking used.
    """
    key = sort_key_name(sort_by, protocol)
    rows = [read_run(run_dir, split) for run_dir in expand_run_dirs(run_dirs)]
    if not rows:
        raise CompareError("no run folders given")
    tasks = {row["task"] for row in rows}
    if len(tasks) > 1:
        first = {task: next(row["path"] for row in rows if row["task"] == task) for task in sorted(tasks)}
        raise CompareError(
            "runs of a multiclass and a multi-label task cannot be ranked together "
            f"(e.g. {first['multiclass']} and {first['multilabel']})"
        )
    return [{**row, "sort_metric": key} for row in rank_rows(rows, key)]


def _cell(value: Any, kind: str) -> str:
    if _missing(value):
        return "–"
    if kind == "metric":
        return f"{value:.4f}"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "count":
        return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k" if value >= 1e3 else str(value)
    if kind == "seconds":
        minutes, seconds = divmod(float(value), 60)
        return f"{int(minutes)} min {seconds:02.0f} s" if minutes else f"{seconds:.1f} s"
    if kind == "rate":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table of the rows, in their order."""
    numeric = {"int", "metric", "ratio", "count", "seconds", "rate"}
    table = _MULTICLASS_TABLE if rows and rows[0].get("task") == "multiclass" else _TABLE
    lines = [
        "| " + " | ".join(header for _, header, _ in table) + " |",
        "| " + " | ".join("---:" if kind in numeric else "---" for _, _, kind in table) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), kind) for key, _, kind in table) + " |")
    return "\n".join(lines)


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if _missing(row.get(column)) else row.get(column) for column in CSV_COLUMNS])
    return buffer.getvalue()


def write_comparison(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """`model_comparison.csv` (full precision) and `model_comparison.md` (rounded) in `out_dir`."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / CSV_NAME, out_dir / MARKDOWN_NAME
    atomic_write_text(csv_path, _csv_text(rows))
    split = rows[0]["split"] if rows else "test"
    sort_metric = rows[0].get("sort_metric", "?") if rows else "?"
    tuned = (
        "per-label thresholds tuned on dev and applied to test"
        if split == "test"
        else "per-label thresholds tuned on dev itself (optimistic)"
    )
    if rows and rows[0].get("task") == "multiclass":
        protocols = "Multiclass: each answer is the most probable class (no thresholds). "
    else:
        protocols = f"`@0.5`: threshold 0.5 for every label; `tuned`: {tuned}. "
    header = (
        f"# Model comparison\n\n{split} split; ranked by `{sort_metric}`. {protocols}"
        "Train time and samples/s cover the training epochs, not evaluation.\n\n"
    )
    atomic_write_text(md_path, header + markdown_table(rows) + "\n")
    return csv_path, md_path
