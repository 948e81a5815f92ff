"""Cached encoder features: frozen encoders run once, fusion heads train on their outputs.

A search over fusion heads and losses with frozen pretrained encoders spends almost all of
its time running the same DistilBERT and ResNet forward passes on the same movies, once
per trial and epoch. `mmimdb-dist cache-features` runs them once per movie and writes the
outputs as a shard set of their own; a training config with `loader.features_dir` set then
trains only the head on them (`mmimdb_dist.models.cached`), many times faster.

Layout of a features set (`<dir>/`):

    manifest.json        the shard manifest schema (splits, shards with sha256, label
                         counts, skipped samples) with format "mmimdb-dist-features" and a
                         `features` section: dims, dtype, whether sequences are stored, and
                         the source shard set; written last, so its presence means complete
    <split>-NNNNNN.tar   one per source shard, same samples in the same order
    config.yaml          the config whose encoders made the features
    encoders.safetensors the encoders' weights (so the cache can be checked or remade)
    vocabulary.json      the BiLSTM's vocabulary (or tokenizer/ for Hugging Face encoders)

One sample per movie, key = IMDb id: `<id>.json` (id, labels), `<id>.text.npy` (1 + L rows:
row 0 the pooled plot vector, then the L real token vectors, padding excluded) and
`<id>.image.npy` (1 + P rows: the pooled poster vector, then the P patch vectors). Without
sequences (`--pooled-only`) each holds only its pooled row; attention fusion needs them.
Posters are encoded without augmentation: the features are those of the eval transform.

A text-only or image-only config caches its one encoder: the other dim is 0 in the manifest
and its member is absent. A plot-only movie (`shard.require_poster: false`) has no
`.image.npy`; its batches say so in `image_present`, as the shard loaders do.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open, atomic_write_json
from ..errors import DataError
from ..genres import NUM_GENRES
from .manifest import MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, MANIFEST_NAME, Manifest, parse_manifest
from .loader import Sample, ShardStream

logger = logging.getLogger(__name__)

FEATURES_FORMAT = "mmimdb-dist-features"
FEATURES_FORMAT_VERSION = 1
ENCODERS_FILE = "encoders.safetensors"
TEXT_MEMBER, IMAGE_MEMBER = "text.npy", "image.npy"
# Batch keys of cached features (B x (1 + L) x D and B x (1 + P) x D; row 0 pooled).
TEXT_FEATURES, IMAGE_FEATURES = "text_features", "image_features"


@dataclass(frozen=True)
class FeatureSpec:
    """What a model trained on a features set needs to know about it."""

    text_dim: int
    image_dim: int
    sequences: bool
    dtype: str


@dataclass(frozen=True)
class FeatureSet:
    manifest: Manifest
    spec: FeatureSpec
    source: dict[str, Any]


def _reader_fail(path: Path, key: str, expected: str, value: Any) -> DataError:
    return DataError(f"{path}: key {key!r}: expected {expected}, got {value!r:.80}")


def load_feature_set(features_dir: str | Path) -> FeatureSet:
    """Read and check `<features_dir>/manifest.json`, naming the file and key on any problem."""
    directory = Path(features_dir)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: no features manifest (run `mmimdb-dist cache-features --config ... "
                        f"--out {directory}` first; an interrupted run leaves none)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FEATURES_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise _reader_fail(path, "format", repr(FEATURES_FORMAT) + " (a features set, not a shard set)", got)
    if data.get("format_version") != FEATURES_FORMAT_VERSION:
        raise _reader_fail(path, "format_version", str(FEATURES_FORMAT_VERSION), data.get("format_version"))
    features = data.get("features")
    if not isinstance(features, dict):
        raise _reader_fail(path, "features", "a JSON object", features)
    for key in ("text_dim", "image_dim"):
        value = features.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _reader_fail(path, f"features.{key}", "an integer >= 0 (0: not cached)", value)
    if features["text_dim"] == features["image_dim"] == 0:
        raise _reader_fail(path, "features", "text_dim or image_dim above 0", "both 0")
    if not isinstance(features.get("sequences"), bool):
        raise _reader_fail(path, "features.sequences", "true or false", features.get("sequences"))
    if features.get("dtype") not in ("float32", "float16"):
        raise _reader_fail(path, "features.dtype", "'float32' or 'float16'", features.get("dtype"))
    # Everything else is the shard manifest schema, checked by its own reader.
    manifest = parse_manifest({**data, "format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION},
                              directory)
    spec = FeatureSpec(features["text_dim"], features["image_dim"], features["sequences"], features["dtype"])
    return FeatureSet(manifest=manifest, spec=spec, source=dict(features.get("source") or {}))


def feature_spec(loader_cfg: Any) -> FeatureSpec | None:
    """The spec of the features set a config trains on, or None when it trains on shards."""
    features_dir = getattr(loader_cfg, "features_dir", None)
    return load_feature_set(features_dir).spec if features_dir else None


# --------------------------------------------------------------------------- reading


@dataclass
class FeatureSample(Sample):
    """A cached sample: its feature rows instead of a JPEG and token ids."""

    text: np.ndarray | None = None
    image: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.text) if self.text is not None else 1


def _array(raw: dict[str, Any], member: str, where: str) -> np.ndarray:
    if member not in raw:
        raise DataError(f"{where}: missing member .{member}")
    try:
        array = np.load(io.BytesIO(raw[member]), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as exc:  # what numpy raises for foreign bytes
        raise DataError(f"{where}: .{member} is not a .npy array ({exc})") from None
    if array.ndim != 2 or array.shape[0] < 1:
        raise DataError(f"{where}: .{member} has shape {array.shape}; expected rows x dim")
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        raise DataError(f"{where}: .{member} holds {array.dtype} values, not finite floats")
    return array


class FeatureStream(ShardStream):
    """The shard stream's splitting, shuffling, bucketing and exact resume, over features."""

    def _parse(self, raw: dict[str, Any]) -> Sample:
        key = str(raw.get("__key__", "?"))
        key = key if key.isprintable() else repr(key)
        where = f"{raw.get('__url__', '?')}: sample {key}"
        try:
            meta = json.loads(raw["json"])
            labels = meta["labels"]
        except (KeyError, TypeError, IndexError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8 / JSON
            raise DataError(f"{where}: bad or missing .json ({exc or 'nested too deeply'})") from None
        if not isinstance(labels, list) or len(labels) != NUM_GENRES or any(v not in (0, 1) for v in labels):
            raise DataError(f"{where}: .json key 'labels': expected {NUM_GENRES} values 0/1")
        if TEXT_MEMBER not in raw and IMAGE_MEMBER not in raw:
            raise DataError(f"{where}: neither .{TEXT_MEMBER} nor .{IMAGE_MEMBER}")
        text = _array(raw, TEXT_MEMBER, where) if TEXT_MEMBER in raw else None
        image = _array(raw, IMAGE_MEMBER, where) if IMAGE_MEMBER in raw else None
        return FeatureSample(id=str(meta.get("id", key)), jpeg=b"", input_ids=[], labels=labels,
                             text=text, image=image)

    def _decode(self, batch: list[Sample], counter: Any) -> dict | None:
        return collate_features(batch, counter.take())  # type: ignore[arg-type]


def collate_features(samples: list[FeatureSample], skipped: int = 0) -> dict[str, Any]:
    """Pad the token rows to the longest plot; `attention_mask` covers the tokens (not row 0).

    Only the modalities the set holds become batch keys; a movie without poster features
    (plot-only) gets zero rows and `image_present` false.
    """
    import torch

    batch: dict[str, Any] = {"ids": [s.id for s in samples],
                             "labels": torch.tensor([s.labels for s in samples], dtype=torch.float32),
                             "skipped": skipped}
    texts = [s.text for s in samples if s.text is not None]
    images = [s.image for s in samples if s.image is not None]
    sequences = any(len(a) > 1 for a in texts) or any(len(a) > 1 for a in images)
    if texts:
        longest = max(len(a) for a in texts)
        text = torch.zeros(len(samples), longest, texts[0].shape[1], dtype=torch.float32)
        mask_width = longest - 1 if sequences else 1
        attention_mask = torch.zeros(len(samples), max(mask_width, 1), dtype=torch.int64)
        for row, sample in enumerate(samples):
            rows = sample.text.shape[0]
            text[row, :rows] = torch.from_numpy(sample.text.astype(np.float32))
            attention_mask[row, :max(rows - 1, 1) if sequences else 1] = 1
        batch[TEXT_FEATURES], batch["attention_mask"] = text, attention_mask
    if images:
        image = torch.zeros(len(samples), *images[0].shape, dtype=torch.float32)
        for row, sample in enumerate(samples):
            if sample.image is not None:
                image[row] = torch.from_numpy(sample.image.astype(np.float32))
        batch[IMAGE_FEATURES] = image
        batch["image_present"] = torch.tensor([s.image is not None for s in samples])
    return batch


# --------------------------------------------------------------------------- writing


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


class _HashingWriter:
    """A file object that hashes and counts what passes through it (sha256 without a re-read)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.sha = handle, hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.handle.flush()


@dataclass
class EncodedSample:
    id: str
    labels: list[int]
    text: np.ndarray | None  # None: no text encoder
    image: np.ndarray | None  # None: no image encoder, or a plot-only movie


def write_feature_shard(path: Path, samples: list[EncodedSample]) -> dict[str, Any]:
    """One tar, atomically, streamed to disk; returns its manifest entry."""
    with atomic_open(path, "wb") as handle:
        writer = _HashingWriter(handle)
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for sample in samples:
                meta = json.dumps({"id": sample.id, "labels": sample.labels}, sort_keys=True)
                _add_member(tar, f"{sample.id}.json", meta.encode("utf-8"))
                if sample.text is not None:
                    _add_member(tar, f"{sample.id}.{TEXT_MEMBER}", _npy(sample.text))
                if sample.image is not None:
                    _add_member(tar, f"{sample.id}.{IMAGE_MEMBER}", _npy(sample.image))
    return {"name": path.name, "num_samples": len(samples), "sha256": writer.sha.hexdigest(),
            "bytes": writer.bytes}


def write_feature_manifest(out_dir: Path, source: Manifest, spec: FeatureSpec,
                           splits: dict[str, dict[str, Any]], skipped: dict[str, int],
                           extra: dict[str, Any]) -> Path:
    document = {
        "format": FEATURES_FORMAT, "format_version": FEATURES_FORMAT_VERSION,
        "genres": list(source.genres),
        "settings": dict(source.settings),
        "features": {"text_dim": spec.text_dim, "image_dim": spec.image_dim, "sequences": spec.sequences,
                     "dtype": spec.dtype, "source": {"shards_dir": str(source.directory), **extra}},
        "splits": splits,
        "skipped": {"count_by_reason": skipped, "movies": []},
    }
    path = out_dir / MANIFEST_NAME
    atomic_write_json(path, document)
    return path
