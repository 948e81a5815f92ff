"""A finished search as a table (CSV and Markdown) and its best trial as a training config.

One row per trial, best first: its status (finished, stopped by ASHA, error), how many dev
evaluations it reported, the values it searched (only the parameters of its own loss),
its best and last dev metric, and, for trials that trained to the end, the test macro-F1
of their best checkpoint from their `final_metrics.json`. The best trial is the one with
the best dev metric at any evaluation; its config (base + its values) is written as a
complete training YAML that `mmimdb-dist train --config` runs as it is.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..run.layout import FINAL_METRICS, METRICS_LOG
from ..run.metrics_log import read_records
from ..run.protocol import primary_report
from ..schema import dump_config
from .space import LoadedSearch, build_trial_config, trial_overrides

FINISHED, STOPPED, ERROR, INCOMPLETE = "finished", "stopped_by_asha", "error", "incomplete"


# A search folder: <storage_path>/<name>/runs/<trial id>/run/ is each trial's run folder.
RUNS_DIR = "runs"
RUN_NAME = "run"


@dataclass
class SearchOutcome:
    experiment_dir: Path
    results_csv: Path
    results_md: Path
    best_config: Path | None
    num_trials: int


@dataclass
class TrialRow:
    trial_id: str
    status: str
    evaluations: int
    params: dict[str, Any]
    best_metric: float | None
    last_metric: float | None
    best_step: int | None
    test_f1_macro: float | None
    run_dir: str
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchTable:
    metric: str
    mode: str
    max_t: int
    rows: list[TrialRow]
    scheduler: str = "ASHA"

    @property
    def best(self) -> TrialRow | None:
        scored = [r for r in self.rows if r.best_metric is not None and math.isfinite(r.best_metric)]
        if not scored:
            return None
        return (max if self.mode == "max" else min)(scored, key=lambda r: float(r.best_metric or 0.0))


def _test_f1(run_dir: Path) -> float | None:
    path = run_dir / FINAL_METRICS
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return primary_report(data["test"])["f1_macro"]


def _eval_records(run_dir: Path) -> list[dict[str, Any]]:
    return read_records(run_dir / METRICS_LOG, kind="eval")


def _error_line(error: Any) -> str:
    """The exception line of a trial's error (Ray's text starts with its own frames)."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def collect_results(results: Any, loaded: LoadedSearch, max_t: int) -> SearchTable:
    """Rows from Ray Tune's ResultGrid plus each trial's own run folder."""
    metric, mode = loaded.metric, loaded.config.scheduler.mode
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name  # folders are named by id
        run_dir = loaded.experiment_dir / RUNS_DIR / trial_id / RUN_NAME
        # The trainer's own log is the record of what each evaluation gave: after a killed
        # search Tune's copy can lack the reports made just before the kill.
        evals = _eval_records(run_dir)
        if not evals and result.metrics_dataframe is not None:
            evals = result.metrics_dataframe.to_dict("records")
        values = [float(v) for v in (e.get(metric) for e in evals) if isinstance(v, int | float) and not math.isnan(v)]
        best_index = None
        if values:
            pick = max if mode == "max" else min
            best_index = values.index(pick(values))
        test = _test_f1(run_dir)
        evaluations = max(len(evals), int(metrics.get("training_iteration", 0) or 0))
        if result.error is not None:
            status = ERROR
        elif test is not None:
            status = FINISHED
        elif evaluations < max_t:
            status = STOPPED
        else:
            status = INCOMPLETE
        rows.append(
            TrialRow(
                trial_id=trial_id,
                status=status,
                evaluations=evaluations,
                params=trial_overrides({}, loaded.space.loss_fixed, dict(result.config or {})),
                best_metric=values[best_index] if best_index is not None else None,
                last_metric=values[-1] if values else None,
                best_step=int(evals[best_index]["step"])
                if best_index is not None and "step" in evals[best_index]
                else None,
                test_f1_macro=test,
                run_dir=str(run_dir),
                error=_error_line(result.error),
            )
        )
    reverse = mode == "max"
    rows.sort(key=lambda r: (r.best_metric is None, -(r.best_metric or 0) if reverse else (r.best_metric or 0)))
    scheduler = "ASHA early stopping" if loaded.config.scheduler.name == "asha" else "no early stopping"
    return SearchTable(metric=metric, mode=mode, max_t=max_t, rows=rows, scheduler=scheduler)


