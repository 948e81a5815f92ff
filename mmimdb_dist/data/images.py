"""Poster bytes -> uint8 tensor, cheaply, inside the loader workers.

Why this shape: posters were already resized at sharding time (short side
`shard.poster_short_side`), so a worker decodes a small JPEG, crops and resizes it in one
PIL call (`resize(box=...)`), and hands over uint8 pixels. Normalisation (and any colour
jitter) happens on the device in `loader.to_device`, where it is nearly free, instead of
turning every pixel into float32 in a worker and copying four times the bytes.

Augmentation randomness comes from a seed per sample, not from a running generator, so a
sample is augmented the same way whatever came before it; that is what makes a resumed
epoch (`skip_batches`) identical to an uninterrupted one.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import pil_to_tensor

# Cheap train-time augmentation: crops that keep at least half the poster, and mirror images.
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def decode_poster(data: bytes, image_size: int, *, augment: bool, sample_seed: int = 0) -> torch.Tensor:
    """JPEG bytes -> 3 × image_size × image_size uint8 tensor.

    Train (`augment`): random resized crop + horizontal flip drawn from `sample_seed`.
    Eval: resize the short side to `image_size` and take the centre square.
    Raises whatever PIL raises on a corrupt image; the loader counts and skips it.
    """
    with Image.open(io.BytesIO(data)) as img:
        # Let the JPEG decoder shrink by 1/2, 1/4 or 1/8 when the poster is much larger
        # than needed (it never goes below the requested size).
        img.draft("RGB", (image_size, image_size))
        img = img.convert("RGB")
    flip = False
    if augment:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            top, left, height, width = RandomResizedCrop.get_params(img, CROP_SCALE, CROP_RATIO)
            flip = bool(torch.rand(1).item() < 0.5)
        box = (left, top, left + width, top + height)
    else:
        width, height = img.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return pil_to_tensor(img)
