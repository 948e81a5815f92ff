"""Reading a file a user named: one helper that every reader of a user path goes through.

Why: a path from a config, the command line or a data row may name a FIFO, a device or a
folder. Reading a FIFO blocks forever (no writer ever comes), `/dev/zero` never ends, and a
folder fails with an error that sends the user the wrong way. The file is opened without
blocking and checked with `fstat` on the open descriptor (no window between a check and the
open), so anything but a regular file is refused at once with `NotRegularFile`, an `OSError`
whose message says what the path is instead.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from .errors import NotRegularFile

__all__ = ["NotRegularFile", "open_regular", "read_regular_bytes", "read_regular_text"]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for binary reading; raises FileNotFoundError, PermissionError, ... as
    `open` does, and NotRegularFile (never blocking) for a FIFO, a device or a folder."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise NotRegularFile(errno.EISDIR, "is a folder", str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise NotRegularFile(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"is {_kind(mode)}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of regular file `path` (see `open_regular`)."""
    with open_regular(path) as handle:
        return handle.read()


def read_regular_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of regular file `path`; UnicodeDecodeError when it is not UTF-8."""
    return read_regular_bytes(path).decode("utf-8")
