"""The README's Python API example, run as written (on the 600-movie synthetic shards instead of
the demo's): the functions it names exist, train, evaluate and predict, and agree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from dist_scripts.train_fixtures import train_shards

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_trains_evaluates_and_predicts(tmp_path_factory, monkeypatch, capsys):
    shards = train_shards(tmp_path_factory)
    work = tmp_path_factory.mktemp("notebook")
    (work / "configs").mkdir()
    demo = (REPO / "configs" / "synth_demo_fusion.yaml").read_text()
    (work / "configs" / "synth_demo_fusion.yaml").write_text(demo.replace("runs/demo/shards", str(shards)))
    monkeypatch.chdir(work)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = readme_example()
    assert "train(cfg)" in code
    assert "evaluate_checkpoint(" in code
    assert "predict_labels(" in code
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)

    final, evaluation, result = namespace["final"], namespace["evaluation"], namespace["result"]
    run_dir = work / "runs" / "notebook" / "notebook"
    assert (run_dir / "final_metrics.json").is_file()
    assert final["last_epoch"] == 1
    assert evaluation.out_dir.is_dir()
    assert (evaluation.out_dir / "metrics.json").is_file()
    # the evaluation of the best checkpoint reproduces the test figures train() returned
    assert evaluation.report["threshold_0.5"]["f1_macro"] == pytest.approx(
        final["test"]["threshold_0.5"]["f1_macro"], abs=1e-6
    )
    from mmimdb_dist.data.sources.mmimdb.genres import GENRES

    probabilities = result["probabilities"]
    assert result["id"] == "m1"
    assert list(probabilities) == list(GENRES)
    assert all(0.0 < p < 1.0 for p in probabilities.values())
    from mmimdb_dist.inference.predictor import predict_genres, predict_labels

    assert predict_genres is predict_labels  # the earlier name still works
    ranked = [probabilities[genre] for genre in result["labels"]]
    assert ranked == sorted(ranked, reverse=True)  # most probable first
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("[20")]  # DeepSpeed
    assert len(printed) == 3
    assert os.sep in printed[1]
    assert printed[2].startswith("[")
