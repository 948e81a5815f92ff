"""Reader for MM-IMDb's raw layout: `split.json`, `dataset/<id>.json`, `dataset/<id>.jpeg`.

The raw release is not clean: a few movies have no plot, no poster, a poster that is a PNG
or a CMYK JPEG under a `.jpeg` name, or only genres that the benchmark drops. The reader's
rule is that nothing is lost silently. A movie that cannot become a sample is skipped and
recorded in a `SkipReport` (reason, file, detail), which ends up in the shard manifest;
`strict=True` turns the first skip into an error instead. Posters that are merely in an
unexpected format are not skips: `load_poster` decodes any format PIL reads and converts
it to RGB.

Plot policy. Each movie has a list of plot summaries of different lengths. `longest` (the
default) keeps the most informative one, `first` keeps IMDb's first listed summary, `all`
joins them with a blank line. A `plot` that is a plain string instead of a list is accepted
as a one-summary list and counted under `SkipReport.repaired["plot_was_string"]`: the text
is usable and dropping the movie would change the benchmark's sample count for nothing.
"""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from PIL import Image, UnidentifiedImageError

from ....errors import DataError
from ....labels import LabelSet
from ....progress import progress as progress_bar
from ....userfiles import read_regular_bytes
from ...manifest import SPLITS
from ..common import ID_PATTERN, SampleSkipped, SkipReport, decode_image
from .genres import GENRES, map_genres, multi_hot

log = logging.getLogger(__name__)

# The label set of every shard set made from MM-IMDb: its 23 genres in frequency order.
MMIMDB_LABELS = LabelSet(GENRES, "multilabel")

PlotPolicy = Literal["longest", "first", "all"]
PLOT_POLICIES: tuple[str, ...] = ("longest", "first", "all")


# Skip reasons, as they appear in SkipReport.counts and in the manifest.
MISSING_JSON = "missing_json"
BAD_JSON = "bad_json"
NOT_UTF8 = "not_utf8"
NO_PLOT = "no_plot"
BAD_PLOT = "bad_plot"
BAD_GENRES = "bad_genres"
NO_GENRE = "no_kept_genre"
MISSING_POSTER = "missing_poster"
BAD_POSTER = "bad_poster"
LINK_OUTSIDE = "link_outside_raw_dir"
NOT_REGULAR = "not_a_regular_file"


# --------------------------------------------------------------------------- split


def resolve_raw_dir(raw_dir: str | Path) -> Path:
    """The folder holding `split.json`: `raw_dir` itself, or `raw_dir/mmimdb` (the archive's root)."""
    directory = Path(raw_dir)
    if (directory / "split.json").is_file():
        return directory
    if (directory / "mmimdb" / "split.json").is_file():
        return directory / "mmimdb"
    if not directory.is_dir():
        raise DataError(
            f"{directory}: raw data folder does not exist (run `mmimdb-dist download` or `mmimdb-dist synth` first)"
        )
    raise DataError(
        f"{directory / 'split.json'}: missing (expected MM-IMDb's raw layout: "
        "split.json and dataset/ in this folder or in its mmimdb/ subfolder)"
    )


def read_split(raw_dir: str | Path) -> dict[str, list[str]]:
    """The official train/dev/test ids, checked: strings, no duplicates, disjoint splits."""
    path = resolve_raw_dir(raw_dir) / "split.json"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with keys train, dev, test; got {type(data).__name__}")
    extra = sorted(str(key) for key in data if key not in SPLITS)
    if extra:  # their ids would be dropped without a word
        raise DataError(
            f"{path}: unexpected key {extra[0]!r} (expected exactly the keys {', '.join(SPLITS)}; "
            "move its ids into one of them)"
        )
    split: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name in SPLITS:
        if name not in data:
            raise DataError(f"{path}: missing key {name!r} (expected keys: {', '.join(SPLITS)})")
        ids = data[name]
        if not isinstance(ids, list):
            raise DataError(f"{path}: key {name!r}: expected a list of id strings, got {type(ids).__name__}")
        for i, movie_id in enumerate(ids):
            if not isinstance(movie_id, str) or not ID_PATTERN.fullmatch(movie_id):
                raise DataError(
                    f"{path}: key {name!r}[{i}]: expected an id string of letters, "
                    f"digits, '_' or '-' (e.g. '0111161'), got {movie_id!r}"
                )
            if movie_id in owner:
                where = "twice in" if owner[movie_id] == name else f"in both {owner[movie_id]!r} and"
                raise DataError(f"{path}: id {movie_id!r} appears {where} {name!r}")
            owner[movie_id] = name
        split[name] = list(ids)
    return split


# --------------------------------------------------------------------------- movies


@dataclass(frozen=True)
class Movie:
    """One raw movie that can become a sample."""

    id: str
    split: str
    title: str
    year: int | None
    plot: str
    genres: list[str]
    labels: list[int]
    num_plots: int
    poster_path: Path

    def metadata(self) -> dict[str, object]:
        """The sample's `<id>.json` (see docs/ARCHITECTURE.md)."""
        return {
            "id": self.id,
            "title": self.title,
            "year": self.year,
            "genres": list(self.genres),
            "labels": list(self.labels),
            "num_plots": self.num_plots,
        }


