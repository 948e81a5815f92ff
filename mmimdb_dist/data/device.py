"""Host -> device transfer of a batch, and the colour jitter done there.

Posters cross as uint8 (4× fewer bytes than float32) and become floats in [0, 1] on the
device; normalisation is each image encoder's own (models/preprocess.py).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from .plan import derive_seed


def to_device(
    batch: dict[str, Any],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    color_jitter: float = 0.0,
    jitter_seed: int = 0,
) -> dict[str, Any]:
    """Move a batch to `device`; uint8 pixels become `dtype` pixels in [0, 1] there.

    Normalisation is the image encoder's (each backbone has its own mean and std, see
    models/preprocess.py). `color_jitter` > 0 applies brightness, contrast and saturation
    jitter of that strength (as torchvision's ColorJitter(s, s, s), in a fixed order) on the
    device, where it costs next to nothing. Factors are drawn per sample from (jitter_seed,
    sample id), so pass e.g. `derive_seed(seed, epoch)` and a resumed epoch jitters exactly
    as the original.
    """
    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    for key in ("text_features", "image_features"):  # cached encoder outputs (data.features)
        if key in out:
            out[key] = out[key].to(dtype)
    if "pixel_values" in out:
        pixels = out["pixel_values"].to(dtype).mul_(1 / 255)
        if color_jitter > 0:
            pixels = jitter_colors(pixels, jitter_factors(batch["ids"], color_jitter, jitter_seed))
        out["pixel_values"] = pixels
    if "labels" in out:  # evaluation keeps its labels on the host
        out["labels"] = out["labels"].to(dtype)
    return out


def jitter_factors(ids: list[str], strength: float, seed: int) -> torch.Tensor:
    """3 × B factors (brightness, contrast, saturation) in [1 - strength, 1 + strength]."""
    return torch.tensor(
        [
            [random.Random(derive_seed(seed, sample_id, kind)).uniform(1 - strength, 1 + strength) for sample_id in ids]
            for kind in ("brightness", "contrast", "saturation")
        ],
        dtype=torch.float64,
    )


def jitter_colors(pixels: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation jitter of float pixels in [0, 1], B × 3 × H × W, in place.

    torchvision's ColorJitter arithmetic in its order (a blend with black, with the image's mean
    grey, with its grey image; each clamped to [0, 1]), vectorised over the batch with one factor
    triple per sample: about a dozen kernels per batch, where torchvision's functional ops (one
    scalar factor per call) took three per sample from a Python loop, each a launch and a host
    round trip on a GPU. Equal to the per-sample ops to float precision (tests/test_loader.py).
    On a CPU the batched form streams the batch through memory a few times and is slower than
    a per-image loop; jitter runs on the training device, which is where it pays.
    """
    brightness, contrast, saturation = (f.to(pixels.device, pixels.dtype).view(-1, 1, 1, 1) for f in factors)
    pixels.mul_(brightness).clamp_(0, 1)
    mean = _grey(pixels).mean(dim=(-3, -2, -1), keepdim=True)
    pixels.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 1)
    grey = _grey(pixels).mul_(1 - saturation)  # of the contrast-jittered image, before it changes
    return pixels.mul_(saturation).add_(grey).clamp_(0, 1)


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, as torchvision's rgb_to_grayscale: B × 1 × H × W."""
    r, g, b = pixels.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)
