"""New movies in, model-ready tensors out, prepared exactly as for training.

Sources: one movie from the command line (`--plot`, `--poster`), an MM-IMDb-format folder
(`<id>.json` with a `plot` list + `<id>.jpeg`, or the raw root holding `dataset/`), or a
JSONL file with one `{"id", "plot", "poster"}` object per line (a poster path is relative
to the JSONL file's folder).

Preparation is the training path's, step for step: the plot is chosen among the
summaries with the shard set's `plot_policy` and stripped; the poster is decoded whatever
its format, resized to the shard set's short side and re-encoded as JPEG with its quality
(`mmimdb_dist.data.sources.mmimdb.shards.encode_poster`), then decoded and centre-cropped like the eval
loader does (`decode_poster`). Skipping the JPEG round trip would feed the model slightly
different pixels than it was evaluated on.

A modality that is absent (no `plot` key or null, no `poster` given) is a missing modality,
which fusion models handle with their learned "missing" embedding. A modality that is given
but unusable (an empty plot, a poster file that is missing, empty, not an image or
truncated) is an error naming the file, never silently treated as missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.images import decode_poster
from ..data.sources.common import SampleSkipped
from ..data.sources.mmimdb.raw import Movie, check_poster, choose_plot, without_lone_surrogates
from ..data.sources.mmimdb.shards import encode_poster
from ..errors import InputError
from ..userfiles import NotRegularFile, read_regular_bytes, read_regular_text


@dataclass
class MovieInput:
    """One movie to predict; `plot` / `poster` None mean that modality is absent."""

    id: str
    plot: str | list[str] | None
    poster: Path | None
    where: str  # file (and line) the movie came from, for error messages
    # Why the movie's record could not be read; raised when it is prepared, so that
    # `--skip-bad` treats an unreadable record like any other bad movie.
    error: str | None = None


@dataclass
class PreparedMovie:
    id: str
    input_ids: list[int] | None
    pixels: torch.Tensor | None  # 3 x S x S uint8


def _choose_plot(plot: str | list[str] | None, policy: str, where: str) -> str | None:
    if plot is None:
        return None
    plots = [plot] if isinstance(plot, str) else plot
    if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
        raise InputError(f"{where}: key 'plot': expected a string or a list of strings, got {plot!r:.80}")
    plots = [p.strip() for p in plots if p.strip()]
    if not plots:
        raise InputError(f"{where}: the plot is empty (leave it out to predict from the poster alone)")
    return choose_plot(plots, policy)


def prepare_poster(path: Path, preprocessing: dict[str, Any], image_size: int) -> torch.Tensor:
    """Poster file -> 3 x image_size x image_size uint8, through the shard and eval-loader steps."""

    movie = Movie(
        id=path.stem, split="predict", title="", year=None, plot="", genres=[], labels=[], num_plots=0, poster_path=path
    )
    try:
        check_poster(movie.id, movie.split, path)
        jpeg = encode_poster(movie, int(preprocessing["poster_short_side"]), int(preprocessing["jpeg_quality"]))
    except SampleSkipped as exc:  # "<file>: <problem>"
        raise InputError(str(exc)) from None
    return decode_poster(jpeg, image_size, augment=False)


@dataclass(frozen=True)
class Preparer:
    """What preparing a movie needs from a checkpoint, without the model: small and
    picklable, so that loader-style worker processes can prepare posters in parallel."""

    token_encoder: Any
    preprocessing: dict[str, Any]
    max_text_length: int
    image_size: int
    uses_text: bool
    uses_image: bool
    model_name: str

    @classmethod
    def from_bundle(cls, bundle: Any) -> Preparer:
        cfg = bundle.cfg
        return cls(
            bundle.token_encoder,
            dict(bundle.preprocessing),
            cfg.loader.max_text_length,
            cfg.loader.image_size,
            bundle.uses_text,
            bundle.uses_image,
            cfg.model.name,
        )

    def __call__(self, movie: MovieInput) -> PreparedMovie:
        """Token ids and poster pixels of one movie (a missing one is None), or InputError."""
        if movie.error is not None:
            raise InputError(movie.error)
        text = _choose_plot(movie.plot, self.preprocessing["plot_policy"], movie.where)
        input_ids = pixels = None
        if self.uses_text and text is not None:
            input_ids = self.token_encoder.encode(text, self.max_text_length)
            if not input_ids:
                raise InputError(f"{movie.where}: the plot gives no tokens (no words the tokenizer knows how to split)")
        if self.uses_image and movie.poster is not None:
            pixels = prepare_poster(movie.poster, self.preprocessing, self.image_size)
        if input_ids is None and pixels is None:
            needs = [name for name, used in (("a plot", self.uses_text), ("a poster", self.uses_image)) if used]
            raise InputError(
                f"{movie.where}: nothing to predict from: the {self.model_name} model needs {' or '.join(needs)}"
            )
        return PreparedMovie(id=movie.id, input_ids=input_ids, pixels=pixels)


def prepare(movie: MovieInput, bundle: Any) -> PreparedMovie:
    """Token ids and poster pixels of one movie for `bundle`'s model (a missing one is None)."""
    return Preparer.from_bundle(bundle)(movie)


