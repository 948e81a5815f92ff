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

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import DataError
from .codecs import EncodedSample, feature_members
from .manifest import MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, MANIFEST_NAME, Manifest, parse_manifest
from .tario import write_sample_tar

logger = logging.getLogger(__name__)

FEATURES_FORMAT = "mmimdb-dist-features"
FEATURES_FORMAT_VERSION = 1
ENCODERS_FILE = "encoders.safetensors"


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
        raise DataError(
            f"{path}: no features manifest (run `mmimdb-dist cache-features --config ... "
            f"--out {directory}` first; an interrupted run leaves none)"
        )
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
    # (a features set made before label sets were data holds MM-IMDb's genres under "genres")
    version = MANIFEST_FORMAT_VERSION if "labels" in data else 1
    manifest = parse_manifest({**data, "format": MANIFEST_FORMAT, "format_version": version}, directory)
    spec = FeatureSpec(features["text_dim"], features["image_dim"], features["sequences"], features["dtype"])
    return FeatureSet(manifest=manifest, spec=spec, source=dict(features.get("source") or {}))


def feature_spec(loader_cfg: Any) -> FeatureSpec | None:
    """The spec of the features set a config trains on, or None when it trains on shards."""
    features_dir = getattr(loader_cfg, "features_dir", None)
    return load_feature_set(features_dir).spec if features_dir else None


# --------------------------------------------------------------------------- writing


def write_feature_shard(path: Path, samples: list[EncodedSample]) -> dict[str, Any]:
    """One tar, atomically, streamed to disk; returns its manifest entry."""
    written = write_sample_tar(path, ((sample.id, feature_members(sample)) for sample in samples))
    return {"name": written.name, "num_samples": written.num_samples, "sha256": written.sha256, "bytes": written.bytes}


def write_feature_manifest(
    out_dir: Path,
    source: Manifest,
    spec: FeatureSpec,
    splits: dict[str, dict[str, Any]],
    skipped: dict[str, int],
    extra: dict[str, Any],
) -> Path:
    document = {
        "format": FEATURES_FORMAT,
        "format_version": FEATURES_FORMAT_VERSION,
        "labels": source.labels.to_dict(),
        "settings": dict(source.settings),
        "features": {
            "text_dim": spec.text_dim,
            "image_dim": spec.image_dim,
            "sequences": spec.sequences,
            "dtype": spec.dtype,
            "source": {"shards_dir": str(source.directory), **extra},
        },
        "splits": splits,
        "skipped": {"count_by_reason": skipped, "movies": []},
    }
    path = out_dir / MANIFEST_NAME
    atomic_write_json(path, document)
    return path
