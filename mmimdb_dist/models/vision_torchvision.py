"""Any torchvision classification model as a poster encoder, by name (`get_model`).

Why a generic wrapper instead of one class per family: torchvision has ~80 classifiers
(ConvNeXt, EfficientNet, RegNet, Swin, ViT, MaxViT, ...) whose classifier heads differ, but
all end in a last linear layer, and the CNN-like ones average-pool a feature map just before
it. So: the classifier's last `nn.Linear` becomes the identity (the model's output is then
its pooled feature, after whatever norm the family applies), and the patch tokens are read
with a forward hook at the input of the last global average pool (CNNs, Swin, MaxViT) or at
the output of the transformer encoder (ViT, whose class token is dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..hub import PREFETCH_ADVICE
from ..schema import ImageEncoderConfig
from .preprocess import image_preprocessing
from .vision import ImageEncoderBase, ImageFeatures, feature_map_to_features, grid_from_tokens

_HEAD_NAMES = ("fc", "classifier", "heads", "head")


def _replace_last_linear(model: nn.Module) -> tuple[str, int]:
    """Swap the classifier's last linear layer for the identity; (head attribute, input width)."""
    for head_name in _HEAD_NAMES:
        head = getattr(model, head_name, None)
        if not isinstance(head, nn.Module):
            continue
        if isinstance(head, nn.Linear):
            setattr(model, head_name, nn.Identity())
            return head_name, head.in_features
        linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            name, last = linears[-1]
            parent = head.get_submodule(name.rpartition(".")[0]) if "." in name else head
            setattr(parent, name.rpartition(".")[2], nn.Identity())
            return head_name, last.in_features
    raise ConfigError(
        f"model.image.name: cannot find the classifier of torchvision's "
        f"{type(model).__name__} (looked for {', '.join(_HEAD_NAMES)})"
    )


def _build(cfg: ImageEncoderConfig) -> Any:
    from torchvision.models import get_model, get_model_weights, list_models

    if cfg.name not in list_models():
        raise ConfigError(
            f"model.image.name: {cfg.name!r} is not a torchvision model (torchvision.models.list_models() lists them)"
        )
    if not cfg.pretrained:
        return get_model(cfg.name, weights=None)
    weights = get_model_weights(cfg.name)[cfg.weights]
    try:
        return get_model(cfg.name, weights=weights)
    except (OSError, RuntimeError) as exc:  # offline node, proxy, truncated cache file
        raise ConfigError(
            f"model.image.name: cannot fetch torchvision's {weights} ({exc}); {PREFETCH_ADVICE}"
        ) from None


class TorchvisionEncoder(ImageEncoderBase):
    """A torchvision classifier without its last linear layer: pooled vector + patch grid."""

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__(image_preprocessing(cfg))
        self.model = _build(cfg)
        head_name, self.out_dim = _replace_last_linear(self.model)
        self.patch_grid = cfg.patch_grid
        self._captured: list[torch.Tensor] = []
        pools = [m for m in self.model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if pools:  # the feature map entering the global pool: B x C x H x W
            pools[-1].register_forward_hook(lambda _m, args, _out: self._captured.append(args[0]))
            self.layout = "map"
        elif isinstance(getattr(self.model, "encoder", None), nn.Module):  # ViT: B x (1 + N) x D
            self.model.encoder.register_forward_hook(lambda _m, _args, out: self._captured.append(out))
            self.layout = "tokens"
        elif isinstance(getattr(self.model, "features", None), nn.Module):  # DenseNet: functional pool
            self.model.features.register_forward_hook(lambda _m, _args, out: self._captured.append(out))
            self.layout = "map"
        else:
            raise ConfigError(
                f"model.image.name: cannot find the feature map of torchvision's "
                f"{cfg.name!r} (no global average pool, no transformer encoder)"
            )
        self.pool_from_map = cfg.pooling == "mean"
        if self.layout == "map":
            width = self._map_width()
            if width != self.out_dim:
                # A hidden layer in the classifier (MobileNetV3, VGG): patches and pooled vector
                # must share one width, so the pooled vector is the map's average.
                setattr(self.model, head_name, nn.Identity())
                self.out_dim, self.pool_from_map = width, True
        if cfg.freeze:
            self.freeze([self.model])

    @torch.no_grad()
    def _map_width(self) -> int:
        """Channels of the feature map, from one small forward (CNNs take any input size)."""
        mode = self.model.training
        self.model.eval()
        try:
            for side in (64, 224):  # some (MaxViT's windows) need their native size
                self._captured.clear()
                try:
                    self.model(torch.zeros(1, 3, side, side))
                    return int(self._captured.pop().shape[1])
                except RuntimeError:
                    if side == 224:
                        raise
        finally:
            self.model.train(mode)
        raise AssertionError("unreachable")

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        self._captured.clear()
        pooled = self.model(self.normalize(pixel_values))
        features: Any = self._captured.pop()
        grid = features if self.layout == "map" else grid_from_tokens(features)
        out = feature_map_to_features(grid, self.patch_grid)
        return out if self.pool_from_map else ImageFeatures(out.patches, pooled.flatten(1))
