"""Output folders: a command writes only into an empty folder or one of its own kind, and
only one command at a time.

Why: `shard --out ~/data` would otherwise remove the user's files there (a stale-shard sweep)
or leave their folder half overwritten, and two `shard` runs into one folder both exit 0 with
a manifest that matches neither's shards. Every writing command (shard, cache-features,
train, predict, download) therefore
1. refuses a path that is a regular file, a folder it cannot write, or a folder holding
   anything but its own files (one error line naming a few of them);
2. judges a folder that holds files of its names by their content, not their names: the folder
   must be one the same command wrote. The command records itself in the folder's lock file
   when it claims it; a folder without that record (made by an older version) must hold the
   command's own manifest (`recognise`). A user's `manifest.json` and `train-000007.tar`, or a
   shard set given to `cache-features --out`, are refused, never overwritten;
3. holds an exclusive `flock` on the lock file while it writes; a second command on the same
   folder fails at once naming it. The lock goes with the process, so a killed command never
   leaves the folder locked (and its record lets the same command finish the folder later).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError

logger = logging.getLogger(__name__)

LOCK_NAME = ".mmimdb-dist.lock"


def check_writable_folder(path: Path, key: str, what: str) -> None:
    """`path` can receive `what`: a folder (created if absent) this process may write into.
    Checked before the work, so a read-only place or a file in the way costs no evaluation."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{key} {path}: is a file; expected a folder for {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{key} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{key} {path}: not writable (read-only filesystem or permissions)")


def check_output_dir(
    path: Path,
    key: str,
    what: str,
    owns: Callable[[str], bool],
    command: str | None = None,
    recognise: Callable[[Path], bool] | None = None,
) -> None:
    """`path` may receive `what`: absent (it is created), empty, or holding only names `owns`
    that `command` wrote there (its record in the lock file, or a manifest `recognise` accepts)."""
    check_writable_folder(path, key, what)
    entries = sorted(name for name in os.listdir(path) if name != LOCK_NAME)
    foreign = [name for name in entries if not owns(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{key} {path}: holds files that are not {what} ({shown}); choose an empty or "
            "new folder (nothing there was changed)"
        )
    if not entries or command is None:
        return
    written_by = read_claim(path)
    if written_by is not None and written_by != command:
        raise OutputError(
            f"{key} {path}: holds the output of `mmimdb-dist {written_by}`, not {what}; choose an "
            "empty or new folder (nothing there was changed)"
        )
    if written_by is None and (recognise is None or not recognise(path)):
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise OutputError(
            f"{key} {path}: holds {shown}, but not {what} that mmimdb-dist {command} wrote (no record "
            "of the command, and no manifest of its own); choose an empty or new folder (nothing "
            "there was changed)"
        )


def read_claim(path: Path) -> str | None:
    """The command recorded in folder `path`'s lock file (`exclusive(..., record=True)`), if any."""
    try:
        data = json.loads((path / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) else None


@contextlib.contextmanager
def exclusive(path: Path, key: str, command: str, lock_name: str = LOCK_NAME, record: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on folder `path` for `command`, or fail at once if one is held;
    `record`: write the command into the lock file, as the folder's claim (`read_claim`)."""
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
        if record:
            handle.truncate(0)
            handle.write(json.dumps({"command": command}) + "\n")
            handle.flush()
        yield


@contextlib.contextmanager
def claim_output_dir(
    path: str | Path,
    key: str,
    command: str,
    what: str,
    owns: Callable[[str], bool],
    recognise: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """`check_output_dir`, then `exclusive` (recording `command`) for the duration of the block."""
    folder = Path(path)
    check_output_dir(folder, key, what, owns, command, recognise)
    with exclusive(folder, key, command, record=True):
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
