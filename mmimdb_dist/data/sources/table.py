"""The table source: any dataset given as one table of text, image paths and labels.

`data.source: table` reads a .csv, .tsv, .jsonl or .parquet file whose columns `data.columns`
names (id, text, image, labels, split) and shards it exactly as MM-IMDb is sharded: the
same tar format, codec, manifest and loaders, so everything after the shard step serves a
table without knowing where its shards came from.

How a table becomes a shard set, with memory flat in the number of rows:

1. Rows are streamed (csv/jsonl line by line, parquet batch by batch) and each is parsed
   into (id, split, text, image path, label names) or skipped with a reason and its line.
   Usable rows are spooled into an SQLite file in the output folder, which also refuses a
   duplicate id. Nothing but counts stays in memory.
2. Without a split column, each row's split is drawn: rows are grouped by their rarest label
   (a stratified split) and ordered by a seeded hash of their id, and each group is cut by
   `data.split_fractions`. The split is written beside the shards as `split.json`.
3. The label set is `data.labels`, or the train rows' labels by frequency (ties by name),
   less those with fewer than `data.min_label_count` train rows (reported as dropped).
4. Each split's rows, in seeded-hash order, are cut into shards that worker processes
   write: they read their rows back from the spool, load and resize the image (confined to
   the table's folder), and turn label names into the label set's 0/1 vector.

Every bad row is a counted skip in the manifest (reason, line, detail), never a traceback;
a table that cannot be read at all (a missing column, an unknown split spelling) is one
error line naming the file, the column and what was expected.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...atomic import atomic_open
from ...errors import DataError
from ...labels import LabelSet, frequency_order
from ...progress import progress as progress_bar
from ...userfiles import NotRegularFile, open_regular
from ..codecs import shard_members
from ..manifest import SPLITS, ShardInfo, SkippedMovie, num_shards, shard_name
from ..tario import write_sample_tar
from .common import (
    ID_PATTERN,
    SampleSkipped,
    ShardPlan,
    ShardResult,
    SkipReport,
    decode_image,
    resize_and_encode,
    shard_settings,
    writing,
)

log = logging.getLogger(__name__)

SPOOL_NAME = ".table-rows.sqlite.tmp"  # a temp-file name: an interrupted run's spool is cleaned
SPLIT_FILE = "split.json"
EMPTY_RANGE = "\uffff"  # a key after every real key: the range of a shard with no rows
ROW_ID = "row"  # what a skip without a usable id is recorded under

# Skip reasons of table rows (the manifest's `count_by_reason`).
MISSING_ID = "missing_id"
BAD_ID = "bad_id"
DUPLICATE_ID = "duplicate_id"
EMPTY_TEXT = "empty_text"
BAD_TEXT = "bad_text"
NO_LABELS = "no_labels"
BAD_LABELS = "bad_labels"
NOT_ONE_LABEL = "not_one_label"
NO_KNOWN_LABEL = "no_known_label"
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
IMAGE_OUTSIDE = "image_outside_table_dir"
MALFORMED_LINE = "malformed_line"
NOT_AN_OBJECT = "not_an_object"

# Spellings of the three splits in a split column; anything else is an error line.
SPLIT_SPELLINGS = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "development": "dev",
    "test": "test",
    "testing": "test",
}
ID_CHARS = "letters, digits, '_' or '-'"


@dataclass(frozen=True)
class TableRow:
    """One usable row: its labels still as names (the label set is known only after all rows)."""

    id: str
    split: str | None
    text: str
    image: str | None
    labels: list[str]
    line: int


def _where(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _skip(path: Path, line: int, sample_id: str, split: str, reason: str, detail: str) -> SampleSkipped:
    """A row that cannot become a sample: the skip signal of every source (its record is what
    the manifest lists), naming the table and the line."""
    return SampleSkipped(sample_id, split, reason, _where(path, line), detail)


# --------------------------------------------------------------------------- reading rows


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
    if suffix not in formats:
        raise DataError(f"{path}: expected a table ending in {', '.join(formats)}")
    return formats[suffix]


def _open_table(path: Path) -> Any:
    """The table opened for reading; a missing file, a folder or a FIFO is one line (reading a
    FIFO would block forever)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise DataError(f"{path}: table file does not exist (data.table)") from None
    except NotRegularFile as exc:
        raise DataError(f"{path}: {exc.strerror} (data.table must name a table file)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the table ({exc.strerror or exc})") from None


