"""Checkpoints: complete or absent, bounded in number, resumable, and loadable for inference.

Layout of `<run>/checkpoints/step-<optimizer step>-b<batches trained>/`:

* Accelerate's `save_state` files: model, optimizer, scheduler and every rank's RNG states.
  All ranks call it (DeepSpeed shards its state across ranks and needs each of them).
* `inference/`: `model.safetensors` (the unwrapped state dict), the resolved `config.yaml`,
  `genres.json` and the token encoder (`vocabulary.json` or a `tokenizer/` folder), which is
  all `load_for_inference` needs: no optimizer, no Accelerate.
* `files.json`: size and SHA-256 of every file above, so a truncated or corrupted file is
  named on resume instead of failing deep inside `torch.load`.
* `trainer_state.json`, written last: epoch, batch position in the epoch, step, best metric,
  and the world size the run had.

A checkpoint resumes only under the world size it was saved with: the batch position and
each rank's RNG state belong to one way of splitting the data across ranks, which another
number of processes cannot continue exactly. Its `inference/` export loads anywhere.

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
from ..digest import file_sha256
from ..errors import MmimdbError

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
FILES_FILE = "files.json"
INFERENCE_DIR = "inference"
COMPILED_PREFIX = "_orig_mod."
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
    # Best dev `train.select_metric` so far, and where it was reached.
    best_metric: float | None = None
    best_checkpoint: str | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    # Processes of the run that saved it: the batch position is a position in that split.
    world_size: int = 1
    # Wall time spent in training epochs (evaluation excluded) and samples trained on, summed
    # over every process and over resumes: what `compare` reports as cost and throughput.
    train_seconds: float = 0.0
    samples_trained: int = 0

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


def encoder_architectures(model: Any) -> dict[str, Any]:
    """The Hugging Face configs of a model's encoders by export folder name (`text_encoder`,
    `image_encoder`): with them a checkpoint rebuilds offline, without the pretrained files."""
    found = {}
    for folder in ("text_encoder", "image_encoder"):
        encoder = getattr(model, folder, None)
        inner = getattr(encoder, "model", None) or getattr(encoder, "tower", None)
        config = getattr(encoder, "dual_config", None) or getattr(inner, "config", None)
        if config is not None and hasattr(config, "save_pretrained"):
            found[folder] = config
    return found


def export_for_inference(folder: Path, state_dict: dict[str, Any], config_text: str,
                         token_encoder: Any, architectures: dict[str, Any] | None = None) -> None:
    """Pure tensors (safetensors), the config and the token encoder: enough to rebuild and predict."""
    from safetensors.torch import save_file

    from ..atomic import atomic_write_text
    from ..data.vocab import Vocabulary
    from ..genres import GENRES

    folder.mkdir(parents=True, exist_ok=True)
    # Cloned so tensors that share storage (tied weights) save as separate entries. A
    # torch.compile'd model names its tensors `_orig_mod.<name>`: the export uses the plain
    # module's names, so it loads into a model built from the config, compiled or not.
    tensors = {k.removeprefix(COMPILED_PREFIX): v.detach().to("cpu").contiguous().clone()
               for k, v in state_dict.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    atomic_write_text(folder / "config.yaml", config_text)
    atomic_write_json(folder / "genres.json", list(GENRES))
    if isinstance(token_encoder, Vocabulary):
        token_encoder.save(folder / "vocabulary.json")
    else:
        token_encoder.tokenizer.save_pretrained(str(folder / "tokenizer"))
    for name, architecture in (architectures or {}).items():  # rebuilt offline from these
        architecture.save_pretrained(str(folder / name))


def _file_listing(folder: Path) -> dict[str, dict[str, Any]]:
    return {path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(folder.rglob("*")) if path.is_file()}


def verify_files(checkpoint: Path, within: str | None = None,
                 advice: str = "resume from an earlier checkpoint") -> None:
    """Every file listed in `files.json` (or only those under `within/`) is there with its
    saved size and digest; `advice` ends each error (resuming and predicting differ there)."""
    listing_path = checkpoint / FILES_FILE
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{listing_path}: unreadable file listing ({exc}); {advice}") from None
    for name, expected in sorted(listing.items()):
        if within is not None and not name.startswith(f"{within}/"):
            continue
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {FILES_FILE}); {advice}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            cause = "truncated" if size < expected["bytes"] else "changed since it was saved"
            raise CheckpointError(f"{path}: {size} bytes, expected {expected['bytes']} ({cause}); {advice}")
        if file_sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: content differs from the SHA-256 in {FILES_FILE} (corrupted); "
                                  f"{advice}")


def check_fits(checkpoint: Path, state: TrainerState, world_size: int,
               param_shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse, before loading anything, a checkpoint that this run cannot continue."""
    if state.world_size != world_size:
        raise CheckpointError(
            f"{checkpoint / STATE_FILE}: world_size is {state.world_size}, expected {world_size} (the "
            f"processes of this run); the data position cannot carry over to another world size, so "
            f"resume with {state.world_size} process(es) or start a new run")
    verify_files(checkpoint)
    from safetensors import safe_open

    weights = checkpoint / INFERENCE_DIR / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    for key, shape in param_shapes.items():
        if key not in saved:
            raise CheckpointError(f"{weights}: no tensor {key!r}, which the configured model has; "
                                  f"the checkpoint is of another model")
        if saved[key] != shape:
            raise CheckpointError(f"{weights}: {key!r} has shape {list(saved[key])}, the configured "
                                  f"model expects {list(shape)}; the checkpoint is of another model")
    extra = sorted(set(saved) - set(param_shapes))
    if extra:
        raise CheckpointError(f"{weights}: tensors the configured model lacks ({extra[:3]}); "
                              f"the checkpoint is of another model")


