"""The table source: any dataset as one table of text, image paths and labels, sharded like MM-IMDb.

Real files throughout: tables written here (csv, tsv, jsonl, parquet when pyarrow is there),
images rendered by the synthetic generator, the real shard writer and its worker processes.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmimdb_dist.data.manifest import parse_manifest
from mmimdb_dist.data.plots import read_shard_texts
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.synth_table import LABEL_CUES, generate_table
from mmimdb_dist.data.verify import verify_shards
from mmimdb_dist.errors import ConfigError, DataError
from mmimdb_dist.labels import LabelSet
from mmimdb_dist.schema import load_config


def table_config(table: Path, out: Path, *overrides: str, labels: str = "labels", image: str | None = "image"):
    sets = [
        "data.source=table",
        f"data.table={table}",
        "data.columns.id=id",
        "data.columns.text=text",
        f"data.columns.labels={labels}",
        f"shard.out_dir={out}",
        "shard.workers=1",
        "shard.samples_per_shard=40",
        "shard.min_shards=2",
        "shard.poster_short_side=64",
    ]
    if image:
        sets.append(f"data.columns.image={image}")
    return load_config(None, [*sets, *overrides])


def shard_ids(shards: Path) -> dict[str, list[str]]:
    texts = read_shard_texts(shards, progress=False)
    return {split: sorted(data.ids) for split, data in texts.items()}


@pytest.fixture(scope="module")
def synthetic_table(tmp_path_factory) -> Path:
    return generate_table(tmp_path_factory.mktemp("table"), rows=150, seed=1, progress=False)


# --------------------------------------------------------------------------- the label set is data


def test_a_table_shards_with_its_own_label_set_and_a_written_split(synthetic_table, tmp_path):
    manifest = shard_dataset(table_config(synthetic_table, tmp_path / "a"))
    names = manifest.labels.names
    assert set(names) == set(LABEL_CUES)
    assert manifest.labels.task == "multilabel"
    train = manifest.split("train")
    # frequency order over the train split, ties by name
    counts = dict(zip(names, train.label_counts, strict=True))
    assert list(names) == sorted(names, key=lambda n: (-counts[n], n))
    assert "Jardín botánico" in names
    assert "Tōkyō skyline" in names
    sizes = {split: info.num_samples for split, info in manifest.splits.items()}
    assert sum(sizes.values()) == 150
    assert sizes["train"] > 100
    assert sizes["dev"] > 8
    assert sizes["test"] > 8
    split = json.loads((tmp_path / "a" / "split.json").read_text(encoding="utf-8"))
    assert {k: sorted(v) for k, v in split.items()} == shard_ids(tmp_path / "a")
    assert verify_shards(tmp_path / "a") == []
    # the labels of each sample are the row's, in the label set's order
    with open(synthetic_table, encoding="utf-8", newline="") as handle:
        rows = {row["id"]: set(row["labels"].split("|")) for row in csv.DictReader(handle)}
    texts = read_shard_texts(tmp_path / "a", progress=False)["dev"]
    for sample_id, vector in zip(texts.ids, texts.labels, strict=True):
        assert {names[i] for i in vector.nonzero()[0]} == rows[sample_id]

    # Deterministic: the same table and settings give the same bytes, split file included.
    shard_dataset(table_config(synthetic_table, tmp_path / "b"))
    for path in [*sorted((tmp_path / "a").glob("*.tar")), tmp_path / "a" / "split.json"]:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_explicit_labels_and_min_label_count(synthetic_table, tmp_path):
    explicit = ["Old harbour", "Street food", "Deep sea"]
    manifest = shard_dataset(table_config(synthetic_table, tmp_path / "x", f"data.labels={json.dumps(explicit)}"))
    assert manifest.labels.names == tuple(explicit)
    # rows with none of the three labels are skipped, the others' labels counted as outside the set
    assert manifest.skipped_counts.get("no_known_label", 0) > 0
    assert manifest.unknown_labels["Night market"] > 0

    manifest = shard_dataset(table_config(synthetic_table, tmp_path / "m", "data.min_label_count=15"))
    assert manifest.dropped_labels
    assert all(count < 15 for count in manifest.dropped_labels.values())
    assert not set(manifest.dropped_labels) & set(manifest.labels.names)


def test_one_hot_columns_text_only_and_a_split_column(tmp_path):
    table = tmp_path / "items.tsv"
    rows = ["id\tbody\ttitle\tcat\tdog\tsplit"]
    for i in range(60):
        split = ("train", "val", "Test")[i % 3] if i >= 6 else "train"
        rows.append(f"r{i}\tthe animal number {i} {'meows' if i % 2 else 'barks'}\tT{i}\t{i % 2}\t{1 - i % 2}\t{split}")
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=[title, body]",
            "data.columns.labels=[cat, dog]",
            "data.columns.split=split",
            f"shard.out_dir={tmp_path / 's'}",
            "shard.workers=1",
            "shard.min_shards=1",
        ],
    )
    manifest = shard_dataset(cfg)
    assert set(manifest.labels.names) == {"cat", "dog"}
    assert manifest.split("dev").num_samples == 18
    assert manifest.split("test").num_samples == 18
    assert manifest.repaired == {}  # a text-only table: no sample counted as kept without its image
    assert manifest.settings["split"] == "column"
    assert not manifest.skipped_counts
    text = read_shard_texts(tmp_path / "s", progress=False)["train"]
    assert any(t.startswith("T0\n\nthe animal number 0") for t in text.texts)


# --------------------------------------------------------------------------- bad rows


def _bad_rows_table(tmp_path: Path) -> Path:
    """A CSV with good rows and one row of every bad kind, and the images they name."""
    from PIL import Image

    folder = tmp_path / "bad"
    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (40, 60), (200, 10, 10)).save(folder / "img" / "ok.jpg")
    (folder / "img" / "broken.jpg").write_bytes(b"not a jpeg at all")
    outside = tmp_path / "outside.jpg"
    Image.new("RGB", (40, 60), (0, 0, 0)).save(outside)
    os.symlink(outside, folder / "img" / "link.jpg")
    os.mkfifo(folder / "img" / "fifo.jpg")
    lines = ["id,text,image,labels,split"]
    for i in range(30):  # good rows: train needs labels a and b, dev and test some rows
        split = "train" if i < 20 else ("dev" if i < 25 else "test")
        lines.append(f"g{i},good text {i},img/ok.jpg,{'a|b' if i % 2 else 'a'},{split}")
    lines += [
        ",no id here,img/ok.jpg,a,train",  # missing_id
        "bad.id,dotted id,img/ok.jpg,a,train",  # bad_id
        "g1,duplicate of g1,img/ok.jpg,a,train",  # duplicate_id
        "e1,   ,img/ok.jpg,a,train",  # empty_text
        "i1,absolute image,/etc/passwd,a,train",  # image_outside_table_dir
        "i2,escaping image,../outside.jpg,a,train",  # image_outside_table_dir
        "i3,linked image,img/link.jpg,a,train",  # image_outside_table_dir
        "i4,missing image,img/nope.jpg,a,train",  # missing_image
        "i5,broken image,img/broken.jpg,a,train",  # bad_image
        "i6,fifo image,img/fifo.jpg,a,train",  # bad_image
        "l1,no labels,img/ok.jpg,,train",  # no_labels
        'l2,bad labels,img/ok.jpg,"[1.5, true]",train',  # bad_labels
        "l3,unknown label in dev,img/ok.jpg,zebra,dev",  # no_known_label (zebra counted)
        "l4,one known one not,img/ok.jpg,a|zebra,test",  # kept; zebra counted
        "q2,too,many,fields,here,train",  # malformed_line
        "g99,last good row,img/ok.jpg,a,test",
        'q1,"an unclosed quote,img/ok.jpg,a,train',  # malformed_line: runs to the end
        "g100,swallowed by the open quote,img/ok.jpg,a,test",
    ]
    table = folder / "items.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def test_every_bad_row_is_a_counted_skip_with_its_line(tmp_path):
    table = _bad_rows_table(tmp_path)
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.image=image",
            "data.columns.labels=labels",
            "data.columns.split=split",
            f"shard.out_dir={tmp_path / 's'}",
            "shard.workers=2",
            "shard.min_shards=1",
            "shard.poster_short_side=32",
        ],
    )
    manifest = shard_dataset(cfg)
    counts = manifest.skipped_counts
    print(counts)
    assert counts["missing_id"] == 1
    assert counts["bad_id"] == 1
    assert counts["duplicate_id"] == 1
    assert counts["empty_text"] == 1
    assert counts["image_outside_table_dir"] == 3
    assert counts["missing_image"] == 1
    assert counts["bad_image"] == 2
    assert counts["no_labels"] == 1
    assert counts["bad_labels"] == 1
    assert counts["no_known_label"] == 1
    assert counts["malformed_line"] == 2
    unclosed = [r for r in manifest.skipped if r.reason == "malformed_line" and "unread" in r.detail]
    assert unclosed
    assert unclosed[0].file == "items.csv:48"
    assert "lines 48-49 are unread" in unclosed[0].detail
    assert manifest.unknown_labels == {"zebra": 2}
    kept = sum(info.num_samples for info in manifest.splits.values())
    assert kept == 30 + 1 + 1  # the good rows, l4 (with its known label) and g99
    by_id = {record.id: record for record in manifest.skipped}
    assert by_id["g1"].reason == "duplicate_id"
    assert "line 3" in by_id["g1"].detail
    assert by_id["i2"].file == "items.csv:37"
    assert "outside the table's folder" in by_id["i2"].detail
    assert manifest.labels.names == ("a", "b")
    assert verify_shards(tmp_path / "s") == []
    assert not list((tmp_path / "s").glob(".*.tmp"))  # the row spool is gone

    # images may be missing: such rows become text-only samples, counted as repaired
    cfg.shard.require_poster = False
    cfg.shard.out_dir = str(tmp_path / "s2")
    relaxed = shard_dataset(cfg)
    assert relaxed.repaired["kept_without_poster"] == 3  # missing, broken, FIFO
    assert relaxed.skipped_counts["image_outside_table_dir"] == 3  # never read, image or not

    cfg.data.strict = True
    cfg.shard.out_dir = str(tmp_path / "s3")
    with pytest.raises(DataError, match=r"items\.csv:\d+: .*strict mode"):
        shard_dataset(cfg)


def test_jsonl_lines_that_are_not_objects_and_multiclass_rows(tmp_path):
    table = tmp_path / "items.jsonl"
    good = [{"id": f"r{i}", "text": f"text {i}", "label": ["x", "y", "z"][i % 3]} for i in range(40)]
    table.write_text(
        "\n".join(
            [json.dumps(r) for r in good]
            + [
                "[1, 2, 3]",
                "{not json",
                json.dumps({"id": "two", "text": "t", "label": ["x", "y"]}),
                json.dumps({"id": "zero", "text": "t", "label": []}),
                json.dumps({"id": "n", "text": "t", "label": 7}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.labels=label",
            "data.task=multiclass",
            f"shard.out_dir={tmp_path / 's'}",
            "shard.workers=1",
            "shard.min_shards=1",
        ],
    )
    manifest = shard_dataset(cfg)
    assert manifest.labels.task == "multiclass"
    assert set(manifest.labels.names) <= {"x", "y", "z", "7"}
    counts = manifest.skipped_counts
    assert counts["not_an_object"] == 1
    assert counts["malformed_line"] == 1
    assert counts["not_one_label"] == 1
    assert counts["no_labels"] == 1


def test_missing_column_and_unknown_split_are_one_line(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,body,tags\n1,hello,a\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.text=text",
            "data.columns.labels=tags",
            f"shard.out_dir={tmp_path / 's'}",
        ],
    )
    with pytest.raises(DataError) as info:
        shard_dataset(cfg)
    assert str(info.value) == (
        f"{table}: no column 'text' (named in data.columns); the table's columns are: 'id', 'body', 'tags'"
    )
    table.write_text("id,text,tags,split\n1,hello,a,holdout\n", encoding="utf-8")
    cfg.data.columns.split = "split"
    with pytest.raises(DataError, match=r"t\.csv:2: column 'split': expected train, dev or test .* got 'holdout'"):
        shard_dataset(cfg)
    with pytest.raises(ConfigError, match="data.table: expected the path"):
        load_config(None, ["data.source=table"])
    with pytest.raises(ConfigError, match="data.split_fractions"):
        load_config(
            None,
            [
                "data.source=table",
                "data.table=x.csv",
                "data.columns.text=t",
                "data.columns.labels=l",
                "data.split_fractions=[0.5, 0.2]",
            ],
        )


_cell = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(-3, 3),
    st.booleans(),
    st.lists(st.one_of(st.text(max_size=5), st.integers(0, 3)), max_size=3),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({"id": _cell, "text": _cell, "labels": _cell}), min_size=1, max_size=12))
def test_any_jsonl_rows_become_samples_or_counted_skips(tmp_path_factory, rows):
    """Whatever the cells hold, every row is a sample or a counted skip (or the table as a whole
    is refused in one line: no label left for a label set): never a traceback."""
    folder = tmp_path_factory.mktemp("prop")
    table = folder / "t.jsonl"
    anchor = [{"id": f"a{i}", "text": "anchor text", "labels": ["k"]} for i in range(3)]
    table.write_text("\n".join(json.dumps(r) for r in [*anchor, *rows]) + "\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.labels=labels",
            "data.split_fractions=[1, 0, 0]",
            f"shard.out_dir={folder / 's'}",
            "shard.workers=1",
            "shard.min_shards=1",
        ],
    )
    manifest = shard_dataset(cfg)
    kept = sum(info.num_samples for info in manifest.splits.values())
    assert kept + sum(manifest.skipped_counts.values()) == len(rows) + 3
    assert kept >= 3


# --------------------------------------------------------------------------- downstream


def test_old_manifests_and_label_set_mismatches(tmp_path):
    genres = ["Drama", "Comedy"]
    old = {
        "format": "mmimdb-dist-shards",
        "format_version": 1,
        "genres": genres,
        "settings": {},
        "splits": {s: {"num_samples": 0, "shards": [], "label_counts": [0, 0]} for s in ("train", "dev", "test")},
        "skipped": {"count_by_reason": {}, "movies": [], "unknown_genres": {"Cooking": 2}},
    }
    manifest = parse_manifest(old, tmp_path)
    assert manifest.labels == LabelSet(("Drama", "Comedy"))
    assert manifest.unknown_labels == {"Cooking": 2}
    with pytest.raises(DataError) as info:
        manifest.labels.check_same(LabelSet(("Drama", "Crime", "War")), "checkpoint c", "the shard set s")
    assert str(info.value) == (
        "checkpoint c has 2 multilabel labels, the shard set s has 3 multilabel labels "
        "(first difference at label 1: 'Comedy' vs 'Crime'): a model answers in the "
        "label set it was trained on"
    )
