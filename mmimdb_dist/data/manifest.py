"""Typed view of a shard set's `manifest.json`, the contract between shard writer and loaders.

Loaders never glob for shards: they read the list, sample counts and checksums from the
manifest, so a stray or half-written tar in the folder is never trained on, and a loader
knows how many samples an epoch holds before it opens a single shard. Every key is checked
when the manifest is loaded, so a malformed manifest fails once, at start-up, naming the
file and the key, rather than deep inside a data-loader worker.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..labels import LabelSet

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mmimdb-dist-shards"
MANIFEST_FORMAT_VERSION = 2
# Version 1 held MM-IMDb's 23 genres under "genres", always multi-label; it is still read.
READABLE_FORMAT_VERSIONS = (1, 2)
SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Every source names its shards alike: <split>-<6 digits>.tar.
SHARD_NAME = re.compile(r"(train|dev|test)-(\d{6})\.tar")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def num_shards(num_samples: int, samples_per_shard: int, min_shards: int) -> int:
    """Shards of a split, whatever the source: enough for `samples_per_shard`, at least `min_shards`."""
    return max(min_shards, math.ceil(num_samples / samples_per_shard))


@dataclass(frozen=True)
class ShardInfo:
    """One tar file of a split."""

    name: str
    num_samples: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_samples": self.num_samples, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class SplitInfo:
    """The shards of one split, with the totals a loader needs before it opens them."""

    num_samples: int
    shards: list[ShardInfo]
    label_counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "shards": [s.to_dict() for s in self.shards],
            "label_counts": list(self.label_counts),
        }


@dataclass(frozen=True)
class SkippedMovie:
    """A raw movie left out of the shards, and why."""

    id: str
    split: str
    reason: str
    file: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "split": self.split, "reason": self.reason, "file": self.file, "detail": self.detail}


@dataclass(frozen=True)
class Manifest:
    """A shard set: where its shards are, how they were made, and what was left out."""

    directory: Path
    labels: LabelSet
    settings: dict[str, Any]
    splits: dict[str, SplitInfo]
    skipped_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedMovie] = field(default_factory=list)
    # Kept samples whose raw record needed a fix-up (e.g. a plot given as a string), and raw
    # label strings outside the label set that were ignored: counts, so nothing changes silently.
    repaired: dict[str, int] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    # Labels left out of the label set for too few train samples (`data.min_label_count`).
    dropped_labels: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DataError(f"{self.path}: no split {name!r} (has: {', '.join(self.splits)})")
        return self.splits[name]

    def shard_paths(self, split: str) -> list[Path]:
        return [self.directory / shard.name for shard in self.split(split).shards]

    @property
    def num_samples(self) -> dict[str, int]:
        return {name: info.num_samples for name, info in self.splits.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; `directory` is not part of it, so a shard set can be moved."""
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "labels": self.labels.to_dict(),
            "settings": dict(self.settings),
            "splits": {name: info.to_dict() for name, info in self.splits.items()},
            "skipped": {
                "count_by_reason": dict(self.skipped_counts),
                "movies": [m.to_dict() for m in self.skipped],
                "repaired": dict(self.repaired),
                "unknown_labels": dict(self.unknown_labels),
                **({"dropped_labels": dict(self.dropped_labels)} if self.dropped_labels else {}),
            },
        }


# --------------------------------------------------------------------------- loading


