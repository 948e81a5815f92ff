"""Tar I/O of every sample set (shards and cached features): one writer, two readers.

Both sets are WebDataset tars: a sample is the run of consecutive members that share a key
(the member name up to the first dot), `<key>.<ext>` each. What the members hold is the
business of a codec (`data/codecs.py`); this module only moves bytes, so that the header
rules, the atomic write, the checksum and the handling of a damaged tar live in one place.

Writing is deterministic (USTAR headers with mtime 0, mode 0644, uid/gid 0, no names), so
the same samples always give the same bytes and the same sha256 in the manifest, and it is
streamed through a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..atomic import atomic_open
from ..errors import DataError

logger = logging.getLogger(__name__)

# One member of a sample: (extension, bytes), in the order they are written.
Members = Iterable[tuple[str, bytes]]
# WebDataset's key rule: the key is the member name up to the first dot of its base name.
MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class WrittenTar:
    """What the manifest records of a tar just written."""

    name: str
    num_samples: int
    sha256: str
    bytes: int


class _HashingWriter:
    """A file object that hashes and counts what passes through it (sha256 without a re-read)."""

    def __init__(self, handle: IO[bytes]) -> None:
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


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # uid/gid 0, empty user and group names, a regular file
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_sample_tar(path: Path, samples: Iterable[tuple[str, Members]]) -> WrittenTar:
    """Write (key, members) samples to `path` atomically, streamed; returns its manifest entry.

    `samples` may be a generator that does the expensive work (poster encoding) as the tar
    is written; if it raises, the temporary file is removed and `path` is left untouched.
    """
    count = 0
    with atomic_open(path, "wb") as handle:
        writer = _HashingWriter(handle)
        # The stubs want a file object; the hashing writer is one by duck typing (write only).
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for key, members in samples:
                for ext, data in members:
                    _add_member(tar, f"{key}.{ext}", data)
                count += 1
    return WrittenTar(name=path.name, num_samples=count, sha256=writer.sha.hexdigest(), bytes=writer.bytes)


def skip_rest_of_tar(exc: Exception) -> bool:
    """`on_error` of the training readers: the damage is logged (naming the tar) and the rest skipped."""
    logger.warning("shard read error (rest of the shard skipped): %s", exc)
    return True


def iter_samples(path: Path, on_error: Callable[[Exception], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one tar as WebDataset dicts: `__key__`, `__url__` and one bytes value per ext.

    `on_error` None: an unreadable or truncated tar raises a DataError naming the file. Otherwise
    it is called with that DataError and reading stops; the samples read before it are yielded,
    the last one possibly incomplete (the loaders count the ones the manifest promised but
    the tar no longer holds). The grouping is WebDataset's (`tarfile_samples`), read with
    tarfile directly so that readers of plots need neither webdataset nor torch.
    """
    if on_error is None:
        if not path.is_file():
            raise DataError(f"{path}: shard listed in the manifest is missing")

        def on_error(exc: Exception) -> bool:
            raise exc

    url = str(path)
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                match = MEMBER_NAME.match(member.name)
                if not member.isreg() or match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                # A regular member (checked above): extractfile returns None only for other kinds.
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if current is None or key != current["__key__"]:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                if ext in current:
                    if not on_error(DataError(f"{path}: {member.name}: member repeated in its sample")):
                        break
                    continue
                current[ext] = data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # zlib: a damaged .tar.gz
        on_error(DataError(f"{path}: not a readable tar shard: {exc}"))
    if current is not None:  # the last sample, possibly cut short by the damage (its parse says so)
        yield current


def iter_members(path: Path, read: Callable[[str], bool]) -> Iterator[tuple[str, bool, bytes | None]]:
    """Every member of a tar in order: (name, is a regular file, its bytes if `read(name)`).

    For checking a tar's structure (`shard --verify`), where a sample dict would hide
    repeated, misplaced or foreign members; members not read are skipped over, not copied.
    Errors propagate as tarfile/OS errors.
    """
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() and read(member.name) else None
            yield member.name, member.isfile(), handle.read() if handle is not None else None
