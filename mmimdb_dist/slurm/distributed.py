"""torch.distributed for the tasks of a job, from the job's own environment.

`submitit.helpers.TorchDistributedEnvironment` turns Slurm's variables (SLURM_PROCID,
SLURM_NTASKS, the node list; or submitit's local equivalents) into the `env://` variables
that Accelerate reads: MASTER_ADDR (the first node), MASTER_PORT (drawn from the job id, so
a requeued job gets the same one), RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE. With
WORLD_SIZE > 1 the trainer's Accelerator starts the process group: NCCL on GPUs, gloo on CPUs.

CUDA_VISIBLE_DEVICES is left as Slurm set it: every task of a node sees the node's GPUs and
Accelerate picks `cuda:LOCAL_RANK`, which narrowing the list to one device would break.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskPlacement:
    """Where this task sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    node: int
    nodes: int
    master: str | None  # MASTER_ADDR:MASTER_PORT, None for a single task


def limit_threads() -> int:
    """One math thread per CPU Slurm gave the task, unless OMP_NUM_THREADS says otherwise.

    PyTorch would otherwise start a thread per core of the whole node in every task, and
    tasks sharing a node would slow each other down manyfold.
    """
    import torch

    env = os.environ
    threads = env.get("OMP_NUM_THREADS") or env.get("SLURM_CPUS_PER_TASK")
    if not threads and env.get("SLURM_CPUS_ON_NODE") and env.get("SLURM_NTASKS_PER_NODE"):
        threads = str(max(1, int(env["SLURM_CPUS_ON_NODE"]) // int(env["SLURM_NTASKS_PER_NODE"])))
    if not threads:  # not under Slurm (--cluster local or debug): PyTorch's own choice
        return torch.get_num_threads()
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    torch.set_num_threads(int(threads))
    return int(threads)


def export_torch_distributed() -> TaskPlacement:
    """Export the `env://` variables when the job has more than one task; describe the task."""
    import submitit
    from submitit.helpers import TorchDistributedEnvironment

    env = submitit.JobEnvironment()
    placement = TaskPlacement(
        rank=env.global_rank,
        world_size=env.num_tasks,
        local_rank=env.local_rank,
        node=env.node,
        nodes=env.num_nodes,
        master=None,
    )
    if env.num_tasks <= 1:
        return placement
    # overwrite: variables exported by the submitting shell (a job sent from inside another
    # job, or a shell that once ran torchrun) must not leak into this job's process group.
    dist = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    master = f"{dist.master_addr}:{dist.master_port}"
    logger.info(
        "task %d of %d (node %d of %d, local rank %d); process group at %s",
        dist.rank,
        dist.world_size,
        env.node,
        env.num_nodes,
        dist.local_rank,
        master,
    )
    return TaskPlacement(
        rank=dist.rank,
        world_size=dist.world_size,
        local_rank=dist.local_rank,
        node=env.node,
        nodes=env.num_nodes,
        master=master,
    )
