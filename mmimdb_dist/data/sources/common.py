"""What every source shares with the shard writer: sample ids, the skip signal and its report,
image decoding and shard-time encoding, and the plan a source hands the writer.

A source (MM-IMDb's raw layout, a table) reads its records, skips those that cannot become a
sample with a `SampleSkipped` naming the file (and line), the reason and the detail, and hands
`data/shard.py` a `ShardPlan`: tasks for worker processes and the function that writes one,
each returning a `ShardResult`. Images of any source go through the same decode (any format PIL
reads, as RGB, high bit depths rescaled) and the same resize and JPEG encoding, so the same
image gives the same shard bytes whichever source named it.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ...errors import DataError
from ...labels import LabelSet
from ..manifest import ShardInfo, SkippedMovie

# Ids become WebDataset keys and file names: no dots (webdataset splits keys at the first
# dot), no path separators, no whitespace.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class SampleSkipped(DataError):
    """A record (a movie, a table row) that cannot become a sample; `reason` is one of its
    source's skip reasons, `file` the file (and line) it came from."""

    def __init__(self, movie_id: str, split: str, reason: str, file: Path | str, detail: str):
        super().__init__(f"{file}: {detail}")
        self.record = SkippedMovie(id=movie_id, split=split, reason=reason, file=str(file), detail=detail)

    def __reduce__(self) -> tuple[type[SampleSkipped], tuple[str, ...]]:
        """Picklable, so a shard worker process can raise it."""
        r = self.record
        return (SampleSkipped, (r.id, r.split, r.reason, r.file, r.detail))


@dataclass
class SkipReport:
    """What a source left out (and why), and what it repaired."""

    counts: Counter[str] = field(default_factory=Counter)
    movies: list[SkippedMovie] = field(default_factory=list)
    # Accepted with a fix-up, e.g. a plot given as a string instead of a list.
    repaired: Counter[str] = field(default_factory=Counter)
    # Label strings outside the label set (MM-IMDb: neither one of the 23 genres nor a dropped one).
    unknown_labels: Counter[str] = field(default_factory=Counter)

    def add(self, record: SkippedMovie) -> None:
        self.counts[record.reason] += 1
        self.movies.append(record)

    def merge(self, other: SkipReport) -> None:
        for record in other.movies:
            self.add(record)
        self.repaired.update(other.repaired)
        self.unknown_labels.update(other.unknown_labels)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "skipped: none"
        return "skipped: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items()))


def decode_image(path: Path, min_short_side: int | None = None) -> Image.Image:
    """An image file decoded fully as RGB (see `load_poster`), for any source; raises OSError,
    ValueError (a decompression bomb among them) or SyntaxError when it does not decode."""

    try:
        with Image.open(path) as image:
            if min_short_side:
                image.draft(None, (min_short_side, min_short_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ValueError(str(exc)) from None


def resize_and_encode(image: Any, short_side: int, quality: int) -> bytes:
    """A decoded RGB image resized so its short side is `short_side` (Lanczos), as baseline JPEG:
    the one poster encoding of every source, so the same image gives the same bytes."""

    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling="4:2:0")
    return buffer.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background for images with transparency; plain conversion otherwise.

    High-bit-depth grayscale (16-bit "I;16*"/"I" PNGs and TIFFs, float "F") is rescaled to
    8 bits first: PIL's own conversion clips it at 255, which turns a 16-bit poster white and
    a [0, 1] float one black, without a word.
    """

    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit_gray(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """An "I;16*", "I" or "F" image as 8-bit "L": 16-bit ranges divided by 257, float images in
    [0, 1] times 255, anything else (HDR floats, 32-bit integers) scaled by its own maximum."""

    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        pixels = pixels * 255.0
    elif high > 65535.0 or low < 0.0:
        pixels = (pixels - min(low, 0.0)) / max(high - min(low, 0.0), 1e-12) * 255.0
    elif high > 255.0 or image.mode.startswith("I;16"):
        pixels = pixels / 257.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


# --------------------------------------------------------------------------- what a source hands the writer


@dataclass
class ShardResult:
    """What a worker reports of the shard it wrote."""

    split: str
    label_counts: list[int]
    info: ShardInfo | None = None
    skipped: list[SkippedMovie] = field(default_factory=list)
    posterless: int = 0
    # Label names outside the label set, met in this shard's records (counted, then dropped).
    unknown_labels: Counter[str] = field(default_factory=Counter)

    @property
    def shard(self) -> ShardInfo:
        """The written shard's manifest entry (a writer sets `info` once its tar is complete)."""
        if self.info is None:
            raise RuntimeError(f"a {self.split} shard writer returned before its tar was complete")
        return self.info


@dataclass
class ShardPlan:
    """What a source hands the writer: tasks for worker processes (each with `split`, `name` and
    `size`) and the function that writes one, the label set, what was skipped before any shard
    was written, the shard set's settings, and where skipped records' paths are made relative to."""

    tasks: list[Any]
    write: Callable[[Any], ShardResult]
    labels: LabelSet
    report: SkipReport
    root: Path
    settings: dict[str, Any]
    dropped_labels: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A failed write (full disk, size limit, no permission) becomes a one-line DataError
    naming the file; the atomic write has already removed its temporary file."""
    try:
        yield
    except OSError as exc:
        raise DataError(
            f"{path}: cannot write ({exc.strerror or exc}); the shard set has no "
            "manifest: free some space and re-run `mmimdb-dist shard`"
        ) from None


def shard_settings(cfg: Any) -> dict[str, Any]:
    """The settings a shard set records in its manifest (and a checkpoint's `preprocessing.json`
    carries to `predict`), whatever the source."""
    return {
        "plot_policy": cfg.data.plot_policy,
        "poster_short_side": cfg.shard.poster_short_side,
        "jpeg_quality": cfg.shard.jpeg_quality,
        "samples_per_shard": cfg.shard.samples_per_shard,
        "min_shards": cfg.shard.min_shards,
        "seed": cfg.seed,
        **({} if cfg.shard.require_poster else {"require_poster": False}),
    }
