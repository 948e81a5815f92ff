"""Fetch the MM-IMDb archive and unpack it safely.

The archive is 8.1 GB, so a download is expected to be cut at some point. It goes to
`DIR/<name>.part` and an interrupted run, or the next run after a crash, continues from the
bytes already there with an HTTP Range request. The SHA-256 is computed while the bytes are
written (the bytes already in the .part are hashed first), so verifying costs no second pass
over 8 GB. Only a file whose digest matches is renamed to its final name; one that does not
match is moved aside to `DIR/<name>.bad`, so the next run starts clean and the suspect bytes
are still there to inspect.

Extraction refuses any member that could land outside DIR (absolute paths, `..`, links
that point outside, device files). Every member is checked before anything is written, so a
hostile archive extracts nothing, and the stdlib's `data` extraction filter checks again while
writing. A marker file records the digest of the archive that was fully extracted, so a
re-run skips the work.

Usage::

    mmimdb-dist download --to data/                 # data/mmimdb/{split.json,dataset/}
    mmimdb-dist download --to data/ --no-extract    # the archive only
    mmimdb-dist download --to data/ --url https://mirror/mmimdb.tar.gz --sha256 <hex>
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import ssl
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_write_text, fsync_dir
from ..digest import file_sha256
from ..errors import DownloadError
from ..outputs import exclusive
from ..progress import progress as progress_bar

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://archive.org/download/mmimdb/mmimdb.tar.gz"
DEFAULT_SHA256 = "7facb412f84e8e707cf5c15bb58e4cf3ac12d33e6e944e1bdefebada1259a253"
# Written into DIR after a complete extraction; holds the SHA-256 of the extracted archive.
EXTRACTED_MARKER = ".mmimdb-extracted"
# Held while a run downloads or extracts into DIR.
LOCK_NAME = ".mmimdb-download.lock"
# The folder the official archive unpacks to, and the file that proves it is MM-IMDb.
RAW_FOLDER = "mmimdb"
SPLIT_MEMBER = f"{RAW_FOLDER}/split.json"

CHUNK_BYTES = 1 << 20
MAX_BACKOFF_SECONDS = 60.0
USER_AGENT = f"mmimdb-dist/{__version__} (Python urllib)"
# Server answers worth retrying: overload and gateway trouble, not "not found" or "forbidden".
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Errors of a connection that failed or was cut: retried, then reported with the URL.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                  ssl.SSLError)


# --------------------------------------------------------------------------- download


class _CutShort(Exception):
    """The server closed the connection before sending the body it announced."""


@dataclass
class _PartialFile:
    """The .part file and the running hash of exactly the bytes it holds."""

    path: Path
    size: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)

    @classmethod
    def open_existing(cls, path: Path) -> _PartialFile:
        part = cls(path)
        if path.exists():
            logger.info("resuming %s: hashing the %d bytes already downloaded", path, path.stat().st_size)
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    part.hasher.update(chunk)
                    part.size += len(chunk)
        return part

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size = 0
        self.hasher = hashlib.sha256()


def _check_sha256(sha256: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise DownloadError(f"--sha256: expected 64 hexadecimal characters, got {sha256!r}")
    return sha256.lower()


def archive_name(url: str) -> str:
    """The file name the URL's path ends with; the archive is saved under it.

    Unquoted before the last component is taken, so `..%2F..%2Fx` names `x`, never a path:
    a name from a URL stays in the target folder. A path that names no file is refused.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    name = posixpath.basename(path.replace("\\", "/"))
    if not name:  # the URL ends in a folder: a fixed name, still inside the target folder
        return "download"
    if name in (".", "..") or "\x00" in name:
        raise DownloadError(f"--url {url}: its path ends in {name!r}, not a file name; expected a URL "
                            "ending in the archive's name (e.g. .../mmimdb.tar.gz)")
    return name


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from `bytes 100-199/200` or `bytes */200`; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def _stream_attempt(url: str, part: _PartialFile, timeout: float, progress: Any) -> bool:
    """One HTTP request appending to the .part. True when the .part holds the whole file."""
    headers = {"User-Agent": USER_AGENT}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not part.size:
            raise
        # Nothing left past our offset: the .part is complete, or longer than the file.
        _, total = _content_range(exc.headers.get("Content-Range"))
        exc.close()
        if total is not None and total != part.size:
            logger.warning("%s holds %d bytes but the file has %d; starting again from zero",
                           part.path, part.size, total)
            part.restart()
            return False
        return True

    with response:
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != part.size:
                logger.warning("%s answered a range request from byte %s, asked for %d; starting again",
                               url, first, part.size)
                part.restart()
                return False
        else:
            if part.size:
                logger.warning("%s ignored the range request; downloading again from zero", url)
                part.restart()
            total = remaining
        _check_free_space(part.path.parent, remaining)
        if total is not None:
            progress.total = total
        progress.n = part.size

        received = 0
        with open(part.path, "ab") as handle:
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived: a stall loses nothing
                _write_part(part, handle, chunk)
                part.hasher.update(chunk)
                part.size += len(chunk)
                received += len(chunk)
                progress.update(len(chunk))
            _write_part(part, handle, b"")
        if remaining is not None and received < remaining:
            raise _CutShort(f"connection closed after {received} of {remaining} bytes")
    return True


