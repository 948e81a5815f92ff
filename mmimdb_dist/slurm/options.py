"""What a job asks Slurm for, and the submitit executor that asks for it.

The same options serve `submit train`, `submit sweep` and `submit tune`; `cluster` picks
Slurm, local processes (`local`: the same job, signals and requeue included, without a
scheduler) or the calling process (`debug`: for a debugger, no signals).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import SubmitError

logger = logging.getLogger(__name__)

Cluster = Literal["slurm", "local", "debug"]


@dataclass
class SlurmOptions:
    """Resources of one job (or of each element of an array)."""

    cluster: Cluster | None = None  # None: Slurm; never this machine unless `local` or `debug` says so
    nodes: int = 1
    gpus_per_node: int = 0
    # One task per GPU; without GPUs, the CPU processes per node (gloo between them).
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    # SIGUSR2 this many seconds before the time limit. Slurm checks time limits about every
    # 30 s, so less than 30 can come too late: the job is then killed without a requeue.
    # (`local` jobs get it submitit's 30 s before their limit.)
    signal_delay_s: int = 120
    # A job is requeued at most this many times (preemptions and time limits together).
    max_requeues: int = 10
    # Array elements running at once (`submit sweep`).
    array_parallelism: int = 4
    job_name: str = "mmimdb-dist"
    # Extra sbatch options, e.g. {"exclusive": True}: submitit's slurm_additional_parameters.
    additional: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise SubmitError(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(self, name)}")
        for name in ("gpus_per_node", "max_requeues", "signal_delay_s"):
            if getattr(self, name) < 0:
                raise SubmitError(f"--{name.replace('_', '-')}: expected >= 0, got {getattr(self, name)}")
        for name in ("tasks_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SubmitError(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise SubmitError(
                f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: "
                "the trainer runs one task per GPU; leave --tasks-per-node out"
            )
        if self.signal_delay_s >= self.time_min * 60:
            raise SubmitError(f"--signal-delay-s {self.signal_delay_s} is not shorter than --time {self.time_min} min")

    @property
    def tasks(self) -> int:
        return self.gpus_per_node or self.tasks_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks


def slurm_unreachable(timeout_s: float = 20.0) -> str | None:
    """Why Slurm cannot take a job from here (what was tried), or None when it can: `sbatch` on
    PATH and a controller that answers `sinfo`."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return "sbatch is on PATH but sinfo is not"
    except subprocess.TimeoutExpired:
        return f"sinfo got no answer from the controller in {timeout_s:.0f} s"
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split())[:200] or f"exit {done.returncode}"
        return f"sinfo failed: {reason}"
    return None


def resolve_cluster(requested: str | None) -> str:
    """Where a job goes. Slurm unless `local` or `debug` is asked for: a submission never runs on
    the machine it was made from (a cluster's login node) because Slurm happened to be
    unreachable. Running here on purpose is said before anything starts."""
    if requested in ("local", "debug"):
        logger.warning(
            "--cluster %s: the job runs on this machine, not on a Slurm cluster%s",
            requested,
            " (in this process, for a debugger)" if requested == "debug" else " (local processes)",
        )
        return requested
    reason = slurm_unreachable()
    if reason is not None:
        raise SubmitError(
            f"Slurm is not reachable from here ({reason}); on a cluster, submit from a node with "
            "Slurm's commands and SLURM_CONF, or pass --cluster local to run the job on this "
            "machine on purpose (--cluster debug: in this process)"
        )
    return "slurm"


def build_executor(folder: str | Path, options: SlurmOptions, tasks_per_node: int | None = None):
    """A submitit AutoExecutor for `options`, writing its scripts and logs under `folder`.

    `tasks_per_node` overrides the task count (`submit tune`: one task per node).

    `%j` in `folder` becomes each job's id, so the logs of a requeued job stay together and
    the elements of an array get a folder each.
    """
    import submitit

    cluster = resolve_cluster(options.cluster)
    try:
        executor = submitit.AutoExecutor(
            folder=str(folder),
            cluster=cluster,
            slurm_max_num_timeout=options.max_requeues,
            local_max_num_timeout=options.max_requeues,
        )
    except (ValueError, RuntimeError) as exc:
        raise SubmitError(f"--cluster {cluster}: {exc}") from None
    parameters: dict[str, Any] = {
        "name": options.job_name,
        "timeout_min": options.time_min,
        "nodes": options.nodes,
        "tasks_per_node": tasks_per_node or options.tasks,
        "gpus_per_node": options.gpus_per_node,
        "slurm_signal_delay_s": options.signal_delay_s,
        "slurm_array_parallelism": options.array_parallelism,
    }
    if options.cpus_per_task is not None:
        parameters["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(options, name):
            parameters[f"slurm_{name}"] = getattr(options, name)
    if options.additional:
        parameters["slurm_additional_parameters"] = dict(options.additional)
    if options.gpus_per_node == 0:
        parameters.pop("gpus_per_node")
    executor.update_parameters(**parameters)
    return executor
