"""Parsed samples -> one batch dict, for each sample format and for `predict` (docs/ARCHITECTURE.md).

Batch assembly lives here alone: the train and eval loaders, `cache-features` and
`predict` all make their batches with these functions, so a batch has one layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .codecs import IMAGE_FEATURES, TEXT_FEATURES, FeatureSample, Sample

if TYPE_CHECKING:
    from ..inference.inputs import PreparedMovie


def pad_token_rows(rows: list[list[int] | None], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), B x longest row; a None row (no plot) is all padding."""
    longest = max(len(r) for r in rows if r is not None)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.int64)
    for index, row in enumerate(rows):
        if row is not None:
            input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.int64)
            attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def collate_samples(
    samples: list[Sample], pixels: list[torch.Tensor] | None, skipped: int, *, pad_id: int
) -> dict[str, Any]:
    """Shard samples -> batch dict, padded to the longest plot with the token encoder's `pad_id`.

    `pixels` None: a batch without posters (a model that reads plots only). A plot-only
    movie's poster is all zeros with `image_present` false, which the models replace by
    their learned "missing poster" embedding.
    """
    input_ids, attention_mask = pad_token_rows([s.input_ids for s in samples], pad_id)
    batch = {
        "ids": [s.id for s in samples],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([s.labels for s in samples], dtype=torch.float32),
        "skipped": skipped,
    }
    if pixels is not None:
        batch["pixel_values"] = torch.stack(pixels)
        batch["image_present"] = torch.tensor([bool(s.jpeg) for s in samples])
    return batch


def collate_features(samples: list[FeatureSample], pixels: None = None, skipped: int = 0) -> dict[str, Any]:
    """Cached-features samples -> batch dict; the token rows padded to the longest plot.

    `attention_mask` covers the tokens (not row 0, the pooled vector). Only the modalities
    the set holds become batch keys; a movie without poster features (plot-only) gets zero
    rows and `image_present` false. `pixels` is there for the stream's one call shape.
    """
    batch: dict[str, Any] = {
        "ids": [s.id for s in samples],
        "labels": torch.tensor([s.labels for s in samples], dtype=torch.float32),
        "skipped": skipped,
    }
    texts = [s.text for s in samples if s.text is not None]
    images = [s.image for s in samples if s.image is not None]
    sequences = any(len(a) > 1 for a in texts) or any(len(a) > 1 for a in images)
    if texts:
        longest = max(len(a) for a in texts)
        text = torch.zeros(len(samples), longest, texts[0].shape[1], dtype=torch.float32)
        mask_width = longest - 1 if sequences else 1
        attention_mask = torch.zeros(len(samples), max(mask_width, 1), dtype=torch.int64)
        for row, sample in enumerate(samples):
            rows_of_text = sample.text
            assert rows_of_text is not None  # a features set holds text for every sample or for none
            rows = rows_of_text.shape[0]
            text[row, :rows] = torch.from_numpy(rows_of_text.astype(np.float32))
            attention_mask[row, : max(rows - 1, 1) if sequences else 1] = 1
        batch[TEXT_FEATURES], batch["attention_mask"] = text, attention_mask
    if images:
        image = torch.zeros(len(samples), *images[0].shape, dtype=torch.float32)
        for row, sample in enumerate(samples):
            if sample.image is not None:
                image[row] = torch.from_numpy(sample.image.astype(np.float32))
        batch[IMAGE_FEATURES] = image
        batch["image_present"] = torch.tensor([s.image is not None for s in samples])
    return batch


def collate_prepared(movies: list[PreparedMovie], pad_id: int, image_size: int, num_labels: int) -> dict[str, Any]:
    """Movies prepared for `predict` -> a batch with presence flags (no labels to learn from).

    A batch where some movie lacks a plot or a poster carries `text_present` /
    `image_present`; a batch where none has one leaves that input out, as the models expect.
    """
    size = len(movies)
    batch: dict[str, Any] = {
        "ids": [m.id for m in movies],
        "labels": torch.zeros(size, num_labels, dtype=torch.float32),
    }
    text_present = torch.tensor([m.input_ids is not None for m in movies])
    if text_present.any():
        input_ids, attention_mask = pad_token_rows([m.input_ids for m in movies], pad_id)
        batch.update(input_ids=input_ids, attention_mask=attention_mask, text_present=text_present)
    image_present = torch.tensor([m.pixels is not None for m in movies])
    if image_present.any():
        blank = torch.zeros(3, image_size, image_size, dtype=torch.uint8)
        batch["pixel_values"] = torch.stack([m.pixels if m.pixels is not None else blank for m in movies])
        batch["image_present"] = image_present
    return batch
