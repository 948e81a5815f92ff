"""`mmimdb-dist synth`: write a synthetic dataset: MM-IMDb's raw layout, or a table of any labels."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder to write into; the dataset lands in OUT/mmimdb (--format mmimdb) or "
        "OUT/items.csv and OUT/images/ (--format table)",
    )
    parser.add_argument(
        "--format",
        choices=("mmimdb", "table"),
        default="mmimdb",
        help="mmimdb: MM-IMDb's raw layout (23 genres); table: a table with image files "
        "and ten labels of its own (default: mmimdb)",
    )
    parser.add_argument(
        "--movies",
        "--rows",
        dest="movies",
        type=int,
        default=2000,
        help="number of movies, or table rows (default: 2000)",
    )
    parser.add_argument(
        "--task",
        choices=("multilabel", "multiclass"),
        default="multilabel",
        help="--format table: several labels per row, or exactly one (default: multilabel)",
    )
    parser.add_argument(
        "--table-format",
        choices=("csv", "jsonl"),
        default="csv",
        help="--format table: items.csv or items.jsonl (default: csv)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--defect-rate",
        type=float,
        default=0.0,
        help="fraction of movies given realistic defects, recorded in mmimdb/defects.json (default: 0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="poster-rendering processes; output does not depend on it (default: CPU cores, at most 4)",
    )


def run(args: argparse.Namespace) -> int:
    from ..data.sources.mmimdb.synth import generate_dataset
    from ..data.sources.synth_table import generate_table

    if args.format == "table":
        print(generate_table(args.out, args.movies, seed=args.seed, task=args.task, table_format=args.table_format))
        return 0

    root = generate_dataset(args.out, args.movies, seed=args.seed, defect_rate=args.defect_rate, workers=args.workers)
    print(root)
    return 0