class _Reader:
    """Checks values against the schema; every error names the manifest file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, expected: str, value: Any) -> DataError:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return DataError(f"{self.path}: key {key!r}: expected {expected}, got {shown}")

    def get(self, obj: dict[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            full = f"{where}.{key}" if where else key
            raise DataError(f"{self.path}: missing key {full!r}")
        return obj[key]

    def mapping(self, obj: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = self.get(obj, key, where)
        if not isinstance(value, dict):
            raise self.fail(_join(where, key), "a JSON object", value)
        return value

    def integer(self, obj: dict[str, Any], key: str, where: str = "") -> int:
        value = self.get(obj, key, where)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(_join(where, key), "a non-negative integer", value)
        return value

    def string(self, obj: dict[str, Any], key: str, where: str = "") -> str:
        value = self.get(obj, key, where)
        if not isinstance(value, str):
            raise self.fail(_join(where, key), "a string", value)
        return value

    def int_list(self, obj: dict[str, Any], key: str, where: str, length: int) -> list[int]:
        value = self.get(obj, key, where)
        if (
            not isinstance(value, list)
            or len(value) != length
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in value)
        ):
            raise self.fail(_join(where, key), f"a list of {length} non-negative integers", value)
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _read_shard(reader: _Reader, obj: Any, where: str) -> ShardInfo:
    if not isinstance(obj, dict):
        raise reader.fail(where, "a JSON object", obj)
    name = reader.string(obj, "name", where)
    if "/" in name or "\\" in name or name in ("", ".", "..") or not name.endswith(".tar"):
        raise reader.fail(f"{where}.name", "a plain .tar file name inside the shard folder", name)
    sha = reader.string(obj, "sha256", where)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise reader.fail(f"{where}.sha256", "64 lowercase hex digits", sha)
    return ShardInfo(
        name=name,
        num_samples=reader.integer(obj, "num_samples", where),
        sha256=sha,
        bytes=reader.integer(obj, "bytes", where),
    )


def _read_split(reader: _Reader, obj: dict[str, Any], where: str, num_labels: int) -> SplitInfo:
    shards_raw = reader.get(obj, "shards", where)
    if not isinstance(shards_raw, list):
        raise reader.fail(f"{where}.shards", "a list of shard entries", shards_raw)
    shards = [_read_shard(reader, s, f"{where}.shards[{i}]") for i, s in enumerate(shards_raw)]
    num_samples = reader.integer(obj, "num_samples", where)
    total = sum(s.num_samples for s in shards)
    if total != num_samples:
        raise reader.fail(f"{where}.num_samples", f"the sum of its shards' num_samples ({total})", num_samples)
    label_counts = reader.int_list(obj, "label_counts", where, num_labels)
    return SplitInfo(num_samples=num_samples, shards=shards, label_counts=label_counts)


def parse_manifest(data: Any, directory: Path) -> Manifest:
    """Validate a decoded manifest document; `directory` is where its shards live."""
    reader = _Reader(Path(directory) / MANIFEST_NAME)
    if not isinstance(data, dict):
        raise reader.fail("(top level)", "a JSON object", data)
    fmt = reader.get(data, "format", "")
    if fmt != MANIFEST_FORMAT:
        raise reader.fail("format", repr(MANIFEST_FORMAT), fmt)
    version = reader.get(data, "format_version", "")
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        raise reader.fail("format_version", " or ".join(map(str, READABLE_FORMAT_VERSIONS)), version)
    if version == 1:
        labels = LabelSet.from_dict({"names": reader.get(data, "genres", "")}, f"{reader.path}: key 'genres'")
    else:
        labels = LabelSet.from_dict(reader.mapping(data, "labels"), f"{reader.path}: key 'labels'")
    settings = reader.mapping(data, "settings")
    splits_raw = reader.mapping(data, "splits")
    splits: dict[str, SplitInfo] = {}
    for name in SPLITS:
        split_obj = reader.mapping(splits_raw, name, "splits")
        splits[name] = _read_split(reader, split_obj, f"splits.{name}", len(labels))
    names = [s.name for info in splits.values() for s in info.shards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise reader.fail("splits", "each shard listed once", duplicates)

    skipped_raw = reader.mapping(data, "skipped")
    counts_raw = reader.mapping(skipped_raw, "count_by_reason", "skipped")
    counts: dict[str, int] = {}
    for reason in counts_raw:
        counts[reason] = reader.integer(counts_raw, reason, "skipped.count_by_reason")
    movies_raw = reader.get(skipped_raw, "movies", "skipped")
    if not isinstance(movies_raw, list):
        raise reader.fail("skipped.movies", "a list", movies_raw)
    skipped = []
    for i, movie in enumerate(movies_raw):
        where = f"skipped.movies[{i}]"
        if not isinstance(movie, dict):
            raise reader.fail(where, "a JSON object", movie)
        skipped.append(
            SkippedMovie(**{k: reader.string(movie, k, where) for k in ("id", "split", "reason", "file", "detail")})
        )
    extras = {}
    for key in ("repaired", "unknown_labels", "dropped_labels"):  # optional: informative counts only
        version_1 = key == "unknown_labels" and "unknown_genres" in skipped_raw
        key_in_file = "unknown_genres" if version_1 else key
        extra = reader.mapping(skipped_raw, key_in_file, "skipped") if key_in_file in skipped_raw else {}
        extras[key] = {name: reader.integer(extra, name, f"skipped.{key_in_file}") for name in extra}
    return Manifest(
        directory=Path(directory),
        labels=labels,
        settings=dict(settings),
        splits=splits,
        skipped_counts=counts,
        skipped=skipped,
        **extras,
    )


def load_manifest(shards_dir: str | Path) -> Manifest:
    """Read and validate `<shards_dir>/manifest.json` (a path to the file itself also works)."""
    directory = Path(shards_dir)
    if directory.name == MANIFEST_NAME and directory.is_file():
        directory = directory.parent
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise DataError(f"{directory}: shard folder does not exist (run `mmimdb-dist shard` first)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: manifest missing (the shard set is incomplete; re-run `mmimdb-dist shard`)") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    return parse_manifest(data, directory)
