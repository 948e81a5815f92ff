"""`mmimdb-dist compare`: ranking by any metric under either protocol, the CSV and Markdown
outputs, folders standing for the runs inside them, and the errors a user can cause.

Run folders with known metrics are written by hand (the exact files the trainer and the
baseline write: `final_metrics.json` + `config.yaml`, `metrics.json`); the last test ranks
a real trained run against a real TF-IDF baseline on the same shards.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mmimdb_dist.cli import main
from mmimdb_dist.errors import CompareError
from mmimdb_dist.report.compare import CSV_COLUMNS, compare_runs, markdown_table, write_comparison

THRESHOLD_KEYS = ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy")


def _protocol(f1_macro: float, **other: float | None) -> dict:
    metrics = {key: round(f1_macro * 0.9, 4) for key in THRESHOLD_KEYS}
    metrics.update(
        f1_macro=f1_macro,
        roc_auc_macro=other.pop("roc_auc", 0.7),
        mean_average_precision=other.pop("map", 0.4),
        **other,
    )
    return metrics


def _report(fixed: float, tuned: float, **ranking: float | None) -> dict:
    return {
        "threshold_0.5": _protocol(fixed, **dict(ranking)),
        "tuned_on_dev": _protocol(tuned, **dict(ranking)),
        "thresholds": [0.5] * 23,
    }


def _trained(
    root: Path, name: str, model: str, fixed: float, tuned: float, seconds: float, params: int, **ranking: float | None
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "model": {"name": model}}))
    (run / "final_metrics.json").write_text(
        json.dumps(
            {
                "best_checkpoint": "step-00000010-b000000010",
                "num_parameters": params,
                "trainable_parameters": params,
                "train_seconds": seconds,
                "train_samples_per_s": 1000 / seconds,
                "dev": _report(fixed + 0.01, tuned + 0.01, **ranking),
                "test": _report(fixed, tuned, **ranking),
            }
        )
    )
    return run


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    root = tmp_path / "runs"
    baseline = root / "baseline"
    baseline.mkdir(parents=True)
    (baseline / "metrics.json").write_text(
        json.dumps(
            {
                "model": "tfidf_logreg",
                "num_parameters": 5000,
                "trainable_parameters": 5000,
                "train_seconds": 2.0,
                "train_samples_per_s": 500.0,
                "dev": _report(0.36, 0.49, map=0.45),
                "test": _report(0.35, 0.48, map=0.45),
            }
        )
    )
    return {
        "gmu": _trained(root, "gmu_run", "gmu", 0.30, 0.50, 100.0, 2_500_000, roc_auc=None, map=0.5),
        "early": _trained(root, "early_run", "early_fusion", 0.40, 0.45, 50.0, 1_000_000, map=0.3),
        "baseline": baseline,
    }


def _order(rows: list[dict]) -> list[str]:
    return [row["run"] for row in rows]


def test_rows_are_ranked_by_the_chosen_metric_and_protocol(runs):
    folders = [runs["gmu"], runs["early"], runs["baseline"]]
    rows = compare_runs(folders)
    assert _order(rows) == ["early_run", "baseline", "gmu_run"]  # macro-F1 at 0.5: 0.40 > 0.35 > 0.30
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert rows[0]["sort_metric"] == "f1_macro@0.5"
    assert rows[0]["f1_macro@0.5"] == 0.40
    assert rows[0]["f1_macro@tuned"] == 0.45
    assert [row["model"] for row in rows] == ["early_fusion", "tfidf_logreg", "gmu"]

    assert _order(compare_runs(folders, protocol="tuned_on_dev")) == ["gmu_run", "baseline", "early_run"]
    assert _order(compare_runs(folders, sort_by="f1_macro@tuned")) == ["gmu_run", "baseline", "early_run"]
    assert _order(compare_runs(folders, sort_by="mAP")) == ["gmu_run", "baseline", "early_run"]
    # Costs: less is better for time and size, more for throughput.
    assert _order(compare_runs(folders, sort_by="train_seconds")) == ["baseline", "early_run", "gmu_run"]
    assert _order(compare_runs(folders, sort_by="num_parameters")) == ["baseline", "early_run", "gmu_run"]
    assert _order(compare_runs(folders, sort_by="train_samples_per_s")) == ["baseline", "early_run", "gmu_run"]
    # A metric a run lacks (ROC-AUC undefined) ranks it last, whatever the order given.
    assert _order(compare_runs(folders, sort_by="roc_auc"))[-1] == "gmu_run"
    assert compare_runs(folders, split="dev")[0]["f1_macro@0.5"] == pytest.approx(0.41)


def test_a_folder_stands_for_the_finished_runs_inside_it(runs, tmp_path):
    (tmp_path / "runs" / "unfinished").mkdir()  # no final_metrics.json: not a row
    rows = compare_runs([tmp_path / "runs", runs["early"]])
    assert sorted(_order(rows)) == ["baseline", "early_run", "gmu_run"]  # early_run once


def test_csv_and_markdown_hold_every_row_in_rank_order(runs, tmp_path):
    rows = compare_runs([runs["gmu"], runs["early"], runs["baseline"]], protocol="tuned_on_dev")
    csv_path, md_path = write_comparison(rows, tmp_path / "out")
    with open(csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [r["run"] for r in table] == ["gmu_run", "baseline", "early_run"]
    assert float(table[0]["f1_macro@tuned"]) == 0.50
    assert table[0]["roc_auc_macro"] == ""
    assert int(table[2]["num_parameters"]) == 1_000_000
    assert float(table[2]["train_seconds"]) == 50.0

    markdown = md_path.read_text()
    assert markdown_table(rows) in markdown
    assert "ranked by `f1_macro@tuned`" in markdown
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].count("|") == lines[2].count("|")
    assert "| 1 | gmu_run | gmu |" in lines[2]
    assert "| 0.5000 |" in lines[2]
    assert "2.50 M" in lines[2]
    assert "1 min 40 s" in lines[2]
    assert "| – |" in lines[2]
    for header in (
        "macro-F1 @0.5",
        "macro-F1 tuned",
        "ROC-AUC",
        "mAP",
        "subset acc. tuned",
        "parameters",
        "train time",
        "samples/s",
    ):
        assert header in lines[0]


def test_cli_prints_the_table_and_writes_both_files(runs, tmp_path, capsys):
    assert main(["compare", str(tmp_path / "runs"), "--sort-by", "f1_micro", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "ranked by f1_micro@0.5" in out
    assert out.index("early_run") < out.index("gmu_run")
    assert (tmp_path / "cmp" / "model_comparison.csv").is_file()
    assert (tmp_path / "cmp" / "model_comparison.md").is_file()
    assert main(["compare", str(runs["gmu"]), str(runs["early"])]) == 0  # default: the runs' parent
    assert (tmp_path / "runs" / "model_comparison.csv").is_file()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["compare", "{root}/runs", "--sort-by", "f1"], "--sort-by 'f1': expected one of f1_micro"),
        (["compare", "{root}/nowhere"], "{root}/nowhere: not a folder"),
        (["compare", "{root}/empty"], "{root}/empty: no final_metrics.json (an unfinished or failed run?)"),
        (["compare", "{root}/broken"], "{root}/broken/final_metrics.json: not readable JSON"),
        (
            ["compare", "{root}/runs", "--out", "{root}/broken/final_metrics.json"],
            "--out {root}/broken/final_metrics.json: is a file; expected a folder for the comparison",
        ),
    ],
)
def test_user_errors_are_one_line(runs, tmp_path, capsys, argv, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "final_metrics.json").write_text('{"test": {"threshold_0.5": ')  # truncated
    assert main([arg.format(root=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("mmimdb-dist compare: error: ")
    assert expected.format(root=tmp_path) in err[0]
    with pytest.raises(CompareError):
        compare_runs([runs["early"]], protocol="best")


@pytest.mark.slow
def test_a_trained_run_and_the_baseline_rank_by_their_own_files(tmp_path_factory):
    from dist_scripts.report_fixtures import attention_run, baseline_run

    run, baseline = attention_run(tmp_path_factory), baseline_run(tmp_path_factory)
    files = {
        "attention_run": json.loads((run / "final_metrics.json").read_text()),
        "tfidf_baseline": json.loads((baseline / "metrics.json").read_text()),
    }
    for protocol, suffix in (("threshold_0.5", "0.5"), ("tuned_on_dev", "tuned")):
        rows = compare_runs([run, baseline], sort_by="f1_micro", protocol=protocol)
        values = [row[f"f1_micro@{suffix}"] for row in rows]
        assert values == sorted(values, reverse=True)
        for row in rows:
            source = files[row["run"]]
            assert row[f"f1_micro@{suffix}"] == source["test"][protocol]["f1_micro"]
            assert row["mean_average_precision"] == source["test"]["threshold_0.5"]["mean_average_precision"]
            assert row["num_parameters"] == source["num_parameters"] > 0
            assert row["train_seconds"] == source["train_seconds"] > 0
            assert row["train_samples_per_s"] > 0
    models = {row["run"]: row["model"] for row in rows}
    assert models == {"attention_run": "attention_fusion", "tfidf_baseline": "tfidf_logreg"}
