"""The hardware side of a run: threads, precision, DDP options, and the Accelerator built from them.

Each choice is made from the config, then the environment (a launcher's or Slurm's), then
the hardware, so a run behaves the same under `accelerate launch`, Slurm or plain Python.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, parse_flag_from_env

from ..models.registry import MODELS
from ..schema import ExperimentConfig


def choose_num_threads(cfg: ExperimentConfig) -> int:
    """torch threads for this process: `train.num_threads`, else OMP_NUM_THREADS (set by the
    user, or by a Slurm job from its CPUs per task), else the CPUs it may run on (its affinity
    mask) shared among the ranks of this node."""
    if cfg.train.num_threads is not None:
        return cfg.train.num_threads
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, available_cpus() // max(1, local_ranks))


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask (taskset, Slurm's cpuset), capped
    by a cgroup v2 CPU quota (a container's `--cpus`), which the affinity mask does not show."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def resolve_mixed_precision(setting: str | None, deepspeed: bool) -> str | None:
    """`train.mixed_precision` as Accelerate takes it. `auto`: bf16 on a GPU with bf16 units
    (Ampere and later), fp16 with loss scaling on older GPUs, fp32 on CPU, where bf16 autocast
    is slower than fp32 on most processors; under DeepSpeed its JSON decides (None)."""
    if setting != "auto":
        return setting
    if deepspeed:
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def needs_unused_parameter_search(cfg: ExperimentConfig) -> bool:
    """`train.find_unused_parameters`, or what the model class says (see that key)."""
    if cfg.train.find_unused_parameters is not None:
        return cfg.train.find_unused_parameters
    return bool(getattr(MODELS.get(cfg.model.name), "leaves_parameters_unused", False))


def build_accelerator(cfg: ExperimentConfig):
    """The Accelerator of a run, configured from the YAML rather than from launcher flags."""
    cuda = torch.cuda.is_available()
    # gloo without CUDA: DeepSpeed would otherwise ask for its CPU backend (oneCCL). Only for
    # launched processes: a backend on a plain single process makes Accelerate look for a
    # process group that was never started.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [
        InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.dist_timeout_s),
                               backend="gloo" if launched and not cuda else None),
        # Off unless the model can leave parameters without a gradient: the search walks the
        # autograd graph after every backward (see train.find_unused_parameters).
        DistributedDataParallelKwargs(find_unused_parameters=needs_unused_parameter_search(cfg)),
    ]
    # Accumulation is done by the trainer and the scheduler stepped once per optimizer step
    # (Accelerate would otherwise step it once per process, for loaders it splits itself).
    # cpu=True would turn DeepSpeed off: its engine finds the CPU by itself.
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    return Accelerator(mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision, deepspeed),
                       cpu=not cuda and not deepspeed, kwargs_handlers=handlers,
                       step_scheduler_with_optimizer=False)