def checked_file(movie_id: str, split: str, path: Path, missing: str, *, poster: bool = False) -> None:
    """`path` is a regular file inside the raw folder, or SampleSkipped says why not.

    A symbolic link may point anywhere inside the raw folder (`dataset/..`), never outside it:
    its bytes would end up in the shards. A FIFO, device or folder under a movie's name is
    refused before it is opened (reading a FIFO blocks forever). A poster's problems are
    BAD_POSTER, so `shard.require_poster: false` keeps the movie as plot-only.
    """

    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            target, root = path.resolve(), path.parent.parent.resolve()
            if not target.is_relative_to(root):
                raise SampleSkipped(
                    movie_id,
                    split,
                    BAD_POSTER if poster else LINK_OUTSIDE,
                    path,
                    f"a symbolic link to {target}, outside the raw folder {root}",
                )
            info = target.stat()
    except FileNotFoundError:
        raise SampleSkipped(
            movie_id, split, missing, path, "poster file missing" if poster else "metadata file missing"
        ) from None
    except (OSError, RuntimeError) as exc:  # a link loop, a permission error
        raise SampleSkipped(movie_id, split, BAD_POSTER if poster else BAD_JSON, path, f"cannot read: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SampleSkipped(
            movie_id,
            split,
            BAD_POSTER if poster else NOT_REGULAR,
            path,
            "not a regular file (a FIFO, device or folder)",
        )


