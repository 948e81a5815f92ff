"""A team's own table through the whole toolkit: train (one process and 2-process DDP over gloo),
evaluate, compare, predict and Tune, with its own label names and task kind.

Every run is a real `mmimdb-dist` process on shards of a synthetic table (texts, image files,
ten labels of its own); the MM-IMDb genres appear nowhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dist_scripts.ports import free_port
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, tiny_config, write_config

from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.synth_table import LABEL_CUES, generate_table
from mmimdb_dist.schema import load_config

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _shard_table(table: Path, out: Path, task: str, label_column: str) -> Path:
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.image=image",
            f"data.columns.labels={label_column}",
            f"data.task={task}",
            f"shard.out_dir={out}",
            "shard.workers=2",
            "shard.samples_per_shard=100",
            "shard.min_shards=2",
            "shard.poster_short_side=64",
        ],
    )
    shard_dataset(cfg)
    return out


@pytest.fixture(scope="module")
def multiclass_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multiclass-table")
    table = generate_table(root / "data", rows=900, seed=0, task="multiclass", table_format="jsonl", progress=False)
    return _shard_table(table, root / "shards", "multiclass", "label")


@pytest.fixture(scope="module")
def multilabel_table(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multilabel-table")
    table = generate_table(root / "data", rows=500, seed=2, task="multilabel", table_format="jsonl", progress=False)
    return table, _shard_table(table, root / "shards", "multilabel", "labels")


def _config(shards: Path, root: Path, name: str, model: str, multiclass: bool, **train) -> Path:
    data = tiny_config(shards, root / "runs", name, **{"epochs": 6, **train})
    data["model"]["name"] = model
    if model == "text_only":
        data["model"]["image"] = {"kind": "none"}
    if model == "image_only":
        data["model"]["text"] = {"kind": "none"}
    if multiclass:
        data["loss"] = {"name": "cross_entropy", "label_smoothing": 0.05}
        data["train"]["select_metric"] = "f1_macro"
    return write_config(root / f"{name}.yaml", data)


def test_multiclass_fusion_beats_each_modality_and_tfidf_on_the_same_shards(multiclass_shards, tmp_path):
    results = {}
    for name, model in (("text", "text_only"), ("image", "image_only"), ("fusion", "early_fusion")):
        _cli("train", "--config", str(_config(multiclass_shards, tmp_path, name, model, True)), cwd=tmp_path)
        results[name] = json.loads((tmp_path / "runs" / name / "final_metrics.json").read_text())["test"]["argmax"]
    _cli(
        "baseline", "--shards", str(multiclass_shards), "--out", str(tmp_path / "tfidf"), "--no-progress", cwd=tmp_path
    )
    results["tfidf"] = json.loads((tmp_path / "tfidf" / "metrics.json").read_text())["test"]["argmax"]
    for name, metrics in results.items():
        print(
            f"{name:<7} accuracy {metrics['accuracy']:.4f} macro-F1 {metrics['f1_macro']:.4f} "
            f"top-5 {metrics['top5_accuracy']:.4f}"
        )
    for other in ("text", "image", "tfidf"):
        assert results["fusion"]["f1_macro"] > results[other]["f1_macro"] + 0.05, other
        assert results["fusion"]["accuracy"] > results[other]["accuracy"], other
    assert len(results["fusion"]["confusion_matrix"]) == len(LABEL_CUES)

    # predict answers with the most probable class, in the table's own names; no thresholds
    shown = _cli(
        "predict", "--run", str(tmp_path / "runs" / "fusion"), "--plot", "a quiet text", "--json", cwd=tmp_path
    )
    record = json.loads(shown.stdout)
    assert len(record["labels"]) == 1
    assert record["labels"][0] == max(record["probabilities"], key=record["probabilities"].get)
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)  # a softmax
    refused = _cli(
        "predict",
        "--run",
        str(tmp_path / "runs" / "fusion"),
        "--plot",
        "x",
        "--threshold",
        "0.3",
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 2
    assert "this model is multiclass" in refused.stderr
    # a poster given to a text-only model is said to be unused, not silently dropped
    image = next((multiclass_shards.parent / "data" / "images").glob("*.jpg"))
    text_only = _cli(
        "predict", "--run", str(tmp_path / "runs" / "text"), "--plot", "a text", "--poster", str(image), cwd=tmp_path
    )
    assert f"--poster {image}: this model reads no image (text_only); the poster is not used" in text_only.stderr

    # compare ranks multiclass runs on their own columns, and refuses to mix task kinds
    compared = _cli(
        "compare", str(tmp_path / "runs"), str(tmp_path / "tfidf"), "--out", str(tmp_path / "cmp"), cwd=tmp_path
    )
    assert "| accuracy | top-5 acc." in compared.stdout
    assert "| 1 | fusion |" in compared.stdout
    multilabel = tmp_path / "ml-baseline"
    (multilabel).mkdir()
    ml_metrics = json.loads((tmp_path / "tfidf" / "metrics.json").read_text())
    for split in ("dev", "test"):
        ml_metrics[split] = {
            "threshold_0.5": ml_metrics[split]["argmax"],
            "tuned_on_dev": ml_metrics[split]["argmax"],
            "thresholds": [0.5],
        }
    (multilabel / "metrics.json").write_text(json.dumps(ml_metrics))
    mixed = _cli(
        "compare", str(tmp_path / "tfidf"), str(multilabel), "--out", str(tmp_path / "cmp2"), cwd=tmp_path, check=False
    )
    assert mixed.returncode == 2
    assert "cannot be ranked together" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1

    # a loss or a selection metric of the other task kind is one line, before any training
    wrong = _config(multiclass_shards, tmp_path, "wrong", "early_fusion", True)
    for setting, expected in (
        (
            "train.select_metric=f1_macro_tuned",
            "train.select_metric: 'f1_macro_tuned' is not a metric of the multiclass task",
        ),
        ("loss.name=focal", "loss.name: 'focal' does not fit the multiclass task"),
    ):
        result = _cli("train", "--config", str(wrong), "--set", setting, cwd=tmp_path, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert expected in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "runs" / "wrong" / "checkpoints").exists()


def test_jsonl_label_lists_under_two_process_ddp_then_evaluate_and_predict(multilabel_table, tmp_path):
    table, shards = multilabel_table
    config = _config(shards, tmp_path, "ddp", "early_fusion", False, epochs=2)
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
    ]
    result = subprocess.run(
        [*launcher, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    names = [row["label"] for row in final["test"]["threshold_0.5"]["per_label"]]
    assert set(names) == set(LABEL_CUES)
    best = run / "checkpoints" / final["best_checkpoint"] / "inference"
    assert json.loads((best / "labels.json").read_text()) == {"names": names, "task": "multilabel"}
    assert json.loads((best / "thresholds.json").read_text())["labels"] == names

    _cli("evaluate", "--run", str(run), "--out", str(tmp_path / "eval"), cwd=tmp_path)
    header = (tmp_path / "eval" / "per_label.csv").read_text(encoding="utf-8").splitlines()
    assert header[0].startswith("split,label,")
    assert any(line.startswith("test,Jardín botánico,") for line in header)

    # predict on the table's own rows: the records carry the label names
    rows = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines()[:5]]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        "\n".join(
            json.dumps({"id": r["id"], "plot": r["text"], "poster": str(table.parent / r["image"])}) for r in rows
        )
        + "\n",
        encoding="utf-8",
    )
    _cli("predict", "--run", str(run), "--input", str(inputs), "--output", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert all(set(r["probabilities"]) == set(LABEL_CUES) and set(r["labels"]) <= set(LABEL_CUES) for r in records)

    # the checkpoint refuses shards of another label set, in one line naming both
    other = _shard_table(table, tmp_path / "other", "multilabel", "labels")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["labels"]["names"] = [*names[:-1], "Something else"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    refused = _cli(
        "evaluate", "--run", str(run), "--shards", str(other), "--out", str(tmp_path / "e2"), cwd=tmp_path, check=False
    )
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert f"first difference at label {len(names) - 1}: {names[-1]!r} vs 'Something else'" in refused.stderr


def test_tune_on_cached_features_of_a_multiclass_table(multiclass_shards, tmp_path):
    base = _config(multiclass_shards, tmp_path, "base", "early_fusion", True, epochs=2)
    features = tmp_path / "features"
    _cli("cache-features", "--config", str(base), "--out", str(features), cwd=tmp_path)
    cached = json.loads((features / "manifest.json").read_text())
    assert cached["labels"]["task"] == "multiclass"
    assert len(cached["labels"]["names"]) == len(LABEL_CUES)
    search = {
        "name": "table_search",
        "base_config": str(base),
        "storage_path": str(tmp_path / "searches"),
        "overrides": {"loader.features_dir": str(features), "train.epochs": 2, "loader.num_workers": 0},
        "space": {
            "train.lr": {"loguniform": [0.003, 0.03]},
            "loss": {"cross_entropy": {"label_smoothing": {"uniform": [0.0, 0.2]}}},
        },
        "search": {"algorithm": "random", "num_samples": 2, "seed": 0},
        "scheduler": {"name": "fifo"},
        "resources": {"cpu": 1, "max_concurrent": 2},
        "ray": {"num_cpus": 2},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False), encoding="utf-8")
    _cli("tune", "--config", str(path), cwd=tmp_path)
    experiment = tmp_path / "searches" / "table_search"
    best = yaml.safe_load((experiment / "best_config.yaml").read_text())
    assert best["loss"]["name"] == "cross_entropy"
    assert 0.0 <= best["loss"]["label_smoothing"] <= 0.2
    rows = (experiment / "results.csv").read_text().splitlines()
    assert len(rows) == 3
    assert "f1_macro" in rows[0]

    # a ranking metric of the other kind is refused before Ray starts
    search["scheduler"] = {"name": "fifo", "metric": "f1_micro_tuned"}
    search["name"] = "wrong_metric"
    path.write_text(yaml.safe_dump(search, sort_keys=False), encoding="utf-8")
    refused = _cli("tune", "--config", str(path), cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "scheduler.metric: 'f1_micro_tuned' is not a metric of the multiclass" in refused.stderr


def test_a_multiclass_table_under_zero2(multiclass_shards, tmp_path):
    """DeepSpeed ZeRO-2 on 2 gloo processes, the project's own launch config, a table's shards."""
    repo = Path(__file__).resolve().parents[1]
    config = _config(multiclass_shards, tmp_path, "zero2", "early_fusion", True, epochs=1)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_deepspeed",
        "--config_file",
        "launch/accelerate/zero2_cpu.yaml",
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        "-m",
        "mmimdb_dist.cli",
        "--log-level",
        "WARNING",
        "train",
        "--config",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env(), cwd=repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = json.loads((tmp_path / "runs" / "zero2" / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    assert set(final["test"]) == {"argmax", "thresholds"}
    assert (
        final["test"]["argmax"]["num_samples"]
        == json.loads((multiclass_shards / "manifest.json").read_text())["splits"]["test"]["num_samples"]
    )
    export = tmp_path / "runs" / "zero2" / "checkpoints" / final["best_checkpoint"] / "inference"
    assert json.loads((export / "labels.json").read_text())["task"] == "multiclass"
    assert not (export / "thresholds.json").exists()
