"""The two sample formats, each as one codec: members <-> sample.

A shard sample (`<id>.jpg`, `<id>.txt`, `<id>.json`) and a cached-features sample
(`<id>.json`, `<id>.text.npy`, `<id>.image.npy`) are written, parsed and validated here and
nowhere else; `data/tario.py` moves their bytes, `data/batches.py` assembles parsed samples
into batches, and the stream in `data/loader.py` splits, shuffles and buckets them without
knowing which format it reads. The formats are described in docs/ARCHITECTURE.md.
No torch here: the baseline and `inspect` read plots without it.

Every parse error is a DataError naming the tar, the sample key and the member, which the
loaders turn into a counted skip and the strict readers (baseline, `inspect`) into an error.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    from .text import TokenEncoder

SHARD_MEMBERS = ("jpg", "txt", "json")  # the order of a shard sample's members in its tar
TEXT_MEMBER, IMAGE_MEMBER = "text.npy", "image.npy"
# Batch keys of cached features (B x (1 + L) x D and B x (1 + P) x D; row 0 pooled).
TEXT_FEATURES, IMAGE_FEATURES = "text_features", "image_features"


def check_labels(labels: Any, where: str, num_labels: int | None) -> list[int]:
    """The one label rule of every format: one int 0/1 per label of the set's label set, in
    its order (`num_labels` None: a reader without a manifest at hand, any non-empty length)."""
    expected = f"{num_labels} ints 0/1" if num_labels is not None else "a non-empty list of ints 0/1"
    if (
        not isinstance(labels, list)
        or not labels
        or (num_labels is not None and len(labels) != num_labels)
        or any(type(v) is not int or v not in (0, 1) for v in labels)
    ):
        raise DataError(f"{where} key 'labels': expected {expected}, got {labels!r:.80}")
    return labels


def sample_where(raw: dict[str, Any]) -> tuple[str, str]:
    """(printable key, "<tar>: sample <key>") of a WebDataset sample dict, for error lines."""
    key = str(raw.get("__key__", "?"))
    key = key if key.isprintable() else repr(key)  # a name from a tar can hold a newline
    return key, f"{raw.get('__url__', '?')}: sample {key}"


def _json_member(raw: dict[str, Any], key: str, where: str) -> Any:
    if "json" not in raw:
        raise DataError(f"{where}: missing member {key}.json")
    try:
        return json.loads(raw["json"])
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        raise DataError(f"{where}: {key}.json is not valid JSON ({exc or 'nested too deeply'})") from None


# --------------------------------------------------------------------------- shard samples


@dataclass
class Sample:
    """A sample after tokenisation; the poster stays encoded until its batch is yielded."""

    id: str
    jpeg: bytes
    input_ids: list[int]
    labels: list[int]
    # False on repeat passes, so a bad poster met again is dropped but not counted twice.
    count_skip: bool = True

    @property
    def length(self) -> int:
        """What length bucketing sorts by: the plot's token count."""
        return len(self.input_ids)


@dataclass(frozen=True)
class Plot:
    """A shard sample without its poster: what the TF-IDF baseline and vocabularies read."""

    id: str
    text: str
    labels: list[int]
    posterless: bool


def shard_members(metadata: dict[str, Any], text: str, jpeg: bytes | None) -> list[tuple[str, bytes]]:
    """A sample's shard members from its source record's metadata (`labels` among them) and
    text; `jpeg` None keeps it as a text-only sample (`"poster": false`)."""
    metadata = dict(metadata)
    if jpeg is None:
        metadata["poster"] = False
    meta = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
    members = {"txt": text.encode("utf-8"), "json": meta.encode("utf-8")}
    if jpeg is not None:
        members["jpg"] = jpeg
    return [(ext, members[ext]) for ext in SHARD_MEMBERS if ext in members]


