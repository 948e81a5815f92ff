"""`data:`, `shard:` and `loader:` sections: the raw layout, the shards, the streaming loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..errors import ConfigError


@dataclass
class DataConfig:
    """Where the raw MM-IMDb lives and how a raw movie becomes one sample."""

    # Folder holding split.json and dataset/ (the `mmimdb/` folder of the archive).
    raw_dir: str = "data/synth/mmimdb"
    # MM-IMDb gives several plot summaries per movie; which text becomes the sample.
    plot_policy: Literal["longest", "first", "all"] = "longest"
    # Turn a skipped movie (no plot, no poster, no kept genre, ...) into an error.
    strict: bool = False


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
    features_dir: Optional[str] = None
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 2
    # Samples held in the shuffle buffer of each worker.
    shuffle_buffer: int = 1000
    # Poster side in pixels; null: the image encoder's native size (224 for the ResNets, the
    # image processor's or the weights' size for hf, clip and torchvision backbones).
    image_size: Optional[int] = None
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
        _positive(self, "batch_size", "eval_batch_size", "shuffle_buffer",
                  "max_text_length", "bucket_pool_batches")
        if self.max_text_length > MAX_TEXT_LENGTH:
            raise ConfigError(f"loader.max_text_length: {self.max_text_length} is more than {MAX_TEXT_LENGTH} "
                              "tokens; plots are ~150 word pieces (7 % over 512), and every batch is padded "
                              "to its longest plot")
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
