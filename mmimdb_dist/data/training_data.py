"""Where a run's samples come from: the shard set, or cached encoder features made from it.

The trainer, the loaders and `load_for_inference` ask here rather than opening
`loader.shards_dir` themselves, so `loader.features_dir` switches a whole run (data,
model, tokenizer) to cached features with one config key.
"""

from __future__ import annotations

from typing import Any

from .features import load_feature_set
from .manifest import Manifest, load_manifest


def load_training_manifest(loader_cfg: Any) -> Manifest:
    """The manifest the loaders read: the features set's when `features_dir` is set."""
    if getattr(loader_cfg, "features_dir", None):
        return load_feature_set(loader_cfg.features_dir).manifest
    return load_manifest(loader_cfg.shards_dir)


def train_samples(cfg: Any) -> int:
    """Train samples of the configured data (what fixes the number of steps per epoch)."""
    return load_training_manifest(cfg.loader).split("train").num_samples
