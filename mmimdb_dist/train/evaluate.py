"""Distributed evaluation that counts every sample exactly once.

Eval loaders give each rank a different share of the split, so ranks end with different
numbers of batches. Gathering per batch (`gather_for_metrics` inside the loop) would then
hang or pad; instead each rank collects its (ids, probabilities, labels) and they are
gathered once, as Python objects, after the loop. The result is de-duplicated by id,
sorted by id (so any world size yields the same arrays in the same order), and checked
against the manifest: every sample is either predicted or counted as skipped bad data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..data.loader import StreamingLoader, to_device
from ..errors import DataError


@dataclass
class Predictions:
    """Probabilities of one split, rows in sorted-id order."""

    ids: list[str]
    probs: np.ndarray  # N x 23, float32
    labels: np.ndarray  # N x 23, 0/1
    skipped: int = 0


def iterate(loader: StreamingLoader) -> Iterator[dict]:
    """Batches of `loader` without touching the global torch RNG (`StreamingLoader.start`)."""
    return loader.start()


@torch.no_grad()
def predict_local(model: torch.nn.Module, loader: StreamingLoader, device: torch.device,
                  input_dtype: torch.dtype = torch.float32, autocast=contextlib.nullcontext,
                  progress: bool = False, desc: str = "eval") -> Predictions:
    """This rank's predictions over its share of an eval loader."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    ids: list[str] = []
    probs, labels = [], []
    for batch in tqdm(iterate(loader), total=len(loader), desc=desc, disable=not progress,
                      leave=False, dynamic_ncols=True):
        batch = to_device(batch, device, input_dtype)
        with autocast():
            logits = model(batch)["logits"]
        ids.extend(batch["ids"])
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(batch["labels"].float().cpu().numpy().astype(np.int64))
    model.train(was_training)
    width = 23 if not probs else probs[0].shape[1]
    return Predictions(ids=ids,
                       probs=np.concatenate(probs) if probs else np.zeros((0, width), np.float32),
                       labels=np.concatenate(labels) if labels else np.zeros((0, width), np.int64),
                       skipped=loader.skipped)


def merge(parts: list[Predictions], expected: int, where: str) -> Predictions:
    """All ranks' predictions as one set, de-duplicated and checked against `expected`."""
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part in parts:
        for index, sample_id in enumerate(part.ids):
            rows.setdefault(sample_id, (part.probs[index], part.labels[index]))
    skipped = sum(part.skipped for part in parts)
    if len(rows) + skipped != expected:
        raise DataError(f"{where}: evaluated {len(rows)} distinct samples and skipped {skipped}, "
                        f"but the manifest lists {expected}")
    ids = sorted(rows)
    return Predictions(ids=ids, probs=np.stack([rows[i][0] for i in ids]),
                       labels=np.stack([rows[i][1] for i in ids]), skipped=skipped)


def predict(accelerator, model: torch.nn.Module, loader: StreamingLoader, expected: int,
            where: str, input_dtype: torch.dtype = torch.float32, desc: str = "eval") -> Predictions:
    """Every sample of the split once, on every rank (all ranks must call this)."""
    from accelerate.utils import gather_object

    local = predict_local(model, loader, accelerator.device, input_dtype, accelerator.autocast,
                          progress=accelerator.is_local_main_process, desc=desc)
    parts = gather_object([local]) if accelerator.num_processes > 1 else [local]
    return merge(parts, expected, where)
