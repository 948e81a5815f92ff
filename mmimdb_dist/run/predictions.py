"""A split's predictions: every sample exactly once, on one process or across ranks.

Every evaluation of a model (the trainer's dev evaluations and final test, `evaluate`, a
Tune trial through the trainer, the tests) goes through `evaluate_split`; its report is
`run/protocol.py`'s.

Eval loaders give each rank a different share of the split, so ranks end with different numbers
of batches. Gathering per batch (`gather_for_metrics` inside the loop) would then hang or pad;
instead each rank collects its (ids, probabilities, labels) and they are gathered once, as
Python objects, after the loop. The forwards themselves must pair up too: under ZeRO-3 each one
gathers the sharded weights from every rank, and a DDP forward may sync buffers. So the ranks
first agree on the largest batch count, and a rank with fewer batches runs padding forwards (a
batch of its split again, outputs dropped) until it has made as many. The result is
de-duplicated by id, sorted by id (so any world size yields the same arrays in the same order),
and checked against the manifest: every sample is either predicted or counted as skipped bad
data.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from ..data.device import to_device
from ..data.loader import StreamingLoader, build_eval_loader
from ..data.manifest import Manifest
from ..errors import DataError
from ..progress import progress as progress_bar


@dataclass
class Predictions:
    """Probabilities of one split, rows in sorted-id order; the logits they came from (a dev
    loss in the training loss's own terms needs them: probabilities saturate at 0 and 1)."""

    ids: list[str]
    probs: np.ndarray  # N x labels, float32 (softmax rows for a multiclass task)
    labels: np.ndarray  # N x labels, 0/1
    skipped: int = 0
    logits: np.ndarray | None = None  # N x labels, float32


def probabilities(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """A model's outputs as probabilities: softmax over the classes of a multiclass task,
    one sigmoid per label of a multi-label one."""
    return torch.softmax(logits.float(), dim=-1) if multiclass else torch.sigmoid(logits.float())


@torch.no_grad()
def predict_local(
    model: torch.nn.Module,
    loader: StreamingLoader,
    device: torch.device,
    input_dtype: torch.dtype = torch.float32,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    progress: bool = False,
    desc: str = "eval",
    *,
    num_labels: int,
    multiclass: bool = False,
    forwards: int = 0,
    padding_batch: Callable[[], dict[str, Any]] | None = None,
) -> Predictions:
    """This rank's predictions over its share of an eval loader.

    Labels stay on the host (they never need the device), and the logits stay on the device
    until the loop ends: one copy back per evaluation, not a host sync per batch."""
    was_training = model.training
    model.eval()
    ids: list[str] = []
    logits_parts: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    last: dict[str, Any] | None = None
    for batch in progress_bar(loader.start(), total=len(loader), desc=desc, unit="batch", disable=not progress):
        labels.append(batch.pop("labels").numpy().astype(np.int64))
        batch = to_device(batch, device, input_dtype)
        with autocast():
            logits = model(batch)["logits"]
        ids.extend(batch["ids"])
        logits_parts.append(logits.float())
        last = batch
    # Padding forwards, so this rank makes `forwards` of them like every other (outputs dropped).
    for _ in range(forwards - len(logits_parts)):
        if last is None:
            assert padding_batch is not None, "a rank with no batch of its own needs a padding batch"
            last = to_device(padding_batch(), device, input_dtype)
        with autocast():
            model(last)
    model.train(was_training)
    all_logits = torch.cat(logits_parts).cpu().numpy() if logits_parts else np.zeros((0, num_labels), np.float32)
    return Predictions(
        ids=ids,
        probs=probabilities(torch.from_numpy(all_logits), multiclass).numpy(),
        labels=np.concatenate(labels) if labels else np.zeros((0, num_labels), np.int64),
        skipped=loader.skipped,
        logits=all_logits,
    )


def merge(parts: list[Predictions], expected: int, where: str) -> Predictions:
    """All ranks' predictions as one set, de-duplicated and checked against `expected`."""
    rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    for part in parts:
        for index, sample_id in enumerate(part.ids):
            logits = part.logits[index] if part.logits is not None else None
            rows.setdefault(sample_id, (part.probs[index], part.labels[index], logits))
    skipped = sum(part.skipped for part in parts)
    if len(rows) + skipped != expected:
        raise DataError(
            f"{where}: evaluated {len(rows)} distinct samples and skipped {skipped}, but the manifest lists {expected}"
        )
    ids = sorted(rows)
    logits = [rows[i][2] for i in ids]
    return Predictions(
        ids=ids,
        probs=np.stack([rows[i][0] for i in ids]),
        labels=np.stack([rows[i][1] for i in ids]),
        skipped=skipped,
        logits=np.stack(logits) if ids and not any(row is None for row in logits) else None,
    )


def evaluate_split(
    model: torch.nn.Module,
    cfg: Any,
    manifest: Manifest,
    split: str,
    token_encoder: Any,
    *,
    accelerator: Any = None,
    device: str | torch.device = "cpu",
    input_dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Predictions:
    """Every sample of `split` once, rows sorted by id, checked against the manifest.

    With an `accelerator`, each rank predicts its share (in its autocast) and the shares are
    gathered once, after the loop: every rank must call this. Without one, this process
    reads the whole split on `device`.
    """
    rank, world_size = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    loader = build_eval_loader(
        cfg.loader, manifest, split, token_encoder, rank=rank, world_size=world_size, images=cfg.model.uses_image
    )
    expected, where = manifest.split(split).num_samples, f"{manifest.path} split {split!r}"
    num_labels, multiclass = len(manifest.labels), manifest.labels.multiclass
    if accelerator is None:
        local = predict_local(
            model,
            loader,
            torch.device(device),
            progress=progress,
            desc=split,
            num_labels=num_labels,
            multiclass=multiclass,
        )
        return merge([local], expected, where)
    forwards = len(loader)
    if world_size > 1:  # one collective: the largest batch count, which every rank will run
        counts = accelerator.gather(torch.tensor([forwards], device=accelerator.device))
        forwards = int(counts.max())

    def padding_batch() -> dict[str, Any]:
        """One sample of the split, read on this process alone (a rank whose share is empty)."""
        solo = build_eval_loader(
            dataclasses.replace(cfg.loader, num_workers=0),
            manifest,
            split,
            token_encoder,
            rank=0,
            world_size=1,
            images=cfg.model.uses_image,
        )
        return next(iter(solo.start()))

    local = predict_local(
        model,
        loader,
        accelerator.device,
        input_dtype,
        accelerator.autocast,
        progress=accelerator.is_local_main_process,
        desc=split,
        num_labels=num_labels,
        multiclass=multiclass,
        forwards=forwards,
        padding_batch=padding_batch,
    )
    return merge(gather_object([local]) if world_size > 1 else [local], expected, where)
