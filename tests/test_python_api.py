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


def test_train_from_python_reports_progress_as_the_command_does(tmp_path_factory):
    """`train(cfg)` from a script without a logging setup printed nothing for the whole run; it
    now reports on stderr as `mmimdb-dist train` does, and a script's own setup is left alone."""
    import subprocess
    import sys

    from dist_scripts.train_fixtures import env, tiny_config, write_config

    shards = train_shards(tmp_path_factory)
    work = tmp_path_factory.mktemp("script")
    config = write_config(work / "run.yaml", tiny_config(shards, work / "runs", "script", epochs=1))
    script = (
        "import sys\n"
        "from mmimdb_dist.schema import load_config\n"
        "from mmimdb_dist.train.loop import train\n"
        "final = train(load_config(sys.argv[1]))\n"
        "print('best', final['best_checkpoint'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=600, env=env(), cwd=work
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best step-" in done.stdout
    assert re.search(r"INFO mmimdb_dist\.progress: epoch 0: \d+/\d+ batch \(100%\)", done.stderr), done.stderr[-2000:]
    assert "INFO mmimdb_dist.train.loop: training early_fusion" in done.stderr
