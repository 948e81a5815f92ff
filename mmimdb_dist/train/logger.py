"""The training log: `metrics.jsonl`, the experiment trackers, and when a train record is written.

The logger keeps the window of batches since its last train record (their summed loss stays on
the device: reading a loss back is a host sync, which on a GPU stops the CPU from queueing the
next batch's kernels) and writes one record every `train.log_every` optimizer steps and at
every epoch end. A log that cannot be written stops the run with one line: curves with silent
holes mislead.
"""

from __future__ import annotations

import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import LogWriteError, TrackerWriteError
from ..run.checkpoints import TrainerState, complete_checkpoints
from ..run.layout import METRICS_LOG, TENSORBOARD_DIR, checkpoints_dir_of
from ..run.metrics_log import append_record, truncate_after
from ..schema import ExperimentConfig
from .tracking import Trackers


def memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated on a GPU, the process's resident set elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS, KiB on Linux


class TrainLogger:
    """metrics.jsonl and the trackers of one run (written by the main rank; every rank counts)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, accelerator: Any) -> None:
        self.run_dir = run_dir
        self.log_every = cfg.train.log_every
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.world_size = accelerator.num_processes
        self.trackers = Trackers(
            cfg.train.trackers, cfg.train.tracker_project, cfg.name, run_dir, cfg.train.tracker_kwargs, self.main
        )
        self.last_loss = float("nan")
        self._new_window()

    # ------------------------------------------------------------------ the train window

    def _new_window(self) -> None:
        self._loss = torch.zeros((), device=self.accelerator.device)
        self._batches = 0
        self._samples = 0
        self._start = time.perf_counter()

    def add_batch(self, loss: torch.Tensor, samples: int) -> None:
        """One micro-batch's (detached) loss and size; no host sync."""
        self._loss = self._loss + loss
        self._batches += 1
        self._samples += samples

    def after_step(
        self, state: TrainerState, grad_norm: torch.Tensor | None, lrs: dict[str, float], epoch_end: bool
    ) -> bool:
        """Write the train record when one is due (every `log_every` steps, each epoch end)."""
        if state.step % self.log_every and not epoch_end:
            return False
        batches = torch.tensor(float(self._batches), device=self._loss.device)
        loss = self.accelerator.reduce(torch.stack([self._loss.float(), batches]), reduction="sum")
        # An overflowed fp16 step has an infinite norm, which JSON cannot hold: logged as null.
        norm = None if grad_norm is None or not math.isfinite(float(grad_norm)) else float(grad_norm)
        elapsed = time.perf_counter() - self._start
        record = {
            "type": "train",
            "epoch": state.epoch,
            "step": state.step,
            "batches_seen": state.batches_seen,
            "loss": float(loss[0] / loss[1].clamp(min=1)),
            "lr": lrs,
            "samples_per_s": self._samples * self.world_size / max(elapsed, 1e-9),
            "grad_norm": norm,
            "memory_mb": memory_mb(self.accelerator.device),
        }
        self.record(record, state)
        self.last_loss = record["loss"]
        scalars = {
            "train/loss": record["loss"],
            "train/samples_per_s": record["samples_per_s"],
            "train/memory_mb": record["memory_mb"],
            "train/grad_norm": norm,
        }
        self.scalars({**scalars, **{f"lr/{name}": lr for name, lr in lrs.items()}}, state)
        self._new_window()
        return True

    # ------------------------------------------------------------------ writing

    def failed(self, where: Path | str, reason: str, state: TrainerState) -> LogWriteError:
        """A log that cannot be written stops the run, naming where it can continue from."""
        checkpoints = complete_checkpoints(checkpoints_dir_of(self.run_dir))
        last = checkpoints[-1] if checkpoints else "none yet"
        return LogWriteError(
            f"{where}: writing the training log failed ({reason}); training "
            f"stopped at epoch {state.epoch} step {state.step}. Last complete "
            f"checkpoint: {last}; free space, then continue with --resume auto"
        )

    def record(self, record: dict[str, Any], state: TrainerState) -> None:
        """One JSON line in metrics.jsonl (an append-only log, flushed per line)."""
        if not self.main:
            return
        path = self.run_dir / METRICS_LOG
        try:
            append_record(path, record)
        except OSError as exc:  # a torn last line is dropped on resume (truncate)
            raise self.failed(path, exc.strerror or str(exc), state) from None

    def scalars(self, values: dict[str, float | None], state: TrainerState) -> None:
        """Scalars to every tracker of `train.trackers`, at the state's optimizer step."""
        try:
            self.trackers.log(values, state.step)
        except TrackerWriteError as exc:
            raise self.failed(exc.where, exc.reason, state) from None

    def start(self, state: TrainerState, hparams: dict[str, Any]) -> None:
        try:
            self.trackers.start(state.step, hparams)
        except TrackerWriteError as exc:
            raise self.failed(exc.where, exc.reason, state) from None

    def finish(self, final: dict[str, float], figures: list[Path], state: TrainerState) -> None:
        try:
            self.trackers.finish(final, state.step, figures)
        except TrackerWriteError as exc:
            raise self.failed(exc.where, exc.reason, state) from None

    def close(self) -> None:
        self.trackers.close()

    # ------------------------------------------------------------------ resuming

    def truncate(self, batches_seen: int) -> None:
        """On resume, drop log lines written after the checkpoint (they are about to be redone)."""
        if self.main:
            truncate_after(self.run_dir / METRICS_LOG, batches_seen)

    def forget_unfinished_start(self) -> None:
        """Logs of an earlier start that died before its first checkpoint describe steps this
        start is about to redo: appending to them would show every step twice."""
        if self.main:
            (self.run_dir / METRICS_LOG).unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / TENSORBOARD_DIR, ignore_errors=True)
        self.accelerator.wait_for_everyone()
