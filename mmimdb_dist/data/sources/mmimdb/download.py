"""Fetch the MM-IMDb archive and unpack it safely.

The archive is 8.1 GB, so a download is expected to be cut at some point. It goes to
`DIR/<name>.part` and an interrupted run, or the next run after a crash, continues from the
bytes already there with an HTTP Range request. The SHA-256 is computed while the bytes are
written (the bytes already in the .part are hashed first), so verifying costs no second pass
over 8 GB. Only a file whose digest matches is renamed to its final name; one that does not
match is moved aside to `DIR/<name>.bad`, so the next run starts clean and the suspect bytes
are still there to inspect.

Extraction (`extract.py` beside this module) refuses any member that could land outside DIR; a marker
records the digest of the archive fully extracted, so a re-run skips the work.

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
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .... import __version__
from ....atomic import fsync_dir
from ....digest import file_sha256
from ....errors import DownloadError
from ....outputs import exclusive
from ....progress import progress as progress_bar
from .extract import check_free_space, extract

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://archive.org/download/mmimdb/mmimdb.tar.gz"
DEFAULT_SHA256 = "7facb412f84e8e707cf5c15bb58e4cf3ac12d33e6e944e1bdefebada1259a253"
# Written into DIR after a complete extraction; holds the SHA-256 of the extracted archive.
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
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)


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
        raise DownloadError(
            f"--url {url}: its path ends in {name!r}, not a file name; expected a URL "
            "ending in the archive's name (e.g. .../mmimdb.tar.gz)"
        )
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
            logger.warning(
                "%s holds %d bytes but the file has %d; starting again from zero", part.path, part.size, total
            )
            part.restart()
            return False
        return True

    with response:
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != part.size:
                logger.warning(
                    "%s answered a range request from byte %s, asked for %d; starting again", url, first, part.size
                )
                part.restart()
                return False
        else:
            if part.size:
                logger.warning("%s ignored the range request; downloading again from zero", url)
                part.restart()
            total = remaining
        check_free_space(part.path.parent, remaining)
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
        raise DownloadError(
            f"{part.path}: cannot write ({exc.strerror or exc}); {kept} bytes "
            "kept, free some space and run again to resume"
        ) from None


def download(
    url: str,
    directory: str | os.PathLike[str],
    sha256: str,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    progress: bool = True,
) -> Path:
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
        raise DownloadError(
            f"{final}: already exists with SHA-256 {actual}, expected {expected}; "
            "delete it to download again, or pass its digest with --sha256 if you trust it"
        )

    part = _PartialFile.open_existing(folder / f"{name}.part")
    failures = 0
    with progress_bar(
        total=None, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
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
                raise DownloadError(
                    f"{url}: giving up after {retries} retries "
                    f"({_describe(error)}); {part.size} bytes kept in {part.path}, "
                    f"run again to resume"
                ) from error
            wait = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
            logger.warning("%s: %s; retrying in %.1f s", url, _describe(error), wait)
            time.sleep(wait)

    actual = part.hasher.hexdigest()
    if actual != expected:
        bad = _move_aside(part.path, final)
        raise DownloadError(
            f"{final}: SHA-256 mismatch: expected {expected}, got {actual}; the download "
            f"was moved to {bad} and the next run starts from zero (delete {bad.name}, "
            "or rename it and pass --sha256 with its digest if you trust it)"
        )
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


def fetch_mmimdb(
    to: str | os.PathLike[str],
    *,
    url: str = DEFAULT_URL,
    sha256: str = DEFAULT_SHA256,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    extract_archive: bool = True,
    progress: bool = True,
) -> Path:
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
        archive = download(
            url, destination, sha256, retries=retries, timeout=timeout, backoff=backoff, progress=progress
        )
        if not extract_archive:
            return archive
        extract(archive, destination, digest=sha256.lower(), required_member=SPLIT_MEMBER, progress=progress)
    return destination / RAW_FOLDER
