"""The training job: the trainer on every task, checkpointed and requeued on preemption.

How the two signal handlers cooperate. submitit installs its own handlers when the job
starts: SIGUSR2 (its preemption signal) calls `checkpoint()` on global rank 0 only and
requeues, SIGTERM is ignored. Inside the training loop the trainer's handler replaces both
on every rank (`mmimdb_dist.train.signals`): a stop flag that all ranks agree on before the
next optimizer step, a checkpoint written by all ranks at that step, then `TrainingStopped`
(exit 75) on every rank. This job catches it and, on global rank 0 only and only when the
signal was submitit's preemption signal, asks submitit's job environment to requeue
(`scontrol requeue` on Slurm, a restart of the tasks under `--cluster local`): one requeue
per stop, whatever the number of ranks. Every rank then exits 75 without writing a result,
so the job is not seen as finished. The requeued job runs the same pickled callable, and
`resume="auto"` finds the checkpoint.

SIGTERM alone (scancel, a time limit reached without the warning signal) also stops at a
step boundary with a checkpoint, but does not requeue: it is how a user or Slurm ends a job.
Outside the training loop (start-up, the final evaluation) submitit's handler is the one in
place: rank 0 requeues at once and the next run resumes from the newest checkpoint on disk;
there is no step in between to lose.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import submitit
import yaml

from ..run.layout import run_dir_of
from ..run.protocol import primary_report
from ..schema import ExperimentConfig, from_dict
from ..train.signals import TrainingStopped
from .distributed import export_torch_distributed, limit_threads

logger = logging.getLogger(__name__)


def preemption_signal() -> signal.Signals:
    """The signal submitit asks Slurm to send before a time limit (SUBMITIT_PREEMPT_SIGNAL)."""
    return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)


def restarts() -> int:
    """How many times Slurm has requeued this job so far."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def configure_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO, force=True, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"
    )


class TrainJob(submitit.helpers.Checkpointable):
    """`mmimdb_dist.train.loop.train(cfg, resume="auto")` on every task of the allocation.

    Holds the resolved config as YAML text rather than the dataclass: the pickle then does not
    depend on the config classes' layout, and the text is what lands in the run folder.
    """

    def __init__(self, config_text: str, max_requeues: int = 10) -> None:
        self.config_text = config_text
        self.max_requeues = max_requeues

    def config(self):

        return from_dict(ExperimentConfig, yaml.safe_load(self.config_text))

    def __call__(self) -> dict[str, Any]:
        from ..train.loop import train

        configure_logging(submitit.JobEnvironment().global_rank)
        placement = export_torch_distributed()
        limit_threads()
        cfg = self.config()
        if restarts() and placement.rank == 0:
            logger.info("requeued %d time(s): resuming %s from its newest checkpoint", restarts(), run_dir_of(cfg))
        try:
            result = train(cfg, resume="auto")
        except TrainingStopped as stop:
            self._after_stop(stop, placement.rank)
            raise
        return {
            "run_dir": str(run_dir_of(cfg)),
            "rank": placement.rank,
            "world_size": placement.world_size,
            "best_checkpoint": result["best_checkpoint"],
            "last_step": result["last_step"],
            "test_f1_macro": primary_report(result["test"])["f1_macro"],
            "test_f1_micro": primary_report(result["test"])["f1_micro"],
            "restarts": restarts(),
        }

    def _after_stop(self, stop: Any, rank: int) -> None:
        """Every rank's checkpoint is complete here; rank 0 requeues, once."""
        if rank != 0:
            logger.info("checkpoint complete on rank %d; global rank 0 decides about the requeue", rank)
            return
        if stop.received != preemption_signal():
            received = stop.received.name if stop.received else "a signal to another rank"
            logger.warning(
                "stopped by %s: not requeued (only %s requeues); continue the run by submitting it again",
                received,
                preemption_signal().name,
            )
            return
        if restarts() >= self.max_requeues:
            logger.warning(
                "not requeued: already requeued %d times (--max-requeues %d); continue the run by submitting it again",
                restarts(),
                self.max_requeues,
            )
            return
        env = submitit.JobEnvironment()
        logger.warning("requeueing job %s (%d of at most %d requeues)", env.job_id, restarts() + 1, self.max_requeues)
        # Slurm: `scontrol requeue`; local: restart the tasks; debug: nothing to requeue.
        env._requeue(self.max_requeues - restarts() - 1)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's handler (rank 0, outside the training loop): resubmit as is.

        Nothing to save here: the trainer's checkpoints are on disk and the job always
        resumes with `resume="auto"`.
        """
        logger.warning("preempted outside the training loop: requeued, will resume from the newest checkpoint")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def job_folder(run_dir: str | Path) -> Path:
    """submitit's scripts, pickles and per-task logs of a run: `<run_dir>/slurm/<job id>/`."""
    return Path(run_dir) / "slurm" / "%j"
