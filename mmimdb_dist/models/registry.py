"""One place that turns a `ModelConfig` into a model, so every run is built from its YAML."""

from __future__ import annotations

from torch import nn

from ..data.features import FeatureSpec
from ..errors import ConfigError
from ..schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from .cached import cached_encoders
from .dual import build_dual_encoders, build_dual_image_encoder, build_dual_text_encoder
from .encoder import FeatureEncoder
from .fusion import (
    AttentionFusion,
    EarlyFusion,
    GatedMultimodalUnit,
    LateFusion,
    MultimodalClassifier,
    UnimodalClassifier,
)
from .text import BiLSTMEncoder, HFEncoder
from .vision import ResNetEncoder, SimpleCNNEncoder
from .vision_hf import HFVisionEncoder
from .vision_torchvision import TorchvisionEncoder

MODELS: dict[str, type[MultimodalClassifier]] = {
    "text_only": UnimodalClassifier,
    "image_only": UnimodalClassifier,
    "early_fusion": EarlyFusion,
    "late_fusion": LateFusion,
    "attention_fusion": AttentionFusion,
    "gmu": GatedMultimodalUnit,
}


def build_image_encoder(cfg: ImageEncoderConfig) -> FeatureEncoder:
    """The encoder of `cfg.kind` (the clip kind is built in models/dual.py with its text tower)."""
    if cfg.kind in ("resnet18", "resnet50"):
        return ResNetEncoder(cfg)
    if cfg.kind == "cnn":
        return SimpleCNNEncoder(cfg)
    if cfg.kind == "torchvision":
        return TorchvisionEncoder(cfg)
    if cfg.kind == "hf":
        return HFVisionEncoder(cfg)
    if cfg.kind == "clip":
        return build_dual_image_encoder(cfg)
    raise ConfigError(f"model.image.kind: cannot build {cfg.kind!r}")


def build_text_encoder(
    cfg: TextEncoderConfig, *, vocab_size: int | None = None, pad_id: int | None = None
) -> FeatureEncoder:
    if cfg.kind == "bilstm":
        if vocab_size is None or pad_id is None:
            raise ConfigError(
                "model.text.kind: bilstm needs the vocabulary's size and pad id "
                "(build a Vocabulary from the train split first)"
            )
        return BiLSTMEncoder(cfg, vocab_size, pad_id)
    if cfg.kind == "hf":
        return HFEncoder(cfg, vocab_size, pad_id)
    if cfg.kind == "clip":
        return build_dual_text_encoder(cfg, pad_id)
    raise ConfigError(f"model.text.kind: cannot build {cfg.kind!r}; expected bilstm, hf or clip")


def build_model(
    cfg: ModelConfig,
    *,
    num_labels: int,
    vocab_size: int | None = None,
    pad_id: int | None = None,
    features: FeatureSpec | None = None,
) -> MultimodalClassifier:
    """Build `cfg.name` with its encoders and one output per label (`num_labels`: the size of
    the data's label set, from the shard manifest or a checkpoint's export).

    `vocab_size` and `pad_id` come from the tokenizer (`build_token_encoder`, then
    `token_encoder_size(encoder)` and `encoder.pad_id`): required for the BiLSTM; for a random
    Hugging Face encoder they size the embedding table, for a pretrained one they are checked.
    With `features` (a run on cached encoder outputs, `loader.features_dir`) the encoders are
    weightless readers of the cached rows and only the head is built and trained.
    """
    model_cls = MODELS.get(cfg.name)
    if model_cls is None:
        raise ConfigError(f"model.name: unknown model {cfg.name!r}; valid names: {', '.join(MODELS)}")
    text_encoder: FeatureEncoder | None = None
    image_encoder: FeatureEncoder | None = None
    if features is not None:
        if cfg.name == "attention_fusion" and not features.sequences:
            raise ConfigError(
                "loader.features_dir: attention_fusion needs token and patch sequences, but "
                "the features set holds pooled vectors only (made with --pooled-only)"
            )
        text, image = cached_encoders(features)
        for needed, encoder, kind in ((cfg.uses_text, text, "text"), (cfg.uses_image, image, "image")):
            if needed and encoder is None:
                raise ConfigError(
                    f"loader.features_dir: {cfg.name} reads {kind} features, but the features set "
                    f"holds none (cache it with a config whose model has a {kind} encoder)"
                )
        return model_cls(cfg, text if cfg.uses_text else None, image if cfg.uses_image else None, num_labels)
    if cfg.shares_dual_encoder:  # one CLIP-family checkpoint, loaded once, both towers
        text_encoder, image_encoder = build_dual_encoders(cfg, pad_id)
        return model_cls(cfg, text_encoder, image_encoder, num_labels)
    if cfg.uses_text:
        text_encoder = build_text_encoder(cfg.text, vocab_size=vocab_size, pad_id=pad_id)
    if cfg.uses_image:
        image_encoder = build_image_encoder(cfg.image)
    return model_cls(cfg, text_encoder, image_encoder, num_labels)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for logs and for checking a freezing policy."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
