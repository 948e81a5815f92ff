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
import math
import random

import numpy as np
from PIL import Image

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
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    # Fallback: the largest centred crop within the allowed aspect ratios.
    if width / height < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif width / height > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def decode_poster(data: bytes, image_size: int, *, augment: bool, sample_seed: int = 0) -> np.ndarray:
    """JPEG bytes -> image_size × image_size × 3 uint8 array (the loader stacks and
    transposes a whole batch at once, which is far cheaper than per-image tensors).

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
        rng = random.Random(sample_seed)
        box = random_resized_crop_box(*img.size, rng)
        flip = rng.random() < 0.5
    else:
        width, height = img.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img)
