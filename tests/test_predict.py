"""`mmimdb-dist predict`: reproduces the evaluated metrics from raw movies, handles a missing
modality, and turns every bad input into one error line naming the file.

One tiny attention-fusion run (trained once per session, `dist_scripts/report_fixtures.py`)
serves every test; the bad-input cases run the real CLI entry point in-process (one case
also as a separate process, for the exit status) so they cost no process start-up each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dist_scripts.report_fixtures import best_checkpoint, cli, raw_folder
from dist_scripts.train_fixtures import evaluate_checkpoint, train_shards

from mmimdb_dist.cli import main
from mmimdb_dist.data.sources.mmimdb.genres import GENRES, map_genres, multi_hot
from mmimdb_dist.metrics import evaluation_report
from mmimdb_dist.run.files import verify_files

pytestmark = pytest.mark.slow

METRICS = (
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "f1_samples",
    "precision_micro",
    "recall_macro",
    "subset_accuracy",
    "hamming_loss",
)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return raw_folder(train_shards(tmp_path_factory))


@pytest.fixture(scope="module")
def test_predictions(run_dir, raw, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("predict") / "test.jsonl"
    result = cli("predict", "--run", str(run_dir), "--input", str(raw), "--split", "test", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"-> {out}" in result.stdout
    return {record["id"]: record for record in map(json.loads, out.read_text().splitlines())}


def _raw_labels(raw: Path, ids: list[str]) -> np.ndarray:
    labels = []
    for movie_id in ids:
        genres = json.loads((raw / "dataset" / f"{movie_id}.json").read_text())["genres"]
        labels.append(multi_hot(map_genres(genres)[0]))
    return np.array(labels)


def test_batch_predict_on_the_test_split_reproduces_the_evaluated_metrics(run_dir, raw, test_predictions):
    final = json.loads((run_dir / "final_metrics.json").read_text())["test"]
    checkpoint = best_checkpoint(run_dir)
    thresholds = json.loads((checkpoint / "inference" / "thresholds.json").read_text())["thresholds"]
    assert thresholds == final["thresholds"]  # the checkpoint carries the run's dev-tuned thresholds
    verify_files(checkpoint)  # ... and still verifies: files.json lists the added files with their digests
    listing = json.loads((checkpoint / "files.json").read_text())
    assert {"inference/thresholds.json", "inference/preprocessing.json"} <= set(listing)

    evaluated = evaluate_checkpoint(checkpoint, "test")  # the shard + eval-loader path
    assert sorted(test_predictions) == evaluated.ids
    probs = np.array([[test_predictions[i]["probabilities"][g] for g in GENRES] for i in evaluated.ids])
    np.testing.assert_allclose(probs, evaluated.probs, rtol=0, atol=1e-5)

    report = evaluation_report(_raw_labels(raw, evaluated.ids), probs, thresholds, GENRES)
    for protocol in ("threshold_0.5", "tuned_on_dev"):
        for key in METRICS:
            assert report[protocol][key] == pytest.approx(final[protocol][key], abs=1e-12), (protocol, key)
        for key in ("roc_auc_macro", "mean_average_precision"):
            assert report[protocol][key] == pytest.approx(final[protocol][key], abs=1e-4), (protocol, key)
        assert report[protocol]["per_label"] == final[protocol]["per_label"]
    # The marked genres are exactly those at or above their tuned threshold, most probable first.
    for record in test_predictions.values():
        expected = [g for g, t in zip(GENRES, thresholds, strict=True) if record["probabilities"][g] >= t]
        assert sorted(record["labels"]) == sorted(expected)
        marked = [record["probabilities"][g] for g in record["labels"]]
        assert marked == sorted(marked, reverse=True)
        assert "missing" not in record


def test_worker_processes_give_the_same_records(run_dir, raw, test_predictions, tmp_path):
    ids = list(test_predictions)[:40]
    source = tmp_path / "movies.jsonl"
    plots = {i: json.loads((raw / "dataset" / f"{i}.json").read_text())["plot"] for i in ids}
    source.write_text(
        "".join(
            json.dumps({"id": i, "plot": plots[i], "poster": str(raw / "dataset" / f"{i}.jpeg")}) + "\n" for i in ids
        )
    )
    out = tmp_path / "workers.jsonl"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--input",
                str(source),
                "--output",
                str(out),
                "--workers",
                "2",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ids  # input order kept across 3 batches and 2 workers
    for record in records:  # (this process runs torch with more threads: float noise only)
        expected = test_predictions[record["id"]]
        assert record["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert record["labels"] == expected["labels"]


def test_jsonl_with_a_missing_plot_or_poster(run_dir, raw, test_predictions, tmp_path):
    movie_id = sorted(test_predictions)[0]
    plots = json.loads((raw / "dataset" / f"{movie_id}.json").read_text())["plot"]
    poster = tmp_path / "posters" / "cover.jpeg"
    poster.parent.mkdir()
    shutil.copy(raw / "dataset" / f"{movie_id}.jpeg", poster)
    lines = [
        {"id": "both", "plot": plots, "poster": "posters/cover.jpeg"},
        {"id": "plot_only", "plot": plots},
        {"id": "poster_only", "plot": None, "poster": str(poster)},
    ]
    source = tmp_path / "movies.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--run", str(run_dir), "--input", str(source), "--output", str(out)]) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(records) == ["both", "plot_only", "poster_only"]
    # Same movie, same preparation: the JSONL source gives the folder source's probabilities.
    assert records["both"]["probabilities"] == pytest.approx(test_predictions[movie_id]["probabilities"], abs=1e-6)
    assert "missing" not in records["both"]
    assert records["plot_only"]["missing"] == ["poster"]
    assert records["poster_only"]["missing"] == ["plot"]
    for name in ("plot_only", "poster_only"):
        probs = np.array(list(records[name]["probabilities"].values()))
        assert np.all((probs > 0) & (probs < 1))
        assert not np.allclose(probs, list(records["both"]["probabilities"].values()), atol=1e-4)


def test_one_movie_prints_every_genre_with_the_predicted_ones_marked(run_dir, raw, test_predictions):
    movie_id = sorted(test_predictions)[1]
    plot = max(json.loads((raw / "dataset" / f"{movie_id}.json").read_text())["plot"], key=len)
    result = cli(
        "predict", "--run", str(run_dir), "--plot", plot, "--poster", str(raw / "dataset" / f"{movie_id}.jpeg")
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line[2:].split(" ")[0] in GENRES]
    assert len(rows) == len(GENRES)
    marked = {line[2:].split()[0] for line in rows if line.startswith("*")}
    assert marked == set(test_predictions[movie_id]["labels"])
    shown = [float(line.split()[-2]) for line in rows]
    assert shown == sorted(shown, reverse=True)
    assert f"predicted: {', '.join(test_predictions[movie_id]['labels']) or '(none)'}" in result.stdout


# --------------------------------------------------------------------------- bad input


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mmimdb-dist predict: error: ")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0], lines
    return errors[0]


@pytest.fixture(scope="module")
def bad_files(raw, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-input")
    good = sorted((raw / "dataset").glob("*.jpeg"))[0].read_bytes()
    files = {
        "corrupt": folder / "corrupt.jpeg",
        "truncated": folder / "truncated.jpeg",
        "empty": folder / "empty.jpeg",
        "missing": folder / "missing.jpeg",
    }
    files["corrupt"].write_bytes(b"this is not an image at all" * 40)
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "poster file missing"),
        ("corrupt", "not an image PIL can read"),
        ("truncated", "poster does not decode"),
        ("empty", "poster file is empty (0 bytes)"),
    ],
)
def test_a_bad_poster_is_one_error_line_naming_the_file(run_dir, bad_files, capsys, case, expected):
    poster = bad_files[case]
    line = _one_error_line(
        capsys, ["predict", "--run", str(run_dir), "--plot", "a man and a dog", "--poster", str(poster)]
    )
    assert str(poster) in line
    assert expected in line


def test_an_empty_plot_is_one_error_line(run_dir, raw, capsys):
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--plot", "   "])
    assert "the plot is empty" in line


def test_bad_batch_inputs_name_the_file_and_line(run_dir, raw, tmp_path, capsys):
    jsonl = tmp_path / "movies.jsonl"
    good = json.dumps({"id": "1", "plot": "a family moves to a haunted house"})
    jsonl.write_text(good + "\n" + good.replace('"1"', '"2"')[:25])  # the last line cut short
    line = _one_error_line(
        capsys, ["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(tmp_path / "out.jsonl")]
    )
    assert f"{jsonl}:2: not valid JSON" in line
    assert "truncated" in line
    assert not (tmp_path / "out.jsonl").exists()
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--input",
                str(jsonl),
                "--output",
                str(tmp_path / "out.jsonl"),
                "--skip-bad",
            ]
        )
        == 0
    )
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "labels" in records[0]
    assert "looks truncated" in records[1]["error"]
    assert len(records) == 2

    jsonl.write_text(good + "\n" + json.dumps({"id": "2", "plot": ["", " "]}) + "\n")
    line = _one_error_line(
        capsys, ["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(tmp_path / "out.jsonl")]
    )
    assert f"{jsonl}:2: the plot is empty" in line
    # --skip-bad: the bad movie becomes an error record, the others are predicted.
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--input",
                str(jsonl),
                "--output",
                str(tmp_path / "out.jsonl"),
                "--skip-bad",
            ]
        )
        == 0
    )
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2"]
    assert "labels" in records[0]
    assert "plot is empty" in records[1]["error"]

    folder = tmp_path / "folder"
    folder.mkdir()
    movie = sorted((raw / "dataset").glob("*.json"))[0]
    shutil.copy(movie.with_suffix(".jpeg"), folder / movie.with_suffix(".jpeg").name)
    (folder / movie.name).write_bytes(movie.read_bytes()[:-10])  # a truncated metadata file
    line = _one_error_line(
        capsys, ["predict", "--run", str(run_dir), "--input", str(folder), "--output", str(tmp_path / "folder.jsonl")]
    )
    assert f"{folder / movie.name}: not valid UTF-8 JSON" in line
    assert "truncated" in line


def _copy_checkpoint(run_dir: Path, tmp_path: Path, inference_only: bool = False) -> Path:
    source = best_checkpoint(run_dir)
    target = tmp_path / "checkpoint"
    shutil.copytree(source / "inference" if inference_only else source, target)
    return target


def test_a_truncated_checkpoint_file_is_named(run_dir, tmp_path, capsys):
    checkpoint = _copy_checkpoint(run_dir, tmp_path)
    weights = checkpoint / "inference" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 3])
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(checkpoint), "--plot", "a heist in Paris"])
    assert f"{weights}: {size // 3} bytes, expected {size} (truncated" in line

    bare = _copy_checkpoint(run_dir, tmp_path / "bare", inference_only=True)  # no files.json to check
    (bare / "model.safetensors").write_bytes((bare / "model.safetensors").read_bytes()[: size // 3])
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(bare), "--plot", "a heist in Paris"])
    assert f"{bare / 'model.safetensors'}: not a readable safetensors file" in line
    assert "truncated" in line


def test_a_checkpoint_of_another_model_is_refused(run_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    from mmimdb_dist.data.vocab import Vocabulary
    from mmimdb_dist.models.registry import build_model
    from mmimdb_dist.run.export import load_for_inference

    _, cfg, vocab = load_for_inference(best_checkpoint(run_dir))
    cfg.model.name = "early_fusion"  # same encoders, another fusion head
    other = build_model(cfg.model, num_labels=23, vocab_size=len(vocab), pad_id=Vocabulary.pad_id)
    weights = {k: v.contiguous() for k, v in other.state_dict().items()}

    bare = _copy_checkpoint(run_dir, tmp_path, inference_only=True)
    save_file(weights, str(bare / "model.safetensors"))
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(bare), "--plot", "a heist in Paris"])
    assert f"{bare / 'model.safetensors'}: does not fit the model of its config.yaml" in line

    full = _copy_checkpoint(run_dir, tmp_path / "full")
    save_file(weights, str(full / "inference" / "model.safetensors"))
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(full), "--plot", "a heist in Paris"])
    assert f"{full / 'inference' / 'model.safetensors'}:" in line
    assert "replaced by another model's file" in line

    labels = _copy_checkpoint(run_dir, tmp_path / "labels", inference_only=True)
    (labels / "labels.json").write_text(json.dumps({"names": ["Drama", "Comedy"], "task": "multilabel"}))
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(labels), "--plot", "a heist in Paris"])
    assert (
        f"{labels / 'model.safetensors'}: does not fit the model of its config.yaml and labels.json (2 labels)" in line
    )
    (labels / "labels.json").write_text(json.dumps({"names": ["Drama", "Drama"]}))
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(labels), "--plot", "a heist in Paris"])
    assert line.endswith(f"{labels / 'labels.json'}: label set: label 'Drama' appears twice")

    # an export written before label sets were data (genres.json, MM-IMDb's genres) still loads
    legacy = _copy_checkpoint(run_dir, tmp_path / "legacy", inference_only=True)
    (legacy / "labels.json").unlink()
    (legacy / "genres.json").write_text(json.dumps(list(GENRES)))
    thresholds = json.loads((legacy / "thresholds.json").read_text())
    thresholds["genres"] = thresholds.pop("labels")
    (legacy / "thresholds.json").write_text(json.dumps(thresholds))
    assert main(["predict", "--checkpoint", str(legacy), "--plot", "a heist in Paris", "--json"]) == 0


def test_bad_input_exits_2_with_one_line_from_a_real_process(run_dir, bad_files):
    result = cli("predict", "--run", str(run_dir), "--poster", str(bad_files["corrupt"]))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"mmimdb-dist predict: error: {bad_files['corrupt']}: ")
    assert result.stdout == ""


def test_threshold_choice_tuned_half_or_a_number(run_dir, raw, test_predictions, tmp_path, capsys):
    """--threshold tuned (the default) applies the checkpoint's dev-tuned thresholds; a number
    applies that number to every genre; anything else is one error line before a model loads."""
    out = tmp_path / "half.jsonl"
    result = cli(
        "predict",
        "--run",
        str(run_dir),
        "--input",
        str(raw),
        "--split",
        "test",
        "--output",
        str(out),
        "--threshold",
        "0.5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(thresholds 0.5 for every label (--threshold))" in result.stdout
    at_half = {record["id"]: record for record in map(json.loads, out.read_text().splitlines())}
    assert at_half.keys() == test_predictions.keys()
    changed = 0
    for movie_id, record in at_half.items():
        assert record["probabilities"] == test_predictions[movie_id]["probabilities"]
        assert set(record["labels"]) == {g for g, p in record["probabilities"].items() if p >= 0.5}
        changed += record["labels"] != test_predictions[movie_id]["labels"]
    assert changed > 0  # the tuned thresholds are not all 0.5
    for bad in ("0", "1.5", "half"):
        line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--plot", "a man", "--threshold", bad])
        assert "--threshold: expected 'tuned' or a number in (0, 1)" in line


def test_output_and_device_mistakes_are_one_error_line(run_dir, raw, tmp_path, capsys):
    """`--output` naming a folder, `--device cuda` on a machine without one, and a write that
    fails (a size limit stands in for a full disk) are each one line, with nothing left behind."""
    import subprocess
    import sys

    jsonl = tmp_path / "movies.jsonl"
    jsonl.write_text(json.dumps({"id": "1", "plot": "a family moves to a haunted house"}) + "\n")
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(tmp_path)])
    assert line.endswith(f"--output {tmp_path}: is a folder; expected a file name for a predictions file (.jsonl)")
    mine = tmp_path / "notes.jsonl"
    mine.write_text("my own notes, not predictions\n")
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(mine)])
    assert line.endswith(
        f"--output {mine}: exists and is not a predictions file (.jsonl); choose another name (it was not changed)"
    )
    assert mine.read_text() == "my own notes, not predictions\n"
    import torch

    if not torch.cuda.is_available():
        line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--plot", "a heist", "--device", "cuda"])
        assert line.endswith("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--plot", "a heist", "--device", "tpu9"])
    assert "--device 'tpu9': not a torch device" in line

    out = tmp_path / "limited.jsonl"
    limited = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))\n"
        "from mmimdb_dist.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            limited,
            "predict",
            "--run",
            str(run_dir),
            "--input",
            str(jsonl),
            "--output",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [x for x in result.stderr.splitlines() if "error:" in x]
    assert len(errors) == 1
    assert f"{out}: cannot write the predictions (File too large)" in errors[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".limited.jsonl*"))


def test_jsonl_with_surrogates_or_deep_nesting_is_skipped_and_the_rest_written(run_dir, tmp_path, capsys):
    jsonl = tmp_path / "movies.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                json.dumps({"id": "good", "plot": "a heist in Paris"}),
                '{"id": "bad\\ud800", "plot": "a lone surrogate in the id"}',
                '{"id": "plot", "plot": "x\\udfff"}',
                "[" * 100_000 + "]" * 100_000,
            ]
        )
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(out)])
    assert f"{jsonl}:2: a string holds a lone UTF-16 surrogate escape" in line
    capsys.readouterr()
    assert main(["predict", "--run", str(run_dir), "--input", str(jsonl), "--output", str(out), "--skip-bad"]) == 0
    assert "1 movies predicted, 3 skipped (their lines hold the error)" in capsys.readouterr().out
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 4
    assert "labels" in records[0]
    assert "lone UTF-16 surrogate" in records[1]["error"]
    assert "lone UTF-16 surrogate" in records[2]["error"]
    assert records[3]["error"].endswith(":4: JSON nested too deeply to read")


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--workers", "-2"), ("--batch-size", "many")])
def test_counts_below_their_minimum_are_one_line(run_dir, tmp_path, flag, value):
    result = cli("predict", "--run", str(run_dir), "--plot", "a heist", flag, value)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = [x for x in result.stderr.splitlines() if x.strip()][-1:]
    assert f"argument {flag}: expected an integer" in line, result.stderr


def test_output_is_judged_by_its_content_never_replacing_an_input(run_dir, tmp_path, capsys):
    """`--output` equal to `--input`, or naming another input JSONL (records with an id and a
    plot), is refused and left as it was; an earlier predictions file is replaced; `--overwrite`
    replaces anything that is a file."""
    movies = tmp_path / "movies.jsonl"
    original = json.dumps({"id": "1", "plot": "a family moves to a haunted house"}) + "\n"
    movies.write_text(original)
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(movies), "--output", str(movies)])
    assert line.endswith(f"--output {movies}: is the --input file; choose another name (it was not changed)")
    other = tmp_path / "other_movies.jsonl"
    other.write_text(original)
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(movies), "--output", str(other)])
    assert line.endswith(
        f"--output {other}: exists and is not a predictions file (.jsonl); choose another name (it was not changed)"
    )
    assert movies.read_text() == other.read_text() == original
    out = tmp_path / "out.jsonl"
    for _ in range(2):  # a predictions file is recognised and replaced
        assert main(["predict", "--run", str(run_dir), "--input", str(movies), "--output", str(out)]) == 0
        assert "probabilities" in json.loads(out.read_text().splitlines()[0])
    argv = ["predict", "--run", str(run_dir), "--input", str(movies), "--output", str(other), "--overwrite"]
    assert main(argv) == 0
    assert "probabilities" in json.loads(other.read_text().splitlines()[0])


def test_a_fifo_as_a_movie_file_is_refused_without_blocking(run_dir, raw, tmp_path, capsys):
    """A FIFO named like a movie's JSON (or as the input JSONL) is refused at once: reading it
    would block forever. With --skip-bad it becomes that movie's error record."""
    import os

    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "0000001.json").write_text(json.dumps({"plot": ["a heist in Paris"]}))
    shutil.copy(next((raw / "dataset").glob("*.jpeg")), folder / "0000001.jpeg")
    os.mkfifo(folder / "0000002.json")
    out = tmp_path / "out.jsonl"
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(folder), "--output", str(out)])
    assert line.endswith(f"{folder / '0000002.json'}: is a FIFO, not a regular file (expected the movie's JSON file)")
    argv = ["predict", "--run", str(run_dir), "--input", str(folder), "--output", str(out), "--skip-bad"]
    assert main(argv) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["0000001", "0000002"]
    assert "probabilities" in records[0]
    assert "is a FIFO" in records[1]["error"]
    fifo = tmp_path / "movies.jsonl"
    os.mkfifo(fifo)
    line = _one_error_line(capsys, ["predict", "--run", str(run_dir), "--input", str(fifo), "--output", str(out)])
    assert line.endswith(f"{fifo}: cannot read (is a FIFO, not a regular file)")


