"""The raw MM-IMDb reader: split.json checks, skip reasons, plot policies, poster formats."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from dist_scripts.raw_data import make_raw, read_all_movies
from real_plots import REAL_SPLIT_JSON, shared_file

from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.data.sources.mmimdb.raw import (
    SampleSkipped,
    SkipReport,
    check_poster,
    iter_movies,
    load_poster,
    read_movie,
    read_split,
    resolve_raw_dir,
)
from mmimdb_dist.errors import DataError

# --------------------------------------------------------------------------- split.json


def test_real_split_file(tmp_path):
    root = tmp_path / "mmimdb"
    root.mkdir()
    shutil.copy(shared_file(REAL_SPLIT_JSON), root / "split.json")
    split = read_split(tmp_path)  # the parent of mmimdb/ is accepted too
    assert {name: len(ids) for name, ids in split.items()} == {"train": 15552, "dev": 2608, "test": 7799}
    all_ids = [i for ids in split.values() for i in ids]
    assert len(set(all_ids)) == 25959
    assert all(len(i) == 7 and i.isdigit() for i in all_ids)
    assert read_split(root) == split
    assert resolve_raw_dir(tmp_path) == root


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "split.json: missing"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"train": ["0000001"], "dev": []}', "missing key 'test'"),
        (b'{"train": "0000001", "dev": [], "test": []}', "key 'train': expected a list"),
        (b'{"train": [1234567], "dev": [], "test": []}', "key 'train'[0]"),
        (b'{"train": ["12.45"], "dev": [], "test": []}', "key 'train'[0]"),
        (b'{"train": ["0000001", "0000001"], "dev": [], "test": []}', "appears twice in 'train'"),
        (b'{"train": ["0000001"], "dev": [], "test": ["0000001"]}', "in both 'train' and 'test'"),
    ],
)
def test_split_problems_name_the_file(tmp_path, content, expected):
    root = tmp_path / "mmimdb"
    (root / "dataset").mkdir(parents=True)
    if content is not None:
        (root / "split.json").write_bytes(content)
    with pytest.raises(DataError) as info:
        read_split(root)
    message = str(info.value)
    assert str(root / "split.json") in message
    assert expected in message


def test_missing_raw_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "nowhere")


# --------------------------------------------------------------------------- skips

SKIP_CASES: dict[str, tuple[dict, str]] = {
    # id: (write_movie kwargs, expected reason)
    "0000010": ({}, "missing_json"),  # metadata file removed below
    "0000011": ({"raw_json": b'{"plot": ["x"], "genres": '}, "bad_json"),
    "0000012": ({"raw_json": '{"plot": ["caf\u00e9"], "genres": ["Drama"]}'.encode("latin-1")}, "not_utf8"),
    "0000013": ({"raw_json": b'["a list"]'}, "bad_json"),
    "0000014": ({"plot": []}, "no_plot"),
    "0000015": ({"plot": ["   ", ""]}, "no_plot"),
    "0000016": ({"plot": ["ok", 3]}, "bad_plot"),
    "0000017": ({"plot": {"text": "x"}}, "bad_plot"),
    "0000018": ({"genres": ["Adult", "News"]}, "no_kept_genre"),
    "0000019": ({"genres": []}, "no_kept_genre"),
    "0000020": ({"genres": "Drama"}, "bad_genres"),
    "0000021": ({"poster": None}, "missing_poster"),
    "0000022": ({"poster": "empty"}, "bad_poster"),
    "0000023": ({}, "bad_poster"),  # poster bytes replaced below
}


def build_skip_fixture(tmp_path: Path) -> Path:
    movies: dict[str, dict] = {f"{i:07d}": {} for i in range(1, 4)}  # three good movies
    movies.update({movie_id: kwargs for movie_id, (kwargs, _) in SKIP_CASES.items()})
    root = make_raw(tmp_path, movies)
    (root / "dataset" / "0000010.json").unlink()
    (root / "dataset" / "0000023.jpeg").write_bytes(b"this is not an image at all")
    return root


def test_each_skip_reason_is_counted_and_recorded(tmp_path):
    root = build_skip_fixture(tmp_path)
    movies, report = read_all_movies(root)
    assert sorted(m.id for m in movies) == ["0000001", "0000002", "0000003"]
    expected: dict[str, int] = {}
    for _, reason in SKIP_CASES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(report.counts) == expected
    assert report.total == len(SKIP_CASES)
    by_id = {record.id: record for record in report.movies}
    assert set(by_id) == set(SKIP_CASES)
    for movie_id, (_, reason) in SKIP_CASES.items():
        record = by_id[movie_id]
        assert record.reason == reason
        assert movie_id in record.file
        assert record.detail
        assert record.split in ("train", "dev", "test")
    assert by_id["0000021"].file.endswith("0000021.jpeg")
    assert "0 bytes" in by_id["0000022"].detail
    assert "'plot'" in by_id["0000016"].detail


def test_strict_mode_names_the_file(tmp_path):
    root = make_raw(tmp_path, {"0000001": {}, "0000002": {"plot": []}, "0000003": {}})
    with pytest.raises(DataError) as info:
        list(iter_movies(root, strict=True))
    assert str(root / "dataset" / "0000002.json") in str(info.value)
    assert "no non-empty summary" in str(info.value)
    assert "strict mode" in str(info.value)


def test_without_a_report_skips_are_logged(tmp_path, caplog):
    root = make_raw(tmp_path, {"0000001": {}, "0000002": {"poster": None}})
    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.data.sources.mmimdb.raw"):
        movies = list(iter_movies(root))
    assert [m.id for m in movies] == ["0000001"]
    assert "missing_poster 1" in caplog.text


# --------------------------------------------------------------------------- posters


@pytest.mark.parametrize("kind", ["png", "CMYK", "L", "RGB"])
def test_posters_in_other_formats_become_rgb(tmp_path, kind):
    root = make_raw(tmp_path, {"0000001": {"poster": kind, "size": (50, 75)}})
    movies, report = read_all_movies(root)
    assert report.total == 0
    assert len(movies) == 1
    image = load_poster(movies[0])
    assert image.mode == "RGB"
    assert image.size == (50, 75)
    if kind == "png":  # half-transparent colour on white
        _r, g, b = image.getpixel((10, 10))
        assert 120 < g < 180
        assert b > 190


def test_truncated_poster_fails_full_decode(tmp_path):
    root = make_raw(tmp_path, {"0000001": {"poster": "truncated", "size": (200, 300)}})
    movies, _report = read_all_movies(root)  # the header is intact: the cheap check passes
    assert len(movies) == 1
    with pytest.raises(SampleSkipped) as info:
        load_poster(movies[0])
    assert info.value.record.reason == "bad_poster"
    assert "0000001.jpeg" in info.value.record.file


def test_check_poster_reasons(tmp_path):
    with pytest.raises(SampleSkipped) as info:
        check_poster("0000001", "train", tmp_path / "none.jpeg")
    assert info.value.record.reason == "missing_poster"


# --------------------------------------------------------------------------- content


def test_plot_policies(tmp_path):
    plots = ["Short one.", "The longest summary of them all.", "Middle length one."]
    root = make_raw(tmp_path, {"0000001": {"plot": plots}})
    by_policy = {policy: read_all_movies(root, plot_policy=policy)[0][0] for policy in ("longest", "first", "all")}
    assert by_policy["longest"].plot == plots[1]
    assert by_policy["first"].plot == plots[0]
    assert by_policy["all"].plot == "\n\n".join(plots)
    assert {m.num_plots for m in by_policy.values()} == {3}
    with pytest.raises(DataError, match="plot_policy"):
        list(iter_movies(root, plot_policy="shortest"))


def test_plot_given_as_string_is_repaired_and_counted(tmp_path):
    root = make_raw(tmp_path, {"0000001": {"plot": "  Just one plot.  "}, "0000002": {}})
    movies, report = read_all_movies(root)
    assert [m.plot for m in movies] == ["Just one plot.", "A plot."]
    assert movies[0].num_plots == 1
    assert report.total == 0
    assert report.repaired == {"plot_was_string": 1}


def test_genres_mapped_dropped_and_unknown(tmp_path, caplog):
    root = make_raw(
        tmp_path, {"0000001": {"genres": ["Western", "Adult", "drama", "Science Fiction", "Cooking", "Talk-Show"]}}
    )
    report = SkipReport()
    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.data.sources.mmimdb.raw"):
        (movie,) = list(iter_movies(root, report=report))
    assert movie.genres == ["Drama", "Sci-Fi", "Western"]  # GENRES order
    assert movie.labels == [int(g in movie.genres) for g in GENRES]
    assert report.unknown_labels == {"Cooking": 1}
    assert report.total == 0
    assert "Cooking" in caplog.text
    assert "Adult" not in caplog.text


def test_movie_fields(tmp_path):
    root = make_raw(
        tmp_path,
        {"0000007": {"title": "Alien", "year": "1979", "genres": ["Horror", "Sci-Fi"]}, "0000008": {"year": None}},
        splits={"train": ["0000008"], "dev": [], "test": ["0000007"]},
    )
    movie = read_movie(root, "0000007", "test")
    assert (movie.id, movie.split, movie.title, movie.year) == ("0000007", "test", "Alien", 1979)
    assert movie.poster_path == root / "dataset" / "0000007.jpeg"
    assert movie.metadata() == {
        "id": "0000007",
        "title": "Alien",
        "year": 1979,
        "genres": ["Horror", "Sci-Fi"],
        "labels": movie.labels,
        "num_plots": 1,
    }
    assert sum(movie.labels) == 2
    movies, _ = read_all_movies(root, splits=["train"])
    assert [(m.id, m.year) for m in movies] == [("0000008", None)]
