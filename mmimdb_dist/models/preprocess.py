"""What pixels a vision backbone expects: its input size, mean and std, from the backbone itself.

Why: a DINOv2 or ConvNeXt checkpoint is trained on ImageNet statistics, CLIP on its own
(0.481, 0.458, 0.408), SigLIP on (0.5, 0.5, 0.5); feeding one with another's normalisation
costs accuracy without any error. So the statistics come from where the backbone's authors
put them: the Hugging Face image processor (`preprocessor_config.json`) or the transforms of
a torchvision weights enum. The loaders hand over pixels in [0, 1]; each encoder normalises
with its own statistics on the device (`ImageEncoderBase.normalize`).

The crop policy stays the loader's for every backbone (eval: short side resized, centre
square; train: random resized crops and flips): posters are portrait, and squashing them to
a square as some processors do would distort every face and title.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..hub import load_hf_config, load_pretrained
from ..schema import ImageEncoderConfig

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ImagePreprocessing:
    size: int  # side of the square input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # where the numbers come from, for logs and the README table


IMAGENET_DEFAULT = ImagePreprocessing(DEFAULT_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, "ImageNet defaults")


def _side(size: Any) -> int | None:
    """The square side of an image processor's `size`/`crop_size` (dict, SizeDict or int)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    for key in ("height", "shortest_edge", "width"):
        value = get(key)
        if value:
            return int(value)
    return None


def _triple(values: Any, fallback: tuple[float, float, float]) -> tuple[float, float, float]:
    if values is None:
        return fallback
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3)]
    return (values[0], values[1], values[2]) if len(values) == 3 else fallback


def _from_hf(cfg: ImageEncoderConfig) -> ImagePreprocessing:
    from transformers import AutoImageProcessor

    key = "model.image.name"
    try:
        processor = load_pretrained(
            key, cfg.name, AutoImageProcessor.from_pretrained, filename="preprocessor_config.json"
        )
    except (OSError, ValueError, KeyError):
        processor = None
    if processor is not None:
        crop = _side(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
        size = crop or _side(getattr(processor, "size", None))
        return ImagePreprocessing(
            size or DEFAULT_IMAGE_SIZE,
            _triple(getattr(processor, "image_mean", None), IMAGENET_MEAN),
            _triple(getattr(processor, "image_std", None), IMAGENET_STD),
            f"{cfg.name} image processor",
        )
    # No image processor (a random architecture, a bare folder): the model config's input size.
    config = load_hf_config(key, cfg.name) if not cfg.hf_config else None
    vision = getattr(config, "vision_config", config)
    size = _side(cfg.hf_config.get("vision_config", cfg.hf_config).get("image_size")) if cfg.hf_config else None
    size = size or _side(getattr(vision, "image_size", None)) or DEFAULT_IMAGE_SIZE
    logger.info("model.image.name %s has no image processor: input %d px, ImageNet mean and std", cfg.name, size)
    return ImagePreprocessing(size, IMAGENET_MEAN, IMAGENET_STD, "model config + ImageNet statistics")


def _from_torchvision(cfg: ImageEncoderConfig) -> ImagePreprocessing:
    from torchvision.models import get_model_weights

    if not cfg.pretrained:
        return IMAGENET_DEFAULT
    try:
        weights = get_model_weights(cfg.name)[cfg.weights]
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"model.image.weights: {cfg.weights!r} is not a weights enum member of torchvision's {cfg.name!r} ({exc})"
        ) from None
    transforms = weights.transforms()
    return ImagePreprocessing(
        int(transforms.crop_size[0]),
        _triple(transforms.mean, IMAGENET_MEAN),
        _triple(transforms.std, IMAGENET_STD),
        f"torchvision {weights}",
    )


def image_preprocessing(cfg: ImageEncoderConfig) -> ImagePreprocessing:
    """The input size and normalisation of the backbone `cfg` names (no weights are loaded)."""
    if cfg.pixel_mean is not None and cfg.pixel_std is not None:  # resolved, or set by the user
        return ImagePreprocessing(
            DEFAULT_IMAGE_SIZE,
            _triple(cfg.pixel_mean, IMAGENET_MEAN),
            _triple(cfg.pixel_std, IMAGENET_STD),
            "model.image.pixel_mean/pixel_std",
        )
    if cfg.kind in ("hf", "clip"):
        return _from_hf(cfg)
    if cfg.kind == "torchvision":
        return _from_torchvision(cfg)
    return IMAGENET_DEFAULT


def resolve_image_size(cfg: Any) -> Any:
    """`cfg` (an ExperimentConfig) with the preprocessing written out: `loader.image_size` (the
    backbone's native size when null) and `model.image.pixel_mean`/`pixel_std` (the backbone's
    statistics when null), so saved configs and checkpoints record, and rebuild, what was used."""
    image = cfg.model.image
    if not cfg.model.uses_image:
        size = cfg.loader.image_size or DEFAULT_IMAGE_SIZE
        return dataclasses.replace(cfg, loader=dataclasses.replace(cfg.loader, image_size=size))
    if cfg.loader.image_size is not None and image.pixel_mean is not None and image.pixel_std is not None:
        return cfg
    native = image_preprocessing(dataclasses.replace(image, pixel_mean=None, pixel_std=None))
    image = dataclasses.replace(
        image, pixel_mean=list(image.pixel_mean or native.mean), pixel_std=list(image.pixel_std or native.std)
    )
    loader = dataclasses.replace(cfg.loader, image_size=cfg.loader.image_size or native.size)
    logger.info(
        "posters at %d px (%s), mean %s, std %s (%s)",
        loader.image_size,
        "loader.image_size" if cfg.loader.image_size else native.source,
        tuple(image.pixel_mean),
        tuple(image.pixel_std),
        native.source if image.pixel_mean == list(native.mean) else "model.image.pixel_mean",
    )
    return dataclasses.replace(cfg, loader=loader, model=dataclasses.replace(cfg.model, image=image))
