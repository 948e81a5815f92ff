"""How an epoch is laid out over ranks and loader workers, and the seeds that make it exact.

The reasoning (equal batches per rank, slots, the fallback to sample-level splitting) is in
the docstring of `data/loader.py`, whose stream follows these plans.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .manifest import ShardInfo


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any parts; unlike hash(), identical in every process and run."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class SlotPlan:
    """Which shards one slot reads in one pass, and which of their samples it keeps."""

    shards: list[ShardInfo]
    # 1: keep every sample (shard-level split); else keep positions ≡ offset mod stride.
    stride: int
    offset: int

    def keeps(self, position: int) -> bool:
        return position % self.stride == self.offset

    @property
    def num_samples(self) -> int:
        """Samples this slot gets in one pass, per the manifest."""
        return len(range(self.offset, sum(s.num_samples for s in self.shards), self.stride))


def plan_slot(shards: list[ShardInfo], rank: int, world_size: int, worker: int, num_workers: int) -> SlotPlan:
    """Split by shard where there are enough shards, by sample only where needed."""
    slots = world_size * num_workers
    slot = rank * num_workers + worker
    if len(shards) >= slots:
        return SlotPlan(shards=shards[slot::slots], stride=1, offset=0)
    if len(shards) >= world_size:
        return SlotPlan(shards=shards[rank::world_size], stride=num_workers, offset=worker)
    return SlotPlan(shards=list(shards), stride=slots, offset=slot)


def train_batches_per_rank(num_samples: int, world_size: int, batch_size: int, drop_last: bool = True) -> int:
    """Train batches each rank reads per epoch (the same on every rank)."""
    per_step = world_size * batch_size
    return num_samples // per_step if drop_last else math.ceil(num_samples / per_step)


def checked_batches_per_rank(num_samples: int, world_size: int, batch_size: int, drop_last: bool, where: str) -> int:
    """`train_batches_per_rank`, or one line when the split cannot fill a single batch."""
    batches = train_batches_per_rank(num_samples, world_size, batch_size, drop_last)
    if batches == 0:
        raise ConfigError(
            f"loader.batch_size: {batch_size} x {world_size} processes is more than the "
            f"{num_samples} train samples in {where}"
        )
    return batches


def optimizer_steps_per_epoch(batches_per_rank: int, grad_accum_steps: int) -> int:
    """Optimizer steps per epoch: accumulation groups never straddle an epoch end (train/loop.py)."""
    return math.ceil(batches_per_rank / grad_accum_steps)
