"""Streaming train and eval loaders over WebDataset shards, split by rank and by worker.

Each rank builds its own loaders and reads only its part of the shards; the split is done
here, from `rank` and `world_size`, not by a framework. With Accelerate, take them from the
Accelerator (`process_index`, `num_processes`) and do NOT pass these loaders through
`accelerator.prepare()`: on a DataLoader over an IterableDataset, prepare() either wraps it
in a dispatcher (rank 0 reads every batch and broadcasts slices) or splits it a second time,
both of which break the per-rank streams built here. Move batches with `to_device` instead.

How a train epoch is laid out, and why:

* Equal batches on every rank. A rank that runs out first leaves the others waiting forever
  in the next all-reduce, so every rank yields exactly
  floor(train samples / (world_size * batch_size)) batches (ceil when `drop_last` is off),
  taken from the manifest before any shard is opened. A stream that runs dry is
  continued with a fresh pass over the shards (repeat padding).
* Slots. The `world_size * num_workers` DataLoader workers are the slots that read shards.
  Shards are shuffled per (seed, epoch) and dealt round-robin to the slots. With fewer
  shards than slots the split falls back to samples, as little as possible: with at least
  one shard per rank, shards are dealt to ranks and each worker keeps the samples of its
  rank's shards whose position is its own modulo num_workers; with fewer shards than
  ranks, every slot reads every shard and keeps the positions that are its own modulo the
  slot count. Nothing hangs and nothing is dropped, at the cost of reading shards more
  than once (a warning says so; reshard with a larger `shard.min_shards`).
* In each worker: tar reading and tokenisation, a seeded shuffle buffer, bucketing by plot
  length (a pool of `bucket_pool_batches` batches is sorted by token count, cut into
  batches, and the batch order shuffled), and only then JPEG decoding and augmentation.
  Buffers and pools are emptied at the end of each pass over the shards (fewer than
  batch_size leftover samples join the next pass's first batch), so repeated samples only
  appear once the previous pass is used up.
* Exact resume. Everything before decoding is cheap and seeded per (seed, epoch, rank,
  worker); augmentation is seeded per (seed, epoch, sample id). `skip_batches=b` forms the
  first b batches without decoding them and then yields the very batches an uninterrupted
  epoch yields from b on. The DataLoader takes batches from its workers in turn, so the
  worker roles are rotated by b to keep the global batch order.
* Bad data never crashes a run: a sample with bad JSON, text or JPEG, or the missing tail
  of a truncated shard, is skipped with a warning and counted. Each batch carries the
  count seen since the previous batch in `batch["skipped"]`; the loader sums them in
  `loader.skipped`.

Eval loaders read every sample of the split exactly once across all ranks and workers: no
shuffling, no repeat, no padding; ranks may therefore get different batch counts, so
gather predictions at the end of evaluation rather than per batch.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError, DataError
from ..schema import LoaderConfig
from .batches import collate_features, collate_samples
from .codecs import FeatureCodec, Sample, ShardCodec
from .images import decode_poster
from .manifest import Manifest
from .plan import SlotPlan, checked_batches_per_rank, derive_seed, plan_slot
from .tario import iter_samples, skip_rest_of_tar
from .text import TokenEncoder

logger = logging.getLogger(__name__)

# The poster side when `loader.image_size` is null and nothing resolved it from a backbone
# (`models.preprocess.resolve_image_size` does, in train, cache-features and predict).
DEFAULT_IMAGE_SIZE = 224


class SkipCounter:
    """Samples skipped in one worker since the last batch it yielded."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int, message: str) -> None:
        self.count += n
        logger.warning("skipped %d sample(s): %s", n, message)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


# --------------------------------------------------------------------------- the stream


