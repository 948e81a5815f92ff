"""`mmimdb-dist shard`: raw MM-IMDb -> WebDataset tar shards + manifest, or `--verify` a set.

The flags are shorthands for config keys (data.*, shard.*) and win over `--config` and
`--set`, so `--out` on the command line is always where the shards go.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..cli import add_config_arguments

# flag dest -> (config section, key)
_FLAG_KEYS = {
    "raw": ("data", "raw_dir"),
    "out": ("shard", "out_dir"),
    "plot_policy": ("data", "plot_policy"),
    "poster_short_side": ("shard", "poster_short_side"),
    "jpeg_quality": ("shard", "jpeg_quality"),
    "samples_per_shard": ("shard", "samples_per_shard"),
    "min_shards": ("shard", "min_shards"),
    "workers": ("shard", "workers"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--raw",
        metavar="DIR",
        help="raw MM-IMDb folder (data.raw_dir): the one holding split.json and dataset/, or its parent",
    )
    parser.add_argument("--out", metavar="DIR", help="shard set folder (shard.out_dir)")
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail on the first movie that cannot become a sample (data.strict)",
    )
    parser.add_argument(
        "--plot-policy",
        choices=("longest", "first", "all"),
        help="which plot summary becomes the text (data.plot_policy)",
    )
    parser.add_argument(
        "--poster-short-side",
        type=int,
        metavar="N",
        help="posters are resized to this short side (shard.poster_short_side)",
    )
    parser.add_argument("--jpeg-quality", type=int, metavar="Q", help="shard.jpeg_quality")
    parser.add_argument("--samples-per-shard", type=int, metavar="N", help="shard.samples_per_shard")
    parser.add_argument("--min-shards", type=int, metavar="N", help="shard.min_shards per split")
    parser.add_argument(
        "--workers", type=int, metavar="N", help="encoding processes, 0 = one per CPU core (shard.workers)"
    )
    parser.add_argument(
        "--verify",
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="re-check an existing shard set (DIR, or --out) against its manifest instead of writing one",
    )


def _config(args: argparse.Namespace):
    from ..schema import load_config

    cfg = load_config(args.config, args.overrides)
    sections: dict[str, dict[str, Any]] = {"data": {}, "shard": {}}  # checked by replace()
    for dest, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            sections[section][key] = value
    if args.strict:
        sections["data"]["strict"] = True
    # replace() re-runs the sections' validation (e.g. samples_per_shard > 0).
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **sections["data"]),
        shard=dataclasses.replace(cfg.shard, **sections["shard"]),
    )


def _verify(directory: str) -> int:
    from ..data.verify import verify_shards

    problems = verify_shards(directory)
    for problem in problems:
        print(f"PROBLEM {problem}")
    if problems:
        print(f"{directory}: {len(problems)} problem(s)")
        return 1
    print(f"{directory}: all shards match the manifest")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.verify is not None:
        if isinstance(args.verify, str):
            return _verify(args.verify)
        return _verify(args.out or _config(args).shard.out_dir)

    from ..data.shard import shard_dataset, summary

    manifest = shard_dataset(_config(args))
    print(summary(manifest))
    return 0
