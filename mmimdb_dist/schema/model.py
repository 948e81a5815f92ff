"""Model section of the experiment config: which encoders, which fusion, how big.

Plain dataclasses with no torch import, so loading and validating a YAML file stays cheap.
Every model is built from a `ModelConfig` by `mmimdb_dist.models.registry.build_model`.
Fields that only apply to one kind of encoder say so; the others ignore them, which keeps
one flat YAML section per encoder instead of a nest of per-kind sub-sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

# Names accepted by the registry; kept here (torch-free) so config validation can list them.
MODEL_NAMES: tuple[str, ...] = (
    "text_only",
    "image_only",
    "early_fusion",
    "late_fusion",
    "attention_fusion",
    "gmu",
)
TEXT_KINDS: tuple[str, ...] = ("bilstm", "hf", "clip", "none")
IMAGE_KINDS: tuple[str, ...] = ("resnet18", "resnet50", "cnn", "hf", "torchvision", "clip", "none")
# Kinds loaded from a Hugging Face checkpoint (hub name, local folder or package: name).
HF_KINDS: tuple[str, ...] = ("hf", "clip")
IMAGE_POOLINGS: tuple[str, ...] = ("auto", "mean")
LSTM_POOLINGS: tuple[str, ...] = ("max", "attention", "mean")
FREEZE_LEVELS: tuple[str, ...] = ("none", "stem", "layer1", "layer2", "layer3", "layer4")

# Which encoders each model needs.
_NEEDS_TEXT = {"text_only", "early_fusion", "late_fusion", "attention_fusion", "gmu"}
_NEEDS_IMAGE = {"image_only", "early_fusion", "late_fusion", "attention_fusion", "gmu"}


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown {value!r}; expected one of {', '.join(choices)}")


def _check_positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name}: expected a positive number, got {value}")


def _check_probability(key: str, value: float, *, below_one: bool = True) -> None:
    if not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):
        bound = "[0, 1)" if below_one else "[0, 1]"
        raise ConfigError(f"{key}: expected a probability in {bound}, got {value}")


@dataclass
class TextEncoderConfig:
    """A word-level BiLSTM, any Hugging Face encoder (`hf`), or the text tower of a CLIP-family
    dual encoder (`clip`: CLIP, SigLIP, SigLIP 2, ... by hub name or folder)."""

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

    # --- hf, clip: hub name, local directory or package:<module>/<folder>.
    name: str = "distilbert-base-uncased"
    # False builds a random model from the architecture config (tests, smoke runs).
    pretrained: bool = True
    pooling: Literal["cls", "mean"] = "cls"
    # Freeze the embeddings and the first k transformer layers (0: train everything).
    freeze_layers: int = 0
    # clip: the pooled vector is the tower's embedding in the joint image-text space (through
    # its projection, as the checkpoint was trained); false: the tower's pooled hidden state.
    projected: bool = True
    # Architecture overrides for a random model, e.g. {model_type: distilbert, dim: 32, n_layers: 2};
    # with `model_type` set no file is read, so tests build tiny encoders offline.
    hf_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("model.text.kind", self.kind, TEXT_KINDS)
        _check_probability("model.text.dropout", self.dropout)
        _check_choice("model.text.lstm_pooling", self.lstm_pooling, LSTM_POOLINGS)
        if not self.embed_init_std > 0:
            raise ConfigError(f"model.text.embed_init_std: expected a positive number, got {self.embed_init_std}")
        _check_positive(
            "model.text", self, "embed_dim", "hidden", "num_layers", "attention_dim", "vocab_min_freq", "vocab_max_size"
        )
        if self.freeze_layers < 0:
            raise ConfigError(f"model.text.freeze_layers: expected >= 0, got {self.freeze_layers}")
        if self.kind in HF_KINDS and self.pretrained and self.hf_config:
            raise ConfigError(
                "model.text.hf_config: architecture overrides apply to random models only; "
                "set model.text.pretrained: false or remove hf_config"
            )

    @property
    def brings_tokenizer(self) -> bool:
        """True when the encoder comes with its own tokenizer (else a train-split vocabulary)."""
        return self.kind in HF_KINDS


@dataclass
class ImageEncoderConfig:
    """The poster encoder. Kinds (README, "Encoders"):

    - `resnet18`, `resnet50`: torchvision ResNets (ImageNet weights optional, `freeze_until`);
    - `cnn`: the classic 4-block CNN trained from scratch;
    - `torchvision`: any classification model of `torchvision.models.get_model(name)`
      (convnext_tiny, efficientnet_v2_s, vit_b_16, swin_t, regnet_y_16gf, ...), with its
      weights enum member `weights` when `pretrained`;
    - `hf`: any Hugging Face vision backbone through the Auto classes (ViT, DINOv2, ConvNeXt,
      Swin, BEiT, ...; hub name, folder or package: name);
    - `clip`: the vision tower of a CLIP-family dual encoder (CLIP, SigLIP, SigLIP 2, ...);
      with `model.text.kind: clip` and the same `name`, one checkpoint serves both sides.
    Every kind yields a pooled vector and `patch_grid`**2 patch tokens, and normalises pixels
    with its own mean and std (models/preprocess.py).
    """

    kind: str = "resnet18"
    # hf, clip: hub name, local folder or package: name; torchvision: the model name.
    name: str = ""
    # Pretrained weights: ImageNet for the ResNets, `weights` for torchvision, the checkpoint
    # of `name` for hf/clip (false: random, from the architecture; tests and smoke runs).
    # Left null: true for the hf, clip and torchvision kinds, false for the others.
    pretrained: bool | None = None
    # torchvision: member of the model's weights enum ("DEFAULT", "IMAGENET1K_V1", ...).
    weights: str = "DEFAULT"
    # Local state_dict file for the ResNet (offline clusters); takes precedence over `pretrained`.
    weights_path: str | None = None
    # resnet18/resnet50: freeze up to and including this stage; frozen BatchNorm stays in eval mode.
    freeze_until: str = "none"
    # Any kind but cnn: freeze the whole backbone (a linear-probe style run; it stays in eval mode).
    freeze: bool = False
    # hf, clip: freeze the patch embeddings and the first k transformer blocks.
    freeze_layers: int = 0
    # hf, clip, torchvision: "auto" uses the backbone's own pooled output (CLS after its norm,
    # SigLIP's attention pooling, ConvNeXt's normed average, CLIP's projected embedding);
    # "mean" averages the patch tokens.
    pooling: Literal["auto", "mean"] = "auto"
    # clip: pool into the joint image-text space through the checkpoint's projection.
    projected: bool = True
    # hf, clip with pretrained false: architecture overrides for a random model.
    hf_config: dict[str, Any] = field(default_factory=dict)
    # Per-channel pixel statistics; null: the backbone's own (its image processor or weights'
    # transforms, ImageNet's for the ResNets and the CNN), written here when a run starts so
    # saved configs and checkpoints rebuild the same preprocessing offline.
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None
    # Output channels of the 4 conv-bn-relu-pool blocks of the `cnn` kind.
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    # The feature map or patch tokens are pooled to grid x grid tokens (7 x 7 = 49) for
    # attention fusion and for cached sequences.
    patch_grid: int = 7

    def __post_init__(self) -> None:
        _check_choice("model.image.kind", self.kind, IMAGE_KINDS)
        if self.pretrained is None:
            self.pretrained = self.kind in ("hf", "torchvision", "clip")
        _check_choice("model.image.freeze_until", self.freeze_until, FREEZE_LEVELS)
        _check_choice("model.image.pooling", self.pooling, IMAGE_POOLINGS)
        _check_positive("model.image", self, "patch_grid")
        if len(self.cnn_channels) != 4 or any(c <= 0 for c in self.cnn_channels):
            raise ConfigError(f"model.image.cnn_channels: expected 4 positive channel counts, got {self.cnn_channels}")
        if self.kind == "cnn" and (self.pretrained or self.weights_path or self.freeze_until != "none" or self.freeze):
            raise ConfigError(
                "model.image: the cnn kind is trained from scratch; pretrained, weights_path, "
                "freeze and freeze_until do not apply to it"
            )
        if self.kind in ("hf", "torchvision", "clip") and not self.name:
            raise ConfigError(
                f"model.image.name: the {self.kind} kind needs a model name ({_NAME_EXAMPLES[self.kind]})"
            )
        if self.freeze_until != "none" and self.kind not in ("resnet18", "resnet50"):
            raise ConfigError(
                "model.image.freeze_until: applies to resnet18/resnet50; use freeze or freeze_layers for other kinds"
            )
        if self.freeze_layers < 0:
            raise ConfigError(f"model.image.freeze_layers: expected >= 0, got {self.freeze_layers}")
        if self.freeze_layers and self.kind not in HF_KINDS:
            raise ConfigError(
                "model.image.freeze_layers: applies to the hf and clip kinds (transformer "
                "blocks); use freeze (whole backbone) or freeze_until (ResNets)"
            )
        if self.weights_path and self.kind not in ("resnet18", "resnet50"):
            raise ConfigError(
                "model.image.weights_path: applies to resnet18/resnet50; hf and clip take a local folder as name"
            )
        for key, values in (("pixel_mean", self.pixel_mean), ("pixel_std", self.pixel_std)):
            if values is not None and (
                len(values) != 3 or not all(0 < v < 10 if key == "pixel_std" else -10 < v < 10 for v in values)
            ):
                raise ConfigError(
                    f"model.image.{key}: expected 3 per-channel values"
                    f"{' > 0' if key == 'pixel_std' else ''}, got {values}"
                )
        if self.hf_config and (self.kind not in HF_KINDS or self.pretrained):
            raise ConfigError(
                "model.image.hf_config: architecture overrides apply to random hf/clip models only (pretrained: false)"
            )


_NAME_EXAMPLES = {
    "hf": "e.g. facebook/dinov2-base, google/vit-base-patch16-224-in21k or a local folder",
    "torchvision": "e.g. convnext_tiny, efficientnet_v2_s, vit_b_16",
    "clip": "e.g. openai/clip-vit-large-patch14, google/siglip-so400m-patch14-384",
}


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
            raise ConfigError(f"model.fusion.heads: {self.heads} does not divide model.fusion.hidden ({self.hidden})")
        if self.branch_loss_weight < 0:
            raise ConfigError(f"model.fusion.branch_loss_weight: expected >= 0, got {self.branch_loss_weight}")


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
            raise ConfigError(f"model.text.kind: {self.name} needs a text encoder, got 'none'")
        if self.name in _NEEDS_IMAGE and self.image.kind == "none":
            raise ConfigError(f"model.image.kind: {self.name} needs an image encoder, got 'none'")
        if self.text.kind == "clip" and not self.text.name:
            raise ConfigError(f"model.text.name: the clip kind needs a model name ({_NAME_EXAMPLES['clip']})")
        if self.shares_dual_encoder and self.text.pretrained != self.image.pretrained:
            raise ConfigError(
                "model.image.pretrained: the text and image towers come from one checkpoint "
                f"({self.text.name!r}); set model.text.pretrained and model.image.pretrained alike"
            )

    @property
    def shares_dual_encoder(self) -> bool:
        """Text and poster read by the two towers of one CLIP-family checkpoint, loaded once."""
        return (
            self.uses_text
            and self.uses_image
            and self.text.kind == "clip"
            and self.image.kind == "clip"
            and self.text.name == self.image.name
        )

    @property
    def uses_text(self) -> bool:
        return self.name in _NEEDS_TEXT

    @property
    def uses_image(self) -> bool:
        return self.name in _NEEDS_IMAGE
