"""Which checkpoint to load, and loading it with nothing but its `inference/` folder.

Nothing is unpickled: weights are safetensors, everything else JSON or YAML (safe loader).
Files listed in the checkpoint's `files.json` are checked (size, SHA-256) first, so a
truncated or swapped file is named instead of failing deep inside a loader; only the
`inference/` files are checked, since a prediction never reads the optimizer state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..genres import GENRES
from ..train.checkpoint import (FILES_FILE, INFERENCE_DIR, STATE_FILE, CheckpointError, complete_checkpoints,
                                load_for_inference, verify_files)

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
PREPROCESSING_FILE = "preprocessing.json"
FINAL_METRICS = "final_metrics.json"


@dataclass
class InferenceBundle:
    """A loaded model with everything needed to prepare its inputs and read its outputs."""

    checkpoint: Path
    model: Any
    cfg: Any
    token_encoder: Any
    # Per-genre thresholds (GENRES order); 0.5 everywhere when the checkpoint has none.
    thresholds: np.ndarray
    thresholds_source: str
    # How `mmimdb-dist shard` turned raw movies into samples for this model's training.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_text(self) -> bool:
        return self.cfg.model.uses_text

    @property
    def uses_image(self) -> bool:
        return self.cfg.model.uses_image


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc}); the file is truncated or corrupt") from None


def resolve_checkpoint(run_dir: str | Path | None, which: str = "best") -> Path:
    """`best` / `last` checkpoint of `run_dir`, or a checkpoint folder given by path."""
    if which not in ("best", "last"):
        path = Path(which)
        if not path.exists() and run_dir is not None and (Path(run_dir) / "checkpoints" / which).exists():
            path = Path(run_dir) / "checkpoints" / which
        if not path.is_dir():
            raise CheckpointError(f"--checkpoint {which}: not a checkpoint folder (expected best, last, "
                                  f"or a folder holding {INFERENCE_DIR}/ or model.safetensors)")
        return path
    if run_dir is None:
        raise CheckpointError(f"--checkpoint {which} needs --run RUN_DIR (or give a checkpoint folder)")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run folder does not exist")
    found = complete_checkpoints(run_dir / "checkpoints")
    if not found:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no complete checkpoint (has the run been trained?)")
    if which == "last":
        return found[-1]
    final = run_dir / FINAL_METRICS
    name = _read_json(final).get("best_checkpoint") if final.is_file() else None
    if name is None:  # training still going or stopped: the best so far
        name = _read_json(found[-1] / STATE_FILE).get("best_checkpoint")
    if not name:
        raise CheckpointError(f"{run_dir}: no best checkpoint recorded yet (no dev evaluation so far); "
                              "use --checkpoint last")
    if not (run_dir / "checkpoints" / name / STATE_FILE).is_file():
        raise CheckpointError(f"{run_dir / 'checkpoints' / name}: the best checkpoint is missing or incomplete")
    return run_dir / "checkpoints" / name


def _check_genres(path: Path, genres: Any) -> None:
    if genres != list(GENRES):
        raise CheckpointError(f"{path}: genres {genres!r:.120} are not this toolkit's 23 MM-IMDb genres "
                              "in their order; the checkpoint is of another model")


def _thresholds(folder: Path) -> tuple[np.ndarray, str]:
    path = folder / THRESHOLDS_FILE
    if not path.is_file():
        logger.warning("%s: no %s (only the best checkpoint of a finished run has one); "
                       "genres are marked at threshold 0.5", folder, THRESHOLDS_FILE)
        return np.full(len(GENRES), 0.5), "0.5 (the checkpoint has no tuned thresholds)"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected an object with 'genres' and 'thresholds'")
    _check_genres(path, data.get("genres"))
    values = data.get("thresholds")
    if (not isinstance(values, list) or len(values) != len(GENRES)
            or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values)):
        raise CheckpointError(f"{path}: key 'thresholds': expected {len(GENRES)} numbers in [0, 1]")
    return np.asarray(values, dtype=np.float64), f"tuned per genre on the {data.get('tuned_on', 'dev split')}"


def _preprocessing(folder: Path, cfg: Any) -> dict[str, Any]:
    path = folder / PREPROCESSING_FILE
    if path.is_file():
        data = _read_json(path)
        keys = ("plot_policy", "poster_short_side", "jpeg_quality")
        if not isinstance(data, dict) or any(key not in data for key in keys):
            raise CheckpointError(f"{path}: expected the keys {', '.join(keys)}")
        return data
    logger.warning("%s: no %s; posters and plots are prepared with the config's shard and data "
                   "settings, which may differ from those of the shards it was trained on", folder,
                   PREPROCESSING_FILE)
    return {"plot_policy": cfg.data.plot_policy, "poster_short_side": cfg.shard.poster_short_side,
            "jpeg_quality": cfg.shard.jpeg_quality}


def load_bundle(checkpoint: str | Path, device: str = "cpu") -> InferenceBundle:
    """Verify, then load a checkpoint folder (or its `inference/` folder) for prediction."""
    from safetensors import SafetensorError

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint}: not a checkpoint folder")
    folder = checkpoint / INFERENCE_DIR if (checkpoint / INFERENCE_DIR).is_dir() else checkpoint
    for name in ("model.safetensors", "config.yaml", "genres.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: no {name} (expected a checkpoint folder or its "
                                  f"{INFERENCE_DIR}/ folder)")
    if folder != checkpoint and (checkpoint / FILES_FILE).is_file():
        verify_files(checkpoint, within=INFERENCE_DIR,
                     advice="the checkpoint was damaged or its files replaced by another model's file; "
                            "use the checkpoint as training saved it")
    _check_genres(folder / "genres.json", _read_json(folder / "genres.json"))
    weights = folder / "model.safetensors"
    try:
        model, cfg, token_encoder = load_for_inference(folder, device)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc}); "
                              "the file is truncated or corrupt") from None
    thresholds, source = _thresholds(folder)
    return InferenceBundle(checkpoint=checkpoint, model=model, cfg=cfg, token_encoder=token_encoder,
                           thresholds=thresholds, thresholds_source=source,
                           preprocessing=_preprocessing(folder, cfg))
