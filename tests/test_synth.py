"""The synthetic MM-IMDb: raw layout, statistics, defects, determinism and learnability."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmimdb_dist.data.sources.mmimdb.genres import DROPPED_GENRES, GENRES, map_genres, multi_hot
from mmimdb_dist.data.sources.mmimdb.synth import DEFECT_KINDS, generate_dataset, split_sizes
from mmimdb_dist.data.sources.mmimdb.synth_cues import (
    GENRE_CUE_WORDS,
    GENRE_MODALITY,
    REAL_GENRE_COUNTS,
    REAL_NUM_MOVIES,
)

NUM_MOVIES = 600


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), NUM_MOVIES, seed=0, workers=2)


@pytest.fixture(scope="module")
def records(dataset: Path) -> dict[str, dict]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted((dataset / "dataset").glob("*.json"))
    }


@pytest.fixture(scope="module")
def split(dataset: Path) -> dict[str, list[str]]:
    return json.loads((dataset / "split.json").read_text(encoding="utf-8"))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# --------------------------------------------------------------------------- layout


def test_layout_and_json_keys(dataset: Path, records: dict[str, dict]) -> None:
    assert dataset.name == "mmimdb"
    jpegs = sorted(path.stem for path in (dataset / "dataset").glob("*.jpeg"))
    assert sorted(records) == jpegs
    assert len(records) == NUM_MOVIES
    for movie_id, record in records.items():
        assert {"plot", "genres", "title", "year", "imdbID"} <= set(record)
        assert int(record["imdbID"]) == int(movie_id)
        assert isinstance(record["title"], str)
        assert record["title"]
        assert 1900 < record["year"] <= 2017
        assert isinstance(record["plot"], list)
        assert 1 <= len(record["plot"]) <= 4
        assert all(isinstance(plot, str) and plot for plot in record["plot"])
        assert all(isinstance(genre, str) for genre in record["genres"])
    defects = json.loads((dataset / "defects.json").read_text())
    assert defects["movies"] == {}
    assert defects["counts"] == {}


def test_split_proportions_disjoint_and_id_format(split: dict[str, list[str]], records: dict[str, dict]) -> None:
    assert set(split) == {"train", "dev", "test"}
    assert {name: len(ids) for name, ids in split.items()} == split_sizes(NUM_MOVIES)
    for name, real in (("train", 15552), ("dev", 2608), ("test", 7799)):
        assert abs(len(split[name]) / NUM_MOVIES - real / REAL_NUM_MOVIES) < 1 / NUM_MOVIES
    every_id = split["train"] + split["dev"] + split["test"]
    assert len(set(every_id)) == len(every_id) == NUM_MOVIES
    assert set(every_id) == set(records)
    assert all(re.fullmatch(r"\d{7}", movie_id) for movie_id in every_id)


def test_split_sizes_match_the_official_split_at_full_scale() -> None:
    from real_plots import REAL_SPLIT_JSON, shared_file

    official = json.loads(shared_file(REAL_SPLIT_JSON).read_text())
    assert split_sizes(REAL_NUM_MOVIES) == {name: len(ids) for name, ids in official.items()}
    assert split_sizes(1) == {"train": 1, "dev": 0, "test": 0}


# --------------------------------------------------------------------------- statistics


def test_genre_cardinality_and_frequency_order(records: dict[str, dict]) -> None:
    kept = [map_genres(record["genres"])[0] for record in records.values()]
    assert all(kept_genres for kept_genres in kept), "every movie has a kept genre"
    assert all(not map_genres(record["genres"])[1] for record in records.values())
    assert 2.2 < statistics.mean(len(genres) for genres in kept) < 2.8
    counts = np.array(multi_hot([]))
    for genres in kept:
        counts += np.array(multi_hot(genres))
    assert counts.argmax() == GENRES.index("Drama")
    expected = np.array([REAL_GENRE_COUNTS[g] for g in GENRES]) / REAL_NUM_MOVIES * NUM_MOVIES
    # Frequent genres within 25% of their real share; the ranking as a whole follows the real one.
    frequent = expected > 100
    assert np.all(np.abs(counts[frequent] - expected[frequent]) < 0.25 * expected[frequent])
    ranks = np.argsort(np.argsort(-counts))
    assert np.corrcoef(ranks, np.arange(len(GENRES)))[0, 1] > 0.9
    dropped = sum(bool(set(r["genres"]) & DROPPED_GENRES) for r in records.values())
    assert 0 < dropped < 0.05 * NUM_MOVIES


def test_plot_lengths_have_a_median_near_115_words_and_a_long_tail(records: dict[str, dict]) -> None:
    longest = [max(len(plot.split()) for plot in record["plot"]) for record in records.values()]
    assert 95 <= statistics.median(longest) <= 140
    assert 0.03 < np.mean(np.array(longest) > 400) < 0.12
    multi = [record["plot"] for record in records.values() if len(record["plot"]) > 1]
    assert len(multi) > 0.3 * NUM_MOVIES
    differing = [len({len(plot.split()) for plot in plots}) > 1 for plots in multi]
    assert np.mean(differing) > 0.9


def test_posters_are_portrait_textured_rgb_jpegs_of_varied_size(dataset: Path, split: dict) -> None:
    widths = []
    for movie_id in split["test"][:60]:
        path = dataset / "dataset" / f"{movie_id}.jpeg"
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            width, height = image.size
            pixels = np.asarray(image.reduce(4), dtype=np.float32)
        widths.append(width)
        assert 300 <= width <= 800
        assert 1.38 <= height / width <= 1.58
        # Textured, not flat: strong variation across the poster and between neighbours.
        assert pixels.std() > 12
        assert np.abs(np.diff(pixels, axis=1)).mean() > 1.0
    assert max(widths) - min(widths) > 250


# --------------------------------------------------------------------------- learnability


def _features(dataset: Path, ids: list[str], records: dict[str, dict]):
    texts, histograms, labels = [], [], []
    for movie_id in ids:
        record = records[movie_id]
        texts.append(max(record["plot"], key=len))
        with Image.open(dataset / "dataset" / f"{movie_id}.jpeg") as image:
            image.draft("RGB", (image.width // 8, image.height // 8))
            small = np.asarray(image.convert("RGB").resize((16, 24))) // 43  # 6 levels
        codes = small[..., 0] * 36 + small[..., 1] * 6 + small[..., 2]
        histograms.append(np.sqrt(np.bincount(codes.ravel(), minlength=216) / codes.size))
        labels.append(multi_hot(map_genres(record["genres"])[0]))
    return texts, np.array(histograms), np.array(labels)


def test_genres_are_learnable_with_evidence_split_between_modalities(
    dataset: Path, split: dict, records: dict[str, dict]
) -> None:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier

    train_text, train_image, y_train = _features(dataset, split["train"] + split["dev"], records)
    test_text, test_image, y_test = _features(dataset, split["test"], records)
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    text_train, text_test = vectorizer.fit_transform(train_text), vectorizer.transform(test_text)
    seen = y_train.sum(axis=0) > 0

    def per_label_f1(x_train, x_test) -> np.ndarray:
        model = OneVsRestClassifier(LogisticRegression(C=4.0, solver="liblinear", class_weight="balanced"))
        model.fit(x_train, y_train[:, seen])
        predicted = np.zeros_like(y_test)
        predicted[:, seen] = model.predict(x_test)
        return f1_score(y_test, predicted, average=None, zero_division=0)

    text_f1 = per_label_f1(text_train, text_test)
    image_f1 = per_label_f1(train_image, test_image)
    fusion_f1 = per_label_f1(
        hstack([text_train, csr_matrix(train_image)]).tocsr(), hstack([text_test, csr_matrix(test_image)]).tocsr()
    )

    def group_mean(f1: np.ndarray, modality: str) -> float:
        return float(np.mean([f1[i] for i, genre in enumerate(GENRES) if GENRE_MODALITY[genre] == modality]))

    # The README's modality table: `python -m pytest -s tests/test_synth.py -k learnable`.
    for name, f1 in (("plot only", text_f1), ("poster only", image_f1), ("both", fusion_f1)):
        print(
            f"\n{name:<12} text genres {group_mean(f1, 'text'):.2f}  "
            f"image genres {group_mean(f1, 'image'):.2f}  macro-F1 {f1.mean():.2f}",
            end="",
        )
    assert group_mean(text_f1, "text") > group_mean(text_f1, "image") + 0.25
    assert group_mean(image_f1, "image") > group_mean(image_f1, "text") + 0.25
    assert fusion_f1.mean() > max(text_f1.mean(), image_f1.mean()) + 0.03


def test_modality_table_covers_every_genre_with_cue_words() -> None:
    assert set(GENRE_MODALITY) == set(GENRES)
    assert set(GENRE_MODALITY.values()) == {"text", "image", "both"}
    assert set(GENRE_CUE_WORDS) == set(GENRES)
    words = [word for cue_words in GENRE_CUE_WORDS.values() for word in cue_words]
    assert len(words) == len(set(words)), "a cue word belongs to one genre only"


# --------------------------------------------------------------------------- defects, determinism


@pytest.fixture(scope="module")
def defective_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = generate_dataset(tmp_path_factory.mktemp("a"), 90, seed=5, defect_rate=0.2, workers=1)
    second = generate_dataset(tmp_path_factory.mktemp("b"), 90, seed=5, defect_rate=0.2, workers=2)
    return first, second


def test_same_seed_is_byte_identical_whatever_the_worker_count(defective_pair) -> None:
    first, second = defective_pair
    first_files, second_files = _tree_bytes(first), _tree_bytes(second)
    assert len(first_files) > 150
    assert first_files == second_files


def test_different_seed_differs(defective_pair, tmp_path: Path) -> None:
    other = generate_dataset(tmp_path, 90, seed=6, defect_rate=0.2)
    first = defective_pair[0]
    assert json.loads((other / "split.json").read_text()) != json.loads((first / "split.json").read_text())
    a = sorted((first / "dataset").glob("*.jpeg"))[0].read_bytes()
    b = sorted((other / "dataset").glob("*.jpeg"))[0].read_bytes()
    assert a != b


def test_defects_are_recorded_and_present(defective_pair) -> None:
    root = defective_pair[0]
    report = json.loads((root / "defects.json").read_text())
    assert report["defect_rate"] == 0.2
    assert sum(report["counts"].values()) == len(report["movies"]) == 18
    assert report["counts"] == dict.fromkeys(DEFECT_KINDS, 2)
    split = json.loads((root / "split.json").read_text())
    assert set(report["movies"]) <= set(split["train"] + split["dev"] + split["test"])
    dataset = root / "dataset"
    for movie_id, kind in report["movies"].items():
        json_path, poster = dataset / f"{movie_id}.json", dataset / f"{movie_id}.jpeg"
        if kind == "bad_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(json_path.read_text())
            continue
        record = json.loads(json_path.read_text())
        if kind == "empty_plot":
            assert record["plot"] == []
        elif kind == "plot_as_string":
            assert isinstance(record["plot"], str)
            assert record["plot"]
        elif kind == "dropped_genres_only":
            assert record["genres"]
            assert set(record["genres"]) <= DROPPED_GENRES
            assert map_genres(record["genres"]) == ([], [])
        elif kind == "missing_poster":
            assert not poster.exists()
        elif kind == "zero_byte_poster":
            assert poster.stat().st_size == 0
        else:
            with Image.open(poster) as image:
                assert (image.format, image.mode) == {
                    "png_poster": ("PNG", "RGB"),
                    "cmyk_poster": ("JPEG", "CMYK"),
                    "grayscale_poster": ("JPEG", "L"),
                }[kind]
    healthy = set(json.loads((root / "split.json").read_text())["train"]) - set(report["movies"])
    for movie_id in healthy:
        assert json.loads((dataset / f"{movie_id}.json").read_text())["plot"]
        with Image.open(dataset / f"{movie_id}.jpeg") as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")


def test_interrupted_generation_leaves_no_split_json(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path, 20, seed=1)
    victim = json.loads((root / "split.json").read_text())["test"][0]
    poster = root / "dataset" / f"{victim}.jpeg"
    poster.unlink()
    poster.mkdir()  # the rename onto it fails part-way through regeneration
    (poster / "blocker").write_text("x")
    with pytest.raises(OSError):  # noqa: PT011 (whichever errno the platform's rename gives: the test is that nothing is left)
        generate_dataset(tmp_path, 20, seed=1)
    assert not (root / "split.json").exists()
    assert not [path for path in (root / "dataset").iterdir() if path.name.endswith(".tmp")]


def test_regenerating_into_the_same_folder_is_identical(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "x", 15, seed=2, defect_rate=0.3)
    before = _tree_bytes(root)
    os.link(root / "split.json", tmp_path / "first_split.json")  # holds the first file's inode
    written = (root / "split.json").stat().st_ino
    generate_dataset(tmp_path / "x", 15, seed=2, defect_rate=0.3)
    assert _tree_bytes(root) == before
    # split.json was written again (a new file, renamed into place), not left from the first run
    assert (root / "split.json").stat().st_ino != written


def test_files_of_another_generation_are_reported_not_listed(tmp_path: Path, caplog) -> None:
    generate_dataset(tmp_path, 6, seed=1)
    root = generate_dataset(tmp_path, 4, seed=2)
    assert "12 files" in caplog.text
    assert "not part of this dataset" in caplog.text
    split = json.loads((root / "split.json").read_text())
    assert sum(len(ids) for ids in split.values()) == 4
    assert len(list((root / "dataset").glob("*.json"))) == 10


# --------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", "synth", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_writes_the_dataset_and_prints_its_folder(tmp_path: Path) -> None:
    result = _cli("--out", str(tmp_path), "--movies", "12", "--seed", "3", "--workers", "1", "--defect-rate", "0.25")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "mmimdb"
    assert result.stdout.strip() == str(root)
    split = json.loads((root / "split.json").read_text())
    assert sum(len(ids) for ids in split.values()) == 12
    assert len(json.loads((root / "defects.json").read_text())["movies"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--movies", "0"), "num_movies must be at least 1"),
        (("--movies", "5", "--defect-rate", "1.5"), "defect_rate must be in [0, 1]"),
    ],
)
def test_cli_rejects_bad_arguments_in_one_line(tmp_path: Path, args, message) -> None:
    result = _cli("--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mmimdb" / "split.json").exists()


def test_cli_reports_an_output_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    result = _cli("--out", str(tmp_path / "taken"), "--movies", "3")
    assert result.returncode == 2
    assert "taken/mmimdb/dataset: cannot create the output folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
