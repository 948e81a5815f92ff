"""`mmimdb-dist cache-features`: run a config's encoders once over every split, store the outputs.

The encoders are built exactly as the config's model builds them (pretrained weights, a
seeded random initialisation otherwise), put in eval mode and frozen, and applied to every
sample of every split in shard order: the plot through the tokenizer the run would use,
the poster decoded with the eval transform (no augmentation). Their weights are saved with
the features, so what made a features set can be checked and remade.

Crash safety follows the shard writer: the old manifest is removed first, every tar is
written atomically, and the manifest is written last; a folder without one is incomplete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.batches import collate_samples
from ..data.codecs import EncodedSample, ShardCodec
from ..data.device import to_device
from ..data.features import (
    ENCODERS_FILE,
    FeatureSet,
    FeatureSpec,
    load_feature_set,
    write_feature_manifest,
    write_feature_shard,
)
from ..data.images import decode_poster
from ..data.manifest import MANIFEST_NAME, SPLITS, Manifest, load_manifest
from ..data.plots import read_shard_split_texts
from ..data.shard import owns_shard_file
from ..data.tario import iter_samples, skip_rest_of_tar
from ..data.tokens import choose_token_encoder, owns_token_file, save_token_encoder, token_encoder_size
from ..errors import ConfigError, DataError
from ..outputs import claim_output_dir
from ..progress import progress as progress_bar
from ..run.layout import CONFIG_FILE
from ..schema import ExperimentConfig, save_config
from .encoder import FeatureEncoder
from .preprocess import resolve_image_size
from .registry import build_model

logger = logging.getLogger(__name__)


@dataclass
class Encoders:
    text: FeatureEncoder | None  # None: the config's model reads no plot
    image: FeatureEncoder | None  # None: it reads no poster
    token_encoder: Any


def build_frozen_encoders(cfg: ExperimentConfig, manifest: Manifest, out_dir: Path | None = None) -> Encoders:
    """The config's text and image encoders, frozen, with the run's tokenizer (saved to out_dir)."""

    token_encoder = choose_token_encoder(cfg, lambda: read_shard_split_texts(manifest, "train").texts)
    torch.manual_seed(cfg.train.seed if cfg.train.seed is not None else cfg.seed)
    model = build_model(
        cfg.model,
        num_labels=len(manifest.labels),
        vocab_size=token_encoder_size(token_encoder),
        pad_id=token_encoder.pad_id,
    )
    model.eval().requires_grad_(False)
    if out_dir is not None:
        from safetensors.torch import save_file

        save_token_encoder(token_encoder, out_dir)
        tensors = {
            k: v.detach().cpu().contiguous().clone()
            for k, v in model.state_dict().items()
            if k.startswith(("text_encoder.", "image_encoder."))
        }
        save_file(tensors, str(out_dir / ENCODERS_FILE))
    return Encoders(model.text_encoder, model.image_encoder, token_encoder)


def _read_samples(path: Path, token_encoder: Any, max_length: int, num_labels: int) -> tuple[list[Any], int]:
    """Parsed samples of one source shard in order; bad ones skipped (counted), as the loaders do."""
    samples, skipped = [], 0

    codec = ShardCodec(token_encoder, max_length, num_labels)
    for raw in iter_samples(path, on_error=skip_rest_of_tar):
        try:
            samples.append(codec.parse(raw))
        except DataError as exc:
            logger.warning("skipped: %s", exc)
            skipped += 1
    return samples, skipped


@torch.no_grad()
def encode_batch(
    encoders: Encoders, samples: list[Any], image_size: int, device: torch.device, sequences: bool, dtype: np.dtype
) -> list[EncodedSample]:
    """One batch through the config's encoders; per-sample rows (pooled first, then the sequence).

    A plot-only movie gets no image rows (the head reads it as a missing poster)."""
    pixels = None
    if encoders.image is not None:
        pixels = [
            decode_poster(s.jpeg, image_size, augment=False)
            if s.jpeg
            else torch.zeros(3, image_size, image_size, dtype=torch.uint8)
            for s in samples
        ]
    batch = to_device(collate_samples(samples, pixels, 0, pad_id=encoders.token_encoder.pad_id), device)
    text = encoders.text(batch["input_ids"], batch["attention_mask"]) if encoders.text is not None else None
    image = encoders.image(batch["pixel_values"]) if encoders.image is not None else None

    def rows(pooled: torch.Tensor, sequence: torch.Tensor) -> np.ndarray:
        parts = [pooled.unsqueeze(0), sequence] if sequences else [pooled.unsqueeze(0)]
        return torch.cat(parts).float().cpu().numpy().astype(dtype)

    out = []
    for row, sample in enumerate(samples):
        out.append(
            EncodedSample(
                id=sample.id,
                labels=list(sample.labels),
                text=rows(text.pooled[row], text.tokens[row][text.mask[row]]) if text is not None else None,
                image=rows(image.pooled[row], image.patches[row]) if image is not None and sample.jpeg else None,
            )
        )
    return out


def cache_features(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    sequences: bool = True,
    dtype: str = "float32",
    device: str | None = None,
    progress: bool = True,
) -> FeatureSet:
    """Write the features set of `cfg`'s encoders over `cfg.loader.shards_dir` into `out_dir`
    (new, empty or a features set, locked while it is written: mmimdb_dist/outputs.py)."""

    manifest = load_manifest(cfg.loader.shards_dir)
    out = Path(out_dir)
    if out.resolve() == manifest.directory.resolve():
        raise ConfigError(f"--out {out}: is the shard folder itself; choose another folder")
    with claim_output_dir(out, "--out", "cache-features", "a features set", owns_features_file, is_features_set):
        return _cache_into(cfg, manifest, out, sequences=sequences, dtype=dtype, device=device, progress=progress)


def is_features_set(folder: Path) -> bool:
    """Whether `folder` holds a features set by its content: a manifest that reads as one."""
    try:
        load_feature_set(folder)
    except DataError:
        return False
    return True


def owns_features_file(name: str) -> bool:
    """The names a features set's folder holds (what `cache-features --out` may replace)."""

    return owns_shard_file(name) or owns_token_file(name) or name == ENCODERS_FILE