class SampleStream(IterableDataset[dict[str, Any]]):
    """The per-worker pipeline; one instance serves a train epoch or an eval pass.

    The `codec` knows the sample format (shards or cached features, `data/codecs.py`); the
    stream's splitting, shuffling, bucketing and exact resume are the same for both.
    """

    def __init__(
        self,
        cfg: LoaderConfig,
        manifest: Manifest,
        split: str,
        codec: ShardCodec | FeatureCodec,
        collate: Callable[..., dict[str, Any]],
        *,
        rank: int,
        world_size: int,
        train: bool,
        epoch: int = 0,
        seed: int = 0,
        num_batches: int = 0,
        skip_batches: int = 0,
        images: bool = True,
    ) -> None:
        self.cfg = cfg
        # False for a model without an image encoder: posters are then never decoded.
        self.images = images and codec.posters
        self.split = split
        self.shards = list(manifest.split(split).shards)
        self.directory = Path(manifest.directory)
        self.codec, self.collate = codec, collate
        self.rank, self.world_size = rank, world_size
        self.train, self.epoch, self.seed = train, epoch, seed
        self.num_batches, self.skip_batches = num_batches, skip_batches
        self.batch_size = cfg.batch_size if train else cfg.eval_batch_size
        self.image_size = cfg.image_size or DEFAULT_IMAGE_SIZE

    # -- reading

    def _read(self, plan: SlotPlan, counter: SkipCounter, count_skips: bool) -> Iterator[Sample]:
        """Parsed samples of one pass of a slot; bad ones are skipped and counted."""
        position = 0
        for shard in plan.shards:
            path = self.directory / shard.name
            read = 0
            for raw in iter_samples(path, on_error=skip_rest_of_tar):
                read += 1
                mine = plan.keeps(position)
                position += 1
                if not mine:
                    continue
                try:
                    sample = self.codec.parse(raw)
                except DataError as exc:
                    if count_skips:
                        counter.add(1, str(exc))
                    continue
                sample.count_skip = count_skips
                yield sample
            missing = shard.num_samples - read
            if missing > 0:
                # Positions of the lost samples are unknown; when slots share a shard they
                # are counted once, by the slot at offset 0, rather than once per slot.
                position += missing
                if count_skips and plan.offset == 0:
                    counter.add(
                        missing, f"{path}: {read} of {shard.num_samples} samples readable (truncated or corrupt shard)"
                    )

    # -- batching

    def _cut(self, pool: list[Sample], rng: random.Random | None) -> list[list[Sample]]:
        if self.cfg.bucket_by_length:
            pool = sorted(pool, key=lambda s: (s.length, s.id))
        batches = [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if rng is not None:
            rng.shuffle(batches)
        return batches

    def _batches(
        self, samples: Iterable[Sample], carry: list[Sample], rng: random.Random | None, last_pass: bool
    ) -> Iterator[list[Sample]]:
        """Cut one pass into batches; a partial batch waits in `carry` for the next pass.

        Pools never straddle passes, so a repeat pass starts only when this pass is used up.
        """
        pool_size = self.batch_size * (self.cfg.bucket_pool_batches if self.cfg.bucket_by_length else 1)
        pool = carry[:]
        carry.clear()
        for sample in samples:
            pool.append(sample)
            if len(pool) == pool_size:
                yield from self._cut(pool, rng)
                pool = []
        if last_pass:
            yield from self._cut(pool, rng)
            return
        full = len(pool) - len(pool) % self.batch_size
        carry.extend(pool[full:])
        yield from self._cut(pool[:full], rng)

    def _decode(self, batch: list[Sample], counter: SkipCounter) -> dict[str, Any] | None:
        if not self.images:  # plots or cached features only: no poster is decoded
            return self.collate(batch, None, counter.take())
        samples, pixels = [], []
        augment = self.train and self.cfg.augment
        for sample in batch:
            if not sample.jpeg:  # a plot-only movie
                pixels.append(torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8))
                samples.append(sample)
                continue
            try:
                pixels.append(
                    decode_poster(
                        sample.jpeg,
                        self.image_size,
                        augment=augment,
                        sample_seed=derive_seed(self.seed, self.epoch, sample.id),
                    )
                )
            except Exception as exc:  # PIL raises many types on corrupt images
                if sample.count_skip:
                    counter.add(1, f"{self.split} sample {sample.id}: poster does not decode ({exc})")
                continue
            samples.append(sample)
        if not samples:
            if self.train:
                # Yielding nothing would leave this rank one batch short (a DDP hang).
                raise DataError(
                    f"{self.directory}: no poster of a {self.split} batch decodes "
                    f"({', '.join(s.id for s in batch)}); check the set with "
                    "`mmimdb-dist shard --verify`"
                )
            return None
        return self.collate(samples, pixels, counter.take())

    # -- per worker

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counter = SkipCounter()
        if len(self.shards) < self.world_size * num_workers and worker == 0 and self.rank == 0:
            shared_by = "its rank's workers" if len(self.shards) >= self.world_size else "every slot"
            logger.warning(
                "%s: %d shards for %d reader slots (world_size %d x num_workers %d); "
                "shards are read by %s, each keeping its share of the samples",
                self.split,
                len(self.shards),
                self.world_size * num_workers,
                self.world_size,
                num_workers,
                shared_by,
            )
        if self.train:
            yield from self._train_worker(worker, num_workers, counter)
        else:
            yield from self._eval_worker(worker, num_workers, counter)

    def _train_worker(self, worker: int, num_workers: int, counter: SkipCounter) -> Iterator[dict[str, Any]]:
        # Batch k of this role is batch role + k * num_workers of the rank's epoch.
        role = (worker + self.skip_batches) % num_workers
        rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, role))
        carry: list[Sample] = []
        index = role
        for pass_index in itertools.count():
            order = self.shards[:]
            random.Random(derive_seed(self.seed, self.epoch, pass_index)).shuffle(order)
            plan = plan_slot(order, self.rank, self.world_size, role, num_workers)
            samples = self._read(plan, counter, count_skips=pass_index == 0)
            read = [0]

            def counted(stream: Iterator[Sample] = samples, read: list[int] = read) -> Iterator[Sample]:
                for sample in stream:
                    read[0] += 1
                    yield sample

            shuffled = wds.shuffle(self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer, rng=rng)(counted())
            for batch in self._batches(shuffled, carry, rng, last_pass=False):
                if index >= self.num_batches:
                    return
                if index >= self.skip_batches:
                    decoded = self._decode(batch, counter)
                    if decoded is not None:
                        yield decoded
                index += num_workers
            if index >= self.num_batches:
                return
            if read[0] == 0:
                raise DataError(
                    f"{self.directory}: {self.split} worker {role} of rank {self.rank} "
                    "read no usable sample in a full pass over its shards"
                )

    def _eval_worker(self, worker: int, num_workers: int, counter: SkipCounter) -> Iterator[dict[str, Any]]:
        plan = plan_slot(self.shards, self.rank, self.world_size, worker, num_workers)
        samples = self._read(plan, counter, count_skips=True)
        for batch in self._batches(samples, [], None, last_pass=True):
            decoded = self._decode(batch, counter)
            if decoded is not None:
                yield decoded


