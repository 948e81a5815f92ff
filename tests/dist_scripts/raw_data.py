"""Small raw MM-IMDb folders written movie by movie, with exactly the defects a test needs."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mmimdb_dist.data.sources.mmimdb.raw import SPLITS, Movie, SkipReport, iter_movies


def write_movie(
    root: Path,
    movie_id: str,
    *,
    plot: object = ("A plot.",),
    genres: object = ("Drama",),
    title: str = "Title",
    year: object = 1999,
    poster: str | None = "RGB",
    size: tuple[int, int] = (60, 90),
    raw_json: bytes | None = None,
) -> None:
    """One movie under `root/dataset`. `poster` is a PIL mode, "png", "empty", "truncated"
    or None (no file); `raw_json` replaces the metadata file's bytes."""
    dataset = root / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    if raw_json is not None:
        (dataset / f"{movie_id}.json").write_bytes(raw_json)
    else:
        record = {
            "title": title,
            "year": year,
            "genres": list(genres) if isinstance(genres, tuple) else genres,
            "plot": list(plot) if isinstance(plot, tuple) else plot,
        }
        (dataset / f"{movie_id}.json").write_text(json.dumps(record), encoding="utf-8")
    path = dataset / f"{movie_id}.jpeg"
    seed = int(movie_id) % 200
    if poster is None:
        return
    if poster == "empty":
        path.write_bytes(b"")
    elif poster == "png":
        Image.new("RGBA", size, (seed, 80, 160, 128)).save(path, format="PNG")
    elif poster == "truncated":
        Image.effect_noise(size, 64).convert("RGB").save(path, format="JPEG", quality=90)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    else:
        colour = {"RGB": (seed, 120, 40), "CMYK": (seed, 20, 200, 10), "L": seed}[poster]
        Image.new(poster, size, colour).save(path, format="JPEG", quality=90)


def write_split(root: Path, split: dict[str, list[str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "split.json").write_text(json.dumps(split), encoding="utf-8")


def make_raw(tmp_path: Path, movies: dict[str, dict], splits: dict[str, list[str]] | None = None) -> Path:
    """A raw folder `tmp_path/mmimdb` with `movies` (id -> write_movie kwargs); ids are put
    round-robin into train/dev/test unless `splits` is given."""
    root = tmp_path / "mmimdb"
    for movie_id, kwargs in movies.items():
        write_movie(root, movie_id, **kwargs)
    if splits is None:
        splits = {"train": [], "dev": [], "test": []}
        for i, movie_id in enumerate(movies):
            splits[("train", "dev", "test")[i % 3]].append(movie_id)
    write_split(root, splits)
    return root


def read_all_movies(raw_dir: Path, splits=SPLITS, plot_policy: str = "longest") -> tuple[list[Movie], SkipReport]:
    """Every usable movie of `splits` and the reader's SkipReport."""
    report = SkipReport()
    return list(iter_movies(raw_dir, splits, plot_policy, report=report)), report
