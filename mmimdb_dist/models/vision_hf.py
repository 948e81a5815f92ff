"""Any Hugging Face vision backbone (ViT, DINOv2, ConvNeXt, Swin, BEiT, ...) as a poster encoder.

Loaded through `AutoModel` by hub name, local folder or `package:` name, or built at random
from its architecture (`pretrained: false`, tests and smoke runs). The backbone's outputs come
in two layouts, and both become the same `ImageFeatures`:
- B x T x D tokens (ViT-style): the trailing square grid are the patches (CLS and DINOv2's
  register tokens are dropped), pooled to `patch_grid`**2 tokens;
- B x C x H x W maps (ConvNeXt, ResNet-style): the map pooled to the grid.
The pooled vector is the backbone's own `pooler_output` (`pooling: auto`: CLS after the last
norm, or the normed average, depending on the family) or the mean of the patches.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..hub import load_hf_config, load_pretrained_model
from ..schema import ImageEncoderConfig
from .preprocess import image_preprocessing
from .vision import ImageEncoderBase, ImageFeatures, feature_map_to_features, grid_from_tokens


def load_hf_vision_model(cfg: ImageEncoderConfig) -> nn.Module:
    """Pretrained weights of `cfg.name`, or a random model of its (or `hf_config`'s) architecture."""
    from transformers import AutoConfig, AutoModel

    key = "model.image.name"
    try:
        if cfg.pretrained:
            return load_pretrained_model(key, cfg.name)
        overrides = dict(cfg.hf_config)
        config = (
            AutoConfig.for_model(**overrides)
            if "model_type" in overrides
            else load_hf_config(key, cfg.name, **overrides)
        )
        return AutoModel.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{key}: cannot load {cfg.name!r} as a Hugging Face vision model: expected a "
            f"local model folder or a hub name ({' '.join(str(exc).split())[:300]})"
        ) from None


def output_width(config: Any) -> int:
    """Width of the backbone's last features (`hidden_size`, or the last stage of a CNN)."""
    sizes = getattr(config, "hidden_sizes", None)
    width = getattr(config, "hidden_size", None)
    if width is None and sizes:
        width = sizes[-1]
    if width is None:
        raise ConfigError(f"model.image.name: cannot tell the feature width of {type(config).__name__}")
    return int(width)


def block_stack(model: nn.Module, count: int, key: str) -> nn.ModuleList:
    """The stack of `count` blocks (transformer layers or CNN stages), found by shape so any
    architecture works; modules() is depth first, so the outermost such list wins."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"{key}: cannot find the {count} blocks of {type(model).__name__}")


def freeze_vision_layers(model: Any, num_frozen: int, key: str) -> list[nn.Module]:
    """The patch embeddings and the first `num_frozen` blocks, frozen; returns them."""
    config = model.config
    total = int(getattr(config, "num_hidden_layers", None) or len(getattr(config, "depths", ())))
    if num_frozen > total:
        raise ConfigError(f"{key}: {num_frozen} exceeds the backbone's {total} blocks")
    frozen = [model.embeddings, *list(block_stack(model, total, key)[:num_frozen])]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def tokens_to_features(hidden: torch.Tensor, pooled: torch.Tensor | None, grid: int) -> ImageFeatures:
    """A backbone's last hidden state (tokens or map) and optional pooled output -> ImageFeatures."""
    feature_map = hidden if hidden.ndim == 4 else grid_from_tokens(hidden)
    out = feature_map_to_features(feature_map, grid)
    return out if pooled is None else ImageFeatures(out.patches, pooled.flatten(1))


class HFVisionEncoder(ImageEncoderBase):
    """A Hugging Face vision backbone: pooled vector + patch tokens, its own normalisation."""

    model: Any  # a transformers model: its config and outputs are typed by its class at run time

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__(image_preprocessing(cfg))
        self.model = load_hf_vision_model(cfg)
        if getattr(self.model.config, "vision_config", None) is not None:
            raise ConfigError(
                f"model.image.name: {cfg.name!r} is a dual (image-text) model; use "
                "model.image.kind: clip for its vision tower"
            )
        self.out_dim = output_width(self.model.config)
        self.native_size = getattr(self.model.config, "image_size", None)
        self.interpolate = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.patch_grid = cfg.patch_grid
        self.use_pooler = cfg.pooling == "auto"
        if not self.use_pooler and isinstance(getattr(self.model, "pooler", None), nn.Module):
            self.model.pooler = None  # unused parameters would break distributed data parallel
        for name, param in self.model.named_parameters():
            if name.rsplit(".", 1)[-1] == "mask_token":  # masked-image pretraining only: never used here
                param.requires_grad_(False)
        if cfg.freeze:
            self.freeze([self.model])
        elif cfg.freeze_layers:
            self.freeze(freeze_vision_layers(self.model, cfg.freeze_layers, "model.image.freeze_layers"))

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        kwargs = {}
        if self.interpolate and self.native_size and pixel_values.shape[-1] != self.native_size:
            kwargs["interpolate_pos_encoding"] = True  # another input size than pretraining's
        out = self.model(pixel_values=self.normalize(pixel_values), **kwargs)
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        return tokens_to_features(out.last_hidden_state, pooled, self.patch_grid)
