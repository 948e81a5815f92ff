"""The 1,608 real plots of ../shared/data as a text-only table: the table source gives the same
samples and the same baseline metrics as MM-IMDb's raw path, and learns real genres as the file is.

Two checks:
- The same movies, split and ids through both sources: a CSV (id, split, plots, 23 genre
  columns) through `data.source: table`, and the raw MM-IMDb folder of `write_real_plots_raw`
  through `data.source: mmimdb`. Per split, the samples (id, text, labels) are equal, and the
  TF-IDF baseline trained on either scores the same on dev and test.
- The shared CSV as a user would bring it (no id, no split column, 0/1 genre columns in its
  own column order): a generated stratified split, and the baseline beats predicting the most
  frequent genres on the held-out rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from real_plots import REAL_PLOTS_CSV, shared_file, trivial_topk_baseline, write_real_plots_raw

from mmimdb_dist.baseline import evaluate_baseline
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.plots import TextSplit, read_shard_texts
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.schema import load_config

pytestmark = pytest.mark.skipif(
    not REAL_PLOTS_CSV.is_file(),
    reason=f"{REAL_PLOTS_CSV} not found: the real plot "
    "sample lives in ../shared/data beside the checkout, or set MMIMDB_SHARED_DATA",
)
SHARDING = ["shard.workers=1", "shard.samples_per_shard=256", "shard.min_shards=2"]


def _write_table_like_raw(raw: Path, out: Path) -> Path:
    """The raw folder's movies as one CSV: id, split, plots and the 23 genre columns."""
    import json

    split = json.loads((raw / "split.json").read_text())
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "split", "plots", *GENRES])
        for name, ids in split.items():
            for movie_id in ids:
                record = json.loads((raw / "dataset" / f"{movie_id}.json").read_text())
                writer.writerow([movie_id, name, record["plot"][0], *(int(g in record["genres"]) for g in GENRES)])
    return out


def _sorted(split: TextSplit) -> TextSplit:
    order = np.argsort(split.ids, kind="stable")
    return TextSplit(
        ids=[split.ids[i] for i in order], texts=[split.texts[i] for i in order], labels=split.labels[order]
    )


def test_table_and_raw_sources_give_the_same_samples_and_metrics(tmp_path):
    raw = write_real_plots_raw(tmp_path / "raw")
    shard_dataset(
        load_config(
            None,
            [
                f"data.raw_dir={raw}",
                f"shard.out_dir={tmp_path / 'raw-shards'}",
                "shard.require_poster=false",
                *SHARDING,
            ],
        )
    )
    table = _write_table_like_raw(raw, tmp_path / "real.csv")
    genre_list = "[" + ", ".join(GENRES) + "]"
    shard_dataset(
        load_config(
            None,
            [
                "data.source=table",
                f"data.table={table}",
                "data.columns.id=id",
                "data.columns.text=plots",
                f"data.columns.labels={genre_list}",
                "data.columns.split=split",
                f"data.labels={genre_list}",
                f"shard.out_dir={tmp_path / 'table-shards'}",
                *SHARDING,
            ],
        )
    )
    from_raw = {k: _sorted(v) for k, v in read_shard_texts(tmp_path / "raw-shards", progress=False).items()}
    from_table = {k: _sorted(v) for k, v in read_shard_texts(tmp_path / "table-shards", progress=False).items()}
    assert load_manifest(tmp_path / "raw-shards").labels == load_manifest(tmp_path / "table-shards").labels
    for split in ("train", "dev", "test"):
        assert from_raw[split].ids == from_table[split].ids
        assert from_raw[split].texts == from_table[split].texts
        assert np.array_equal(from_raw[split].labels, from_table[split].labels)
    assert [len(from_table[s]) for s in ("train", "dev", "test")] == [1029, 257, 322]

    labels = load_manifest(tmp_path / "table-shards").labels
    cfg = load_config(None, []).baseline
    raw_report, table_report = (
        evaluate_baseline(from_raw, cfg, 0, labels),
        evaluate_baseline(from_table, cfg, 0, labels),
    )
    for split in ("dev", "test"):
        for protocol in ("threshold_0.5", "tuned_on_dev"):
            for key in ("f1_micro", "f1_macro", "mean_average_precision"):
                assert raw_report[split][protocol][key] == pytest.approx(table_report[split][protocol][key], abs=1e-9)


def test_the_shared_csv_as_it_is_learns_real_genres(tmp_path):
    path = shared_file(REAL_PLOTS_CSV)
    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    genre_columns = [name for name in header if name != "plots"]
    shard_dataset(
        load_config(
            None,
            [
                "data.source=table",
                f"data.table={path}",
                "data.columns.text=plots",
                "data.columns.labels=[" + ", ".join(genre_columns) + "]",
                f"shard.out_dir={tmp_path / 'shards'}",
                *SHARDING,
            ],
        )
    )
    manifest = load_manifest(tmp_path / "shards")
    assert sorted(manifest.labels.names) == sorted(GENRES)  # the file's own columns, in train frequency order
    assert manifest.labels.names[0] == "Drama"
    assert sum(manifest.num_samples.values()) == 1608
    assert not manifest.skipped_counts
    splits = read_shard_texts(tmp_path / "shards", progress=False)
    assert len(splits["test"]) == pytest.approx(0.1 * 1608, abs=25)
    report = evaluate_baseline(splits, load_config(None, []).baseline, 0, manifest.labels)
    trivial = trivial_topk_baseline(splits["train"].labels, splits["test"].labels)
    tuned = report["test"]["tuned_on_dev"]
    print(
        f"\nshared CSV as a table: TF-IDF test micro/macro-F1 (tuned) {tuned['f1_micro']:.4f} / "
        f"{tuned['f1_macro']:.4f}; top-k genres {trivial['micro_f1']:.4f} / {trivial['macro_f1']:.4f}"
    )
    assert report["test"]["tuned_on_dev"]["f1_micro"] > trivial["micro_f1"]
    assert report["test"]["tuned_on_dev"]["f1_macro"] > trivial["macro_f1"]