def _cache_into(
    cfg: ExperimentConfig,
    manifest: Manifest,
    out: Path,
    *,
    sequences: bool,
    dtype: str,
    device: str | None,
    progress: bool,
) -> FeatureSet:

    (out / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until the new one is written
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    cfg = resolve_image_size(cfg)
    image_size = cfg.loader.image_size
    if image_size is None:  # resolve_image_size writes it out
        raise ConfigError("loader.image_size: not resolved for the config's image encoder")
    encoders = build_frozen_encoders(cfg, manifest, out)
    for encoder in (encoders.text, encoders.image):
        if encoder is not None:
            encoder.to(torch_device)
    save_config(cfg, out / CONFIG_FILE)
    np_dtype = np.dtype(dtype)
    batch_size = cfg.loader.eval_batch_size
    splits: dict[str, dict[str, Any]] = {}
    skipped_total = 0
    total = sum(manifest.split(s).num_samples for s in SPLITS)
    bar = progress_bar(total=total, desc="cache-features", unit="movie", disable=not progress)
    for split in SPLITS:
        shards, counts, written = [], [0] * len(manifest.labels), 0
        for shard in manifest.split(split).shards:
            samples, skipped = _read_samples(
                manifest.directory / shard.name,
                encoders.token_encoder,
                cfg.loader.max_text_length,
                len(manifest.labels),
            )
            skipped_total += skipped + max(shard.num_samples - len(samples) - skipped, 0)
            encoded = []
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                encoded += encode_batch(encoders, chunk, image_size, torch_device, sequences, np_dtype)
                bar.update(len(chunk))
            shards.append(write_feature_shard(out / shard.name, encoded))
            for sample in encoded:
                for i, flag in enumerate(sample.labels):
                    counts[i] += flag
            written += len(encoded)
        splits[split] = {"num_samples": written, "shards": shards, "label_counts": counts}
    bar.close()
    if not any(info["num_samples"] for info in splits.values()):
        raise DataError(f"{manifest.directory}: no sample could be encoded")
    spec = FeatureSpec(
        text_dim=int(encoders.text.out_dim) if encoders.text is not None else 0,
        image_dim=int(encoders.image.out_dim) if encoders.image is not None else 0,
        sequences=sequences,
        dtype=dtype,
    )
    write_feature_manifest(
        out,
        manifest,
        spec,
        splits,
        {"unreadable": skipped_total} if skipped_total else {},
        {
            "model": cfg.model.name,
            "text_kind": cfg.model.text.kind,
            "text_name": cfg.model.text.name if cfg.model.text.brings_tokenizer else None,
            "image_kind": cfg.model.image.kind,
            "image_name": cfg.model.image.name or None,
            "image_size": cfg.loader.image_size,
            "max_text_length": cfg.loader.max_text_length,
        },
    )
    return load_feature_set(out)
