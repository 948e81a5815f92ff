"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Shards, manifests, configs and checkpoints all go through here. The pattern is the usual
one: write to a temporary file in the same directory (same filesystem, so `os.replace` is
an atomic rename), flush and fsync, rename, then fsync the directory so the rename itself
survives a power cut. On any error the temporary file is removed, so a crash or a full
disk leaves no half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    """0o666 minus the umask, as `open()` would give: mkstemp's 0o600 would hide shards
    and checkpoints from the other users of a shared cluster filesystem."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", durable: bool = True, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` on success.

    `durable=False` skips the fsyncs: still never torn if the process dies, but not safe
    against power loss on its own. Bulk writers of thousands of small files use it, then
    call `os.sync()` once before writing a durable marker file.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open writes only; got mode {mode!r}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable=durable) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    with atomic_open(path, "w", durable=durable, encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, durable: bool = True) -> None:
    """Deterministic JSON (sorted keys, fixed indent) so re-runs give identical bytes."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", durable=durable)
