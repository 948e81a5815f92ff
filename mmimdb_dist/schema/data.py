"""`data:`, `shard:` and `loader:` sections: the source data, the shards, the streaming loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".parquet")


@dataclass
class TableColumns:
    """`data.columns`: which columns of a table are the id, the text, the image, the labels and
    the split (`data.source: table`)."""

    # The sample id; null: the row number (1 for the first data row).
    id: str | None = None
    # One column, or several joined with a blank line (e.g. [title, body]).
    text: str | list[str] | None = None
    # A path to the image, relative to the table's folder; null: a text-only table.
    image: str | None = None
    # One column holding the labels (a JSON list, or a string split on `data.label_separator`),
    # or a list of 0/1 columns, one per label (their names are the labels).
    labels: str | list[str] | None = None
    # train / dev / test per row; null: a seeded split stratified by label (`data.split_fractions`).
    split: str | None = None

    @property
    def text_columns(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text or [])

    @property
    def label_columns(self) -> list[str]:
        return [self.labels] if isinstance(self.labels, str) else list(self.labels or [])

    @property
    def one_hot_labels(self) -> bool:
        """Labels given as 0/1 columns (a list), not as one column of names."""
        return isinstance(self.labels, list)


@dataclass
class DataConfig:
    """Where the source data lives and how a record becomes one sample.

    `source: mmimdb` reads MM-IMDb's raw layout (`raw_dir`); `source: table` reads a table of
    any dataset (`table`, `columns`): its label set comes from its train split."""

    source: Literal["mmimdb", "table"] = "mmimdb"
    # Folder holding split.json and dataset/ (the `mmimdb/` folder of the archive).
    raw_dir: str = "data/synth/mmimdb"
    # MM-IMDb gives several plot summaries per movie; which text becomes the sample.
    plot_policy: Literal["longest", "first", "all"] = "longest"
    # Turn a skipped record (no plot, no poster, no kept genre, ...) into an error.
    strict: bool = False
    # source: table. A .csv, .tsv, .jsonl or .parquet file; image paths resolve against its folder.
    table: str | None = None
    columns: TableColumns = field(default_factory=TableColumns)
    # Splits a label column's string into labels (a JSON list in the cell is read as one).
    label_separator: str = "|"
    # train/dev/test fractions of the generated split (no split column); written as split.json
    # beside the shards.
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # multilabel: any number of labels per row (binary: one label); multiclass: exactly one.
    task: Literal["multilabel", "multiclass"] = "multilabel"
    # Labels with fewer train rows are dropped (and reported in the manifest).
    min_label_count: int = 1
    # The label set in this order; null: the train split's labels by frequency, ties by name.
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        if self.source != "table":
            return
        if not self.table:
            raise ConfigError(
                "data.table: expected the path of a .csv, .tsv, .jsonl or .parquet table (data.source is table)"
            )
        if not self.table.lower().endswith(TABLE_SUFFIXES):
            raise ConfigError(f"data.table: {self.table!r}: expected a file ending in {', '.join(TABLE_SUFFIXES)}")
        columns = self.columns
        if not columns.text_columns:
            raise ConfigError("data.columns.text: expected the text column (or a list of them)")
        if not columns.label_columns:
            raise ConfigError("data.columns.labels: expected the label column, or a list of 0/1 columns")
        named = [
            c
            for c in (columns.id, *columns.text_columns, columns.image, *columns.label_columns, columns.split)
            if c is not None
        ]
        if any(not isinstance(c, str) or not c for c in named):
            raise ConfigError(f"data.columns: expected non-empty column names, got {named}")
        if self.task == "multiclass" and columns.one_hot_labels and len(columns.label_columns) < 2:
            raise ConfigError(
                "data.columns.labels: a multiclass task needs at least 2 classes "
                "(one 0/1 column is a binary task: data.task multilabel)"
            )
        if not self.label_separator:
            raise ConfigError("data.label_separator: expected a non-empty string")
        fractions = self.split_fractions
        if (
            len(fractions) != 3
            or any(f < 0 for f in fractions)
            or fractions[0] <= 0
            or abs(sum(fractions) - 1.0) > 1e-6
        ):
            raise ConfigError(
                f"data.split_fractions: expected 3 fractions (train, dev, test) >= 0 that sum "
                f"to 1, train above 0, got {fractions}"
            )
        if self.min_label_count < 1:
            raise ConfigError(f"data.min_label_count: expected a positive integer, got {self.min_label_count}")
        if self.labels is not None and (not self.labels or len(set(self.labels)) != len(self.labels)):
            raise ConfigError(f"data.labels: expected distinct label names, got {self.labels}")


MAX_POSTER_SHORT_SIDE = 4096


@dataclass
class ShardConfig:
    """How raw movies are packed into WebDataset tar shards."""

    out_dir: str = "shards/synth"
    # Posters are resized once at sharding time so training never decodes full-size JPEGs.
    poster_short_side: int = 256
    jpeg_quality: int = 90
    # Shard count per split is max(min_shards, ceil(samples / samples_per_shard)).
    # Train shards are split over ranks x loader workers; 8 keeps small sets streamable by
    # 2 ranks x 4 workers, and real MM-IMDb gets 61 train shards at 256 samples each.
    samples_per_shard: int = 256
    min_shards: int = 8
    # Processes used to encode posters; 0 means one per CPU core.
    workers: int = 0
    # false: a movie whose poster is missing or does not decode is kept as a plot-only sample
    # (for text models; fusion models read it as a missing poster) and counted in the
    # manifest's `repaired` as kept_without_poster, instead of being skipped.
    require_poster: bool = True

    def __post_init__(self) -> None:
        _positive(self, "poster_short_side", "samples_per_shard", "min_shards")
        # Larger than any poster an encoder reads (they take 224-518 px); the bound keeps a typo
        # (or a damaged preprocessing.json) from asking for gigabytes per poster.
        _in_range(self, "poster_short_side", 1, MAX_POSTER_SHORT_SIDE)
        _in_range(self, "jpeg_quality", 1, 100)
        if self.workers < 0:
            raise ConfigError(f"shard.workers: expected >= 0, got {self.workers}")


# Longer than any MM-IMDb plot (the longest are a few thousand word pieces); the bound stops
# a typo (512000) from padding every batch to a size that exhausts memory.
MAX_TEXT_LENGTH = 16_384


@dataclass
class LoaderConfig:
    """Streaming loaders over the shards: shuffling, augmentation, tokenisation, batching."""

    shards_dir: str = "shards/synth"
    # Train on cached encoder outputs (`mmimdb-dist cache-features --out DIR`) instead of the
    # shards: only the fusion head is built and trained, many times faster.
    features_dir: str | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 2
    # Samples held in the shuffle buffer of each worker.
    shuffle_buffer: int = 1000
    # Poster side in pixels; null: the image encoder's native size (224 for the ResNets, the
    # image processor's or the weights' size for hf, clip and torchvision backbones).
    image_size: int | None = None
    # Train-time augmentation (off for evaluation and prediction): random resized crops and
    # flips in the workers, and brightness/contrast/saturation jitter of this strength on the
    # device (0: none), drawn per sample from (seed, epoch, id) so a resumed epoch is identical.
    augment: bool = True
    color_jitter: float = 0.0
    # Word pieces kept per plot (BERT-style encoders stop at 512).
    max_text_length: int = 512
    # Group plots of similar length into a batch to cut padding (text cost ~ tokens).
    bucket_by_length: bool = True
    # Batches' worth of samples pooled and sorted by length before batching.
    bucket_pool_batches: int = 8
    # Resample train shards so every rank gets the same number of batches per epoch.
    # Batches per rank per epoch = floor(train samples / (world size * batch_size)).
    drop_last: bool = True

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "eval_batch_size", "shuffle_buffer", "max_text_length", "bucket_pool_batches")
        if self.max_text_length > MAX_TEXT_LENGTH:
            raise ConfigError(
                f"loader.max_text_length: {self.max_text_length} is more than {MAX_TEXT_LENGTH} "
                "tokens; plots are ~150 word pieces (7 % over 512), and every batch is padded "
                "to its longest plot"
            )
        if not 0.0 <= self.color_jitter < 1.0:
            raise ConfigError(f"loader.color_jitter: expected a strength in [0, 1), got {self.color_jitter}")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"loader.image_size: expected a positive number or null, got {self.image_size}")
        if self.num_workers < 0:
            raise ConfigError(f"loader.num_workers: expected >= 0, got {self.num_workers}")


def _positive(obj: Any, *names: str) -> None:
    section = _SECTION_NAMES.get(type(obj).__name__, type(obj).__name__)
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name}: expected a positive number, got {value}")


def _in_range(obj: Any, name: str, low: float, high: float) -> None:
    section = _SECTION_NAMES.get(type(obj).__name__, type(obj).__name__)
    value = getattr(obj, name)
    if not low <= value <= high:
        raise ConfigError(f"{section}.{name}: expected a value in [{low}, {high}], got {value}")


_SECTION_NAMES = {"DataConfig": "data", "ShardConfig": "shard", "LoaderConfig": "loader"}
