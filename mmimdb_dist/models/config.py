"""Model section of the experiment config: which encoders, which fusion, how big.

Plain dataclasses with no torch import, so loading and validating a YAML file stays cheap.
Every model is built from a `ModelConfig` by `mmimdb_dist.models.registry.build_model`.
Fields that only apply to one kind of encoder say so; the others ignore them, which keeps
one flat YAML section per encoder instead of a nest of per-kind sub-sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

# Names accepted by the registry; kept here (torch-free) so config validation can list them.
MODEL_NAMES: tuple[str, ...] = (
    "text_only", "image_only", "early_fusion", "late_fusion", "attention_fusion", "gmu",
)
TEXT_KINDS: tuple[str, ...] = ("bilstm", "hf", "none")
IMAGE_KINDS: tuple[str, ...] = ("resnet18", "resnet50", "cnn", "none")
LSTM_POOLINGS: tuple[str, ...] = ("max", "attention", "mean")
FREEZE_LEVELS: tuple[str, ...] = ("none", "stem", "layer1", "layer2", "layer3", "layer4")

# Which encoders each model needs.
_NEEDS_TEXT = {"text_only", "early_fusion", "late_fusion", "attention_fusion", "gmu"}
_NEEDS_IMAGE = {"image_only", "early_fusion", "late_fusion", "attention_fusion", "gmu"}


def _error(message: str) -> Exception:
    # Imported here: mmimdb_dist.config imports this module to declare its `model` field.
    from ..config import ConfigError

    return ConfigError(message)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _error(f"{key}: unknown {value!r}; expected one of {', '.join(choices)}")


def _check_positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise _error(f"{section}.{name}: expected a positive number, got {value}")


def _check_probability(key: str, value: float, *, below_one: bool = True) -> None:
    if not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):
        bound = "[0, 1)" if below_one else "[0, 1]"
        raise _error(f"{key}: expected a probability in {bound}, got {value}")


@dataclass
class TextEncoderConfig:
    """A word-level BiLSTM with additive attention, or any Hugging Face encoder."""

    kind: str = "bilstm"
    dropout: float = 0.1

    # --- bilstm: vocabulary built from the train split, then embedding -> BiLSTM -> attention.
    embed_dim: int = 300
    hidden: int = 256  # per direction; the encoder's output is 2 * hidden wide
    num_layers: int = 1
    attention_dim: int = 128
    # How the BiLSTM states become one vector: "max" over time (a cue word counts at full
    # strength whatever the plot length), additive "attention", or "mean". See models/text.py
    # for why max is the default.
    lstm_pooling: Literal["max", "attention", "mean"] = "max"
    # Std of the initial word embeddings (torch's default is 1.0, far larger than Adam's steps).
    embed_init_std: float = 0.1
    vocab_min_freq: int = 2
    vocab_max_size: int = 50_000

    # --- hf: hub name or local directory.
    name: str = "distilbert-base-uncased"
    # False builds a random model from the architecture config (tests, smoke runs).
    pretrained: bool = True
    pooling: Literal["cls", "mean"] = "cls"
    # Freeze the embeddings and the first k transformer layers (0: train everything).
    freeze_layers: int = 0
    # Architecture overrides for a random model, e.g. {model_type: distilbert, dim: 32, n_layers: 2};
    # with `model_type` set no file is read, so tests build tiny encoders offline.
    hf_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("model.text.kind", self.kind, TEXT_KINDS)
        _check_probability("model.text.dropout", self.dropout)
        _check_choice("model.text.lstm_pooling", self.lstm_pooling, LSTM_POOLINGS)
        if not self.embed_init_std > 0:
            raise _error(f"model.text.embed_init_std: expected a positive number, got {self.embed_init_std}")
        _check_positive("model.text", self, "embed_dim", "hidden", "num_layers", "attention_dim",
                        "vocab_min_freq", "vocab_max_size")
        if self.freeze_layers < 0:
            raise _error(f"model.text.freeze_layers: expected >= 0, got {self.freeze_layers}")
        if self.kind == "hf" and self.pretrained and self.hf_config:
            raise _error("model.text.hf_config: architecture overrides apply to random models only; "
                         "set model.text.pretrained: false or remove hf_config")


@dataclass
class ImageEncoderConfig:
    """A torchvision ResNet (ImageNet weights optional) or the classic 4-block CNN."""

    kind: str = "resnet18"
    # ImageNet weights through torchvision's weights enum (downloaded once into the torch cache).
    pretrained: bool = False
    # Local state_dict file for the ResNet (offline clusters); takes precedence over `pretrained`.
    weights_path: Optional[str] = None
    # Freeze the ResNet up to and including this stage; frozen BatchNorm stays in eval mode.
    freeze_until: str = "none"
    # Output channels of the 4 conv-bn-relu-pool blocks of the `cnn` kind.
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    # The feature map is pooled to grid x grid patch tokens (7 x 7 = 49 for attention fusion).
    patch_grid: int = 7

    def __post_init__(self) -> None:
        _check_choice("model.image.kind", self.kind, IMAGE_KINDS)
        _check_choice("model.image.freeze_until", self.freeze_until, FREEZE_LEVELS)
        _check_positive("model.image", self, "patch_grid")
        if len(self.cnn_channels) != 4 or any(c <= 0 for c in self.cnn_channels):
            raise _error(f"model.image.cnn_channels: expected 4 positive channel counts, "
                         f"got {self.cnn_channels}")
        if self.kind == "cnn" and (self.pretrained or self.weights_path or self.freeze_until != "none"):
            raise _error("model.image: the cnn kind is trained from scratch; pretrained, weights_path "
                         "and freeze_until apply to resnet18/resnet50 only")


@dataclass
class FusionConfig:
    """The head shared by all models, and the knobs of each fusion."""

    hidden: int = 512
    dropout: float = 0.2
    # attention_fusion: heads of both cross-attention directions (must divide `hidden`).
    heads: int = 4
    # late_fusion: weight of the per-branch loss terms added by the trainer
    # (loss = fused + branch_loss_weight * (text branch + image branch)).
    branch_loss_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_positive("model.fusion", self, "hidden", "heads")
        _check_probability("model.fusion.dropout", self.dropout)
        if self.hidden % self.heads:
            raise _error(f"model.fusion.heads: {self.heads} does not divide model.fusion.hidden "
                         f"({self.hidden})")
        if self.branch_loss_weight < 0:
            raise _error(f"model.fusion.branch_loss_weight: expected >= 0, got {self.branch_loss_weight}")


@dataclass
class ModelConfig:
    """One model: a name from MODEL_NAMES, its encoders and its fusion head."""

    name: str = "early_fusion"
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # Train-time probability of dropping one modality of a sample (never both), replaced by a
    # learned "missing" embedding so the model also works when a plot or a poster is absent.
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("model.name", self.name, MODEL_NAMES)
        _check_probability("model.modality_dropout", self.modality_dropout, below_one=False)
        if self.name in _NEEDS_TEXT and self.text.kind == "none":
            raise _error(f"model.text.kind: {self.name} needs a text encoder, got 'none'")
        if self.name in _NEEDS_IMAGE and self.image.kind == "none":
            raise _error(f"model.image.kind: {self.name} needs an image encoder, got 'none'")

    @property
    def uses_text(self) -> bool:
        return self.name in _NEEDS_TEXT

    @property
    def uses_image(self) -> bool:
        return self.name in _NEEDS_IMAGE
