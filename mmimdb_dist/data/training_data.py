"""Where a run's samples come from: the shard set, or cached encoder features made from it.

The trainer, the loaders and `load_for_inference` ask here rather than opening
`loader.shards_dir` themselves, so `loader.features_dir` switches a whole run (data,
model, tokenizer) to cached features with one config key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .features import load_feature_set
from .manifest import Manifest, load_manifest
from .text import HFTokenEncoder
from .vocab import Vocabulary


def load_training_manifest(loader_cfg: Any) -> Manifest:
    """The manifest the loaders read: the features set's when `features_dir` is set."""
    if getattr(loader_cfg, "features_dir", None):
        return load_feature_set(loader_cfg.features_dir).manifest
    return load_manifest(loader_cfg.shards_dir)


def features_token_encoder(features_dir: str | Path) -> Any:
    """The tokenizer saved with a features set (the BiLSTM vocabulary or a Hugging Face one)."""
    directory = Path(features_dir)
    if (directory / "vocabulary.json").is_file():
        return Vocabulary.load(directory / "vocabulary.json")
    if (directory / "tokenizer").is_dir():
        return HFTokenEncoder.from_pretrained(directory / "tokenizer")
    raise DataError(f"{directory}: neither vocabulary.json nor tokenizer/ (not a complete features set)")


def train_samples(cfg: Any) -> int:
    """Train samples of the configured data (what fixes the number of steps per epoch)."""
    return load_training_manifest(cfg.loader).split("train").num_samples