def _write_part(part: _PartialFile, handle: Any, chunk: bytes) -> None:
    """Append to the .part (an empty chunk flushes and syncs it). A full disk is not a network
    error: retrying cannot help, so it stops the download at once, keeping what was written."""
    try:
        if chunk:
            handle.write(chunk)
        else:
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        kept = os.fstat(handle.fileno()).st_size
        raise DownloadError(f"{part.path}: cannot write ({exc.strerror or exc}); {kept} bytes "
                            "kept, free some space and run again to resume") from None


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.2f} MB"


def _check_free_space(directory: Path, needed: int | None) -> None:
    """Fail before writing rather than after filling the disk with 8 GB of a dead-end file."""
    if needed is None:
        return
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DownloadError(f"{directory}: needs {_size(needed)} more, only {_size(free)} free")


def download(url: str, directory: str | os.PathLike, sha256: str, *, retries: int = 5,
             timeout: float = 60.0, backoff: float = 2.0, progress: bool = True) -> Path:
    """Download `url` into `directory`, resuming a .part file, and verify its SHA-256.

    `retries` bounds the retries after a failed attempt; the count starts again whenever an
    attempt brought new bytes, so a long transfer over a flaky link still finishes.
    Waits between attempts double from `backoff` seconds (at most a minute).
    """

    expected = _check_sha256(sha256)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = archive_name(url)
    final = folder / name
    if final.exists():
        actual = file_sha256(final)
        if actual == expected:
            logger.info("%s is already here and its SHA-256 matches; not downloading again", final)
            return final
        # Never ours (we rename only verified files): a file put there by hand, or a --sha256
        # for another version of the archive. Neither deserves an 8 GB download over it.
        raise DownloadError(f"{final}: already exists with SHA-256 {actual}, expected {expected}; "
                            "delete it to download again, or pass its digest with --sha256 if you trust it")

    part = _PartialFile.open_existing(folder / f"{name}.part")
    failures = 0
    with progress_bar(total=None, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
              desc=name, disable=not progress) as bar:
        while True:
            size_before = part.size
            try:
                if _stream_attempt(url, part, timeout, bar):
                    break
                continue
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRYABLE_STATUS:
                    raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
                error: Exception = exc
            except (_CutShort, *NETWORK_ERRORS) as exc:
                error = exc
            failures = 1 if part.size > size_before else failures + 1
            if failures > retries:
                raise DownloadError(f"{url}: giving up after {retries} retries "
                                    f"({_describe(error)}); {part.size} bytes kept in {part.path}, "
                                    f"run again to resume") from error
            wait = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
            logger.warning("%s: %s; retrying in %.1f s", url, _describe(error), wait)
            time.sleep(wait)

    actual = part.hasher.hexdigest()
    if actual != expected:
        bad = _move_aside(part.path, final)
        raise DownloadError(f"{final}: SHA-256 mismatch: expected {expected}, got {actual}; the download "
                            f"was moved to {bad} and the next run starts from zero (delete {bad.name}, "
                            "or rename it and pass --sha256 with its digest if you trust it)")
    os.replace(part.path, final)
    fsync_dir(folder)  # the rename of the .part survives a power cut
    logger.info("downloaded %s (%d bytes, SHA-256 verified)", final, part.size)
    return final


