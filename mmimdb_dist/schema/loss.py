"""`loss:` section: which loss, and its parameters (multi-label losses, or cross-entropy for a multiclass task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

LOSS_NAMES: tuple[str, ...] = ("bce", "weighted_bce", "focal", "asl", "cross_entropy")
# The losses of each task kind (the shard manifest says which kind a set is).
MULTILABEL_LOSSES: tuple[str, ...] = ("bce", "weighted_bce", "focal", "asl")
MULTICLASS_LOSSES: tuple[str, ...] = ("cross_entropy",)


@dataclass
class LossConfig:
    """`loss:` section. Keys not used by the chosen loss are ignored."""

    name: Literal["bce", "weighted_bce", "focal", "asl", "cross_entropy"] = "bce"
    # weighted_bce: cap on pos_weight = (N - n_c) / n_c, which reaches ~100 for the rarest genres
    # and can make their gradients dominate; null = no cap.
    pos_weight_max: float | None = None
    # focal: focusing exponent and positive-class weight (null = no alpha weighting).
    gamma: float = 2.0
    alpha: float | None = 0.25
    # asl: focusing exponents for positives / negatives and the probability margin by which
    # negatives are shifted down (negatives with p < clip contribute nothing).
    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    # cross_entropy (multiclass tasks): probability mass spread evenly over all classes.
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ConfigError(f"loss.name: unknown loss {self.name!r}; valid: {', '.join(LOSS_NAMES)}")
        if self.pos_weight_max is not None and self.pos_weight_max <= 0:
            raise ConfigError(f"loss.pos_weight_max: expected a positive number or null, got {self.pos_weight_max}")
        for key in ("gamma", "gamma_pos", "gamma_neg"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}: expected >= 0, got {getattr(self, key)}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"loss.alpha: expected a value in [0, 1] or null, got {self.alpha}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.clip < 1.0:
            raise ConfigError(f"loss.clip: expected a value in [0, 1), got {self.clip}")
