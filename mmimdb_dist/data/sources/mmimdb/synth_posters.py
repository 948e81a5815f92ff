"""Synthetic posters: textured portrait images carrying a movie's poster cues (and decoys).

Gradient backdrop, soft blobs, genre-neutral clutter shapes, title and credit strokes and
film grain, so resizing and JPEG decoding at shard time cost what they cost on real posters;
a genre's cue is a shape in its colour (`synth_cues.POSTER_CUES`). Rendering is a function of
the `PosterSpec` alone, so any worker process draws the same bytes.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ....atomic import atomic_write_bytes
from .synth_cues import POSTER_ASPECT_RANGE, POSTER_CUES, POSTER_WIDTH_RANGE

# (width, height) of the shared film-grain tile; every poster is a crop of it.
_GRAIN_TILE = (POSTER_WIDTH_RANGE[1], math.ceil(POSTER_WIDTH_RANGE[1] * POSTER_ASPECT_RANGE[1]))
JPEG_SETTINGS: dict[str, Any] = {
    "format": "JPEG",
    "quality": 88,
    "subsampling": 2,
    "optimize": False,
    "progressive": False,
}


@dataclass
class PosterSpec:
    """Everything a worker process needs to render and write one poster."""

    path: Path
    seed: int
    index: int
    width: int
    height: int
    cues: list[str] = field(default_factory=list)
    defect: str | None = None


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(70, 190)
    return np.clip(grey + rng.normal(0, 18, 3), 0, 255)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    kind: str,
    area: float,
    colour: tuple[int, int, int],
    rng: np.random.Generator,
    width: int,
    height: int,
) -> None:
    """Draw a genre's shape covering roughly `area` of the poster."""
    pixels = area * width * height
    cx, cy = width * rng.uniform(0.25, 0.75), height * rng.uniform(0.25, 0.75)
    if kind == "disc":
        r = math.sqrt(pixels / math.pi)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "ring":
        r = 1.45 * math.sqrt(pixels / math.pi)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(0.28 * r)))
    elif kind == "box":
        side = math.sqrt(pixels)
        draw.rectangle((cx - 0.6 * side, cy - side / 2.4, cx + 0.6 * side, cy + side / 2.4), fill=colour)
    elif kind == "column":
        half = pixels / height / 2
        draw.rectangle((cx - half, 0, cx + half, height), fill=colour)
    elif kind == "horizon":
        top = height * rng.uniform(0.55, 0.8)
        draw.rectangle((0, top, width, top + pixels / width), fill=colour)
    elif kind == "spike":
        tall = 1.6 * math.sqrt(pixels)
        half_base = pixels / tall
        draw.polygon(
            [(cx, cy - tall / 2), (cx - half_base, cy + tall / 2), (cx + half_base, cy + tall / 2)], fill=colour
        )
    elif kind == "slashes":
        length = 0.45 * width
        thickness = max(2, int(pixels / (4 * length * 1.41)))
        for i in range(4):
            x0 = cx - length / 2 + (i - 1.5) * thickness * 2.2
            draw.line([(x0, cy + length / 2), (x0 + length, cy - length / 2)], fill=colour, width=thickness)
    elif kind == "dots":
        r = math.sqrt(pixels / (6 * math.pi))
        for _ in range(6):
            x, y = width * rng.uniform(0.1, 0.9), height * rng.uniform(0.1, 0.9)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif kind == "blinds":  # the venetian-blind light of noir posters: white slats on black
        box_w, box_h = 0.7 * width, min(0.9 * height, 2 * pixels / (0.7 * width))
        left, top = cx - box_w / 2, max(0.0, cy - box_h / 2)
        draw.rectangle((left, top, left + box_w, top + box_h), fill=(12, 12, 12))
        slat = max(2, height // 56)
        for y in range(int(top), int(top + box_h) - slat, 2 * slat):
            draw.rectangle((left, y, left + box_w, y + slat - 1), fill=colour)
    else:
        raise ValueError(f"unknown poster shape {kind!r}")


_CLUTTER_SHAPES = ("disc", "box", "spike", "ring", "column")


@functools.cache
def grain_tile() -> Image.Image:
    """Film-grain noise shared by all posters (fixed seed: every process gets the same)."""
    shape = (_GRAIN_TILE[1], _GRAIN_TILE[0], 3)
    noise = np.random.default_rng(20170101).standard_normal(shape, dtype=np.float32) * 9 + 128
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")


def _background(rng: np.random.Generator, gain: float) -> Image.Image:
    """A small gradient with soft colour blobs, upscaled later into a smooth backdrop."""
    h, w = 36, 24
    yy = np.linspace(0, 1, h)[:, None]
    xx = np.linspace(0, 1, w)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5), 0, 1)
    start, stop = _muted_colour(rng), _muted_colour(rng)
    canvas = start + (stop - start) * t[..., None]
    for _ in range(3):
        bx, by, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
        weight = np.exp(-((xx - bx) ** 2 + (1.5 * (yy - by)) ** 2) / (2 * radius**2))
        canvas += weight[..., None] * rng.normal(0, 30, 3)
    canvas += rng.normal(0, 6, canvas.shape)
    return Image.fromarray(np.clip(canvas * gain, 0, 255).astype(np.uint8), "RGB")


