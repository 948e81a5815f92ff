"""Experiment trackers, for real: a run logs to TensorBoard and to MLflow (a local file store, read
back with MLflow's own client), then resumes into the same MLflow run.

What each must hold: the config as hyperparameters, train and dev scalars at their steps (the
dev loss among them), the final test metrics equal to final_metrics.json, and the evaluation
figures (MLflow artifacts, TensorBoard images).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, tiny_config, train_command, train_shards, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

FIGURES = {"cooccurrence.png", "per_label_f1.png", "pr_curves.png", "training_curves.png"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    pytest.importorskip("mlflow")
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.mktemp("tracked")
    data = tiny_config(
        shards,
        root / "runs",
        "tracked",
        epochs=2,
        trackers=["tensorboard", "mlflow"],
        tracker_project="trackers-test",
        tracker_figures=True,
    )
    config = write_config(root / "tracked.yaml", data)
    tracking_uri = f"file://{root / 'mlruns'}"
    run_env = {**env(), "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ALLOW_FILE_STORE": "true"}
    result = subprocess.run(
        train_command(config), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=run_env, cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "root": root,
        "data": data,
        "config": config,
        "uri": tracking_uri,
        "env": run_env,
        "run_dir": root / "runs" / "tracked",
    }


def _mlflow_runs(tracked: dict):
    import os

    import mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 asks file stores to opt in

    client = mlflow.MlflowClient(tracked["uri"])
    experiment = client.get_experiment_by_name("trackers-test")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_holds_config_scalars_test_metrics_and_figures(tracked):
    client, runs = _mlflow_runs(tracked)
    [run] = runs
    assert run.info.run_name == "tracked"
    params = run.data.params
    assert params["model.name"] == "early_fusion"
    assert float(params["train.lr"]) == 0.01
    assert params["loader.batch_size"] == "16"
    assert params["train.trackers"] == '["tensorboard", "mlflow"]'

    final = json.loads((tracked["run_dir"] / "final_metrics.json").read_text())
    metrics = run.data.metrics
    assert metrics["test/f1_macro"] == pytest.approx(final["test"]["threshold_0.5"]["f1_macro"], abs=1e-9)
    assert metrics["test/f1_macro_tuned"] == pytest.approx(final["test"]["tuned_on_dev"]["f1_macro"], abs=1e-9)
    evals = read_records(tracked["run_dir"] / METRICS_LOG, "eval")
    dev_map = client.get_metric_history(run.info.run_id, "dev/mean_average_precision")
    assert [(m.step, m.value) for m in dev_map] == [
        (r["step"], pytest.approx(r["mean_average_precision"])) for r in evals
    ]
    dev_loss = client.get_metric_history(run.info.run_id, "dev/loss")
    assert len(dev_loss) == len(evals)
    assert all(m.value > 0 for m in dev_loss)
    train_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert train_steps == [r["step"] for r in read_records(tracked["run_dir"] / METRICS_LOG, "train")]

    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "figures")}
    assert artifacts == FIGURES
    best = final["best_checkpoint"]
    assert {p.name for p in (tracked["run_dir"] / "evaluation" / f"{best}-test").glob("*.png")} == FIGURES


def test_tensorboard_holds_scalars_test_metrics_hparams_and_figures(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tracked["run_dir"] / "tensorboard"
    events = EventAccumulator(str(board), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "dev/loss", "dev/mean_average_precision", "test/f1_macro"} <= set(tags["scalars"])
    assert {f"figures/{Path(name).stem}" for name in FIGURES} <= set(tags["images"])
    final = json.loads((tracked["run_dir"] / "final_metrics.json").read_text())
    [test_f1] = events.Scalars("test/f1_macro")
    assert test_f1.value == pytest.approx(final["test"]["threshold_0.5"]["f1_macro"], abs=1e-6)
    # the HParams view: the config with the final metrics, in its own folder
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    values = {
        value.tag: value
        for path in (board / "hparams").glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    }
    assert {"_hparams_/session_start_info", "test/f1_macro"} <= set(values)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        values["_hparams_/session_start_info"].metadata.plugin_data.content
    ).session_start_info
    assert start.hparams["model.name"].string_value == "early_fusion"
    assert start.hparams["train.lr"].number_value == pytest.approx(0.01)


def test_a_resumed_run_continues_the_same_mlflow_run(tracked):
    _, runs_before = _mlflow_runs(tracked)
    longer = write_config(
        tracked["root"] / "longer.yaml", {**tracked["data"], "train": {**tracked["data"]["train"], "epochs": 3}}
    )
    result = subprocess.run(
        train_command(longer, "--resume", "auto"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=tracked["env"],
        cwd=tracked["root"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = _mlflow_runs(tracked)
    assert [r.info.run_id for r in runs] == [runs_before[0].info.run_id]
    history = client.get_metric_history(runs[0].info.run_id, "dev/mean_average_precision")
    assert len({m.step for m in history}) == 3  # the third epoch's evaluation joined the first two


def test_an_unknown_or_missing_tracker_is_one_line(tmp_path, capsys):
    from mmimdb_dist.errors import ConfigError
    from mmimdb_dist.schema import load_config

    with pytest.raises(ConfigError, match="train.trackers: unknown tracker 'tensorbord'"):
        load_config(None, ["train.trackers=[tensorbord]"])
    with pytest.raises(ConfigError, match="train.tracker_kwargs: 'wandb' is not one of train.trackers"):
        load_config(None, ["train.tracker_kwargs={wandb: {entity: x}}"])


def test_a_tracker_without_its_package_or_with_a_bad_uri_is_one_line_before_any_run_folder(
    shards, tmp_path, capsys, monkeypatch
):
    """A tracker whose package is missing stops the run before a run folder exists, naming the
    package (it said "writing the training log failed ... free space"); one that cannot start
    (an MLflow server that is not there) names the tracker and its settings."""
    import importlib.util

    from mmimdb_dist.cli import main

    missing = next(name for name in ("wandb", "comet_ml", "aim", "clearml") if importlib.util.find_spec(name) is None)
    config = write_config(tmp_path / "run.yaml", tiny_config(shards, tmp_path / "runs", "no_pkg", epochs=1))
    argv = ["train", "--config", str(config), "--set", f"train.trackers=[{missing}]"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        f"train.trackers: {missing!r} needs the {missing} package, which is not installed (pip install {missing}); "
        f"or remove {missing!r} from train.trackers"
    )
    assert not (tmp_path / "runs" / "no_pkg").exists()

    # An MLflow server that is not there (a port nothing listens on), without MLflow's retries.
    from dist_scripts.ports import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    argv = ["train", "--config", str(config), "--set", "train.trackers=[mlflow]"]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train.trackers: 'mlflow' could not start (" in line
    assert "check its settings (train.tracker_kwargs.mlflow, its environment variables) or remove it" in line
