"""One place that turns a `ModelConfig` into a model, so every run is built from its YAML."""

from __future__ import annotations

from torch import nn

from ..config import ConfigError
from .config import MODEL_NAMES, ModelConfig
from .fusion import (AttentionFusion, EarlyFusion, GatedMultimodalUnit, LateFusion,
                     MultimodalClassifier, UnimodalClassifier)
from .text import build_text_encoder
from .vision import build_image_encoder

MODELS: dict[str, type[MultimodalClassifier]] = {
    "text_only": UnimodalClassifier,
    "image_only": UnimodalClassifier,
    "early_fusion": EarlyFusion,
    "late_fusion": LateFusion,
    "attention_fusion": AttentionFusion,
    "gmu": GatedMultimodalUnit,
}


def build_model(cfg: ModelConfig, *, vocab_size: int | None = None,
                pad_id: int | None = None) -> MultimodalClassifier:
    """Build `cfg.name` with its encoders.

    `vocab_size` and `pad_id` come from the tokenizer: required for the BiLSTM (its
    `Vocabulary`); for a random Hugging Face encoder they size the embedding table.
    """
    model_cls = MODELS.get(cfg.name)
    if model_cls is None:
        raise ConfigError(f"model.name: unknown model {cfg.name!r}; valid names: {', '.join(MODELS)}")
    text_encoder = image_encoder = None
    if cfg.uses_text:
        text_encoder = build_text_encoder(cfg.text, vocab_size=vocab_size, pad_id=pad_id)
    if cfg.uses_image:
        image_encoder = build_image_encoder(cfg.image)
    return model_cls(cfg, text_encoder, image_encoder)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for logs and for checking a freezing policy."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
