"""The ranks' agreement before every optimizer step: stop on a signal, never step on a NaN.

Every rank holds its micro-batch losses of the current step on the device; before the step the
ranks agree, in one all-reduce, whether any of them received a stop signal (SIGTERM, SIGUSR2,
Ctrl-C: `signals.StopRequests`) and whether any loss of the step is NaN or infinite. A
non-finite loss stops the run with no step taken and one line naming the batch; a stop signal
makes the run save a checkpoint at this step and exit (`TrainingStopped`, exit code 75).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import NonFiniteLossError
from ..run.checkpoints import TrainerState, checkpoint_name, complete_checkpoints
from .signals import StopRequests, TrainingStopped

logger = logging.getLogger(__name__)


class StepAgreement:
    """The losses of the current optimizer step, and the agreement the ranks reach on them."""

    def __init__(self, accelerator: Any, checkpoints_dir: Path) -> None:
        self.accelerator = accelerator
        self.checkpoints_dir = checkpoints_dir
        self.signals = StopRequests()
        self.losses: list[torch.Tensor] = []
        self._non_finite: tuple[int, float] | None = None  # (batch, loss) of the first NaN/Inf

    def agree(self, state: TrainerState, pending: int = 0) -> bool:
        """Whether the ranks stop after this step; raises on a non-finite loss on any rank.
        `pending`: batches of the step not yet counted in `state.batches_seen`."""
        non_finite = ~torch.isfinite(torch.stack(self.losses)).all()  # read on the host only here
        stop, any_non_finite = self.signals.agreed(self.accelerator, non_finite)
        if any_non_finite:
            self._find_non_finite(state, pending)
            self._fail(state)
        self.losses = []
        return stop

    def _find_non_finite(self, state: TrainerState, pending: int) -> None:
        """Which batch of the step gave the first non-finite loss (read once, on failure)."""
        first_batch = state.batches_seen + pending - len(self.losses) + 1
        for offset, loss in enumerate(self.losses):
            value = float(loss)
            if not math.isfinite(value):
                self._non_finite = (first_batch + offset, value)
                return

    def _fail(self, state: TrainerState) -> None:
        where = (
            f"loss {self._non_finite[1]} at batch {self._non_finite[0]}"
            if self._non_finite
            else "a non-finite loss on another rank"
        )
        checkpoints = complete_checkpoints(self.checkpoints_dir)
        last = checkpoints[-1] if checkpoints else "none yet"
        raise NonFiniteLossError(
            f"{where} (epoch {state.epoch}, before optimizer step {state.step + 1}); no step was taken "
            f"with it. Last complete checkpoint: {last}. Lower train.lr or set train.max_grad_norm, "
            "then start again, or continue from that checkpoint with --resume PATH"
        )

    def stop(self, state: TrainerState, main: bool) -> None:
        """Leave the run after the checkpoint of this step, saying where to continue from."""
        checkpoint = self.checkpoints_dir / checkpoint_name(state)
        received = self.signals.received
        message = (
            f"stopped by {received.name if received else 'a signal to another rank'} at epoch "
            f"{state.epoch} step {state.step}; checkpoint {checkpoint}; "
            f"continue with --resume auto"
        )
        if main:
            logger.warning("%s", message)
        raise TrainingStopped(message, received)
