"""Ray Tune searches run for real: `mmimdb-dist tune` processes with a local Ray on the CPU.

One 4-trial, 2-epoch search on the synthetic shards is shared by the module (Ray start-up
is the slow part); a second, small Optuna search is SIGKILLed mid-way (the whole process
group: the driver and the Ray it started) and continued with `--resume`.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dist_scripts.train_fixtures import env, tiny_config, train_shards, write_config

from mmimdb_dist.errors import ConfigError
from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records
from mmimdb_dist.schema import load_config
from mmimdb_dist.tune.space import load_search

EVAL_EVERY = 11  # 359 train samples / batch 16 = 22 steps per epoch: 4 evaluations in 2 epochs
SEARCH_TIMEOUT_S = 420

SPACE = {
    "model.name": {"choice": ["early_fusion", "late_fusion", "attention_fusion", "gmu"]},
    "model.fusion.hidden": {"choice": [16, 32]},
    "model.fusion.dropout": {"uniform": [0.0, 0.3]},
    "train.lr": {"loguniform": [0.001, 0.03]},
    "train.weight_decay": {"loguniform": [1e-5, 0.1]},
    "loss": {
        "focal": {"gamma": {"uniform": [0.5, 3.0]}, "alpha": {"choice": [0.25, None]}},
        "weighted_bce": {"pos_weight_max": {"choice": [10.0, None]}},
        "asl": {"gamma_neg": {"uniform": [1.0, 4.0]}, "clip": {"uniform": [0.0, 0.1]}},
    },
}


def search_yaml(folder: Path, base: Path, name: str, **sections) -> Path:
    search = {
        "name": name,
        "base_config": str(base),
        "storage_path": str(folder / "searches"),
        "overrides": {"train.epochs": 2, "train.eval_every": EVAL_EVERY},
        "space": SPACE,
        "search": {"algorithm": "random", "num_samples": 4, "seed": 0},
        "scheduler": {"grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1, "max_concurrent": 2},
        # room for 3 trials at once: only resources.max_concurrent keeps it to 2
        "ray": {"num_cpus": 3},
    }
    for key, value in sections.items():
        search[key] = {**search[key], **value} if isinstance(value, dict) and key != "space" else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False), encoding="utf-8")
    return path


def tune_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", "tune", "--config", str(config), *extra]


def run_tune(config: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        tune_command(config, *extra),
        capture_output=True,
        text=True,
        timeout=SEARCH_TIMEOUT_S,
        env=env(),
        cwd=config.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def read_rows(experiment: Path) -> list[dict[str, str]]:
    with open(experiment / "results.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def eval_records(run_dir: Path) -> list[dict]:
    return read_records(run_dir / METRICS_LOG, "eval")


@pytest.fixture(scope="module")
def base_config(tmp_path_factory) -> Path:
    shards = train_shards(tmp_path_factory)
    folder = tmp_path_factory.mktemp("tune")
    data = tiny_config(shards, Path("runs"), "base")  # paths relative to the folder searches start from
    data["loader"]["shards_dir"] = os.path.relpath(shards, folder)
    return write_config(folder / "base.yaml", data)


@pytest.fixture(scope="module")
def search(base_config: Path) -> Path:
    config = search_yaml(base_config.parent, base_config, "fusion")
    result = subprocess.run(
        [*tune_command(config)[:3], "tune", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=SEARCH_TIMEOUT_S,
        env=env(),
        cwd=config.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    experiment = base_config.parent / "searches" / "fusion"
    assert "best config:" in result.stdout
    (experiment / "output.txt").write_text(result.stdout + result.stderr)  # read by the tests below
    return experiment


def test_four_trial_search_finishes_and_asha_stops_one(search: Path) -> None:
    rows = read_rows(search)
    assert len(rows) == 4
    max_t = 4
    assert {row["status"] for row in rows} <= {"finished", "stopped_by_asha"}, rows
    stopped = [row for row in rows if row["status"] == "stopped_by_asha"]
    finished = [row for row in rows if row["status"] == "finished"]
    assert stopped, "ASHA stopped no trial"
    assert finished, "no trial ran to the end"
    for row in stopped:
        assert 1 <= int(row["evaluations"]) < max_t
    for row in rows:
        run_dir = Path(row["run_dir"])
        evals = eval_records(run_dir)
        # Every dev evaluation of the trainer was reported, and the table's best is theirs.
        assert len(evals) >= int(row["evaluations"])
        assert float(row["best_dev_mean_average_precision"]) == pytest.approx(
            max(e["mean_average_precision"] for e in evals[: int(row["evaluations"])]), abs=1e-9
        )
        assert 0.0 <= float(row["best_dev_mean_average_precision"]) <= 1.0
        # Only the parameters of the trial's own loss are in its row.
        loss = row["loss.name"]
        assert (row["loss.gamma"] != "") == (loss == "focal")
        assert (row["loss.clip"] != "") == (loss == "asl")
    for row in finished:
        assert int(row["evaluations"]) == max_t
        final = json.loads((Path(row["run_dir"]) / "final_metrics.json").read_text())
        assert float(row["test_f1_macro"]) == pytest.approx(final["test"]["threshold_0.5"]["f1_macro"], abs=1e-6)
        assert final["last_step"] == 2 * 22
    markdown = (search / "results.md").read_text(encoding="utf-8")
    assert markdown.count("\n| ") == 2 + 4  # header, rule, one line per trial


def test_max_concurrent_limits_the_trials_running_at_once(search: Path) -> None:
    """Ray had room for 3 trials; `resources.max_concurrent: 2` must hold them to 2. Each trial's
    span, from its config.yaml to its last log line, lies inside its real lifetime."""
    spans = []
    for row in read_rows(search):
        run_dir = Path(row["run_dir"])
        last = max(p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file())
        spans.append(((run_dir / "config.yaml").stat().st_mtime, last))
    running = [sum(start <= moment < end for start, end in spans) for moment, _ in spans]
    assert max(running) == 2, spans  # two at once, never three


def test_search_output_is_a_few_plain_lines(search: Path) -> None:
    """One line per trial event instead of Ray's 300-column status tables."""
    text = (search / "output.txt").read_text()
    assert "\x1b[" not in text  # Ray's coloured worker prefixes are plain off a terminal
    assert "\r" not in text
    lines = text.splitlines()
    trial_lines = [line for line in lines if "mmimdb_dist.tune.runner: trial " in line]
    assert len([line for line in trial_lines if line.endswith("started") or " started: " in line]) == 4
    stopped = [line for line in trial_lines if " stopped early (ASHA) after " in line]
    assert len(stopped) == len([row for row in read_rows(search) if row["status"] == "stopped_by_asha"]) >= 1
    assert sum(" finished (" in line for line in trial_lines) == 4 - len(stopped)
    assert sum(", dev mean_average_precision " in line for line in trial_lines) >= 4 + 4
    assert max(map(len, trial_lines)) < 300
    # no status tables (Ray draws them with box characters or +---+ rules); besides the trial lines,
    # the results table the command prints at the end and a few lines of Ray's start-up
    assert not [line for line in lines if "│" in line or "+--" in line or "╭" in line]
    other = [line for line in lines if line not in trial_lines and not line.startswith("| ")]
    assert len(other) < 25, other