def _columns(table: SearchTable) -> tuple[list[str], list[dict[str, Any]]]:
    keys: list[str] = []
    for row in table.rows:
        keys += [k for k in row.params if k not in keys]
    m = table.metric
    header = [
        "trial",
        "status",
        "evaluations",
        *keys,
        f"best_dev_{m}",
        f"last_dev_{m}",
        "best_step",
        "test_f1_macro",
        "run_dir",
        "error",
    ]
    records = []
    for row in table.rows:
        records.append(
            {
                "trial": row.trial_id,
                "status": row.status,
                "evaluations": row.evaluations,
                # "null" is a searched value (e.g. no pos_weight cap); "" means not used.
                **{k: ("null" if row.params[k] is None else row.params[k]) if k in row.params else "" for k in keys},
                f"best_dev_{m}": row.best_metric,
                f"last_dev_{m}": row.last_metric,
                "best_step": row.best_step,
                "test_f1_macro": row.test_f1_macro,
                "run_dir": row.run_dir,
                "error": row.error,
            }
        )
    return header, records


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(table: SearchTable) -> str:
    header, records = _columns(table)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return out.getvalue()


def to_markdown(table: SearchTable, title: str) -> str:
    header, records = _columns(table)
    shown = [h for h in header if h not in ("run_dir", "error")]
    lines = [
        f"# {title}",
        "",
        f"{len(table.rows)} trials ({table.scheduler}), ranked by their best dev {table.metric} "
        f"({table.mode}); {table.max_t} dev evaluations make a complete trial.",
        "",
        "| " + " | ".join(shown) + " |",
        "| " + " | ".join("---:" if h not in ("trial", "status") and "." not in h else "---" for h in shown) + " |",
    ]
    for record in records:
        lines.append("| " + " | ".join(_cell(record[h]).replace("|", "\\|") for h in shown) + " |")
    errors = [r for r in table.rows if r.error]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r.trial_id}: {r.error}" for r in errors]
    return "\n".join(lines) + "\n"


def best_config_text(table: SearchTable, loaded: LoadedSearch) -> str | None:
    best = table.best
    if best is None:
        return None
    overrides = trial_overrides(loaded.config.overrides, {}, best.params)
    cfg = build_trial_config(loaded.base_as_written, overrides)
    cfg.name = f"{loaded.config.name}_best"
    header = (
        f"# Best trial {best.trial_id} of the search {loaded.config.name} ({loaded.path}):\n"
        "# paths as in its base config, relative to the folder the search was started from\n"
        f"# dev {table.metric} {best.best_metric:.4f} at step {best.best_step}; its values:\n"
        + "".join(f"#   {k}: {v!r}\n" for k, v in best.params.items())
        + "# Train it: mmimdb-dist train --config <this file>\n"
    )
    return header + dump_config(cfg)


def write_results(table: SearchTable, loaded: LoadedSearch):
    directory = loaded.experiment_dir
    csv_path, md_path = directory / "results.csv", directory / "results.md"
    atomic_write_text(csv_path, to_csv(table))
    atomic_write_text(md_path, to_markdown(table, f"Search {loaded.config.name}"))
    text = best_config_text(table, loaded)
    best_path = None
    if text is not None:
        best_path = directory / "best_config.yaml"
        atomic_write_text(best_path, text)
    return SearchOutcome(
        experiment_dir=directory,
        results_csv=csv_path,
        results_md=md_path,
        best_config=best_path,
        num_trials=len(table.rows),
    )
