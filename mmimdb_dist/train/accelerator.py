"""The hardware side of a run: threads, precision, DDP options, and the Accelerator built from them.

Each choice is made from the config, then the environment (a launcher's or Slurm's), then
the hardware, so a run behaves the same under `accelerate launch`, Slurm or plain Python.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, parse_flag_from_env

from ..models.registry import MODELS
from ..schema import ExperimentConfig

logger = logging.getLogger(__name__)


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


def precision_for_capability(capability: tuple[int, int] | None) -> str:
    """What `auto` picks for a device: bf16 from compute capability 8.0 (Ampere and later have
    bf16 tensor cores), fp16 with loss scaling below it (V100 7.0, T4 7.5: there bf16 is only
    emulated, which `torch.cuda.is_bf16_supported()` counts as support), and fp32 without a GPU
    (None), where bf16 autocast is slower than fp32 on most processors."""
    if capability is None:
        return "no"
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def local_device_capability() -> tuple[int, int] | None:
    """The compute capability of this rank's own GPU (LOCAL_RANK), read without making another
    GPU current: every rank asking about GPU 0 would open a CUDA context there. None on CPU."""
    if not torch.cuda.is_available():  # GPU-only branch below: reached on a CUDA machine alone
        return None
    index = int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count())
    major, minor = torch.cuda.get_device_capability(index)
    return major, minor


def resolve_mixed_precision(
    setting: str | None, deepspeed: bool, capability: tuple[int, int] | None = None
) -> str | None:
    """`train.mixed_precision` as Accelerate takes it. `auto`: `precision_for_capability` of this
    rank's device; under DeepSpeed its JSON decides (None). Explicit values pass through."""
    if setting != "auto":
        return setting
    if deepspeed:
        return None
    return precision_for_capability(capability)


def launcher_conflict(setting: str | None, resolved: str | None) -> str | None:
    """One line when the launcher asked for a precision (`accelerate launch --mixed_precision`, or
    its config file) that the experiment config overrides, else None. The launcher's default,
    `no`, is no request: `auto` decides then without a word."""
    asked = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if setting is None or asked in (None, "", "no") or resolved in (None, asked):
        return None
    return (
        f"train.mixed_precision: {setting!r} gives {resolved!r}; the launcher's {asked!r} is not used "
        "(set train.mixed_precision: null to follow the launcher)"
    )


def apply_backend_policy(images: bool) -> None:
    """The one policy for a GPU's math modes, applied by the trainer and by the GPU kit alike:
    TF32 for fp32 matmuls and convolutions (Ampere and later; what fp32 runs at there, ~1e-3
    relative error, far under what training notices), and cuDNN's algorithm search when the
    model reads posters (their size is fixed, so the search runs once per shape; text batches
    vary in length and go through matmuls, which it does not concern). No effect without CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = images and torch.cuda.is_available()


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
        InitProcessGroupKwargs(
            timeout=timedelta(seconds=cfg.train.dist_timeout_s), backend="gloo" if launched and not cuda else None
        ),
        # Off unless the model can leave parameters without a gradient: the search walks the
        # autograd graph after every backward (see train.find_unused_parameters).
        DistributedDataParallelKwargs(find_unused_parameters=needs_unused_parameter_search(cfg)),
    ]
    # Accumulation is done by the trainer and the scheduler stepped once per optimizer step
    # (Accelerate would otherwise step it once per process, for loaders it splits itself).
    # cpu=True would turn DeepSpeed off: its engine finds the CPU by itself.
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    if not cuda:
        # Accelerate imports DeepSpeed (when installed) to unwrap a model; without a GPU its
        # accelerator detection then warns, in every process and every Tune trial, that it
        # "was unable to detect" one. Saying CPU up front is what it would pick anyway.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    apply_backend_policy(images=cfg.model.uses_image)
    precision = resolve_mixed_precision(cfg.train.mixed_precision, deepspeed, local_device_capability())
    conflict = launcher_conflict(cfg.train.mixed_precision, precision)
    if conflict and int(os.environ.get("RANK", "0")) == 0:
        logger.warning(conflict)
    return Accelerator(
        mixed_precision=precision,
        cpu=not cuda and not deepspeed,
        kwargs_handlers=handlers,
        step_scheduler_with_optimizer=False,
    )
