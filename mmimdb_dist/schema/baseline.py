"""`baseline:` section: the TF-IDF features and the per-genre logistic regressions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass
class BaselineConfig:
    """`baseline:` section: TF-IDF features and the per-genre logistic regressions."""

    # Vocabulary size cap (most frequent n-grams kept); null keeps every n-gram seen min_df times.
    max_features: int | None = 200_000
    # Word n-grams from 1 to ngram_max.
    ngram_max: int = 2
    # An n-gram must occur in at least this many training plots.
    min_df: int = 2
    # Inverse L2 regularisation strength of each logistic regression.
    C: float = 1.0
    # "balanced" re-weights each genre's positives by its training odds; null = unweighted.
    class_weight: Literal["balanced"] | None = "balanced"
    max_iter: int = 1000

    def __post_init__(self) -> None:
        for key in ("ngram_max", "min_df", "max_iter"):
            if getattr(self, key) < 1:
                raise ConfigError(f"baseline.{key}: expected an integer >= 1, got {getattr(self, key)}")
        if self.max_features is not None and self.max_features < 1:
            raise ConfigError(f"baseline.max_features: expected an integer >= 1 or null, got {self.max_features}")
        if self.C <= 0:
            raise ConfigError(f"baseline.C: expected a positive number, got {self.C}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"baseline.class_weight: expected 'balanced' or null, got {self.class_weight!r}")
