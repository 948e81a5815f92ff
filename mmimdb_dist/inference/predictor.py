"""Batches of prepared movies through a loaded model; one result record per movie.

Movies are batched in input order (`loader.eval_batch_size` of the checkpoint's config)
and padded to the longest plot of their batch: the text encoders ignore padding, so a
movie's probabilities do not depend on which movies share its batch. A batch where some
movie lacks a plot or a poster carries `text_present` / `image_present` flags; a batch
where none has one leaves that input out, as the models expect for inference.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_open
from ..data.batches import collate_prepared
from ..data.device import to_device
from ..devices import resolve_device
from ..errors import InputError, MmimdbError
from ..progress import progress as progress_bar
from ..run.export import InferenceBundle
from ..run.predictions import probabilities
from .inputs import MovieInput, PreparedMovie, Preparer

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_batch(bundle: InferenceBundle, movies: list[PreparedMovie], device: str = "cpu") -> np.ndarray:
    """Probabilities (len(movies) x labels) of prepared movies."""
    batch = collate_prepared(movies, bundle.token_encoder.pad_id, bundle.cfg.loader.image_size, len(bundle.labels))
    if "pixel_values" in batch:
        batch = to_device(batch, device)  # the eval path's normalisation, bit for bit
    else:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    logits = bundle.model(batch)["logits"]
    return probabilities(logits, bundle.labels.multiclass).cpu().numpy()


def result_record(movie_id: str, probs: np.ndarray, bundle: InferenceBundle, missing: list[str]) -> dict[str, Any]:
    """One output line in the model's own label names: `labels`, the predicted ones (those above
    the dev-tuned thresholds, most probable first; the most probable class alone for a
    multiclass model), and every label's probability."""
    names = bundle.labels.names
    order = np.argsort(-probs, kind="stable")
    above = order[:1] if bundle.labels.multiclass else [i for i in order if probs[i] >= bundle.thresholds[i]]
    record: dict[str, Any] = {
        "id": movie_id,
        "labels": [names[i] for i in above],
        "probabilities": {g: float(p) for g, p in zip(names, probs, strict=True)},
    }
    if missing:
        record["missing"] = missing
    return record


def _missing(bundle: InferenceBundle, movie: PreparedMovie) -> list[str]:
    missing = []
    if bundle.uses_text and movie.input_ids is None:
        missing.append("plot")
    if bundle.uses_image and movie.pixels is None:
        missing.append("poster")
    return missing


def _attempt(preparer: Preparer, movie: MovieInput) -> tuple[PreparedMovie | None, str | None]:
    try:
        return preparer(movie), None
    except InputError as exc:
        return None, str(exc)


@contextlib.contextmanager
def _prepared(preparer: Preparer, movies: list[MovieInput], workers: int):
    """(prepared movie or None, error or None) per movie, in input order; with `workers`,
    posters are prepared in that many processes while the model runs here. Work is handed
    out a window at a time, so a large folder never piles up prepared posters in memory."""
    if workers <= 0:
        yield (_attempt(preparer, movie) for movie in movies)
        return

    window = max(64, 16 * workers)
    attempt = functools.partial(_attempt, preparer)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield (
            result
            for start in range(0, len(movies), window)
            for result in pool.map(attempt, movies[start : start + window], chunksize=4)
        )


def predict_movies(
    bundle: InferenceBundle,
    movies: Iterable[MovieInput],
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    skip_bad: bool = False,
    workers: int = 0,
    progress: bool = False,
    total: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Result records in input order; a bad movie raises InputError, or with `skip_bad`
    becomes an `{"id", "error"}` record (and a warning) while the others go on.
    `workers` > 0 prepares posters in worker processes (the same bytes either way)."""

    batch_size = batch_size or bundle.cfg.loader.eval_batch_size
    warned = False
    pending: list[tuple[int, PreparedMovie]] = []
    out: dict[int, dict[str, Any]] = {}
    next_index = 0

    def flush() -> Iterator[dict[str, Any]]:
        nonlocal next_index
        if pending:
            probs = predict_batch(bundle, [movie for _, movie in pending], device)
            for (index, movie), row in zip(pending, probs, strict=True):
                out[index] = result_record(movie.id, row, bundle, _missing(bundle, movie))
            pending.clear()
        while next_index in out:
            yield out.pop(next_index)
            next_index += 1

    movies = list(movies)
    bar = progress_bar(total=total, desc="predict", unit="movie", disable=not progress)
    with _prepared(Preparer.from_bundle(bundle), movies, workers) as results:
        for index, (movie, (prepared, error)) in enumerate(zip(movies, results, strict=True)):
            if error is not None:
                if not skip_bad:
                    raise InputError(error)
                logger.warning("skipped: %s", error)
                out[index] = {"id": movie.id, "error": error}
            else:
                missing = _missing(bundle, prepared)
                if missing and not warned and bundle.cfg.model.modality_dropout == 0:
                    logger.warning(
                        "%s: predicting without a %s; this model was trained without modality "
                        "dropout, so its missing-modality predictions are less reliable",
                        movie.where,
                        " or ".join(missing),
                    )
                    warned = True
                pending.append((index, prepared))
            bar.update(1)
            if len(pending) >= batch_size:
                yield from flush()
    yield from flush()
    bar.close()


def predict_labels(
    checkpoint: str | Path, movies: Iterable[dict[str, Any]], device: str = "auto", skip_bad: bool = False
) -> list[dict[str, Any]]:
    """Labels of `movies` (any samples: a text and/or an image each) from a checkpoint folder
    alone: the Python form of `mmimdb-dist predict`. Each item is a dict with `id` and `plot`
    (its text) and/or `poster` (an image path); each result is `predict`'s JSONL record:
    `labels` (in the model's label names: above the checkpoint's dev-tuned thresholds, most
    probable first; the most probable class of a multiclass model) and every label's
    probability."""
    from ..run.export import load_bundle

    device = resolve_device(device)
    bundle = load_bundle(checkpoint, device)
    inputs = [
        MovieInput(
            id=str(movie["id"]),
            plot=movie.get("plot"),
            poster=Path(movie["poster"]) if movie.get("poster") else None,
            where=f"movie {movie['id']!r}",
        )
        for movie in movies
    ]
    return list(predict_movies(bundle, inputs, device=device, skip_bad=skip_bad))


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records as JSONL atomically (a reader sees no file or the complete one); returns the count."""

    count = 0
    try:
        with atomic_open(path, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    except OSError as exc:  # a full disk, a read-only folder, a missing parent
        raise MmimdbError(
            f"{path}: cannot write the predictions ({exc.strerror or exc}); nothing was written there"
        ) from None
    return count


# The name this function had when the toolkit served MM-IMDb's genres alone.
predict_genres = predict_labels
