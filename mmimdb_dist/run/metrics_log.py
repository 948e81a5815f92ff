"""metrics.jsonl: the run's append-only log, one JSON object per line.

Three kinds of record, told apart by `type`: "train" (a logging window: loss, learning rate
per parameter group, samples/s, grad norm, memory), "eval" (a dev evaluation: the selection
metrics, dev loss, the checkpoint it saved) and "final" (the best checkpoint's test metrics).
Written by the main rank only, a line at a time; a crash can tear the last line, which
every reader skips and a resume drops.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

logger = logging.getLogger(__name__)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One line, flushed when the file closes; OSError (a full disk) is the caller's to report."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def _parsed_lines(path: Path) -> list[tuple[int, str, dict[str, Any] | None]]:
    """(line number, text, record or None) of every non-empty line: None for a line that is not a
    JSON object (torn by a crash, or bytes that are not UTF-8)."""
    parsed: list[tuple[int, str, dict[str, Any] | None]] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
            record = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            parsed.append((number, raw.decode("utf-8", "replace"), None))
            continue
        parsed.append((number, text, record if isinstance(record, dict) else None))
    return parsed


def read_records(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a log (only those of `type` == kind if given). A line that is not a JSON
    object (torn by the crash that interrupted a run, or damaged) is skipped and said once, with
    its line numbers: a curve with a silent hole misleads.

    A missing log reads as no records: a run that has not logged yet.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = _parsed_lines(path)
    bad = [number for number, _, record in lines if record is None]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        logger.warning(
            "%s: %d line(s) skipped, not a JSON record (cut mid-way by a crash, or damaged): line %s",
            path,
            len(bad),
            shown,
        )
    return [r for _, _, r in lines if r is not None and (kind is None or r.get("type") == kind)]


def truncate_after(path: Path, batches_seen: int) -> None:
    """On resume, drop the lines written after the checkpoint (they are about to be redone), and
    any line that is not a record (the one a crash tore)."""
    if not path.is_file():
        return
    kept = [text for _, text, record in _parsed_lines(path) if record and record.get("batches_seen", 0) <= batches_seen]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
