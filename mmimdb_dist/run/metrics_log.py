"""metrics.jsonl: the run's append-only log, one JSON object per line.

Three kinds of record, told apart by `type`: "train" (a logging window: loss, learning rate
per parameter group, samples/s, grad norm, memory), "eval" (a dev evaluation: the selection
metrics, dev loss, the checkpoint it saved) and "final" (the best checkpoint's test metrics).
Written by the main rank only, a line at a time; a crash can tear the last line, which
every reader skips and a resume drops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One line, flushed when the file closes; OSError (a full disk) is the caller's to report."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a log (only those of `type` == kind if given); torn lines are skipped.

    A missing log reads as no records: a run that has not logged yet.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the crash that interrupted the run
        if isinstance(record, dict) and (kind is None or record.get("type") == kind):
            records.append(record)
    return records


def truncate_after(path: Path, batches_seen: int) -> None:
    """On resume, drop the lines written after the checkpoint (they are about to be redone)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("batches_seen", 0) <= batches_seen:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