def test_an_absurd_preprocessing_json_is_one_line_not_a_memory_error(run_dir, tmp_path, capsys):
    """A damaged `inference/preprocessing.json` (a poster side of 10^9 pixels) is checked when the
    checkpoint loads, with the shard settings' own bounds, before any poster is resized to it."""
    export = tmp_path / "inference"
    shutil.copytree(best_checkpoint(run_dir) / "inference", export)
    settings = json.loads((export / "preprocessing.json").read_text())
    (export / "preprocessing.json").write_text(json.dumps({**settings, "poster_short_side": 10**9}))
    line = _one_error_line(capsys, ["predict", "--checkpoint", str(export), "--plot", "a heist in Paris"])
    assert line.endswith(
        f"{export / 'preprocessing.json'}: shard.poster_short_side: expected a value in [1, 4096], got 1000000000"
    )


def test_a_checkpoint_of_another_run_under_run_is_refused(run_dir, tmp_path, capsys):
    """`--run A --checkpoint <B's checkpoint>` used B under A's name without a word."""
    other = tmp_path / "other-run"
    shutil.copytree(best_checkpoint(run_dir), other / "checkpoints" / "step-1")
    foreign = other / "checkpoints" / "step-1"
    line = _one_error_line(
        capsys, ["predict", "--run", str(run_dir), "--checkpoint", str(foreign), "--plot", "a heist in Paris"]
    )
    assert line.endswith(
        f"--checkpoint {foreign}: is not a checkpoint of --run {run_dir}; give one of that run's checkpoints "
        "(best, last or a name in its checkpoints/), or leave --run out"
    )
    own = best_checkpoint(run_dir)
    assert main(["predict", "--run", str(run_dir), "--checkpoint", own.name, "--plot", "a heist", "--json"]) == 0
    assert main(["predict", "--run", str(run_dir), "--checkpoint", str(own), "--plot", "a heist", "--json"]) == 0


def test_run_naming_the_folder_of_runs_says_where_they_are(run_dir, tmp_path, capsys):
    """`output_dir=runs/x` with `name=x` puts the run in runs/x/x; `--run runs/x` then named the
    runs inside instead of only "no complete checkpoint"."""
    outer = tmp_path / "x"
    shutil.copytree(run_dir, outer / "x", ignore=shutil.ignore_patterns("*.lock"))
    line = _one_error_line(capsys, ["predict", "--run", str(outer), "--plot", "a heist in Paris"])
    assert line.endswith(f"{outer}: holds runs, not a run's checkpoints: {outer / 'x'}; pass one of them as --run")
