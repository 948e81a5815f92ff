"""Stopping a run at a step boundary: on SIGTERM or SIGUSR2, and on a non-finite loss.

SIGTERM and SIGUSR2 are what Slurm sends before preemption or at the time limit; SIGINT is
Ctrl-C, which saves the same checkpoint rather than losing the work since the last one. A handler
only raises a local flag. Before every optimizer step the ranks agree on it, and on whether
any of them saw a non-finite loss in the step's batches, with one all-reduce of the flags'
maximum (two scalars, cheap next to a step): a signal that reaches a single rank, or a NaN on
a single rank, still stops every rank at the same step, where a rank stopping alone would
leave the others waiting in their next collective.

On a stop signal the step is finished and checkpointed on all ranks, and the process exits
with `EXIT_CHECKPOINTED` (75, EX_TEMPFAIL in sysexits.h: "try again later"); `--resume auto`
continues from that checkpoint and ends with the metrics of an uninterrupted run. A
non-finite loss is never stepped on: the run fails with `NonFiniteLossError` (exit 2) naming
the step and the last complete checkpoint, which holds finite weights.

A second signal of the kind already received is not caught: it kills the process the default
way, for a user who really wants it gone now (a second Ctrl-C exits at once). Other stop signals
arriving after the first (a launcher that saw one rank exit signals the rest) are ignored, and
once the ranks have agreed to stop all stop signals are, until the process has exited (SIGKILL
still ends it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
# Exit status of a run stopped by STOP_SIGNALS after a complete checkpoint: resume it.
EXIT_CHECKPOINTED = 75


class TrainingStopped(SystemExit):
    """Raised once the stop checkpoint is on disk; exits the process with EXIT_CHECKPOINTED."""

    def __init__(self, message: str, received: signal.Signals | None = None) -> None:
        super().__init__(EXIT_CHECKPOINTED)
        self.message = message
        # The signal this rank received (None: another rank's signal stopped it). A Slurm
        # job requeues itself on SIGUSR2 (preemption or time limit ahead), not on SIGTERM.
        self.received = received

    def __str__(self) -> str:
        return self.message


class StopRequests:
    """Catches STOP_SIGNALS for the duration of a `with` block; `agreed()` asks all ranks."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        # Set once the ranks have agreed to stop (this rank may have received nothing itself).
        self.stopping = False
        self._previous: dict[signal.Signals, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A loader worker forked with this handler: a Ctrl-C or a launcher's SIGTERM reaches
            # the whole process group, but the training process alone decides (and says) what
            # happens; its workers go on until it shuts them down.
            return
        received = signal.Signals(signum)
        if self.received == received:
            signal.signal(received, signal.SIG_DFL)
            signal.raise_signal(received)
            return
        if self.received is not None or self.stopping:
            logger.info("received %s while already stopping: ignored", received.name)
            return
        self.received = received
        logger.warning("received %s: stopping after this optimizer step, with a checkpoint", received.name)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            # Python delivers signals to the main thread only, and only it may set handlers:
            # a trainer running in a worker thread (a Ray Tune trial) is stopped by its host.
            return self
        self._pid = os.getpid()
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopping:
            # On the way out after a stop: a launcher that sees one rank exit first signals
            # the others, which must still finish their teardown and exit with the same status.
            # Ignored at the OS level: the interpreter resets Python handlers while it shuts down.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def agreed(self, accelerator: Any, non_finite_loss: Any = False) -> tuple[bool, bool]:
        """(stop signal, non-finite loss), each True on every rank when any rank has it; a
        collective. `non_finite_loss` may be a device tensor: it is read here, in the one host
        sync per optimizer step that never stepping on a non-finite loss requires."""
        import torch

        non_finite = torch.as_tensor(non_finite_loss, device=accelerator.device).float().reshape(())
        flags = torch.stack([torch.tensor(float(self.received is not None), device=accelerator.device), non_finite])
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, any_non_finite = (bool(value > 0) for value in flags.tolist())
        self.stopping = stop
        return stop, any_non_finite
