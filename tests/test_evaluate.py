"""`mmimdb-dist evaluate`: the metrics of a checkpoint, its per-genre CSV, and figures that
are real PNG images, for the shared tiny attention-fusion run (trained once per session).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from dist_scripts.report_fixtures import best_checkpoint, cli
from PIL import Image

from mmimdb_dist.cli import main
from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

FIGURES = ("training_curves.png", "per_label_f1.png", "pr_curves.png", "cooccurrence.png", "attention.png")


def _check_png(path: Path, min_width: int, min_height: int) -> None:
    """A PNG that opens, is at least this large, and shows more than a blank canvas."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width, (path, image.size)
        assert image.height >= min_height, (path, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 50, (path, len(colours or []))


def test_evaluate_test_split_writes_metrics_csv_and_figures(run_dir):
    result = cli("evaluate", "--run", str(run_dir), "--split", "test", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = best_checkpoint(run_dir)
    out = run_dir / "evaluation" / f"{checkpoint.name}-test"
    assert f"report: {out}/" in result.stdout

    final = json.loads((run_dir / "final_metrics.json").read_text())["test"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test"
    assert report["checkpoint"] == str(checkpoint)
    assert report["num_samples"] == final["threshold_0.5"]["num_samples"]
    for protocol in ("threshold_0.5", "tuned_on_dev"):  # the trainer's own figures for this checkpoint
        for key in ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss"):
            assert report["test"][protocol][key] == pytest.approx(final[protocol][key], abs=1e-12)
        assert report["test"][protocol]["mean_average_precision"] == pytest.approx(
            final[protocol]["mean_average_precision"], abs=1e-6
        )
    assert report["test"]["thresholds"] == final["thresholds"]  # tuned on dev, as in training

    with open(out / "per_label.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 23
    assert {row["split"] for row in rows} == {"test"}
    assert [float(row["threshold_tuned"]) for row in rows] == pytest.approx(final["thresholds"])
    assert [int(row["support"]) for row in rows] == [g["support"] for g in final["threshold_0.5"]["per_label"]]
    assert [float(row["f1_tuned"]) for row in rows] == pytest.approx(
        [g["f1"] for g in final["tuned_on_dev"]["per_label"]], abs=1e-4
    )

    for name in FIGURES:
        assert f"figure: {out / name}" in result.stdout
    _check_png(out / "training_curves.png", 1000, 300)
    _check_png(out / "per_label_f1.png", 1000, 350)
    _check_png(out / "pr_curves.png", 1200, 700)
    _check_png(out / "cooccurrence.png", 1500, 500)
    _check_png(out / "attention.png", 1000, 300)


def test_last_checkpoint_on_dev_into_another_folder(run_dir, tmp_path):
    from mmimdb_dist.report.evaluation import evaluate_checkpoint
    from mmimdb_dist.run.checkpoints import complete_checkpoints

    result = evaluate_checkpoint(run_dir, "last", "dev", out_dir=tmp_path / "report", attention_movies=0)
    assert result.checkpoint == complete_checkpoints(run_dir / "checkpoints")[-1]
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["split"] == "dev"
    assert "optimistic" in saved["thresholds_tuned_on"]
    # Thresholds tuned on dev never do worse on dev than the fixed 0.5.
    assert saved["dev"]["tuned_on_dev"]["f1_macro"] >= saved["dev"]["threshold_0.5"]["f1_macro"]
    assert sorted(p.name for p in tmp_path.joinpath("report").glob("*.png")) == sorted(FIGURES[:-1])


def test_figures_from_arrays_and_a_torn_log(tmp_path):
    from mmimdb_dist.metrics import evaluation_report
    from mmimdb_dist.report import figures

    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"type": "train", "step": s, "loss": 1 / s, "lr": {"head": 0.01 / s}}) for s in range(1, 20)]
    lines += [
        json.dumps({"type": "eval", "step": 10, "f1_macro": 0.2, "f1_micro": 0.4, "best": True}),
        '{"type": "eval", "st',
    ]  # a line torn by a crash is skipped
    log.write_text("\n".join(lines))
    records = read_records(log)
    assert len(records) == 20
    _check_png(figures.training_curves(records, tmp_path / "curves.png"), 1000, 300)

    rng = np.random.default_rng(0)
    truth = (rng.random((120, 23)) < 0.2).astype(int)
    truth[:, 22] = 0  # a genre with no positive is drawn as such, not an error
    probs = np.clip(truth * 0.4 + rng.random((120, 23)) * 0.6, 0, 1)
    report = evaluation_report(truth, probs, [0.4] * 23, GENRES)
    _check_png(figures.per_label_f1(report, tmp_path / "f1.png"), 1000, 350)
    _check_png(figures.pr_curves(truth, probs, [0.4] * 23, tmp_path / "pr.png", GENRES), 1200, 700)
    _check_png(figures.cooccurrence(truth, (probs >= 0.5).astype(int), tmp_path / "co.png", GENRES), 1500, 500)
    posters = rng.integers(0, 255, (2, 3, 48, 48), dtype=np.uint8)
    _check_png(figures.attention_maps(posters, rng.random((2, 7, 7)), ["a", "b"], tmp_path / "att.png"), 500, 300)


def test_cooccurrence_panels_each_have_their_own_scale() -> None:
    """A model that predicts Drama and Comedy for every movie has pair counts far above the
    truth's: on one shared scale the true-labels panel was a single colour."""
    from mmimdb_dist.report import figures

    rng = np.random.default_rng(0)
    truth = (rng.random((300, 23)) < 0.1).astype(int)
    predicted = truth.copy()
    predicted[:, :2] = 1
    fig = figures.cooccurrence_figure(truth, predicted, GENRES)
    true_image, predicted_image, difference_image = (ax.images[0] for ax in fig.axes[:3])
    true_pairs = truth.T @ truth
    predicted_pairs = predicted.T @ predicted
    off = ~np.eye(23, dtype=bool)
    assert true_image.norm.vmax == true_pairs[off].max() < predicted_image.norm.vmax == predicted_pairs[off].max()
    assert difference_image.norm.vmin == -difference_image.norm.vmax  # centred on no difference
    # the diagonal (movies per genre) is written in the row labels, not left to a saturated colour
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels[0] == f"Drama ({true_pairs[0, 0]})"


def test_training_curves_draw_dev_loss_and_one_line_per_learning_rate_schedule() -> None:
    from mmimdb_dist.report import figures

    lrs = {"head": 0.01, "head_no_decay": 0.01, "encoder": 0.001}
    records = [
        {"type": "train", "step": s, "loss": 1 / s, "lr": {k: v / s for k, v in lrs.items()}} for s in range(1, 11)
    ]
    records += [
        {"type": "eval", "step": s, "loss": 0.5 / s, "mean_average_precision": 0.1 * s, "best": True} for s in (5, 10)
    ]
    loss_ax, _, lr_ax = figures.training_curves_figure(records).axes[:3]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "dev (fused head)"]
    assert list(loss_ax.get_lines()[1].get_ydata()) == [0.1, 0.05]
    # head and head_no_decay share one schedule: one line named after both, not two on top of each other
    assert sorted(line.get_label() for line in lr_ax.get_lines()) == ["encoder", "head, head_no_decay"]


def test_user_errors_are_one_line(run_dir, tmp_path, capsys):
    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("mmimdb-dist evaluate: error: ")
        return lines[-1]

    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert f"{empty / 'checkpoints'}: no complete checkpoint" in error(["evaluate", "--run", str(empty)])
    assert "nowhere: run folder does not exist" in error(["evaluate", "--run", str(tmp_path / "nowhere")])
    line = error(["evaluate", "--run", str(run_dir), "--shards", str(tmp_path)])
    assert f"{tmp_path}: no manifest.json" in line
    assert "--shards" in line
    a_file = tmp_path / "report.txt"
    a_file.write_text("mine")
    line = error(["evaluate", "--run", str(run_dir), "--out", str(a_file)])  # before any evaluation
    assert line.endswith(f"--out {a_file}: is a file; expected a folder for the evaluation report")
    assert a_file.read_text() == "mine"