def _check_columns(path: Path, present: list[str], wanted: list[str]) -> None:
    for column in wanted:
        if column not in present:
            shown = ", ".join(repr(c) for c in present[:40]) + (" ..." if len(present) > 40 else "")
            raise DataError(
                f"{path}: no column {column!r} (named in data.columns); the table's columns are: {shown or '(none)'}"
            )


# (line number, the row's wanted cells or None, why the line was unreadable or None)
RawRow = tuple[int, dict[str, Any] | None, str | None]


def iter_table(path: Path, wanted: list[str]) -> Iterator[RawRow]:
    """(line or row number, row dict or None, problem or None) for every data row of the table,
    streamed; a row that cannot be read at all (a malformed CSV line, a JSONL line that is not
    an object) comes with its problem instead of its values."""
    fmt = table_format(path)
    if fmt in ("csv", "tsv"):
        yield from _iter_delimited(path, "\t" if fmt == "tsv" else ",", wanted)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path, wanted)
    else:
        yield from _iter_parquet(path, wanted)


def _iter_delimited(path: Path, delimiter: str, wanted: list[str]) -> Iterator[RawRow]:

    with _open_table(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the table is empty (expected a header line)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}:1: the header line cannot be read ({exc})") from None
        header = [name.strip().lstrip("\ufeff") for name in header]
        _check_columns(path, header, wanted)
        while True:
            line = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                # The decoder cannot resynchronise within the stream: report and stop here.
                yield line, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}); the rest of the table is unread"
                return
            except csv.Error as exc:
                # An unclosed quote runs on to the end of the table: say how far it reached.
                reach = f"; lines {line}-{reader.line_num} are unread" if reader.line_num > line else ""
                yield line, None, f"malformed line ({exc}){reach}"
                continue
            if not values or values == [""]:
                continue  # a blank line
            if len(values) != len(header):
                yield line, None, f"malformed line: {len(values)} fields, the header has {len(header)}"
                continue
            yield line, dict(zip(header, values, strict=True)), None


def _iter_jsonl(path: Path, wanted: list[str]) -> Iterator[RawRow]:
    with _open_table(path) as handle:
        checked = False
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield line, None, f"not UTF-8 text ({exc.reason})"
                continue
            except (ValueError, RecursionError) as exc:
                yield line, None, f"not valid JSON ({exc or 'nested too deeply'})"
                continue
            if not isinstance(row, dict):
                yield line, None, f"expected a JSON object, got {type(row).__name__}"
                continue
            if not checked:  # the first object names the columns
                _check_columns(path, list(row), wanted)
                checked = True
            yield line, row, None


def _iter_parquet(path: Path, wanted: list[str]) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet tables needs pyarrow (pip install pyarrow)") from None
    with _open_table(path) as handle:
        try:
            table = pq.ParquetFile(handle)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError kinds
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        _check_columns(path, list(table.schema_arrow.names), wanted)
        number = 0
        for batch in table.iter_batches(batch_size=4096, columns=list(dict.fromkeys(wanted))):
            for row in batch.to_pylist():
                number += 1
                yield number, row, None


