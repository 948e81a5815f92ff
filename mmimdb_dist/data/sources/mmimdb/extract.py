"""Unpack an archive safely: nothing outside the destination, nothing at all from a hostile one.

Extraction refuses any member that could land outside the destination (absolute paths,
`..`, links that point outside, alone or in a chain, device files). Every member is checked
before anything is written, so a hostile archive extracts nothing, and the stdlib's `data`
extraction filter checks again while writing. A marker file records the digest of the
archive that was fully extracted, so a re-run skips the work; a crash mid-way leaves no
marker, and the next run extracts again over the partial files.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ....atomic import atomic_write_text
from ....errors import DownloadError
from ....progress import progress as progress_bar

logger = logging.getLogger(__name__)

EXTRACTED_MARKER = ".mmimdb-extracted"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.2f} MB"


def check_free_space(directory: Path, needed: int | None) -> None:
    """Fail before writing rather than after filling the disk with 8 GB of a dead-end file."""
    if needed is None:
        return
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DownloadError(f"{directory}: needs {_size(needed)} more, only {_size(free)} free")


class _ArchiveTree:
    """Resolves archive paths as the filesystem will after extraction, the archive's links included.

    A path that leaves the extraction folder resolves to None: lexically (`..`), through an
    absolute link, through a loop, or through a chain of links that each look harmless alone
    (`a -> .`, `b -> a/..`). Link targets are memoised, so a hostile archive full of links
    costs linear time.

    Why beside tarfile's `filter="data"` (which `extract` also applies): that filter resolves
    links against the files already on disk, one member at a time, so a chain of links that
    only escapes once an earlier member exists is caught mid-extraction, with part of the
    archive already written. Resolving the archive's own links first refuses such an archive
    before anything is extracted.
    """

    def __init__(self, members: list[tarfile.TarInfo]) -> None:
        self.links = {posixpath.normpath(m.name): m.linkname for m in members if m.issym()}
        # Resolved target of each link; None while being resolved (a loop) or when it escapes.
        self._targets: dict[str, tuple[str, ...] | None] = {}

    def resolve(self, path: str) -> tuple[str, ...] | None:
        parts: list[str] = []
        for component in path.split("/"):
            if component in ("", "."):
                continue
            if component == "..":
                if not parts:
                    return None
                parts.pop()
                continue
            parts.append(component)
            key = "/".join(parts)
            if key in self.links:
                target = self.link_target(key)
                if target is None:
                    return None
                parts = list(target)
        return tuple(parts)

    def link_target(self, key: str) -> tuple[str, ...] | None:
        if key in self._targets:
            return self._targets[key]
        self._targets[key] = None
        linkname = self.links[key]
        if not linkname.startswith("/"):
            self._targets[key] = self.resolve(posixpath.join(posixpath.dirname(key), linkname))
        return self._targets[key]


def _member_problem(member: tarfile.TarInfo, tree: _ArchiveTree) -> str | None:
    """Why `member` must not be extracted, or None when it is safe."""
    name = member.name
    if name.startswith("/"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in its path"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "device, fifo or other special file"
    parent = posixpath.dirname(posixpath.normpath(name))
    if parent and tree.resolve(parent) is None:
        return "its folder is a link that leads outside the destination"
    if member.issym():
        if member.linkname.startswith("/"):
            return f"symlink to absolute path {member.linkname!r}"
        if tree.link_target(posixpath.normpath(name)) is None:
            return f"symlink to {member.linkname!r} leads outside the destination (or loops)"
    if member.islnk() and (member.linkname.startswith("/") or tree.resolve(member.linkname) is None):
        return f"hard link to {member.linkname!r} leads outside the destination"
    return None


def check_members(archive: Path, members: Iterable[tarfile.TarInfo]) -> None:
    """Raise DownloadError naming the archive and the first member that could escape."""
    members = list(members)
    tree = _ArchiveTree(members)
    for member in members:
        try:
            problem = _member_problem(member, tree)
        except RecursionError:
            problem = "links nested too deeply to check"
        if problem:
            raise DownloadError(
                f"{archive}: refusing to extract member {member.name!r}: {problem}; nothing was extracted"
            )


def extract(
    archive: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    digest: str | None = None,
    required_member: str | None = None,
    progress: bool = True,
) -> Path:
    """Extract `archive` into `destination` after checking every member; return `destination`.

    With `digest`, a marker holding it is written after a complete extraction and a later call
    with the same digest returns at once. A crash mid-way leaves no marker, so the next call
    extracts again over the partial files. `required_member` names a file the archive must
    hold (checked before extracting, so a wrong archive writes nothing).
    """

    archive = Path(archive)
    destination = Path(destination)
    marker = destination / EXTRACTED_MARKER
    already = (
        digest
        and marker.is_file()
        and marker.read_text(encoding="utf-8").strip() == digest
        and (not required_member or (destination / required_member).exists())
    )
    if already:
        logger.info("%s was already extracted into %s; skipping", archive.name, destination)
        return destination
    destination.mkdir(parents=True, exist_ok=True)
    try:
        tar_file = tarfile.open(archive, "r:*")  # noqa: SIM115 (the `with tar_file` below closes it)
    except tarfile.ReadError:
        with open(archive, "rb") as handle:
            head = handle.read(64)
        kind = "an HTML page" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) else "something else"
        raise DownloadError(
            f"{archive}: not a tar archive (gzip, bzip2, xz or plain); the server sent {kind} "
            f"(first bytes {head[:24]!r}): check --url"
        ) from None
    try:
        with tar_file as tar:
            members = list(progress_bar(tar, desc=f"checking {archive.name}", unit=" members", disable=not progress))
            check_members(archive, members)
            if required_member and required_member not in {posixpath.normpath(m.name) for m in members}:
                raise DownloadError(f"{archive}: expected member {required_member!r}; not found, nothing was extracted")
            check_free_space(destination, _bytes_to_write(destination, members))
            safety: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            if not safety:
                logger.warning(
                    "this Python's tarfile has no extraction filters (3.10.12+/3.11.4+ have); "
                    "relying on the member checks alone"
                )
            tar.extractall(
                destination,
                members=progress_bar(members, desc=f"extracting {archive.name}", unit=" members", disable=not progress),
                **safety,
            )
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise DownloadError(f"{archive}: refusing to extract member {exc.tarinfo.name!r}: {exc}") from exc
        raise DownloadError(f"{archive}: cannot extract: {exc}") from exc
    if digest:
        atomic_write_text(marker, digest + "\n")
    return destination


def _bytes_to_write(destination: Path, members: list[tarfile.TarInfo]) -> int:
    """Bytes the extraction adds to the disk; files left by an interrupted run are overwritten."""
    needed = 0
    for member in members:
        if member.isfile():
            target = destination / member.name
            present = target.stat().st_size if target.is_file() and not target.is_symlink() else 0
            needed += max(member.size - present, 0)
    return needed
