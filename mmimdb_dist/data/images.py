"""Poster bytes -> uint8 tensor, cheaply, inside the loader workers.

Why this shape: posters were already resized at sharding time (short side
`shard.poster_short_side`), so a worker decodes a small JPEG with libjpeg-turbo
(`torchvision.io.decode_image`), crops and resizes it in one uint8 op
(`transforms.v2.functional.resized_crop`, about twice as fast as PIL's resize here), and
hands over uint8 pixels. Normalisation (and any colour jitter) happens on the device in
`data.device.to_device`, where it is nearly free, instead of turning every pixel into float32 in
a worker and copying four times the bytes.

Augmentation randomness comes from a seed per sample, not from a running generator, so a
sample is augmented the same way whatever came before it; that is what makes a resumed
epoch (`skip_batches`) identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import random

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resized_crop

# Cheap train-time augmentation: crops that keep at least half the poster, and mirror images.
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawn from `rng` instead of torch's global
    generator (re-seeding that per sample costs more than the crop). Returns a PIL box."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    # Fallback: the largest centred crop within the allowed aspect ratios.
    if width / height < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def decode_poster(data: bytes, image_size: int, *, augment: bool, sample_seed: int = 0) -> torch.Tensor:
    """JPEG bytes -> 3 × image_size × image_size uint8 tensor.

    Train (`augment`): random resized crop + horizontal flip drawn from `sample_seed`.
    Eval: resize the short side to `image_size` and take the centre square.
    Raises whatever the decoder raises on a corrupt image; the loader counts and skips it.
    """
    image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    height, width = image.shape[-2:]
    flip = False
    if augment:
        rng = random.Random(sample_seed)
        left, top, right, bottom = random_resized_crop_box(width, height, rng)
        flip = rng.random() < 0.5
    else:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        right, bottom = left + side, top + side
    image = resized_crop(image, top, left, bottom - top, right - left, [image_size, image_size], antialias=True)
    cropped: torch.Tensor = image.flip(-1) if flip else image
    return cropped