# --------------------------------------------------------------------------- one row


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _as_text(value: Any) -> str | None:
    """A cell as text; None for a missing one, and for a value that is not text or a number."""
    if _missing(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _label_list(value: Any, separator: str) -> list[str] | None:
    """Label names from one cell: a list, a JSON list in a string, or a string split on
    `separator`; an int (a class index) becomes its digits. None: not labels."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except ValueError:
                return None
        else:
            return [part.strip() for part in stripped.split(separator) if part.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        names = []
        for item in value:
            if isinstance(item, str) and item.strip():
                names.append(item.strip())
            elif isinstance(item, int) and not isinstance(item, bool):
                names.append(str(item))
            else:
                return None
        return names
    return None


_FLAGS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}


def _flag(value: Any) -> int | None:
    """A 0/1 label cell (0/1, "0"/"1", true/false, 0.0/1.0); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return _FLAGS.get(value.strip().lower())
    return None


class RowParser:
    """Turns one table row into a TableRow, or a SampleSkipped naming the line and the reason."""

    def __init__(self, cfg: Any, path: Path) -> None:
        self.data, self.columns, self.path = cfg.data, cfg.data.columns, path

    def wanted(self) -> list[str]:
        c = self.columns
        return [name for name in (c.id, *c.text_columns, c.image, *c.label_columns, c.split) if name]

    def split_of(self, row: dict[str, Any], line: int) -> str | None:
        if not self.columns.split:
            return None
        value = row.get(self.columns.split)
        spelled = str(value).strip().lower() if not _missing(value) else ""
        if spelled not in SPLIT_SPELLINGS:
            raise DataError(
                f"{_where(self.path, line)}: column {self.columns.split!r}: expected train, dev or "
                f"test (or {', '.join(s for s in SPLIT_SPELLINGS if s not in SPLITS)}), got {value!r:.60}"
            )
        return SPLIT_SPELLINGS[spelled]

    def parse(self, line: int, row: dict[str, Any]) -> TableRow:
        columns = self.columns
        split = self.split_of(row, line)
        shown_split = split or "?"
        if columns.id:
            sample_id = _as_text(row.get(columns.id))
            if sample_id is None:
                raise _skip(self.path, line, ROW_ID, shown_split, MISSING_ID, f"column {columns.id!r}: no id")
            if not ID_PATTERN.fullmatch(sample_id):
                raise _skip(
                    self.path,
                    line,
                    ROW_ID,
                    shown_split,
                    BAD_ID,
                    f"column {columns.id!r}: id {sample_id!r:.60} is not made of {ID_CHARS} "
                    "(it becomes a tar member name)",
                )
        else:
            sample_id = str(line)

        parts = []
        for column in columns.text_columns:
            value = row.get(column)
            if not _missing(value) and not isinstance(value, (str, int, float)):
                raise _skip(
                    self.path,
                    line,
                    sample_id,
                    shown_split,
                    BAD_TEXT,
                    f"column {column!r}: expected text, got {type(value).__name__}",
                )
            text = _as_text(value)
            if text:
                parts.append(text)
        text = "\n\n".join(parts)
        if not text:
            raise _skip(
                self.path,
                line,
                sample_id,
                shown_split,
                EMPTY_TEXT,
                f"column(s) {', '.join(map(repr, columns.text_columns))}: empty text",
            )

        image = None
        if columns.image:
            value = row.get(columns.image)
            image = value.strip() if isinstance(value, str) and value.strip() else None

        labels = self._labels(row, line, sample_id, shown_split)
        return TableRow(id=sample_id, split=split, text=text, image=image, labels=labels, line=line)

    def _labels(self, row: dict[str, Any], line: int, sample_id: str, split: str) -> list[str]:
        columns = self.columns
        if columns.one_hot_labels:
            names = []
            for column in columns.label_columns:
                flag = _flag(row.get(column))
                if flag is None:
                    raise _skip(
                        self.path,
                        line,
                        sample_id,
                        split,
                        BAD_LABELS,
                        f"column {column!r}: expected 0 or 1, got {row.get(column)!r:.40}",
                    )
                if flag:
                    names.append(column)
        else:
            column = columns.labels
            value = row.get(column)
            if _missing(value):
                raise _skip(self.path, line, sample_id, split, NO_LABELS, f"column {column!r}: no labels")
            listed = _label_list(value, self.data.label_separator)
            if listed is None:
                raise _skip(
                    self.path,
                    line,
                    sample_id,
                    split,
                    BAD_LABELS,
                    f"column {column!r}: expected label names (a list, or text split on "
                    f"{self.data.label_separator!r}), got {value!r:.60}",
                )
            names = list(dict.fromkeys(listed))
            if not names:
                raise _skip(self.path, line, sample_id, split, NO_LABELS, f"column {column!r}: no labels")
        if self.data.task == "multiclass" and len(names) != 1:
            raise _skip(
                self.path,
                line,
                sample_id,
                split,
                NOT_ONE_LABEL,
                f"a multiclass row needs exactly one label, got {len(names)}: {names[:5]}",
            )
        return names


# --------------------------------------------------------------------------- the spool


class Spool:
    """Usable rows on disk (SQLite), so that no pass over the table holds its rows in memory."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.unlink(missing_ok=True)
            self.db = sqlite3.connect(str(path))
            self.db.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000; PRAGMA temp_store=FILE;"
                "CREATE TABLE rows (id TEXT PRIMARY KEY, line INTEGER, split TEXT, stratum TEXT, "
                "key TEXT, text TEXT, image TEXT, labels TEXT);"
            )

    def add(self, row: TableRow, key: str) -> int | None:
        """Insert; the line of the row that already holds this id, or None."""
        try:
            self.db.execute(
                "INSERT INTO rows VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
                (row.id, row.line, row.split, key, row.text, row.image, json.dumps(row.labels, ensure_ascii=False)),
            )
        except sqlite3.IntegrityError:
            (line,) = self.db.execute("SELECT line FROM rows WHERE id = ?", (row.id,)).fetchone()
            return int(line)
        return None

    def index(self) -> None:
        self.db.execute("CREATE INDEX IF NOT EXISTS by_split ON rows (split, key)")
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def row_key(seed: int, sample_id: str) -> str:
    """The seeded order of rows within a split: independent of the table's row order."""
    return hashlib.sha256(f"mmimdb-dist:{seed}:{sample_id}".encode()).hexdigest()[:24] + sample_id


def _assign_splits(spool: Spool, fractions: list[float], label_counts: Counter[str]) -> None:
    """A seeded split stratified by each row's rarest label (ties by name): per group, rows in
    seeded-hash order go to train, dev and test by `fractions` (rounded, the rest to test)."""
    db = spool.db
    last = 0
    while True:  # in rowid blocks, each read whole before it is updated (no update under a live scan)
        block = db.execute(
            "SELECT rowid, labels FROM rows WHERE rowid > ? ORDER BY rowid LIMIT 10000", (last,)
        ).fetchall()
        if not block:
            break
        db.executemany(
            "UPDATE rows SET stratum = ? WHERE rowid = ?",
            [
                (min(names, key=lambda n: (label_counts[n], n)) if names else "", rowid)
                for rowid, names in ((r, json.loads(labels)) for r, labels in block)
            ],
        )
        last = block[-1][0]
    sizes = dict(db.execute("SELECT stratum, COUNT(*) FROM rows GROUP BY stratum").fetchall())
    cursor = db.execute("SELECT id, stratum FROM rows ORDER BY stratum, key")
    updates, position, current = [], 0, None
    writer = spool.db.cursor()
    for sample_id, stratum in cursor:
        if stratum != current:
            current, position = stratum, 0
            size = sizes[stratum]
            train = max(1, round(size * fractions[0]))
            dev = round(size * fractions[1])
            bounds = (train, train + dev)
        split = "train" if position < bounds[0] else "dev" if position < bounds[1] else "test"
        updates.append((split, sample_id))
        position += 1
        if len(updates) >= 10_000:
            writer.executemany("UPDATE rows SET split = ? WHERE id = ?", updates)
            updates.clear()
    writer.executemany("UPDATE rows SET split = ? WHERE id = ?", updates)
    db.commit()


def _write_split_file(spool: Spool, out_dir: Path) -> Path:
    """`split.json` (MM-IMDb's layout: train/dev/test id lists), streamed from the spool."""
    path = out_dir / SPLIT_FILE
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("{")
        for index, split in enumerate(SPLITS):
            handle.write(f'{"," if index else ""}\n  "{split}": [')
            for position, (sample_id,) in enumerate(
                spool.db.execute("SELECT id FROM rows WHERE split = ? ORDER BY key", (split,))
            ):
                handle.write(("," if position else "") + json.dumps(sample_id))
            handle.write("]")
        handle.write("\n}\n")
    return path


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class TableShardTask:
    """One shard of a table: the rows of `split` whose seeded key lies in [low, high)."""

    split: str
    name: str
    size: int
    spool: str
    low: str
    high: str | None
    table_dir: str
    table: str
    labels: LabelSet
    poster_short_side: int
    jpeg_quality: int
    require_image: bool
    has_image_column: bool
    strict: bool
    out_dir: str


@dataclass
class TablePlan:
    """What the shard writer needs of a table: per-split row counts and key bounds, the label
    set, and what was skipped, dropped or spelled otherwise on the way."""

    splits: dict[str, list[tuple[str, int]]]  # split -> [(first key of a shard's range, rows)]
    label_set: LabelSet
    skipped: list[SkippedMovie] = field(default_factory=list)
    dropped_labels: dict[str, int] = field(default_factory=dict)
    generated_split: bool = False


def _read_into_spool(cfg: Any, path: Path, spool: Spool) -> tuple[list[SkippedMovie], Counter[str]]:
    parser = RowParser(cfg, path)
    skipped: list[SkippedMovie] = []
    label_counts: Counter[str] = Counter()
    rows = iter_table(path, parser.wanted())
    for line, row, problem in progress_bar(rows, desc="reading table", unit="row"):
        try:
            if problem is not None:
                reason = NOT_AN_OBJECT if problem.startswith("expected a JSON object") else MALFORMED_LINE
                raise _skip(path, line, ROW_ID, "?", reason, problem)
            assert row is not None
            parsed = parser.parse(line, row)
            earlier = spool.add(parsed, row_key(cfg.seed, parsed.id))
            if earlier is not None:
                raise _skip(
                    path,
                    line,
                    parsed.id,
                    parsed.split or "?",
                    DUPLICATE_ID,
                    f"id {parsed.id!r} is also on line {earlier} (the first one is kept)",
                )
        except SampleSkipped as skip:
            if cfg.data.strict:
                raise DataError(f"{skip} (strict mode: a row that cannot become a sample is an error)") from None
            skipped.append(skip.record)
            continue
        label_counts.update(parsed.labels)
    spool.db.commit()
    return skipped, label_counts


def _label_set(cfg: Any, spool: Spool) -> tuple[LabelSet, dict[str, int]]:
    """The label set (config order, or train frequency) and the labels dropped as too rare."""
    train_counts: Counter[str] = Counter()
    for (labels,) in spool.db.execute("SELECT labels FROM rows WHERE split = 'train'"):
        train_counts.update(json.loads(labels))
    if cfg.data.columns.one_hot_labels:  # a 0/1 column is a label even where it is never 1
        for column in cfg.data.columns.label_columns:
            train_counts.setdefault(column, 0)
    if cfg.data.labels is not None:
        return LabelSet(tuple(cfg.data.labels), cfg.data.task), {}
    kept = [name for name in frequency_order(train_counts) if train_counts[name] >= cfg.data.min_label_count]
    dropped = {name: train_counts[name] for name in sorted(train_counts) if name not in kept}
    if not kept:
        raise DataError(
            f"{cfg.data.table}: no label has {cfg.data.min_label_count} or more train rows "
            f"(data.min_label_count); train holds {sum(train_counts.values())} labels in all"
        )
    try:
        return LabelSet(tuple(kept), cfg.data.task), dropped
    except DataError as exc:
        raise DataError(f"{cfg.data.table}: {exc}") from None


def plan_table(cfg: Any, out_dir: Path, spool_path: Path) -> TablePlan:
    """Passes 1-3 (rows into the spool, the split, the label set) and the shards' key ranges."""
    path = Path(cfg.data.table)
    spool = Spool(spool_path)
    try:
        skipped, label_counts = _read_into_spool(cfg, path, spool)
        generated = not cfg.data.columns.split
        if generated:
            _assign_splits(spool, cfg.data.split_fractions, label_counts)
        spool.index()
        _write_split_file(spool, out_dir)
        label_set, dropped = _label_set(cfg, spool)
        splits: dict[str, list[tuple[str, int]]] = {}
        for split in SPLITS:
            total = spool.db.execute("SELECT COUNT(*) FROM rows WHERE split = ?", (split,)).fetchone()[0]
            count = num_shards(total, cfg.shard.samples_per_shard, cfg.shard.min_shards)
            base, extra = divmod(total, count)
            sizes = [base + (1 if i < extra else 0) for i in range(count)]
            # Each shard's first key, read off the ordered keys at its first row's position
            # (a shard of 0 rows, when a split has fewer rows than min_shards, starts past them all).
            firsts = {sum(sizes[:i]): i for i in range(count) if sizes[i]}
            starts = [EMPTY_RANGE] * count
            ordered = spool.db.execute("SELECT key FROM rows WHERE split = ? ORDER BY key", (split,))
            for position, (key,) in enumerate(ordered):
                if position in firsts:
                    starts[firsts[position]] = key
            splits[split] = list(zip(starts, sizes, strict=True))
    finally:
        spool.close()
    return TablePlan(
        splits=splits, label_set=label_set, skipped=skipped, dropped_labels=dropped, generated_split=generated
    )


# --------------------------------------------------------------------------- one shard


def _image_path(table_dir: Path, value: str) -> Path:
    """The image of a row, confined to the table's folder (links resolved), or ValueError."""
    relative = Path(value)
    if relative.is_absolute() or value.startswith("~"):
        raise ValueError(f"image path {value!r} is absolute; expected a path relative to the table's folder")
    candidate = table_dir / relative
    resolved = candidate.resolve()
    if not resolved.is_relative_to(table_dir.resolve()):
        raise ValueError(f"image path {value!r} leads to {resolved}, outside the table's folder {table_dir}")
    return candidate


def load_table_image(task: TableShardTask, sample_id: str, line: int, value: str) -> Any:
    """The decoded RGB image of a row, or SampleSkipped (outside the folder, missing, not a regular
    file, not an image)."""
    table = Path(task.table)
    try:
        path = _image_path(Path(task.table_dir), value)
    except ValueError as exc:
        raise _skip(table, line, sample_id, task.split, IMAGE_OUTSIDE, str(exc)) from None
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _skip(table, line, sample_id, task.split, MISSING_IMAGE, f"image {value!r} does not exist") from None
    except OSError as exc:
        raise _skip(table, line, sample_id, task.split, BAD_IMAGE, f"image {value!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _skip(
            table,
            line,
            sample_id,
            task.split,
            BAD_IMAGE,
            f"image {value!r} is not a regular file (a FIFO, device or folder)",
        )
    try:
        return decode_image(path, task.poster_short_side)
    except (OSError, ValueError, SyntaxError) as exc:
        raise _skip(table, line, sample_id, task.split, BAD_IMAGE, f"image {value!r} does not decode: {exc}") from None


def _vector(task: TableShardTask, sample_id: str, line: int, names: list[str], unknown: Counter[str]) -> list[int]:
    """The row's 0/1 vector over the label set; labels outside it are counted, and a row left
    with none of its labels (or a multiclass row whose class is outside) is skipped."""
    index = task.labels.index()
    outside = [name for name in names if name not in index]
    unknown.update(outside)
    kept = [name for name in names if name in index]
    if names and not kept:
        reason_detail = f"its label(s) {outside[:5]} are not in the label set ({task.labels.describe()})"
        raise _skip(Path(task.table), line, sample_id, task.split, NO_KNOWN_LABEL, reason_detail)
    return task.labels.multi_hot(kept)


def table_samples(task: TableShardTask, result: ShardResult) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """The shard members of the task's rows, in seeded order; skips go into `result`."""

    spool = Spool(Path(task.spool), readonly=True)
    query = "SELECT id, line, text, image, labels FROM rows WHERE split = ? AND key >= ?"
    params: tuple[Any, ...] = (task.split, task.low)
    if task.high is not None:
        query += " AND key < ?"
        params += (task.high,)
    unknown: Counter[str] = Counter()
    try:
        for sample_id, line, text, image, labels in spool.db.execute(query + " ORDER BY key", params):
            try:
                vector = _vector(task, sample_id, line, json.loads(labels), unknown)
                jpeg = None
                if image is not None:
                    jpeg = resize_and_encode(
                        load_table_image(task, sample_id, line, image), task.poster_short_side, task.jpeg_quality
                    )
                elif task.has_image_column and task.require_image:
                    raise _skip(Path(task.table), line, sample_id, task.split, MISSING_IMAGE, "no image path")
            except SampleSkipped as skip:
                keep_text_only = not task.require_image and skip.record.reason in (MISSING_IMAGE, BAD_IMAGE)
                if not keep_text_only:
                    if task.strict:
                        raise DataError(
                            f"{skip} (strict mode: a row that cannot become a sample is an error)"
                        ) from None
                    result.skipped.append(skip.record)
                    continue
                vector = _vector(task, sample_id, line, json.loads(labels), Counter())
                jpeg = None
            if jpeg is None and task.has_image_column:
                result.posterless += 1
            for i, flag in enumerate(vector):
                result.label_counts[i] += flag
            metadata = {"id": sample_id, "labels": vector, "label_names": task.labels.names_of(vector)}
            yield sample_id, shard_members(metadata, text, jpeg)
    finally:
        spool.close()
        result.unknown_labels.update(unknown)


@contextlib.contextmanager
def spool_file(out_dir: Path) -> Iterator[Path]:
    """The spool's path in the output folder, removed when the shards are written (or failed)."""
    path = out_dir / SPOOL_NAME
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the plan the writer runs


def write_table_shard(task: TableShardTask) -> ShardResult:
    """A table shard: its rows read back from the spool, images encoded, the tar written atomically."""
    result = ShardResult(split=task.split, label_counts=[0] * len(task.labels))
    path = Path(task.out_dir) / task.name
    with writing(path):
        written = write_sample_tar(path, table_samples(task, result))
    result.info = ShardInfo(
        name=written.name, num_samples=written.num_samples, sha256=written.sha256, bytes=written.bytes
    )
    return result


def table_plan(cfg: Any, out_dir: Path, spool: Path) -> ShardPlan:
    """The shards of the table `data.table`, its rows spooled in `spool`: its label set is its own."""
    plan = plan_table(cfg, out_dir, spool)
    table = Path(cfg.data.table)
    report = SkipReport()
    for record in plan.skipped:
        report.add(record)
    tasks: list[TableShardTask] = []
    for split, ranges in plan.splits.items():
        for index, (low, size) in enumerate(ranges):
            high = ranges[index + 1][0] if index + 1 < len(ranges) else None
            tasks.append(
                TableShardTask(
                    split=split,
                    name=shard_name(split, index),
                    size=size,
                    spool=str(spool),
                    low=low,
                    high=high,
                    table_dir=str(table.parent),
                    table=str(table),
                    labels=plan.label_set,
                    poster_short_side=cfg.shard.poster_short_side,
                    jpeg_quality=cfg.shard.jpeg_quality,
                    require_image=cfg.shard.require_poster,
                    has_image_column=bool(cfg.data.columns.image),
                    strict=cfg.data.strict,
                    out_dir=str(out_dir),
                )
            )
    settings = {
        **shard_settings(cfg),
        "source": "table",
        "table": table.name,
        "split": "generated" if plan.generated_split else "column",
        **({"split_fractions": list(cfg.data.split_fractions)} if plan.generated_split else {}),
        "min_label_count": cfg.data.min_label_count,
    }
    return ShardPlan(
        tasks=tasks,
        write=write_table_shard,
        labels=plan.label_set,
        report=report,
        root=table.parent,
        settings=settings,
        dropped_labels=plan.dropped_labels,
    )