class StreamingLoader:
    """A DataLoader over a SampleStream with a known length and a running skip count."""

    def __init__(self, stream: SampleStream, num_workers: int, length: int) -> None:
        self.stream = stream
        self.length = length
        self.skipped = 0
        self.loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=num_workers,
            prefetch_factor=2 if num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def __len__(self) -> int:
        return self.length

    def start(self) -> Iterator[dict[str, Any]]:
        """Start the workers now and return the batches, drawn on demand.

        Called ahead of need (the trainer starts the next epoch's loader before its end-of-epoch
        evaluation), the workers spin up and prefetch while the caller does other work, so the
        first batch of the epoch is waiting instead of the accelerator waiting for it.
        The DataLoader draws its workers' base seed from the global generator when its iterator
        is created; the streams seed themselves from (seed, epoch, rank, worker), so that draw is
        kept from shifting the training process's RNG (a resumed run creates its loaders at other
        points than an uninterrupted one and must draw the same dropout masks).
        """
        with torch.random.fork_rng(devices=[]):
            batches = iter(self.loader)
        return self._counted(batches)

    def _counted(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in batches:
            self.skipped += batch["skipped"]
            yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.start()


# --------------------------------------------------------------------------- builders


def _format(
    cfg: LoaderConfig, token_encoder: TokenEncoder, manifest: Manifest
) -> tuple[ShardCodec | FeatureCodec, Callable[..., dict[str, Any]]]:
    """(codec, collate) of shards, or of cached encoder features when `loader.features_dir` is set;
    each sample's labels are checked against the width of the set's label set."""
    num_labels = len(manifest.labels)
    if cfg.features_dir:
        return FeatureCodec(num_labels), collate_features
    return ShardCodec(token_encoder, cfg.max_text_length, num_labels), functools.partial(
        collate_samples, pad_id=token_encoder.pad_id
    )


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} / world_size {world_size}: expected 0 <= rank < world_size")


def build_train_loader(
    cfg: LoaderConfig,
    manifest: Manifest,
    token_encoder: TokenEncoder,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    skip_batches: int = 0,
    images: bool = True,
) -> StreamingLoader:
    """The train loader of one rank for one epoch; `len()` is the same on every rank."""
    _check_rank(rank, world_size)
    num_samples = manifest.split("train").num_samples
    num_batches = checked_batches_per_rank(num_samples, world_size, cfg.batch_size, cfg.drop_last, str(manifest.path))
    if not 0 <= skip_batches <= num_batches:
        raise ConfigError(f"skip_batches {skip_batches}: expected 0..{num_batches} (batches per rank per epoch)")
    stream = SampleStream(
        cfg,
        manifest,
        "train",
        *_format(cfg, token_encoder, manifest),
        rank=rank,
        world_size=world_size,
        train=True,
        epoch=epoch,
        seed=seed,
        num_batches=num_batches,
        skip_batches=skip_batches,
        images=images,
    )
    return StreamingLoader(stream, cfg.num_workers, num_batches - skip_batches)


def build_eval_loader(
    cfg: LoaderConfig,
    manifest: Manifest,
    split: str,
    token_encoder: TokenEncoder,
    *,
    rank: int,
    world_size: int,
    images: bool = True,
) -> StreamingLoader:
    """Every sample of `split` exactly once across ranks and workers, in a fixed order."""
    _check_rank(rank, world_size)
    shards = manifest.split(split).shards
    workers = max(cfg.num_workers, 1)
    length = sum(
        math.ceil(plan_slot(shards, rank, world_size, w, workers).num_samples / cfg.eval_batch_size)
        for w in range(workers)
    )
    stream = SampleStream(
        cfg,
        manifest,
        split,
        *_format(cfg, token_encoder, manifest),
        rank=rank,
        world_size=world_size,
        train=False,
        images=images,
    )
    return StreamingLoader(stream, cfg.num_workers, length)
