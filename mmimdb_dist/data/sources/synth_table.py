"""A synthetic table dataset: the second built-in dataset, for the demo and the tests.

Where `synth.py` writes MM-IMDb's raw layout, this writes what a team brings: one table
(`items.csv`, or `items.jsonl`) with `id`, `text`, `image` (a path relative to the table) and
the labels, and the images as files beside it. Its label set is not MM-IMDb's: ten labels
with spaces and non-ASCII letters in their names ("Jardín botánico", "Tōkyō skyline"), so a
code path that assumes the 23 genres, or ASCII names, fails on it.

`task: multilabel` gives each row one or more labels (a `labels` column joined with "|");
`task: multiclass` gives each row exactly one (a `label` column). As in the synthetic
MM-IMDb, the evidence is split between the modalities so that fusion has something to
fuse: each label borrows the cue of one synthetic genre (`LABEL_CUES`), five the cue words
of a text-evident genre, five the poster look of an image-evident one; cues are noisy and
decoys of absent labels are mixed in. A text-only model then learns five labels, an
image-only model the other five, and a fusion model all ten.

Deterministic in (rows, seed, task): each row draws from its own generator.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

from ...atomic import atomic_open
from ...errors import DataError
from ...progress import progress as progress_bar
from .mmimdb.synth import _plot  # the filler text of the synthetic plots
from .mmimdb.synth_cues import GENRE_CUE_WORDS, GENRE_MODALITY
from .mmimdb.synth_posters import PosterSpec, write_poster

log = logging.getLogger(__name__)

# label -> (the synthetic genre whose cue it carries, its frequency among rows)
LABEL_CUES: dict[str, tuple[str, float]] = {
    "Street food": ("Romance", 0.30),
    "Café culture": ("Crime", 0.22),
    "Deep sea": ("Documentary", 0.15),
    "Mountain trail": ("Mystery", 0.10),
    "Jardín botánico": ("Sport", 0.07),
    "Night market": ("Comedy", 0.30),
    "Tōkyō skyline": ("Thriller", 0.22),
    "Desert road": ("Action", 0.15),
    "Rain forest": ("Sci-Fi", 0.10),
    "Old harbour": ("Animation", 0.07),
}
TEXT_LABELS = tuple(label for label, (genre, _) in LABEL_CUES.items() if GENRE_MODALITY[genre] == "text")
IMAGE_LABELS = tuple(label for label in LABEL_CUES if label not in TEXT_LABELS)
CUE_PROB = 0.85  # a row of a label carries its cue this often
DECOY_PROB = 0.15  # a row carries the cue of a label it does not have this often
IMAGE_SIZE = (160, 224)  # width, height of the synthetic images
TABLE_FORMATS = ("csv", "jsonl")


def _row_rng(seed: int, index: int, stream: str) -> random.Random:
    return random.Random(f"mmimdb-synth-table:{seed}:{index}:{stream}")


def _labels(rng: random.Random, task: str) -> list[str]:
    names = list(LABEL_CUES)
    weights = [LABEL_CUES[name][1] for name in names]
    if task == "multiclass":
        return rng.choices(names, weights=weights)
    chosen = [name for name, weight in zip(names, weights, strict=True) if rng.random() < weight]
    return chosen or rng.choices(names, weights=weights)


def _text(rng: random.Random, labels: list[str]) -> str:
    """Filler sentences with 1-2 cue words of each text-evident label the row has (most of
    the time), and now and then a decoy word of one it has not."""
    cues = []
    for name in TEXT_LABELS:
        if (name in labels and rng.random() < CUE_PROB) or (name not in labels and rng.random() < DECOY_PROB / 3):
            cues += rng.choices(GENRE_CUE_WORDS[LABEL_CUES[name][0]], k=rng.randint(1, 2))
    return _plot(rng, rng.randint(25, 70), cues)


def _image_cues(rng: random.Random, labels: list[str]) -> list[str]:
    return [
        LABEL_CUES[name][0]
        for name in IMAGE_LABELS
        if (name in labels and rng.random() < CUE_PROB) or (name not in labels and rng.random() < DECOY_PROB / 3)
    ]


def generate_table(
    out_dir: str | Path,
    rows: int = 2000,
    seed: int = 0,
    task: str = "multilabel",
    table_format: str = "csv",
    progress: bool = True,
) -> Path:
    """Write `out_dir/items.<format>` and `out_dir/images/<id>.jpg`; returns the table's path.

    The table is written last (atomically): a folder without it is an interrupted run."""
    if task not in ("multilabel", "multiclass"):
        raise DataError(f"--task: expected multilabel or multiclass, got {task!r}")
    if table_format not in TABLE_FORMATS:
        raise DataError(f"--table-format: expected one of {', '.join(TABLE_FORMATS)}, got {table_format!r}")
    if rows < 10:
        raise DataError(f"--rows: expected at least 10 rows (train, dev and test each need some), got {rows}")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for index in progress_bar(range(rows), desc="synthetic table", unit="row", disable=not progress):
        rng = _row_rng(seed, index, "row")
        labels = _labels(rng, task)
        item_id = f"item{index:06d}"
        text = _text(rng, labels)
        width, height = IMAGE_SIZE
        write_poster(
            PosterSpec(
                path=images / f"{item_id}.jpg",
                seed=seed,
                index=index,
                width=width,
                height=height,
                cues=_image_cues(_row_rng(seed, index, "image"), labels),
            )
        )
        label_cell = labels[0] if task == "multiclass" else "|".join(labels)
        records.append(
            {
                "id": item_id,
                "text": text,
                "image": f"images/{item_id}.jpg",
                ("label" if task == "multiclass" else "labels"): label_cell,
            }
        )
    path = out / f"items.{table_format}"
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if table_format == "csv":
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        else:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