# --------------------------------------------------------------------------- sources


def dataset_folder(folder: Path) -> Path:
    """The folder holding `<id>.json` files: FOLDER, FOLDER/dataset or FOLDER/mmimdb/dataset."""
    for candidate in (folder / "dataset", folder / "mmimdb" / "dataset", folder):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise InputError(
        f"{folder}: no <id>.json files (expected an MM-IMDb-format folder: <id>.json with a "
        "'plot' list and <id>.jpeg, or the raw root holding dataset/)"
    )


def split_ids(folder: Path, split: str) -> list[str]:
    """Ids of one split from the split.json next to (or above) the dataset folder."""
    for candidate in (folder / "split.json", folder.parent / "split.json", folder / "mmimdb" / "split.json"):
        if candidate.is_file():
            try:
                data = json.loads(read_regular_text(candidate))
                ids = data[split]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{candidate}: cannot read split {split!r} ({exc!r:.100})") from None
            return [str(i) for i in ids]
    raise InputError(f"{folder}: --split {split} needs a split.json in the folder or its parent")


def read_folder(folder: str | Path, split: str | None = None) -> Iterator[MovieInput]:
    """Movies of an MM-IMDb-format folder, in id order (one split's ids with `split`)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: input folder does not exist")
    dataset = dataset_folder(root)
    ids = split_ids(root, split) if split else sorted(p.stem for p in dataset.glob("*.json"))
    for movie_id in ids:
        path = dataset / f"{movie_id}.json"
        # The format always has a poster: a missing <id>.jpeg is an error, not a missing modality.
        movie = MovieInput(id=movie_id, plot=None, poster=dataset / f"{movie_id}.jpeg", where=str(path))
        try:
            data = json.loads(read_regular_text(path))
        except FileNotFoundError:
            movie.error = f"{path}: metadata file missing"
        except NotRegularFile as exc:  # a FIFO would block the whole run
            movie.error = f"{path}: {exc.strerror} (expected the movie's JSON file)"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            movie.error = (
                f"{path}: not valid UTF-8 JSON ({exc or 'nested too deeply'}); the file is truncated or corrupt"
            )
        else:
            if without_lone_surrogates(data)[1]:
                movie.error = f"{path}: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), not text"
            elif isinstance(data, dict):
                movie.plot = data.get("plot")
            else:
                movie.error = f"{path}: expected a JSON object, got {type(data).__name__}"
        yield movie


def read_jsonl(path: str | Path) -> Iterator[MovieInput]:
    """Movies of a JSONL file: `{"id": ..., "plot": str | [str] | null, "poster": path | null}`."""
    path = Path(path)
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        raise InputError(f"{path}: input file does not exist") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    seen: set[str] = set()
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield _jsonl_movie(path, number, line, seen, truncated=number == len(lines) and not text.endswith("\n"))


def _jsonl_movie(path: Path, number: int, line: str, seen: set[str], truncated: bool) -> MovieInput:
    where = f"{path}:{number}"
    movie = MovieInput(id=str(number), plot=None, poster=None, where=where)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if truncated else ""
        movie.error = f"{where}: not valid JSON ({exc}){hint}"
        return movie
    except RecursionError:
        movie.error = f"{where}: JSON nested too deeply to read"
        return movie
    if without_lone_surrogates(record)[1]:  # such an id or plot cannot be written as UTF-8
        movie.error = f"{where}: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), not text"
        return movie
    if not isinstance(record, dict):
        movie.error = f"{where}: expected a JSON object, got {type(record).__name__}"
        return movie
    movie_id = record.get("id", str(number))
    if not isinstance(movie_id, (str, int)) or isinstance(movie_id, bool):
        movie.error = f"{where}: key 'id': expected a string, got {movie_id!r:.40}"
        return movie
    movie.id = str(movie_id)
    if movie.id in seen:
        movie.error = f"{where}: id {movie.id!r} appears twice"
        return movie
    seen.add(movie.id)
    poster = record.get("poster")
    if poster is not None and not isinstance(poster, str):
        movie.error = f"{where}: key 'poster': expected a file path, got {poster!r:.40}"
        return movie
    if poster is not None:
        movie.poster = Path(poster) if Path(poster).is_absolute() else path.parent / poster
    movie.plot = record.get("plot")
    return movie
