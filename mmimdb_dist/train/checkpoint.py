"""Checkpoints: complete or absent, bounded in number, resumable, and loadable for inference.

Layout of `<run>/checkpoints/step-<optimizer step>-b<batches trained>/`:

* Accelerate's `save_state` files: model, optimizer, scheduler and every rank's RNG states.
  All ranks call it (DeepSpeed shards its state across ranks and needs each of them).
* `inference/`: `model.safetensors` (the unwrapped state dict), the resolved `config.yaml`,
  `genres.json` and the token encoder (`vocabulary.json` or a `tokenizer/` folder), which is
  all `load_for_inference` needs: no optimizer, no Accelerate.
* `trainer_state.json`, written last: epoch, batch position in the epoch, step, best metric.

Everything is written into a hidden `.tmp-<name>` folder that is renamed into place only
when complete, so a crash (or SIGKILL) mid-save leaves a temp folder that resume ignores
and the next save removes, never a half checkpoint under a real name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, fsync_dir
from ..errors import MmimdbError

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
INFERENCE_DIR = "inference"
_NAME = re.compile(r"^step-(\d+)-b(\d+)$")


class CheckpointError(MmimdbError):
    """A checkpoint that is missing, incomplete or does not fit the configured run."""


@dataclass
class TrainerState:
    """Where training stands; restored on resume together with Accelerate's state."""

    epoch: int = 0
    # Batches of `epoch` already trained; equal to the epoch's batch count once it is done.
    batch_in_epoch: int = 0
    # Optimizer steps and micro-batches since the start of training.
    step: int = 0
    batches_seen: int = 0
    # Best dev macro-F1 at threshold 0.5 so far, and where it was reached.
    best_metric: float | None = None
    best_checkpoint: str | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable trainer state ({exc})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise CheckpointError(f"{path}: expected the keys {sorted(names)}, got "
                                  f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
        return cls(**data)


def checkpoint_name(state: TrainerState) -> str:
    return f"step-{state.step:08d}-b{state.batches_seen:09d}"


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints (their trainer state written), oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(2)), path))
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str | None, checkpoints_dir: Path) -> Path | None:
    """`auto`: the newest complete checkpoint, or None to start fresh; else the given folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"--resume {resume}: not a complete checkpoint folder "
                              f"(no {STATE_FILE}; expected a folder under {checkpoints_dir})")
    return path


def prune(checkpoints_dir: Path, keep: int, protect: set[str]) -> None:
    """Keep the `keep` newest complete checkpoints plus the protected ones (the best)."""
    found = complete_checkpoints(checkpoints_dir)
    for path in found[:-keep] if keep else found:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)


def export_for_inference(folder: Path, state_dict: dict[str, Any], config_text: str,
                         token_encoder: Any, text_encoder_config: Any = None) -> None:
    """Pure tensors (safetensors), the config and the token encoder: enough to rebuild and predict."""
    from safetensors.torch import save_file

    from ..atomic import atomic_write_text
    from ..data.vocab import Vocabulary
    from ..genres import GENRES

    folder.mkdir(parents=True, exist_ok=True)
    # Cloned so tensors that share storage (tied weights) save as separate entries.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    atomic_write_text(folder / "config.yaml", config_text)
    atomic_write_json(folder / "genres.json", list(GENRES))
    if isinstance(token_encoder, Vocabulary):
        token_encoder.save(folder / "vocabulary.json")
    else:
        token_encoder.tokenizer.save_pretrained(str(folder / "tokenizer"))
    if text_encoder_config is not None:  # lets a Hugging Face encoder be rebuilt offline
        text_encoder_config.save_pretrained(str(folder / "text_encoder"))


def save_checkpoint(accelerator: Any, model: Any, checkpoints_dir: Path, state: TrainerState,
                    config_text: str, token_encoder: Any) -> Path:
    """Save on every rank into a temp folder; the main rank completes and renames it."""
    name = checkpoint_name(state)
    final = checkpoints_dir / name
    tmp = checkpoints_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    state_dict = accelerator.get_state_dict(model)  # a collective under DeepSpeed ZeRO-3
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        text_encoder = getattr(unwrapped, "text_encoder", None)
        hf_config = getattr(getattr(text_encoder, "model", None), "config", None)
        export_for_inference(tmp / INFERENCE_DIR, state_dict, config_text, token_encoder, hf_config)
        atomic_write_json(tmp / STATE_FILE, dataclasses.asdict(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(checkpoints_dir)
    accelerator.wait_for_everyone()
    return final


def clean_temp_folders(checkpoints_dir: Path) -> None:
    """Remove leftovers of saves interrupted by a crash."""
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)


def load_for_inference(checkpoint: str | Path, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model in eval mode, ExperimentConfig, token encoder) from a checkpoint folder.

    Accepts the checkpoint folder or its `inference/` folder. The weights are read with
    safetensors (no pickle), so a checkpoint from elsewhere cannot run code when loaded.
    """
    from safetensors.torch import load_file

    from ..config import load_config
    from ..data.text import HFTokenEncoder
    from ..data.vocab import Vocabulary
    from ..models import build_model

    folder = Path(checkpoint)
    if (folder / INFERENCE_DIR).is_dir():
        folder = folder / INFERENCE_DIR
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no model.safetensors (expected a checkpoint folder "
                              f"or its {INFERENCE_DIR}/ folder)")
    cfg = load_config(folder / "config.yaml")
    if (folder / "vocabulary.json").is_file():
        token_encoder: Any = Vocabulary.load(folder / "vocabulary.json")
        vocab_size: int | None = len(token_encoder)
    else:
        token_encoder = HFTokenEncoder.from_pretrained(folder / "tokenizer")
        vocab_size = None
    if (folder / "text_encoder").is_dir():
        # Architecture from the saved config; the weights come from the safetensors file.
        cfg.model.text.name = str(folder / "text_encoder")
        cfg.model.text.pretrained = False
        cfg.model.text.hf_config = {}
    if cfg.model.image.kind != "cnn":
        cfg.model.image.pretrained = False
        cfg.model.image.weights_path = None
    model = build_model(cfg.model, vocab_size=vocab_size, pad_id=token_encoder.pad_id)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not fit the model of its config.yaml "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg, token_encoder