def test_best_config_loads_and_trains(search: Path, tmp_path: Path) -> None:
    rows = read_rows(search)
    best = max(rows, key=lambda row: float(row["best_dev_mean_average_precision"]))
    path = search / "best_config.yaml"
    cfg = load_config(path)
    assert cfg.name == "fusion_best"
    assert cfg.model.name == best["model.name"]
    assert cfg.train.lr == pytest.approx(float(best["train.lr"]))
    assert cfg.loss.name == best["loss.name"]
    assert cfg.train.epochs == 2
    assert cfg.train.eval_every == EVAL_EVERY
    # the paths as the base config wrote them, relative to the folder the search started from
    base = load_config(search.parents[1] / "base.yaml")
    assert cfg.loader.shards_dir == base.loader.shards_dir
    assert not Path(cfg.loader.shards_dir).is_absolute()
    result = subprocess.run(
        [
            *tune_command(path)[:3],
            "train",
            "--config",
            str(path),
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "train.epochs=1",
            "--set",
            "train.eval_every=epoch",
        ],
        capture_output=True,
        text=True,
        timeout=SEARCH_TIMEOUT_S,
        env=env(),
        cwd=search.parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((tmp_path / "fusion_best" / "final_metrics.json").read_text())
    assert 0.0 <= final["test"]["threshold_0.5"]["f1_macro"] <= 1.0
    assert final["last_step"] == 22


def test_killed_search_resumes(base_config: Path) -> None:
    """SIGKILL the driver and its Ray while a trial is mid-way, then --resume: the trial goes
    on from its checkpoint (evaluations already made are not redone) and the search ends."""
    config = search_yaml(
        base_config.parent,
        base_config,
        "killed",
        overrides={"train.epochs": 1},  # 2 evaluations per trial
        search={"algorithm": "optuna", "num_samples": 1, "seed": 1},
        scheduler={"name": "fifo"},
    )
    experiment = base_config.parent / "searches" / "killed"
    process = subprocess.Popen(
        tune_command(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
        cwd=config.parent,
        start_new_session=True,
    )
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    runs = experiment / "runs"
    try:
        while time.monotonic() < deadline:
            run_dirs = list(runs.glob("*/run")) if runs.is_dir() else []
            if any(
                eval_records(d) and list(d.glob("checkpoints/step-*/trainer_state.json"))
                for d in run_dirs
                if (d / "metrics.jsonl").is_file()
            ):
                break
            assert process.poll() is None, "the search ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no trial reached its first evaluation")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (experiment / "results.csv").exists()
    killed = next(d for d in runs.glob("*/run") if list(d.glob("checkpoints/step-*/trainer_state.json")))
    before = eval_records(killed)
    assert len(before) == 1

    run_tune(config, "--resume")
    rows = read_rows(experiment)
    assert len(rows) == 1
    assert rows[0]["status"] == "finished", rows
    assert Path(rows[0]["run_dir"]).resolve() == killed.resolve()
    after = eval_records(killed)
    assert after[: len(before)] == before  # the trial continued; nothing was re-evaluated
    for row in rows:
        steps = [record["step"] for record in eval_records(Path(row["run_dir"]))]
        assert steps == [11, 22]
        assert row["evaluations"] == "2"
        assert row["loss.name"] in ("focal", "weighted_bce", "asl")


# --------------------------------------------------------------------------- validation (no Ray)


def _write(folder: Path, base: Path, **changes) -> Path:
    return search_yaml(folder, base, "bad", **changes)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"model.fusion.hiden": {"choice": [8]}},
            "space.model.fusion.hiden: not a key of the training config; did you mean 'model.fusion.hidden'?",
        ),
        (
            {"train.lr": {"logunifrom": [0.1, 1.0]}},
            "space.train.lr: unknown domain 'logunifrom' (did you mean 'loguniform'?)",
        ),
        ({"train.lr": {"uniform": [0.1]}}, "space.train.lr.uniform: expected [low, high] numbers"),
        (
            {"model.fusion.dropout": {"uniform": [0.0, 1.5]}},
            "space.model.fusion.dropout: value 1.5 is refused by the training config",
        ),
        (
            {"loss": {"focal": {"clip": {"uniform": [0.0, 0.1]}}}},
            "space.loss.focal.clip: focal has no such parameter; expected gamma, alpha",
        ),
        ({"loss": {"hinge": {}}}, "space.loss.hinge: unknown loss"),
        ({"model": {"choice": [1]}}, "space.model: is a whole section"),
        ({"train.lr": {"uniform": [0.01, 0.001]}}, "space.train.lr.uniform: expected low < high"),
    ],
)
def test_search_yaml_errors_name_file_and_key(base_config: Path, tmp_path: Path, space, message) -> None:
    path = _write(tmp_path, base_config, space=space)
    with pytest.raises(ConfigError) as info:
        load_search(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_grid_domain_needs_grid_or_random(base_config: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, base_config, space={"train.lr": {"grid": [0.001, 0.01]}}, search={"algorithm": "optuna"})
    with pytest.raises(ConfigError, match="space.train.lr: grid domains need search.algorithm grid or random"):
        load_search(path)
    path = _write(tmp_path, base_config, space={"train.lr": {"uniform": [0.001, 0.01]}}, search={"algorithm": "grid"})
    with pytest.raises(ConfigError, match="search.algorithm: grid needs at least one `grid` domain"):
        load_search(path)


def test_unknown_search_key(base_config: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, base_config, resources={"gpus": 1})
    with pytest.raises(ConfigError, match=r"unknown config key 'resources.gpus'; did you mean 'gpu'\?"):
        load_search(path)


def test_repo_search_configs_validate(monkeypatch) -> None:
    """configs/tune/*.yaml load (the real one needs no data to be checked)."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    for path in sorted((root / "configs" / "tune").glob("*.yaml")):
        loaded = load_search(path)
        assert loaded.space.losses
        assert loaded.space.params


def test_rerun_or_resume_of_the_wrong_search_is_one_error(search: Path, base_config: Path) -> None:
    """Starting a search whose folder holds one, or resuming one that was never started."""
    from mmimdb_dist.tune.runner import run_search

    existing = load_search(base_config.parent / "fusion.yaml")
    with pytest.raises(ConfigError, match=r"already holds a search; pass --resume to continue it"):
        run_search(existing)
    fresh = load_search(search_yaml(base_config.parent, base_config, "never_started"))
    with pytest.raises(ConfigError, match=r"--resume: .*never_started holds no search to continue"):
        run_search(fresh, resume=True)
