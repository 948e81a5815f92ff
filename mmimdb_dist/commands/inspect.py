"""`mmimdb-dist inspect`: stream a few batches from a shard set and report what arrives.

A quick check that a shard set, a tokenizer and the loader settings fit together before a
run is launched: batch shapes, how much padding the batches carry, the throughput of this
machine's loader workers, and how many samples were skipped as unreadable.
Without `--tokenizer`, a word vocabulary is built from the train plots (the BiLSTM path).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

from ..cli import add_config_arguments
from ..progress import progress

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--shards", metavar="DIR", help="shard set folder (loader.shards_dir)")
    parser.add_argument(
        "--split",
        choices=("train", "dev", "test"),
        default="train",
        help="train streams an augmented, bucketed epoch; dev/test the eval order",
    )
    parser.add_argument("--batches", type=int, default=10, metavar="N", help="batches to stream (default: 10)")
    parser.add_argument(
        "--tokenizer",
        metavar="NAME_OR_DIR",
        help="Hugging Face tokenizer (local folder or cached name); "
        "default: a word vocabulary built from the train plots",
    )


def _word_vocabulary(manifest):
    from ..data.plots import iter_plots
    from ..data.vocab import Vocabulary

    # Lenient: a damaged sample is skipped here as the loader will skip it, and counted below.
    vocabulary = Vocabulary.build(plot.text for plot in iter_plots(manifest.shard_paths("train"), strict=False))
    logger.info("word vocabulary of %d entries built from the train plots", len(vocabulary))
    return vocabulary


def run(args: argparse.Namespace) -> int:
    from ..data.loader import build_eval_loader, build_train_loader
    from ..data.manifest import load_manifest
    from ..data.text import HFTokenEncoder
    from ..errors import ConfigError
    from ..schema import load_config

    if args.batches < 1:
        raise ConfigError(f"--batches: expected a positive number, got {args.batches}")
    cfg = load_config(args.config, args.overrides)
    loader_cfg = cfg.loader
    if args.shards:
        loader_cfg = dataclasses.replace(loader_cfg, shards_dir=args.shards)
    manifest = load_manifest(loader_cfg.shards_dir)
    encoder = HFTokenEncoder.from_pretrained(args.tokenizer) if args.tokenizer else _word_vocabulary(manifest)

    if args.split == "train":
        loader = build_train_loader(loader_cfg, manifest, encoder, rank=0, world_size=1, epoch=0, seed=cfg.seed)
    else:
        loader = build_eval_loader(loader_cfg, manifest, args.split, encoder, rank=0, world_size=1)

    wanted = min(args.batches, len(loader))
    first = None
    samples = padded = real = 0
    batches = 0
    start = time.perf_counter()
    for batch in progress(loader, total=wanted, desc=f"inspect {args.split}", unit="batch"):
        first = first or batch
        batches += 1
        samples += len(batch["ids"])
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
        if batches == wanted:
            break
    elapsed = time.perf_counter() - start
    if first is None:
        print(f"{manifest.directory}: {args.split}: no batch produced")
        return 1

    print(
        f"shard set {manifest.directory}: {args.split}, {manifest.split(args.split).num_samples} samples "
        f"in {len(manifest.split(args.split).shards)} shards, {len(loader)} batches per epoch"
    )
    for key in ("pixel_values", "input_ids", "attention_mask", "labels"):
        tensor = first[key]
        print(f"  {key:<15} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}")
    whole = (
        f" (the whole epoch: --batches {args.batches} asked for more than it holds)" if args.batches > batches else ""
    )
    print(f"  batches streamed {batches}, samples {samples}{whole}")
    print(
        f"  mean padded length {padded / samples:.1f} tokens (real {real / samples:.1f}, "
        f"padding {100 * (1 - real / padded):.1f}%)"
    )
    print(
        f"  throughput {samples / elapsed:.1f} samples/s with {loader_cfg.num_workers} workers "
        "(includes worker start-up)"
    )
    print(f"  skipped {loader.skipped}")
    return 0
