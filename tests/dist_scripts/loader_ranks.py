"""Run on every rank of a real multi-process launch; writes what this rank's loaders yield.

Usage: loader_ranks.py {torchrun,accelerate} SHARDS_DIR VOCABULARY_JSON OUT_DIR BATCH_SIZE
Writes OUT_DIR/rank<r>.json: ids per batch for train epochs 0, 0 again and 1, and for the dev
and test eval passes. The word vocabulary stands in for a subword tokenizer here: same protocol,
and it spares each process importing transformers. Under torchrun every train batch is followed
by an all-reduce, as in DDP, so unequal batch counts would hang (the test's timeout turns that
into a failure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mmimdb_dist.data.device import to_device
from mmimdb_dist.data.loader import build_eval_loader, build_train_loader
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.vocab import Vocabulary
from mmimdb_dist.schema import LoaderConfig


def main() -> None:
    mode, shards, vocabulary, out, batch_size = sys.argv[1:6]
    if mode == "accelerate":
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
        rank, world_size = accelerator.process_index, accelerator.num_processes
        device = accelerator.device
        # Loaders are built per rank and deliberately not passed through accelerator.prepare().
        sync = lambda: accelerator.reduce(torch.ones(1, device=device), reduction="sum")  # noqa: E731 (one line, read beside its use)
    else:
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        device = torch.device("cpu")

        def sync():
            value = torch.ones(1)
            dist.all_reduce(value)
            return value

    cfg = LoaderConfig(
        batch_size=int(batch_size),
        eval_batch_size=8,
        num_workers=2,
        shuffle_buffer=32,
        image_size=32,
        max_text_length=128,
        bucket_pool_batches=4,
    )
    manifest = load_manifest(shards)
    encoder = Vocabulary.load(vocabulary)
    report: dict[str, object] = {"rank": rank, "world_size": world_size}
    for name, epoch in (("epoch0", 0), ("epoch0_again", 0), ("epoch1", 1)):
        loader = build_train_loader(cfg, manifest, encoder, rank=rank, world_size=world_size, epoch=epoch, seed=11)
        batches = []
        for batch in loader:
            moved = to_device(batch, device)
            assert moved["pixel_values"].dtype == torch.float32
            assert float(sync()) == world_size
            batches.append(batch["ids"])
        report[name] = batches
        report[f"{name}_len"] = len(loader)
    for split in ("dev", "test"):
        loader = build_eval_loader(cfg, manifest, split, encoder, rank=rank, world_size=world_size)
        report[split] = [batch["ids"] for batch in loader]
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    if mode == "accelerate":
        accelerator.wait_for_everyone()
    else:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