def _read_json(movie_id: str, split: str, path: Path) -> dict[str, Any]:
    checked_file(movie_id, split, path, MISSING_JSON)
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        raise SampleSkipped(movie_id, split, MISSING_JSON, path, "metadata file missing") from None
    except OSError as exc:
        raise SampleSkipped(movie_id, split, BAD_JSON, path, f"cannot read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleSkipped(movie_id, split, NOT_UTF8, path, f"not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SampleSkipped(movie_id, split, BAD_JSON, path, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise SampleSkipped(movie_id, split, BAD_JSON, path, "JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise SampleSkipped(movie_id, split, BAD_JSON, path, f"expected a JSON object, got {type(data).__name__}")
    return data


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(value: object) -> tuple[object, bool]:
    """`value` with every lone UTF-16 surrogate in its strings replaced by U+FFFD, and whether
    any was. JSON's `\\ud800` escapes decode to such code points, which no UTF-8 file (a shard's
    .txt, a JSONL output) can hold; a surrogate pair decodes to one real character and stays."""
    changed = False

    def clean(text: str) -> str:
        nonlocal changed
        if _LONE_SURROGATE.search(text) is None:
            return text
        changed = True
        return _LONE_SURROGATE.sub("\ufffd", text)

    def walk(item: object, depth: int = 0) -> object:
        if isinstance(item, str):
            return clean(item)
        if depth > 64:  # the fields read here are shallow; deeper values are left as they are
            return item
        if isinstance(item, list):
            return [walk(v, depth + 1) for v in item]
        if isinstance(item, dict):
            return {clean(k) if isinstance(k, str) else k: walk(v, depth + 1) for k, v in item.items()}
        return item

    return walk(value), changed


def _plots(movie_id: str, split: str, path: Path, data: dict[str, Any], report: SkipReport | None) -> list[str]:
    if "plot" not in data:
        raise SampleSkipped(movie_id, split, NO_PLOT, path, "key 'plot' missing")
    plots = data["plot"]
    if isinstance(plots, str):
        plots = [plots]
        if report is not None:
            report.repaired["plot_was_string"] += 1
        log.warning("%s: key 'plot' is a string, expected a list of strings; used as one summary", path)
    if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
        raise SampleSkipped(
            movie_id, split, BAD_PLOT, path, f"key 'plot': expected a list of strings, got {plots!r:.80}"
        )
    plots = [p.strip() for p in plots if p.strip()]
    if not plots:
        raise SampleSkipped(movie_id, split, NO_PLOT, path, "key 'plot': no non-empty summary")
    return plots


def choose_plot(plots: list[str], policy: str) -> str:
    if policy == "longest":
        return max(plots, key=len)  # first of the longest on ties: deterministic
    if policy == "first":
        return plots[0]
    if policy == "all":
        return "\n\n".join(plots)
    raise DataError(f"data.plot_policy: expected one of {', '.join(PLOT_POLICIES)}, got {policy!r}")


def _genres(movie_id: str, split: str, path: Path, data: dict[str, Any], report: SkipReport | None) -> list[str]:
    raw = data.get("genres")
    if raw is None:
        raise SampleSkipped(movie_id, split, NO_GENRE, path, "key 'genres' missing")
    if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
        raise SampleSkipped(
            movie_id, split, BAD_GENRES, path, f"key 'genres': expected a list of strings, got {raw!r:.80}"
        )
    kept, unknown = map_genres(raw)
    if unknown:
        log.warning("%s: unknown genre(s) %s ignored", path, ", ".join(map(repr, unknown)))
        if report is not None:
            report.unknown_labels.update(unknown)
    if not kept:
        raise SampleSkipped(
            movie_id, split, NO_GENRE, path, f"key 'genres': none of {raw!r:.80} is one of the 23 benchmark genres"
        )
    return kept


def _year(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip()[:4].isdigit():
        return int(value.strip()[:4])  # "1994" or "1994-1998" (series)
    return None


def check_poster(movie_id: str, split: str, path: Path) -> None:
    """Cheap check (size and header only); `load_poster` does the full decode."""

    checked_file(movie_id, split, path, MISSING_POSTER, poster=True)
    size = path.stat().st_size
    if size == 0:
        raise SampleSkipped(movie_id, split, BAD_POSTER, path, "poster file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (the header is parsed on open)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SampleSkipped(movie_id, split, BAD_POSTER, path, f"not an image PIL can read: {exc}") from None


def load_poster(movie: Movie, min_short_side: int | None = None) -> Image.Image:
    """Decode the poster fully as RGB, whatever its real format (PNG, CMYK, grayscale, ...).

    With `min_short_side`, the JPEG decoder may scale down by a power of two while it
    decodes (PIL's `draft`), which is much cheaper than decoding full size and resizing;
    both sides stay at least `min_short_side`, so a later resize loses nothing.
    Returns a PIL image; raises SampleSkipped (BAD_POSTER) when the file does not decode.
    """
    checked_file(movie.id, movie.split, movie.poster_path, MISSING_POSTER, poster=True)
    try:
        return decode_image(movie.poster_path, min_short_side)
    except (OSError, ValueError, SyntaxError) as exc:
        raise SampleSkipped(
            movie.id, movie.split, BAD_POSTER, movie.poster_path, f"poster does not decode: {exc}"
        ) from None


def read_movie(
    raw_dir: str | Path,
    movie_id: str,
    split: str,
    plot_policy: str = "longest",
    report: SkipReport | None = None,
    require_poster: bool = True,
) -> Movie:
    """One movie, or SampleSkipped naming the file and the problem.

    `raw_dir` is the folder holding split.json and dataset/. `report`, when given, collects
    repairs and unknown genres (the skip itself is the exception).
    """
    dataset = Path(raw_dir) / "dataset"
    json_path = dataset / f"{movie_id}.json"
    repaired_data, repaired = without_lone_surrogates(_read_json(movie_id, split, json_path))
    data = cast(dict[str, Any], repaired_data)  # the same mapping, its strings repaired
    if repaired:
        if report is not None:
            report.repaired["lone_surrogate_replaced"] += 1
        log.warning("%s: a lone UTF-16 surrogate escape (\\ud800-\\udfff) in a string, replaced by U+FFFD", json_path)
    plots = _plots(movie_id, split, json_path, data, report)
    plot = choose_plot(plots, plot_policy)
    genres = _genres(movie_id, split, json_path, data, report)
    poster_path = dataset / f"{movie_id}.jpeg"
    try:
        check_poster(movie_id, split, poster_path)
    except SampleSkipped:
        if require_poster:
            raise
        # Kept as a plot-only movie: the shard writer finds the poster unusable and says so.
    title = data.get("title")
    return Movie(
        id=movie_id,
        split=split,
        title=title if isinstance(title, str) else "",
        year=_year(data.get("year")),
        plot=plot,
        genres=genres,
        labels=multi_hot(genres),
        num_plots=len(plots),
        poster_path=poster_path,
    )


def iter_movies(
    raw_dir: str | Path,
    splits: Iterable[str] = SPLITS,
    plot_policy: str = "longest",
    strict: bool = False,
    report: SkipReport | None = None,
    progress: bool = False,
    require_poster: bool = True,
) -> Iterator[Movie]:
    """Every usable movie of `splits`, in split.json order.

    Skipped movies go into `report` (pass one in to read it afterwards; without one the
    totals are logged as a warning at the end). `strict=True` raises on the first skip.
    """
    if plot_policy not in PLOT_POLICIES:
        raise DataError(f"data.plot_policy: expected one of {', '.join(PLOT_POLICIES)}, got {plot_policy!r}")
    root = resolve_raw_dir(raw_dir)
    split_ids = read_split(root)
    own_report = report is None
    report = SkipReport() if report is None else report
    splits = list(splits)
    for name in splits:
        if name not in split_ids:
            raise DataError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
    pairs = [(movie_id, name) for name in splits for movie_id in split_ids[name]]
    if progress:
        pairs = progress_bar(pairs, desc="reading metadata", unit="movie")
    for movie_id, name in pairs:
        try:
            yield read_movie(root, movie_id, name, plot_policy, report, require_poster)
        except SampleSkipped as skip:
            if strict:
                raise DataError(f"{skip} (strict mode: a movie that cannot become a sample is an error)") from None
            report.add(skip.record)
    if own_report and report.total:
        log.warning("%s: %s", root, report.summary())