def save_checkpoint(accelerator: Any, model: Any, checkpoints_dir: Path, state: TrainerState,
                    config_text: str, token_encoder: Any) -> Path:
    """Save on every rank into a temp folder; the main rank completes and renames it.

    A failed write (a full disk) removes the temp folder and is reported as one error; the
    checkpoints already there are untouched.
    """
    from safetensors import SafetensorError

    name = checkpoint_name(state)
    final = checkpoints_dir / name
    tmp = checkpoints_dir / f".tmp-{name}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        state_dict = accelerator.get_state_dict(model)  # a collective under DeepSpeed ZeRO-3
        accelerator.wait_for_everyone()  # every rank's files are in before they are listed
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            export_for_inference(tmp / INFERENCE_DIR, state_dict, config_text, token_encoder,
                                 encoder_architectures(unwrapped))
            atomic_write_json(tmp / FILES_FILE, _file_listing(tmp))
            atomic_write_json(tmp / STATE_FILE, dataclasses.asdict(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(checkpoints_dir)
    except (OSError, RuntimeError, SafetensorError) as exc:  # how torch and safetensors report a failed write
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(exc).split())
        raise CheckpointError(f"{tmp}: writing the checkpoint failed ({reason}); it was removed, the "
                              f"earlier checkpoints in {checkpoints_dir} are intact") from None
    accelerator.wait_for_everyone()
    return final


def add_inference_files(checkpoint: Path, documents: dict[str, Any]) -> None:
    """Write JSON `documents` into a complete checkpoint's `inference/` and list them in files.json.

    The final evaluation adds what only exists once training is over (the dev-tuned
    thresholds, the shard preprocessing), so the best checkpoint alone is enough to predict.
    Each file is written atomically before files.json names it: a crash in between leaves
    an extra file that nothing checks, never a listing that names a missing file.
    """
    listing_path = checkpoint / FILES_FILE
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{listing_path}: unreadable file listing ({exc})") from None
    for name, document in documents.items():
        path = checkpoint / INFERENCE_DIR / name
        atomic_write_json(path, document)
        listing[f"{INFERENCE_DIR}/{name}"] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    atomic_write_json(listing_path, dict(sorted(listing.items())))


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
    from ..data.sources import feature_spec
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
        if cfg.model.text.kind == "clip" and cfg.model.uses_text:  # plots cut into the tower's windows
            from ..data.text import WindowedTokenEncoder
            from ..models.dual import text_window
            from ..models.hub import load_hf_config

            window = text_window(load_hf_config("model.text.name", str(folder / "text_encoder")))
            token_encoder = WindowedTokenEncoder(token_encoder.tokenizer, window)
    # Architectures from the saved configs; the weights come from the safetensors file.
    shared = cfg.model.shares_dual_encoder
    for part, section in (("text_encoder", cfg.model.text), ("image_encoder", cfg.model.image)):
        if (folder / part).is_dir():
            section.name = str(folder / ("image_encoder" if shared else part))
            section.hf_config = {}
    cfg.model.text.pretrained = cfg.model.text.kind == "bilstm" and cfg.model.text.pretrained
    if cfg.model.image.kind != "cnn":
        cfg.model.image.pretrained = False
        cfg.model.image.weights_path = None
    # A head trained on cached features (loader.features_dir) reads that set's feature rows.
    model = build_model(cfg.model, vocab_size=vocab_size, pad_id=token_encoder.pad_id,
                        features=feature_spec(cfg.loader))
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as exc:  # shapes of another model under the same tensor names
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{weights}: does not fit the model of its config.yaml ({reason})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not fit the model of its config.yaml "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg, token_encoder
