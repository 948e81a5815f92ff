"""`mmimdb-dist synth`: write a synthetic dataset in MM-IMDb's raw layout."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="folder to write into; the dataset lands in OUT/mmimdb")
    parser.add_argument("--movies", type=int, default=2000, help="number of movies (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--defect-rate", type=float, default=0.0,
                        help="fraction of movies given realistic defects, recorded in "
                             "mmimdb/defects.json (default: 0)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="poster-rendering processes; output does not depend on it "
                             "(default: CPU cores, at most 4)")


def run(args: argparse.Namespace) -> int:
    from ..data.synth import generate_dataset

    root = generate_dataset(args.out, args.movies, seed=args.seed,
                            defect_rate=args.defect_rate, workers=args.workers)
    print(root)
    return 0
