"""Output folders: a command writes only into an empty folder or one of its own kind, and
only one command at a time.

Why: `shard --out ~/data` would otherwise remove the user's files there (a stale-shard sweep)
or leave their folder half overwritten, and two `shard` runs into one folder both exit 0 with
a manifest that matches neither's shards. Every writing command (shard, cache-features,
train, predict, download) therefore
1. refuses a path that is a regular file, a folder it cannot write, or a folder holding
   anything but its own files (one error line naming a few of them), and
2. holds an exclusive `flock` on a lock file in the folder while it writes; a second command
   on the same folder fails at once naming it. The lock goes with the process, so a killed
   command never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError

logger = logging.getLogger(__name__)

LOCK_NAME = ".mmimdb-dist.lock"


def check_output_dir(path: Path, key: str, what: str, owns: Callable[[str], bool]) -> None:
    """`path` may receive `what`: absent (it is created), empty, or holding only names `owns`."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{key} {path}: is a file; expected a folder for {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{key} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{key} {path}: not writable (read-only filesystem or permissions)")
    foreign = sorted(name for name in os.listdir(path) if name != LOCK_NAME and not owns(name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{key} {path}: holds files that are not {what} ({shown}); choose an empty or "
            "new folder (nothing there was changed)"
        )


@contextlib.contextmanager
def exclusive(path: Path, key: str, command: str, lock_name: str = LOCK_NAME) -> Iterator[None]:
    """Hold an exclusive lock on folder `path` for `command`, or fail at once if one is held."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unguarded
        yield
        return
    lock_path = path / lock_name
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 (the `with handle:` below holds it for the lock's life)
    except OSError as exc:
        raise OutputError(f"{key} {path}: cannot create its lock file ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{key} {path}: another mmimdb-dist {command} is writing there "
                f"({lock_path} is locked); wait for it to finish"
            ) from None
        except OSError as exc:  # a filesystem without locks (some NFS mounts)
            logger.warning("%s: cannot lock (%s); make sure no other command writes into %s", lock_path, exc, path)
        yield


@contextlib.contextmanager
def claim_output_dir(
    path: str | Path, key: str, command: str, what: str, owns: Callable[[str], bool]
) -> Iterator[Path]:
    """`check_output_dir`, then `exclusive` for the duration of the block."""
    folder = Path(path)
    check_output_dir(folder, key, what, owns)
    with exclusive(folder, key, command):
        yield folder


def check_output_file(path: Path, key: str, what: str, is_own: Callable[[Path], bool]) -> None:
    """`path` may be (re)written with `what`: absent, or an earlier output of the same kind."""
    if path.is_dir():
        raise OutputError(f"{key} {path}: is a folder; expected a file name for {what}")
    if path.exists() and not is_own(path):
        raise OutputError(f"{key} {path}: exists and is not {what}; choose another name (it was not changed)")
    if not path.parent.is_dir():
        raise OutputError(f"{key} {path}: its folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{key} {path}: its folder is not writable (read-only filesystem or permissions)")


@contextlib.contextmanager
def exclusive_file(path: Path, key: str, command: str) -> Iterator[None]:
    """An exclusive lock on output file `path` (a hidden `.<name>.lock` beside it, removed after)."""
    lock_name = f".{path.name}.lock"
    with exclusive(path.parent, key, command, lock_name=lock_name):
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                (path.parent / lock_name).unlink()
