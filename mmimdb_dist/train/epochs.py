"""The train loader of each epoch, the next one started before the current one ends.

With loader workers, the gap between the last batch of one epoch and the first of the next
(worker start-up, shard opening, the shuffle buffer filling) would idle the device; started at
the last batch of an epoch, the next epoch's workers fill it during that epoch's evaluation and
checkpoint instead. Exactness is untouched: an epoch's stream depends on (seed, epoch, rank,
worker) only, and a resumed epoch starts its loader at the batch where the checkpoint left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..data.loader import build_train_loader
from ..schema import ExperimentConfig


class EpochLoaders:
    """Per-epoch train loaders of one rank; `start` one early, `batches` to read one."""

    def __init__(self, cfg: ExperimentConfig, run: Any) -> None:
        # `run`: the trainer, for its manifest, token encoder, rank and seed.
        self.cfg, self.run = cfg, run
        self._next: tuple[int, Iterator[dict[str, Any]]] | None = None

    def _loader(self, epoch: int, start: int) -> Any:
        run = self.run
        return build_train_loader(
            self.cfg.loader,
            run.manifest,
            run.token_encoder,
            rank=run.rank,
            world_size=run.world_size,
            epoch=epoch,
            seed=run.seed,
            skip_batches=start,
            images=self.cfg.model.uses_image,
        )

    def start(self, epoch: int) -> None:
        """Start `epoch`'s loader (its workers) now."""
        self._next = (epoch, self._loader(epoch, 0).start())

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        """`epoch`'s batches from batch `start`: the loader started early when it is that one."""
        prefetched, self._next = self._next, None
        if prefetched is not None and prefetched[0] == epoch and start == 0:
            return prefetched[1]
        return self._loader(epoch, start).start()
