"""The file listing of a checkpoint (`files.json`): size and SHA-256 of every file in it.

Checked before anything is loaded, on resume (every file) and for prediction (`inference/`
only), so a truncated, corrupted or swapped file is named with what to do, instead of
failing deep inside torch.load or safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..digest import file_sha256
from ..errors import CheckpointError
from .layout import FILES_FILE


def read_json(path: Path) -> Any:
    """A JSON file of a checkpoint or run; unreadable is a CheckpointError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc}); the file is truncated or corrupt") from None


def file_listing(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def verify_files(
    checkpoint: Path, within: str | None = None, advice: str = "resume from an earlier checkpoint"
) -> None:
    """Every file listed in `files.json` (or only those under `within/`) is there with its
    saved size and digest; `advice` ends each error (resuming and predicting differ there)."""
    listing_path = checkpoint / FILES_FILE
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{listing_path}: unreadable file listing ({exc}); {advice}") from None
    for name, expected in sorted(listing.items()):
        if within is not None and not name.startswith(f"{within}/"):
            continue
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {FILES_FILE}); {advice}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            cause = "truncated" if size < expected["bytes"] else "changed since it was saved"
            raise CheckpointError(f"{path}: {size} bytes, expected {expected['bytes']} ({cause}); {advice}")
        if file_sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: content differs from the SHA-256 in {FILES_FILE} (corrupted); {advice}")


def add_listed_json(checkpoint: Path, documents: dict[str, Any]) -> None:
    """Write JSON `documents` (by path inside the checkpoint) and list them in files.json.

    The final evaluation adds what only exists once training is over (the dev-tuned
    thresholds, the shard preprocessing), so the best checkpoint alone is enough to predict.
    Each file is written atomically before files.json names it: a crash in between leaves
    an extra file that nothing checks, never a listing that names a missing file.
    """
    listing_path = checkpoint / FILES_FILE
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{listing_path}: unreadable file listing ({exc})") from None
    for name, document in documents.items():
        path = checkpoint / name
        atomic_write_json(path, document)
        listing[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    atomic_write_json(listing_path, dict(sorted(listing.items())))
