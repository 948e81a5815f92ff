"""`mmimdb-dist shard --verify`: re-check a shard set against its manifest, member by member.

Every problem is one line naming the file (and the member or key); nothing is repaired. It
reads the tars member by member, not sample by sample, so that repeated, misplaced and
foreign members show up too (a sample reader would silently group or drop them).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from ..digest import file_sha256
from ..errors import DataError
from .codecs import SHARD_MEMBERS, check_labels
from .manifest import MANIFEST_NAME, load_manifest
from .tario import iter_members

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def _check_tar(path: Path, num_labels: int) -> tuple[int, list[int] | None, list[str]]:
    """(samples, label counts or None if unreadable, problems) from reading the tar itself."""
    problems: list[str] = []
    members: dict[str, set[str]] = {}
    order: list[str] = []
    posterless: set[str] = set()  # plot-only samples (their JSON says "poster": false)
    label_counts: list[int] | None = [0] * num_labels
    try:
        for name, is_file, data in iter_members(path, read=lambda name: name.endswith(".json")):
            key, dot, ext = name.partition(".")
            if not is_file or not dot or not KEY_PATTERN.fullmatch(key) or ext not in SHARD_MEMBERS:
                problems.append(f"{path}: unexpected member {name!r}")
                continue
            if key not in members:
                members[key] = set()
                order.append(key)
            elif order[-1] != key or ext in members[key]:
                problems.append(f"{path}: member {name!r} repeated or out of place")
            members[key].add(ext)
            if ext == "json" and label_counts is not None and data is not None:
                label_counts = _add_labels(data, label_counts, f"{path}: {name}", problems, posterless, key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"{path}: not a readable tar file: {exc}")
        return len(members), None, problems
    for key in order:
        missing = [ext for ext in SHARD_MEMBERS if ext not in members[key] and not (ext == "jpg" and key in posterless)]
        if missing:
            problems.append(f"{path}: sample {key!r} lacks {', '.join('.' + m for m in missing)}")
    return len(members), label_counts, problems


def _add_labels(
    data: bytes, counts: list[int], where: str, problems: list[str], posterless: set[str], key: str
) -> list[int] | None:
    try:
        meta = json.loads(data.decode("utf-8"))
        if isinstance(meta, dict) and meta.get("poster") is False:
            posterless.add(key)
        labels = check_labels(meta.get("labels") if isinstance(meta, dict) else None, where, len(counts))
    except (ValueError, DataError) as exc:  # ValueError: not UTF-8 or not JSON
        problems.append(str(exc) if isinstance(exc, DataError) else f"{where}: not valid JSON ({exc})")
        return None
    return [c + v for c, v in zip(counts, labels, strict=True)]


def verify_shards(shards_dir: str | Path) -> list[str]:
    """Every problem found re-checking a shard set against its manifest; empty means OK."""
    directory = Path(shards_dir)
    try:
        manifest = load_manifest(directory)
    except DataError as exc:
        return [str(exc)]
    directory = manifest.directory
    problems: list[str] = []
    listed = set()
    for split, info in manifest.splits.items():
        split_labels: list[int] | None = [0] * len(manifest.labels)
        for shard in info.shards:
            listed.add(shard.name)
            path = directory / shard.name
            if not path.is_file():
                problems.append(f"{path}: missing (listed in {MANIFEST_NAME} for split {split!r})")
                split_labels = None
                continue
            size = path.stat().st_size
            if size != shard.bytes:
                problems.append(f"{path}: {size} bytes, manifest says {shard.bytes}")
            if file_sha256(path) != shard.sha256:
                problems.append(f"{path}: sha256 differs from the manifest (content changed)")
            count, labels, tar_problems = _check_tar(path, len(manifest.labels))
            problems += tar_problems
            if count != shard.num_samples:
                problems.append(f"{path}: {count} samples in the tar, manifest says {shard.num_samples}")
            split_labels = (
                None
                if labels is None or split_labels is None
                else [a + b for a, b in zip(split_labels, labels, strict=True)]
            )
        if split_labels is not None and split_labels != info.label_counts:
            problems.append(
                f"{directory / MANIFEST_NAME}: label_counts of split {split!r} "
                f"differ from the labels in its shards ({split_labels})"
            )
    for path in sorted(directory.glob("*.tar")):
        if path.name not in listed:
            problems.append(
                f"{path}: tar file not listed in {MANIFEST_NAME} (a glob over this folder would pick it up)"
            )
    return problems