def _render_poster(spec: PosterSpec) -> Image.Image:
    """Smooth backdrop, genre shapes, title- and credit-like strokes, then film grain."""
    rng = np.random.default_rng([spec.seed, spec.index, 7])
    gain = math.prod(POSTER_CUES[genre].background_gain for genre in spec.cues)
    # Smooth at quarter size, then pixel-repeated: 5x cheaper than one bilinear upscale,
    # and the 4-pixel steps of a smooth gradient vanish under the grain.
    quarter = (spec.width // 4, spec.height // 4)
    image = _background(rng, gain).resize(quarter, Image.Resampling.BILINEAR)
    image = image.resize((spec.width, spec.height), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    # Genre-neutral clutter in muted colours: posters without a cue are not blank either.
    for _ in range(int(rng.integers(1, 4))):
        r, g, b = (int(v) for v in _muted_colour(rng))
        colour = (r, g, b)
        _draw_shape(
            draw, str(rng.choice(_CLUTTER_SHAPES)), rng.uniform(0.03, 0.12), colour, rng, spec.width, spec.height
        )
    for genre in spec.cues:
        cue = POSTER_CUES[genre]
        r, g, b = (int(v) for v in np.clip(np.array(cue.rgb) + rng.normal(0, 12, 3), 0, 255))
        colour = (r, g, b)
        _draw_shape(draw, cue.shape, cue.area * rng.uniform(0.6, 1.5), colour, rng, spec.width, spec.height)
    _draw_strokes(image, rng)
    ox = int(rng.integers(0, _GRAIN_TILE[0] - spec.width + 1))
    oy = int(rng.integers(0, _GRAIN_TILE[1] - spec.height + 1))
    grain = grain_tile().crop((ox, oy, ox + spec.width, oy + spec.height))
    return ImageChops.add(image, grain, 1.0, -128)


def _draw_strokes(image: Image.Image, rng: np.random.Generator) -> None:
    """Letter-like strokes for a title and a credits block, as on real posters."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    ink = tuple(int(v) for v in (rng.choice([235, 20]) + rng.normal(0, 10, 3)).clip(0, 255))
    top = int(height * (rng.uniform(0.04, 0.15) if rng.random() < 0.5 else rng.uniform(0.7, 0.8)))
    letter_h = max(8, int(width * rng.uniform(0.05, 0.09)))
    x = int(width * rng.uniform(0.06, 0.2))
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(int(rng.integers(3, 9))):
            letter_w = int(letter_h * rng.uniform(0.35, 0.7))
            if x + letter_w > width - 10:
                break
            stroke = max(2, letter_h // 7)
            draw.line([(x, top), (x, top + letter_h)], fill=ink, width=stroke)
            if rng.random() < 0.6:
                y = top + int(letter_h * rng.uniform(0, 1))
                draw.line([(x, y), (x + letter_w, y)], fill=ink, width=stroke)
            if rng.random() < 0.5:
                draw.line([(x, top), (x + letter_w, top + letter_h)], fill=ink, width=stroke)
            x += letter_w + stroke * 2
        x += letter_h // 2
    credits_top = int(height * 0.9)
    for row in range(int(rng.integers(2, 5))):
        y = credits_top + row * max(4, height // 90)
        x = int(width * 0.1)
        while x < width * 0.88:
            dash = int(rng.integers(4, 20))
            draw.line([(x, y), (x + dash, y)], fill=(200, 200, 200), width=1)
            x += dash + 4


def _encode_poster(spec: PosterSpec) -> bytes:
    image = _render_poster(spec)
    buffer = io.BytesIO()
    if spec.defect == "png_poster":
        image.save(buffer, format="PNG", optimize=False, compress_level=1)
    elif spec.defect == "cmyk_poster":
        image.convert("CMYK").save(buffer, **JPEG_SETTINGS)
    elif spec.defect == "grayscale_poster":
        image.convert("L").save(buffer, **JPEG_SETTINGS)
    else:
        image.save(buffer, **JPEG_SETTINGS)
    return buffer.getvalue()


def write_poster(spec: PosterSpec) -> int:
    """Render and atomically write one poster; returns the bytes written (for progress)."""
    if spec.defect == "missing_poster":
        spec.path.unlink(missing_ok=True)
        return 0
    data = b"" if spec.defect == "zero_byte_poster" else _encode_poster(spec)
    atomic_write_bytes(spec.path, data, durable=False)
    return len(data)