def _move_aside(part: Path, final: Path) -> Path:
    """Rename a download whose digest is wrong to `<final name>.bad`, replacing an older one."""
    bad = final.with_name(final.name + ".bad")
    os.replace(part, bad)
    return bad


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------- extraction


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
    if member.islnk():
        if member.linkname.startswith("/") or tree.resolve(member.linkname) is None:
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
            raise DownloadError(f"{archive}: refusing to extract member {member.name!r}: {problem}; "
                                "nothing was extracted")


def extract(archive: str | os.PathLike, destination: str | os.PathLike, *, digest: str | None = None,
            required_member: str | None = None, progress: bool = True) -> Path:
    """Extract `archive` into `destination` after checking every member; return `destination`.

    With `digest`, a marker holding it is written after a complete extraction and a later call
    with the same digest returns at once. A crash mid-way leaves no marker, so the next call
    extracts again over the partial files. `required_member` names a file the archive must
    hold (checked before extracting, so a wrong archive writes nothing).
    """

    archive = Path(archive)
    destination = Path(destination)
    marker = destination / EXTRACTED_MARKER
    already = (digest and marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest
               and (not required_member or (destination / required_member).exists()))
    if already:
        logger.info("%s was already extracted into %s; skipping", archive.name, destination)
        return destination
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in progress_bar(tar, desc=f"checking {archive.name}", unit=" members",
                                       disable=not progress)]
            check_members(archive, members)
            if required_member and required_member not in {posixpath.normpath(m.name) for m in members}:
                raise DownloadError(f"{archive}: expected member {required_member!r}; not found, "
                                    "nothing was extracted")
            _check_free_space(destination, _bytes_to_write(destination, members))
            safety: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            if not safety:
                logger.warning("this Python's tarfile has no extraction filters (3.10.12+/3.11.4+ have); "
                               "relying on the member checks alone")
            tar.extractall(destination, members=progress_bar(members, desc=f"extracting {archive.name}",
                                                      unit=" members", disable=not progress), **safety)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, getattr(tarfile, "FilterError", ())):
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


def fetch_mmimdb(to: str | os.PathLike, *, url: str = DEFAULT_URL, sha256: str = DEFAULT_SHA256,
                 retries: int = 5, timeout: float = 60.0, backoff: float = 2.0,
                 extract_archive: bool = True, progress: bool = True) -> Path:
    """Download (and by default extract) MM-IMDb into `to`.

    Returns the raw folder `to/mmimdb` (what `mmimdb-dist shard --raw` reads), or the archive
    path with `extract_archive=False`.
    """
    if retries < 0:
        raise DownloadError(f"--retries: expected >= 0, got {retries}")
    destination = Path(to)
    destination.mkdir(parents=True, exist_ok=True)
    # Two runs (say, every rank of a job) must never share a .part.
    with exclusive(destination, "--to", "download", lock_name=LOCK_NAME):
        archive = download(url, destination, sha256, retries=retries, timeout=timeout, backoff=backoff,
                           progress=progress)
        if not extract_archive:
            return archive
        extract(archive, destination, digest=sha256.lower(), required_member=SPLIT_MEMBER,
                progress=progress)
    return destination / RAW_FOLDER
