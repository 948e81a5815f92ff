"""Vision encoders: a poster -> a grid of patch tokens and one pooled vector.

Every encoder exposes its last feature map as `patch_grid**2` patch tokens (7 x 7 = 49 for a
224 input, adaptive pooling for other sizes), because cross-attention over a single pooled
vector is a no-op: the attention fusion needs somewhere on the poster to look.

Every encoder takes pixels in [0, 1] and normalises them itself with its backbone's mean and
std (`ImageEncoderBase`, statistics from models/preprocess.py), so a CLIP tower gets CLIP's
statistics and a ResNet ImageNet's, in training, evaluation, prediction and feature caching
alike. This module holds the ResNets and the from-scratch CNN; vision_torchvision.py any
torchvision classifier, vision_hf.py any Hugging Face backbone, dual.py CLIP-family towers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..schema import FREEZE_LEVELS, ImageEncoderConfig
from .encoder import FeatureEncoder
from .preprocess import ImagePreprocessing, image_preprocessing


class ImageFeatures(NamedTuple):
    patches: torch.Tensor  # B x P x D, P = patch_grid ** 2
    pooled: torch.Tensor  # B x D


def feature_map_to_features(features: torch.Tensor, grid: int) -> ImageFeatures:
    """B x D x H x W -> patch tokens on a grid x grid lattice, plus the global average."""
    pooled = features.mean(dim=(2, 3))
    if features.shape[-2:] != (grid, grid):
        features = nn.functional.adaptive_avg_pool2d(features, grid)
    return ImageFeatures(features.flatten(2).transpose(1, 2), pooled)


def grid_from_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """B x T x D transformer tokens -> B x D x h x w: the trailing h*w tokens are the patches.

    Prefix tokens (a CLS token, DINOv2's registers) come first and are dropped; the patch grid
    is the largest square that fits, which holds for every square-input ViT-style backbone.
    """
    side = math.isqrt(tokens.shape[1])
    patches = tokens[:, tokens.shape[1] - side * side :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class ImageEncoderBase(FeatureEncoder):
    """Normalisation with the backbone's own statistics, and a freezing policy that sticks.

    `frozen` modules stay in eval mode while the model trains (BatchNorm statistics and
    dropout of a part that does not learn), as for the text encoders.
    """

    def __init__(self, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        # Not saved in checkpoints: they follow from the config, which is saved.
        self.pixel_mean: torch.Tensor
        self.pixel_std: torch.Tensor
        self.register_buffer("pixel_mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self.frozen: list[nn.Module] = []

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> (x - mean) / std, in the pixels' dtype."""
        return (pixels - self.pixel_mean.to(pixels.dtype)) / self.pixel_std.to(pixels.dtype)

    def freeze(self, modules: list[nn.Module]) -> None:
        for module in modules:
            module.requires_grad_(False)
        self.frozen = modules

    def train(self, mode: bool = True) -> ImageEncoderBase:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


def _resnet(kind: str, cfg: ImageEncoderConfig) -> Any:
    from torchvision import models

    factory, weights_enum = {
        "resnet18": (models.resnet18, models.ResNet18_Weights),
        "resnet50": (models.resnet50, models.ResNet50_Weights),
    }[kind]
    if cfg.weights_path:
        model = factory(weights=None)
        load_resnet_weights(model, Path(cfg.weights_path))
        return model
    if not cfg.pretrained:
        return factory(weights=None)
    try:
        return factory(weights=weights_enum.IMAGENET1K_V1)
    except (OSError, RuntimeError) as exc:  # offline node, proxy, truncated cache file
        raise ConfigError(
            f"model.image.pretrained: cannot fetch the ImageNet {kind} weights ({exc}); "
            "on an offline machine run `mmimdb-dist prefetch --config <this config>` where "
            "there is internet, or set model.image.weights_path"
        ) from exc


def load_resnet_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"model.image.weights_path: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DataError(f"{path}: not a loadable state_dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state_dict (mapping of parameter names to tensors)")
    # The ImageNet classifier is dropped anyway; accept files with or without it.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not match the ResNet: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )


class ResNetEncoder(ImageEncoderBase):
    """A torchvision ResNet without its classifier, optionally frozen up to a stage.

    Frozen stages keep their BatchNorm layers in eval mode even while the model trains, so
    their running statistics stay those of the weights they were frozen with.
    """

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__(image_preprocessing(cfg))
        resnet = _resnet(cfg.kind, cfg)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.out_dim = int(resnet.fc.in_features)
        self.patch_grid = cfg.patch_grid
        stages = self._stages()
        self.freeze(stages if cfg.freeze else stages[: FREEZE_LEVELS.index(cfg.freeze_until)])

    def _stages(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        x = self.normalize(pixel_values)
        for stage in self._stages():
            x = stage(x)
        return feature_map_to_features(x, self.patch_grid)


class SimpleCNNEncoder(ImageEncoderBase):
    """The classic from-scratch baseline: four conv-bn-relu-maxpool blocks."""

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__(image_preprocessing(cfg))
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels in cfg.cnn_channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.out_dim = in_channels
        self.patch_grid = cfg.patch_grid

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        return feature_map_to_features(self.features(self.normalize(pixel_values)), self.patch_grid)
