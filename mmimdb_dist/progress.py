"""Progress of long work: a bar on a terminal, plain lines elsewhere, nothing when asked.

A progress bar redraws itself with carriage returns and escape codes; in a Slurm `.err`
file, a CI log or a pipe those become one unreadable line per refresh. So a bar is drawn
only when stderr is a terminal. Anywhere else the same object logs a plain line (through
`logging`, so it carries the log format) at most every `PLAIN_INTERVAL_S` seconds and once
at the end. `--no-progress` (or MMIMDB_DIST_NO_PROGRESS=1) turns both off.

Every long loop of the package takes its progress from `progress()`: one place decides how
it is shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

logger = logging.getLogger("mmimdb_dist.progress")

ENV_VAR = "MMIMDB_DIST_NO_PROGRESS"
PLAIN_INTERVAL_S = 30.0


@contextlib.contextmanager
def progress_disabled() -> Iterator[None]:
    """Progress off for this block, in this process and the processes it starts (loader workers,
    ranks); the environment is restored after (a command run in-process leaves no trace)."""
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def progress_enabled() -> bool:
    return os.environ.get(ENV_VAR, "") not in ("1", "true", "yes")


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    leave: bool = False,
    interval_s: float | None = None,
    **bar_options: Any,
) -> Any:
    """A tqdm bar on a terminal, a `PlainProgress` elsewhere; both iterate `iterable` and take
    `update`, `set_postfix` and `close`. `disable` (e.g. not the main rank) turns it off."""
    if iterable is not None and total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]  # hasattr above: an Iterable with a length
    if disable or not progress_enabled():
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, silent=True)
    if sys.stderr.isatty():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=True, **bar_options
        )
    return PlainProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        interval_s=PLAIN_INTERVAL_S if interval_s is None else interval_s,
    )


def _duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class PlainProgress:
    """Progress as log lines: `desc: 120/480 movie (25%), 41.2 movie/s, loss=0.4123`."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        interval_s: float = PLAIN_INTERVAL_S,
        silent: bool = False,
    ) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = initial
        self.interval_s, self.silent = interval_s, silent
        self.postfix = ""
        self._start = self._last = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "PlainProgress without an iterable: call update()"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        made = self.n - self._start_n
        # Slow items (a batch of a big model on a CPU) read better as seconds per item.
        rate = (
            f"{made / elapsed:.1f} {self.unit}/s"
            if made >= elapsed or not made
            else f"{elapsed / made:.1f} s/{self.unit}"
        )
        timing = f", {_duration(elapsed)} elapsed"
        if self.total and made and self.n < self.total:
            timing += f", about {_duration(elapsed / made * (self.total - self.n))} left"
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}{share}, {rate}{timing}{postfix}"

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.perf_counter()
        if not self.silent and now - self._last >= self.interval_s:
            self._last = now
            logger.info("%s", self.line())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.silent and self.n > self._start_n:
            logger.info("%s", self.line())


def log_formatter() -> logging.Formatter:
    """The toolkit's log lines: `LEVEL logger: message`, with the time first off a terminal
    (a Slurm log, a CI log, a file), for the CLI and the Python API alike."""
    stamp = "" if sys.stderr.isatty() else "%(asctime)s "
    return logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def shown_when_unconfigured() -> Iterator[None]:
    """The toolkit's INFO lines (progress among them) on stderr for the block, when the program
    has not configured logging itself: the Python API (`train(cfg)` in a notebook or a script)
    then reports as the command line does, instead of running silent for the whole run. A
    program with its own logging setup keeps it."""
    root, package = logging.getLogger(), logging.getLogger("mmimdb_dist")
    if root.handlers or package.handlers or package.level != logging.NOTSET:
        yield  # configured by the program (or its level chosen, as a Tune trial does)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def plain_third_party_output() -> None:
    """Off a terminal, the libraries' own output follows the toolkit's promise of plain lines:
    no `\\r` progress bars from the Hugging Face hub and transformers (a model load draws one), no
    ANSI colours around Ray's worker log prefixes. Set before those libraries are imported; a
    value the user set is kept."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # Ray's "[repeated 9x across cluster]" summaries come wrapped in colour codes of their own.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
