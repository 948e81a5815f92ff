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

from safetensors import SafetensorError, safe_open

from ..atomic import atomic_write_json, fsync_dir
from ..errors import CheckpointError
from ..labels import LabelSet
from .export import encoder_architectures, export_for_inference
from .files import file_listing, read_json, verify_files
from .layout import CHECKPOINTS_DIR, FILES_FILE, FINAL_METRICS, INFERENCE_DIR, STATE_FILE, WEIGHTS_FILE

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d+)-b(\d+)$")


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
            raise CheckpointError(
                f"{path}: expected the keys {sorted(names)}, got "
                f"{sorted(data) if isinstance(data, dict) else type(data).__name__}"
            )
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
        raise CheckpointError(
            f"--resume {resume}: not a complete checkpoint folder "
            f"(no {STATE_FILE}; expected a folder under {checkpoints_dir})"
        )
    return path


def prune(checkpoints_dir: Path, keep: int, protect: set[str]) -> None:
    """Keep the `keep` newest complete checkpoints plus the protected ones (the best)."""
    found = complete_checkpoints(checkpoints_dir)
    for path in found[:-keep] if keep else found:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(run_dir: str | Path | None, which: str = "best") -> Path:
    """`best` / `last` checkpoint of `run_dir`, or a checkpoint folder given by path."""
    if which not in ("best", "last"):
        path = Path(which)
        if not path.exists() and run_dir is not None and (Path(run_dir) / CHECKPOINTS_DIR / which).exists():
            path = Path(run_dir) / CHECKPOINTS_DIR / which
        if not path.is_dir():
            raise CheckpointError(
                f"--checkpoint {which}: not a checkpoint folder (expected best, last, "
                f"or a folder holding {INFERENCE_DIR}/ or model.safetensors)"
            )
        if run_dir is not None and not path.resolve().is_relative_to(Path(run_dir).resolve()):
            # The other run's checkpoint would be used under this run's name, without a word.
            raise CheckpointError(
                f"--checkpoint {which}: is not a checkpoint of --run {run_dir}; give one of that run's "
                "checkpoints (best, last or a name in its checkpoints/), or leave --run out"
            )
        return path
    if run_dir is None:
        raise CheckpointError(f"--checkpoint {which} needs --run RUN_DIR (or give a checkpoint folder)")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run folder does not exist")
    found = complete_checkpoints(run_dir / CHECKPOINTS_DIR)
    if not found:
        # `--run` naming the output_dir that holds runs (output_dir=runs/x with name=x gives runs/x/x)
        runs = sorted(p for p in run_dir.iterdir() if (p / CHECKPOINTS_DIR).is_dir()) if run_dir.is_dir() else []
        if runs and not (run_dir / CHECKPOINTS_DIR).is_dir():
            shown = ", ".join(str(p) for p in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            raise CheckpointError(f"{run_dir}: holds runs, not a run's checkpoints: {shown}; pass one of them as --run")
        raise CheckpointError(f"{run_dir / CHECKPOINTS_DIR}: no complete checkpoint (has the run been trained?)")
    if which == "last":
        return found[-1]
    final = run_dir / FINAL_METRICS
    name = read_json(final).get("best_checkpoint") if final.is_file() else None
    if name is None:  # training still going or stopped: the best so far
        name = read_json(found[-1] / STATE_FILE).get("best_checkpoint")
    if not isinstance(name, str) or not name:
        raise CheckpointError(
            f"{run_dir}: no best checkpoint recorded yet (no dev evaluation so far); use --checkpoint last"
        )
    if not (run_dir / CHECKPOINTS_DIR / name / STATE_FILE).is_file():
        raise CheckpointError(f"{run_dir / CHECKPOINTS_DIR / name}: the best checkpoint is missing or incomplete")
    return run_dir / CHECKPOINTS_DIR / name


def check_fits(
    checkpoint: Path, state: TrainerState, world_size: int, param_shapes: dict[str, tuple[int, ...]]
) -> None:
    """Refuse, before loading anything, a checkpoint that this run cannot continue."""
    if state.world_size != world_size:
        raise CheckpointError(
            f"{checkpoint / STATE_FILE}: world_size is {state.world_size}, expected {world_size} (the "
            f"processes of this run); the data position cannot carry over to another world size, so "
            f"resume with {state.world_size} process(es) or start a new run"
        )
    verify_files(checkpoint)
    weights = checkpoint / INFERENCE_DIR / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as handle:
        saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle is not iterable)
    for key, shape in param_shapes.items():
        if key not in saved:
            raise CheckpointError(
                f"{weights}: no tensor {key!r}, which the configured model has; the checkpoint is of another model"
            )
        if saved[key] != shape:
            raise CheckpointError(
                f"{weights}: {key!r} has shape {list(saved[key])}, the configured "
                f"model expects {list(shape)}; the checkpoint is of another model"
            )
    extra = sorted(set(saved) - set(param_shapes))
    if extra:
        raise CheckpointError(
            f"{weights}: tensors the configured model lacks ({extra[:3]}); the checkpoint is of another model"
        )


def save_checkpoint(
    accelerator: Any,
    model: Any,
    checkpoints_dir: Path,
    state: TrainerState,
    config_text: str,
    token_encoder: Any,
    labels: LabelSet,
) -> Path:
    """Save on every rank into a temp folder; the main rank completes and renames it.

    A failed write (a full disk) removes the temp folder and is reported as one error; the
    checkpoints already there are untouched.
    """
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
            export_for_inference(
                tmp / INFERENCE_DIR,
                state_dict,
                config_text,
                token_encoder,
                labels,
                encoder_architectures(unwrapped),
                same_weights_as=tmp / WEIGHTS_FILE,
            )
            atomic_write_json(tmp / FILES_FILE, file_listing(tmp))
            atomic_write_json(tmp / STATE_FILE, dataclasses.asdict(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(checkpoints_dir)
    except (OSError, RuntimeError, SafetensorError) as exc:  # how torch and safetensors report a failed write
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(exc).split())
        raise CheckpointError(
            f"{tmp}: writing the checkpoint failed ({reason}); it was removed, the "
            f"earlier checkpoints in {checkpoints_dir} are intact"
        ) from None
    accelerator.wait_for_everyone()
    return final


def clean_temp_folders(checkpoints_dir: Path) -> None:
    """Remove leftovers of saves interrupted by a crash."""
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
