"""When a run saves its checkpoints, which it keeps, and how it resumes from one.

A checkpoint follows every dev evaluation (so the best one is always on disk and no evaluation
is replayed on resume) and every `train.checkpoint_every_steps` optimizer steps; a stop signal
saves one at the step where the ranks agreed to stop, if none was just saved. Older ones are
pruned to `train.keep_checkpoints`, never the best. Resuming checks that the checkpoint fits
this run (world size, parameter shapes, label set) before anything is loaded, and drops the
log lines written after it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from accelerate.utils import load
from accelerate.utils.constants import RNG_STATE_NAME

from ..errors import CheckpointError, ConfigError
from ..run.checkpoints import (
    TrainerState,
    check_fits,
    clean_temp_folders,
    complete_checkpoints,
    prune,
    resolve_resume,
    save_checkpoint,
)
from ..run.export import read_label_set
from ..run.layout import CONFIG_FILE, INFERENCE_DIR, STATE_FILE
from ..schema import ExperimentConfig
from .logger import TrainLogger
from .tracking import flat_hparams

logger = logging.getLogger(__name__)


def config_changes(saved: str, current: str, shown: int = 5) -> str:
    """The keys whose values differ between two resolved configs, each with both values
    (`train.lr 0.01 -> 0.003`), the first `shown` of them; empty when none does."""
    before, after = flat_hparams(yaml.safe_load(saved) or {}), flat_hparams(yaml.safe_load(current) or {})
    keys = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    parts = [f"{key} {before.get(key, '(absent)')} -> {after.get(key, '(absent)')}" for key in keys[:shown]]
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(parts) + more


class Checkpointer:
    """Saves and restores the run's checkpoints (every rank takes part in each)."""

    def __init__(self, cfg: ExperimentConfig, run: Any, log: TrainLogger, config_text: str) -> None:
        # `run`: the trainer, for what it built (accelerator, model, token encoder, labels).
        self.cfg, self.run, self.log, self.config_text = cfg, run, log, config_text
        self.directory: Path = run.checkpoints_dir

    def due(self, state: TrainerState, evaluated: bool) -> bool:
        """Whether the optimizer step just taken is saved: after an evaluation, or on schedule."""
        every = self.cfg.train.checkpoint_every_steps
        return evaluated or bool(every and state.step % every == 0)

    def save(self, state: TrainerState) -> None:
        run = self.run
        save_checkpoint(
            run.accelerator, run.model, self.directory, state, self.config_text, run.token_encoder, run.labels
        )
        if run.main:
            protect = {state.best_checkpoint} if state.best_checkpoint else set()
            prune(self.directory, self.cfg.train.keep_checkpoints, protect)
        run.accelerator.wait_for_everyone()

    def resume(self, resume: str | None, param_shapes: dict[str, tuple[int, ...]]) -> TrainerState | None:
        """The state of the checkpoint `resume` names (`auto`, a path, or None for a new run),
        loaded into the model, optimizer, scheduler and RNGs; None when the run starts afresh."""
        run = self.run
        if run.main:
            clean_temp_folders(self.directory)
        run.accelerator.wait_for_everyone()
        checkpoint = resolve_resume(resume, self.directory)
        if checkpoint is None:
            if complete_checkpoints(self.directory):
                raise ConfigError(
                    f"{self.directory} already holds checkpoints; pass --resume auto "
                    "to continue that run, or set another `name` / `output_dir`"
                )
            self.log.forget_unfinished_start()
            return None
        state = TrainerState.read(checkpoint / STATE_FILE)
        check_fits(checkpoint, state, run.world_size, param_shapes)
        read_label_set(checkpoint / INFERENCE_DIR).check_same(
            run.labels, f"checkpoint {checkpoint}", f"the data {run.manifest.path}"
        )
        self._check_rng_state(checkpoint)
        try:
            run.accelerator.load_state(str(checkpoint))
        except (RuntimeError, ValueError, KeyError) as exc:  # e.g. optimizer groups of another config
            reason = " ".join(str(exc).split())
            raise CheckpointError(f"{checkpoint}: does not fit the configured run ({reason})") from None
        saved_config = checkpoint / INFERENCE_DIR / CONFIG_FILE
        if saved_config.is_file() and run.main:
            changed = config_changes(saved_config.read_text(encoding="utf-8"), self.config_text)
            if changed:
                logger.warning(
                    "resuming %s with a config that differs from the one it was saved with: %s", checkpoint, changed
                )
        self.log.truncate(state.batches_seen)
        if run.main:
            logger.info(
                "resumed from %s: epoch %d, batch %d, step %d",
                checkpoint,
                state.epoch,
                state.batch_in_epoch,
                state.step,
            )
        return state

    def _check_rng_state(self, checkpoint: Path) -> None:
        """Accelerate resumes without the RNG state when its file does not load, saying so only at
        INFO; the data order, augmentation and dropout of the rest of the run then differ from an
        uninterrupted one. Say it where it is seen."""
        path = checkpoint / f"{RNG_STATE_NAME}_{self.run.rank}.pkl"
        try:
            states = load(str(path), weights_only=False)
            if "torch_manual_seed" not in states:
                raise KeyError("torch_manual_seed")
        except Exception as exc:  # a missing, truncated or foreign file
            logger.warning(
                "%s: rank %d's RNG state cannot be loaded (%s: %s); resuming without it, so this "
                "run will NOT repeat an uninterrupted one exactly",
                path,
                self.run.rank,
                type(exc).__name__,
                " ".join(str(exc).split())[:200],
            )
