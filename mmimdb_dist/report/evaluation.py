"""Evaluate one checkpoint of a run on dev or test: metrics, per-label CSV and figures.

One process, the plain eval path: the checkpoint's `inference/` export is loaded (no
Accelerate, no optimizer), the split is streamed once through the eval loader, and the
same scikit-learn metrics as in training are reported under both protocols. Thresholds
are always tuned on dev, so evaluating test needs dev predictions too; evaluating dev
reports dev-tuned figures on dev itself, which are optimistic and labelled so.

Output folder (default `<run>/evaluation/<checkpoint>-<split>/`):

    metrics.json        {split: {"threshold_0.5", "tuned_on_dev", "thresholds"}, ...}
                        (a multiclass model: {split: {"argmax", "thresholds": null}})
    per_label.csv       precision, recall, F1, support and tuned threshold per label
    training_curves.png, per_label_f1.png, pr_curves.png, cooccurrence.png
                        (a multiclass model: confusion.png instead of the last two)
    attention.png       attention fusion only: text-to-poster attention over a few posters
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.device import to_device
from ..data.loader import build_eval_loader
from ..data.manifest import MANIFEST_NAME, load_manifest
from ..data.training_data import load_training_manifest
from ..errors import DataError
from ..labels import LabelSet
from ..metrics import write_metrics_json, write_per_label_csv
from ..outputs import check_writable_folder
from ..run.checkpoints import resolve_checkpoint
from ..run.export import InferenceBundle, load_bundle
from ..run.layout import EVALUATION_DIR, INFERENCE_DIR, METRICS_LOG, PER_LABEL_CSV, run_dir_of_checkpoint
from ..run.metrics_log import read_records
from ..run.predictions import evaluate_split, probabilities
from ..run.protocol import protocol_report
from . import figures

logger = logging.getLogger(__name__)

ATTENTION_MOVIES = 4


@dataclass
class Evaluation:
    """Where the report went and what it says."""

    out_dir: Path
    checkpoint: Path
    split: str
    report: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


@torch.no_grad()
def attention_sample(
    bundle: InferenceBundle, manifest, split: str, count: int, thresholds: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(posters, patch-grid attention, captions) of the split's first `count` movies, or None
    when the model returns no text-to-poster attention."""
    loader = build_eval_loader(
        bundle.cfg.loader,
        manifest,
        split,
        bundle.token_encoder,
        rank=0,
        world_size=1,
        images=bundle.cfg.model.uses_image,
    )
    grid = bundle.cfg.model.image.patch_grid
    posters: list[Any] = []
    maps: list[Any] = []
    captions: list[str] = []
    for batch in loader.start():
        outputs = bundle.model(to_device(batch, device))
        attention = outputs.get("attention")
        if attention is None or attention.shape[-1] != grid * grid:
            return None
        mask = batch["attention_mask"].to(device).float()  # B x L, real plot tokens
        per_word = attention.float().mean(1)  # B x L x P, mean over heads
        weights = (per_word * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        probs = probabilities(outputs["logits"], bundle.labels.multiclass).cpu().numpy()
        names = bundle.labels.names
        for row in range(len(batch["ids"])):
            if len(posters) == count:
                break
            posters.append(batch["pixel_values"][row].numpy())
            maps.append(weights[row].cpu().numpy().reshape(grid, grid))
            truth = [g for g, flag in zip(names, batch["labels"][row].tolist(), strict=True) if flag]
            order = np.argsort(-probs[row], kind="stable")  # most probable first
            predicted = (
                [names[order[0]]]
                if bundle.labels.multiclass
                else [names[i] for i in order if probs[row][i] >= thresholds[i]]
            )
            captions.append(
                f"{batch['ids'][row]}\ntrue: {', '.join(truth[:4])}\npredicted: {', '.join(predicted[:4]) or '-'}"
            )
        if len(posters) == count:
            break
    if not posters:
        return None
    return np.stack(posters), np.stack(maps), captions


def write_figures(
    out: Path,
    labels: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | None,
    report: dict[str, Any],
    metrics_log: Path | None,
    label: str,
    training_title: str,
    label_set: LabelSet,
) -> list[Path]:
    """The figures of one evaluated split into `out` (`evaluate` and the trainer's final
    evaluation write the same set): training curves (when the run's log is there), F1 per
    label, and precision-recall per label with label co-occurrence (multi-label) or the
    confusion matrix (multiclass); axes carry the label set's names."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if metrics_log is not None and metrics_log.is_file():
        written.append(figures.training_curves(read_records(metrics_log), out / "training_curves.png", training_title))
    written.append(figures.per_label_f1(report, out / "per_label_f1.png", f"F1 per label: {label}"))
    if label_set.multiclass:
        written.append(
            figures.confusion(
                report["argmax"]["confusion_matrix"],
                label_set.names,
                out / "confusion.png",
                f"confusion matrix: {label}",
            )
        )
        return written
    assert thresholds is not None  # a multi-label report always has them
    written.append(figures.pr_curves(labels, probs, thresholds, out / "pr_curves.png", label_set.names))
    predicted = (probs >= thresholds).astype(np.int64)
    written.append(
        figures.cooccurrence(
            labels, predicted, out / "cooccurrence.png", label_set.names, title=f"label co-occurrence: {label}"
        )
    )
    return written


def evaluate_checkpoint(
    run_dir: str | Path | None,
    checkpoint: str = "best",
    split: str = "test",
    out_dir: str | Path | None = None,
    shards_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    attention_movies: int = ATTENTION_MOVIES,
) -> Evaluation:
    """Evaluate `checkpoint` (best, last or a folder) of `run_dir` on `split`; write the report."""
    if split not in ("dev", "test"):
        raise DataError(f"--split {split}: expected dev or test (thresholds are tuned on dev)")
    folder = resolve_checkpoint(run_dir, checkpoint)
    run = Path(run_dir) if run_dir is not None else run_dir_of_checkpoint(folder)
    bundle = load_bundle(folder, device)
    features_dir = bundle.cfg.loader.features_dir
    if features_dir and shards_dir is None:
        # A head trained on cached encoder features reads them again, not the raw shards.
        manifest = load_training_manifest(bundle.cfg.loader)
    else:
        shards = Path(shards_dir if shards_dir is not None else bundle.cfg.loader.shards_dir)
        if not (shards / MANIFEST_NAME).is_file():
            raise DataError(
                f"{shards}: no manifest.json (the run's loader.shards_dir); pass --shards DIR "
                "with the shard set the run was trained on"
            )
        manifest = load_manifest(shards)
    bundle.labels.check_same(manifest.labels, f"checkpoint {folder}", f"the shard set {manifest.path}")
    name = folder.resolve().name if folder.name != INFERENCE_DIR else folder.resolve().parent.name
    out = Path(out_dir) if out_dir is not None else (run or folder) / EVALUATION_DIR / f"{name}-{split}"
    check_writable_folder(out, "--out", "the evaluation report")  # before the evaluation, not after

    def predictions(name: str):
        return evaluate_split(
            bundle.model, bundle.cfg, manifest, name, bundle.token_encoder, device=device, progress=progress
        )

    dev = predictions("dev")
    evaluated = dev if split == "dev" else predictions(split)
    protocol = protocol_report(
        dev.labels, dev.probs, {} if split == "dev" else {split: (evaluated.labels, evaluated.probs)}, bundle.labels
    )
    thresholds, report = protocol["thresholds"], protocol[split]

    write_metrics_json(
        out / "metrics.json",
        {
            "checkpoint": str(folder),
            "split": split,
            "model": bundle.cfg.model.name,
            "shards": str(manifest.path),
            "num_samples": len(evaluated.ids),
            "skipped": evaluated.skipped,
            "thresholds_tuned_on": "dev" + (" (the evaluated split itself: optimistic)" if split == "dev" else ""),
            split: report,
        },
    )
    write_per_label_csv(out / PER_LABEL_CSV, {split: report})

    label = f"{run.name if run else folder.name} / {name} / {split}"
    written = write_figures(
        out,
        evaluated.labels,
        evaluated.probs,
        thresholds,
        report,
        run / METRICS_LOG if run is not None else None,
        label,
        f"training of {run.name}" if run is not None else "",
        bundle.labels,
    )
    # Cached features hold no posters to draw the attention over.
    if attention_movies > 0 and bundle.cfg.model.name == "attention_fusion" and not features_dir:
        sample = attention_sample(bundle, manifest, split, attention_movies, thresholds, device)
        if sample is not None:
            written.append(figures.attention_maps(*sample, out / "attention.png"))
    return Evaluation(out_dir=out, checkpoint=folder, split=split, report=report, figures=written)
