"""CLIP-family dual encoders (CLIP, SigLIP, SigLIP 2, ...): one checkpoint, two towers.

`model.text.kind: clip` and `model.image.kind: clip` with the same `name` load the checkpoint
once (`build_dual_encoders`) and give its text tower to the text side and its vision tower
to the image side; the two share no parameters, so each trains (or freezes) like any other
encoder, with `encoder_lr` when pretrained. With `projected: true` (the default) each pooled
vector is the tower's embedding in the joint image-text space, through the checkpoint's own
projection (CLIP's text/visual projections; SigLIP's towers end in their pooling heads).

Long plots: the text towers hold 64 (SigLIP) to 77 (CLIP) positions, a plot has ~150 word
pieces (7 % over 512). The tokenizer cuts a plot into windows of the tower's length
(`data.text.WindowedTokenEncoder`); the encoder embeds each real window and averages them.
The window embeddings are also the text "tokens" that attention fusion and cached sequences
see (one per window, padded windows masked).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..data.tokens import text_window
from ..errors import ConfigError
from ..hub import load_hf_config, load_pretrained_model
from ..schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from .encoder import FeatureEncoder
from .preprocess import image_preprocessing
from .text import TextFeatures, masked_mean
from .vision import ImageEncoderBase, ImageFeatures
from .vision_hf import freeze_vision_layers, tokens_to_features


def load_dual_model(key: str, name: str, pretrained: bool, hf_config: dict[str, Any]) -> nn.Module:
    """The whole CLIP-family model of `name` (pretrained, or random from its architecture)."""
    from transformers import AutoConfig, AutoModel

    try:
        if pretrained:
            model = load_pretrained_model(key, name)
        else:
            overrides = dict(hf_config)
            config = (
                AutoConfig.for_model(**overrides)
                if "model_type" in overrides
                else load_hf_config(key, name, **overrides)
            )
            model = AutoModel.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{key}: cannot load {name!r} as a dual image-text model: expected a local "
            f"folder or a hub name ({' '.join(str(exc).split())[:300]})"
        ) from None
    if not all(isinstance(getattr(model, part, None), nn.Module) for part in ("text_model", "vision_model")):
        raise ConfigError(
            f"{key}: {name!r} ({type(model).__name__}) is not a dual image-text model "
            "with text_model and vision_model towers (CLIP, SigLIP, ...)"
        )
    return model


class DualTextEncoder(FeatureEncoder):
    """The text tower of a dual encoder over windowed plots (see the module docstring)."""

    # Hugging Face modules, whose configs and outputs are typed by the model class at run time.
    tower: Any
    projection: Any

    def __init__(self, cfg: TextEncoderConfig, model: Any, pad_id: int | None) -> None:
        super().__init__()
        self.tower = model.text_model
        self.dual_config = model.config  # what a checkpoint export saves to rebuild both towers
        projection = getattr(model, "text_projection", None)
        self.projection = projection if cfg.projected and isinstance(projection, nn.Module) else None
        self.window = text_window(model.config)
        self.pad_id = int(pad_id if pad_id is not None else model.config.text_config.pad_token_id or 0)
        self.dropout = nn.Dropout(cfg.dropout)
        hidden = int(model.config.text_config.hidden_size)
        self.out_dim = int(self.projection.out_features) if self.projection is not None else hidden
        self.frozen: list[nn.Module] = []
        if cfg.freeze_layers:
            self.frozen = freeze_vision_layers(self.tower, cfg.freeze_layers, "model.text.freeze_layers")

    def train(self, mode: bool = True) -> DualTextEncoder:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        size, length = input_ids.shape
        if length % self.window:
            raise ValueError(
                f"input_ids of length {length} are not whole windows of {self.window} "
                "(use the dual encoder's own token encoder)"
            )
        windows = input_ids.reshape(-1, self.window)
        # A window is real unless it is batch padding (which starts with the pad id); the first
        # window of every plot counts even when the plot is empty.
        real = (windows[:, 0] != self.pad_id).view(size, -1)
        real[:, 0] = True
        flat = real.flatten()
        # No attention mask, as in pretraining: CLIP reads its end token under a causal mask,
        # SigLIP the last of 64 padded positions.
        pooled = self.tower(input_ids=windows[flat]).pooler_output
        if self.projection is not None:
            pooled = self.projection(pooled)
        embedded = pooled.new_zeros(flat.shape[0], pooled.shape[-1])
        embedded[flat] = pooled
        tokens = self.dropout(embedded.view(size, -1, pooled.shape[-1]))
        return TextFeatures(tokens, real, masked_mean(tokens, real))


class DualImageEncoder(ImageEncoderBase):
    """The vision tower of a dual encoder: projected pooled embedding + patch tokens."""

    tower: Any  # as in DualTextEncoder
    projection: Any

    def __init__(self, cfg: ImageEncoderConfig, model: Any) -> None:
        super().__init__(image_preprocessing(cfg))
        self.tower = model.vision_model
        self.dual_config = model.config
        projection = getattr(model, "visual_projection", None)
        use_projection = cfg.projected and cfg.pooling == "auto" and isinstance(projection, nn.Module)
        self.projection = projection if use_projection else None
        hidden = int(model.config.vision_config.hidden_size)
        self.out_dim = int(self.projection.out_features) if self.projection is not None else hidden
        self.patch_grid = cfg.patch_grid
        self.use_pooler = cfg.pooling == "auto"
        self.native_size = int(model.config.vision_config.image_size)
        self.interpolate = "interpolate_pos_encoding" in inspect.signature(self.tower.forward).parameters
        if cfg.freeze:
            self.freeze([self.tower] + ([self.projection] if self.projection is not None else []))
        elif cfg.freeze_layers:
            self.freeze(freeze_vision_layers(self.tower, cfg.freeze_layers, "model.image.freeze_layers"))

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        kwargs = {}
        if self.interpolate and pixel_values.shape[-1] != self.native_size:
            kwargs["interpolate_pos_encoding"] = True
        out = self.tower(pixel_values=self.normalize(pixel_values), **kwargs)
        pooled = out.pooler_output if self.use_pooler else None
        tokens = out.last_hidden_state
        if self.projection is not None:
            # Patches go through the same final norm and projection as the pooled token, so
            # both live in the joint space with one width (as in MaskCLIP's dense features).
            norm = getattr(self.tower, "post_layernorm", None)
            tokens = self.projection(norm(tokens) if isinstance(norm, nn.Module) else tokens)
            pooled = self.projection(pooled)
        return tokens_to_features(tokens, pooled, self.patch_grid)


def build_dual_encoders(cfg: ModelConfig, pad_id: int | None) -> tuple[DualTextEncoder, DualImageEncoder]:
    """Both towers of one checkpoint, loaded once (`cfg.shares_dual_encoder`)."""
    model = load_dual_model(
        "model.image.name",
        cfg.image.name,
        cfg.image.pretrained or cfg.text.pretrained,
        cfg.image.hf_config or cfg.text.hf_config,
    )
    return DualTextEncoder(cfg.text, model, pad_id), DualImageEncoder(cfg.image, model)


def build_dual_text_encoder(cfg: TextEncoderConfig, pad_id: int | None) -> DualTextEncoder:
    return DualTextEncoder(cfg, load_dual_model("model.text.name", cfg.name, cfg.pretrained, cfg.hf_config), pad_id)


def build_dual_image_encoder(cfg: ImageEncoderConfig) -> DualImageEncoder:
    return DualImageEncoder(cfg, load_dual_model("model.image.name", cfg.name, bool(cfg.pretrained), cfg.hf_config))