def decode_plot(raw: dict[str, Any], num_labels: int | None = None) -> Plot:
    """The plot, labels and id of a shard sample; its poster member is not read."""
    key, where = sample_where(raw)
    if "txt" not in raw:
        raise DataError(f"{where}: missing member {key}.txt")
    meta = _json_member(raw, key, where)
    # A plot-only movie (sharded with `shard.require_poster: false`) says so in its JSON;
    # anywhere else a missing poster is a damaged sample.
    posterless = isinstance(meta, dict) and meta.get("poster") is False
    labels = check_labels(meta.get("labels") if isinstance(meta, dict) else None, f"{where}: {key}.json", num_labels)
    try:
        text = raw["txt"].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: {key}.txt is not UTF-8 ({exc})") from None
    movie_id = meta.get("id", key.rsplit("/", 1)[-1])
    return Plot(id=str(movie_id), text=text, labels=labels, posterless=posterless)


class ShardCodec:
    """Shard samples for the loaders: the plot tokenised in the worker, the poster kept encoded
    (it is decoded per batch, after bucketing, by the stream)."""

    posters = True

    def __init__(self, encoder: TokenEncoder, max_length: int, num_labels: int | None = None) -> None:
        self.encoder, self.max_length, self.num_labels = encoder, max_length, num_labels

    def parse(self, raw: dict[str, Any]) -> Sample:
        plot = decode_plot(raw, self.num_labels)
        if "jpg" not in raw and not plot.posterless:
            key, where = sample_where(raw)
            raise DataError(f"{where}: missing member {key}.jpg")
        ids = self.encoder.encode(plot.text, self.max_length)
        if not ids:
            key, where = sample_where(raw)
            raise DataError(f"{where}: {key}.txt gives no tokens")
        return Sample(id=plot.id, jpeg=b"" if plot.posterless else raw["jpg"], input_ids=ids, labels=plot.labels)


# --------------------------------------------------------------------------- feature samples


@dataclass
class FeatureSample(Sample):
    """A cached sample: its feature rows instead of a JPEG and token ids."""

    text: np.ndarray | None = None
    image: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.text) if self.text is not None else 1


@dataclass
class EncodedSample:
    """One movie's encoder outputs, as `cache-features` writes them."""

    id: str
    labels: list[int]
    text: np.ndarray | None  # None: no text encoder
    image: np.ndarray | None  # None: no image encoder, or a plot-only movie


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def feature_members(sample: EncodedSample) -> list[tuple[str, bytes]]:
    meta = json.dumps({"id": sample.id, "labels": sample.labels}, sort_keys=True)
    members = [("json", meta.encode("utf-8"))]
    if sample.text is not None:
        members.append((TEXT_MEMBER, _npy(sample.text)))
    if sample.image is not None:
        members.append((IMAGE_MEMBER, _npy(sample.image)))
    return members


def _array(raw: dict[str, Any], member: str, where: str) -> np.ndarray:
    try:
        array: np.ndarray = np.load(io.BytesIO(raw[member]), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as exc:  # what numpy raises for foreign bytes
        raise DataError(f"{where}: .{member} is not a .npy array ({exc})") from None
    if array.ndim != 2 or array.shape[0] < 1:
        raise DataError(f"{where}: .{member} has shape {array.shape}; expected rows x dim")
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        raise DataError(f"{where}: .{member} holds {array.dtype} values, not finite floats")
    return array


class FeatureCodec:
    """Cached-features samples: rows of the frozen encoders' outputs, no poster to decode."""

    posters = False

    def __init__(self, num_labels: int | None = None) -> None:
        self.num_labels = num_labels

    def parse(self, raw: dict[str, Any]) -> FeatureSample:
        key, where = sample_where(raw)
        meta = _json_member(raw, key, where)
        labels = check_labels(
            meta.get("labels") if isinstance(meta, dict) else None, f"{where}: {key}.json", self.num_labels
        )
        if TEXT_MEMBER not in raw and IMAGE_MEMBER not in raw:
            raise DataError(f"{where}: neither .{TEXT_MEMBER} nor .{IMAGE_MEMBER}")
        text = _array(raw, TEXT_MEMBER, where) if TEXT_MEMBER in raw else None
        image = _array(raw, IMAGE_MEMBER, where) if IMAGE_MEMBER in raw else None
        return FeatureSample(id=str(meta.get("id", key)), jpeg=b"", input_ids=[], labels=labels, text=text, image=image)
