"""Sweeps: a grid of config overrides run as one Slurm job array, and their summary.

A grid file names the overrides to combine; every combination is one run:

    # sweep.yaml
    name: lr-loss            # the sweep folder under the config's output_dir (default: <name>-sweep)
    grid:                    # key: values (any config key, as with --set)
      train.lr: [0.01, 0.003]
      loss.name: [bce, focal]

Every combination is validated before anything is submitted, so a misspelt key fails at once,
not in element 7 of an array. Runs land in `<output_dir>/<sweep>/<run>/`, named after their
overrides (`train.lr=0.01_loss.name=bce`); `sweep.json` in the sweep folder records the
grid, the runs and their job ids for `mmimdb-dist submit summary`.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import ConfigError, SubmitError
from ..report.compare import TRAINED_RESULTS, compare_runs, write_comparison
from ..schema import dump_config, load_config, read_yaml

SWEEP_RECORD = "sweep.json"


@dataclass
class SweepRun:
    name: str
    overrides: dict[str, Any]
    config_text: str
    run_dir: Path
    job_id: str | None = None


@dataclass
class SweepPlan:
    name: str
    sweep_dir: Path
    grid: dict[str, list[Any]]
    runs: list[SweepRun] = field(default_factory=list)


def load_grid(path: str | Path) -> tuple[str | None, dict[str, list[Any]]]:
    """(sweep name or None, {key: values}) from a grid file; errors name the file and the key."""
    data = read_yaml(path)
    unknown = sorted(set(data) - {"name", "grid"})
    if unknown:
        raise SubmitError(f"{path}: unknown key(s) {', '.join(unknown)}; a grid file holds `name` and `grid`")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name)):
        raise SubmitError(f"{path}: name: expected a folder name of letters, digits, '.', '_' or '-', got {name!r}")
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SubmitError(f"{path}: grid: expected a mapping of config keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SubmitError(f"{path}: grid.{key}: expected a non-empty list of values, got {values!r}")
        if key in ("name", "output_dir"):
            raise SubmitError(f"{path}: grid.{key}: the sweep sets each run's {key} itself")
    return name, grid


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text).strip("-") or "x"


def run_name(combination: dict[str, Any]) -> str:
    return "_".join(f"{key}={_slug(value)}" for key, value in combination.items())


def plan_sweep(config: str | Path, overrides: list[str], grid_path: str | Path, name: str | None = None) -> SweepPlan:
    grid_name, grid = load_grid(grid_path)
    base = load_config(config, overrides)
    sweep_name = name or grid_name or f"{base.name}-sweep"
    sweep_dir = Path(base.output_dir) / sweep_name
    plan = SweepPlan(name=sweep_name, sweep_dir=sweep_dir, grid=grid)
    keys = list(grid)
    for values in itertools.product(*(grid[key] for key in keys)):
        combination = dict(zip(keys, values, strict=True))
        run = run_name(combination)
        extra = [f"{key}={json.dumps(value)}" for key, value in combination.items()]
        try:
            cfg = load_config(
                config, [*overrides, *extra, f"output_dir={json.dumps(str(sweep_dir))}", f"name={json.dumps(run)}"]
            )
        except ConfigError as exc:
            raise SubmitError(f"{grid_path}: the combination {combination}: {exc}") from None
        plan.runs.append(
            SweepRun(name=run, overrides=combination, config_text=dump_config(cfg), run_dir=sweep_dir / run)
        )
    return plan


def write_sweep_record(plan: SweepPlan, config: str | Path, cluster: str, folder: Path) -> Path:
    path = plan.sweep_dir / SWEEP_RECORD
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "name": plan.name,
            "config": str(config),
            "grid": plan.grid,
            "cluster": cluster,
            "folder": str(folder),
            "runs": [
                {"name": run.name, "overrides": run.overrides, "run_dir": str(run.run_dir), "job_id": run.job_id}
                for run in plan.runs
            ],
        },
    )
    return path


def read_sweep_record(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_RECORD
    if not path.is_file():
        raise SubmitError(f"{path} does not exist: not a sweep folder written by `mmimdb-dist submit sweep`")
    return json.loads(path.read_text(encoding="utf-8"))


def job_state(record: dict[str, Any], job_id: str | None) -> str:
    """The scheduler's word on an unfinished run ('unknown' when it cannot be asked)."""
    if not job_id or record.get("cluster") != "slurm":
        return "unknown"
    import submitit

    try:
        return submitit.SlurmJob(folder=record["folder"], job_id=job_id).state
    except Exception as exc:  # sacct missing or failing: the summary still lists the run
        return f"unknown ({type(exc).__name__})"


def summarize(
    sweep_dir: str | Path,
    sort_by: str = "f1_macro",
    protocol: str = "threshold_0.5",
    split: str = "test",
    out: str | Path | None = None,
) -> tuple[list[dict[str, Any]], list[str], Path]:
    """Rank the finished runs of a sweep; (rows, lines about unfinished runs, written Markdown)."""

    record = read_sweep_record(sweep_dir)
    finished, pending = [], []
    for run in record["runs"]:
        if (Path(run["run_dir"]) / TRAINED_RESULTS).is_file():
            finished.append(run["run_dir"])
        else:
            pending.append(f"{run['name']}: not finished (job {run['job_id']}, {job_state(record, run['job_id'])})")
    if not finished:
        raise SubmitError(
            f"{sweep_dir}: none of the {len(record['runs'])} runs has finished yet:\n  " + "\n  ".join(pending)
        )
    rows = compare_runs(finished, sort_by=sort_by, protocol=protocol, split=split)
    _, markdown = write_comparison(rows, Path(out) if out else Path(sweep_dir))
    return rows, pending, markdown
