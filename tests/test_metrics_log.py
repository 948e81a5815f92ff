"""metrics.jsonl read back: a line cut by a crash or holding bytes that are not UTF-8 is skipped
and said once with its line number, never silently and never as a traceback."""

from __future__ import annotations

import json
import logging

from mmimdb_dist.run.metrics_log import append_record, read_records, truncate_after


def test_damaged_lines_are_skipped_and_named(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_record(log, {"type": "train", "step": step, "batches_seen": 2 * step, "loss": 1.0 / step})
    with open(log, "ab") as handle:
        handle.write(b'{"type": "eval", "step": 3, "batches_seen": 6, "f1_ma\n')  # cut mid-way
        handle.write(b'{"type": "train", "step": 4, "note": "\xff\xfe"}\n')  # not UTF-8
        handle.write(b"[1, 2]\n")  # JSON, but not a record
    append_record(log, {"type": "eval", "step": 5, "batches_seen": 10})
    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.run.metrics_log"):
        records = read_records(log)
        evals = read_records(log, kind="eval")
    assert [r["step"] for r in records] == [1, 2, 3, 5]
    assert [r["step"] for r in evals] == [5]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0] == (
        f"{log}: 3 line(s) skipped, not a JSON record (cut mid-way by a crash, or damaged): line 4, 5, 6"
    )

    truncate_after(log, batches_seen=4)  # a resume from batch 4 keeps the records up to it, and no damage
    assert [json.loads(line)["step"] for line in log.read_text(encoding="utf-8").splitlines()] == [1, 2]
