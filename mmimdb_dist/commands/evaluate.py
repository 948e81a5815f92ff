"""`mmimdb-dist evaluate --run RUN_DIR [--checkpoint best|last|PATH] --split dev|test`.

Writes metrics.json (threshold 0.5 and per-genre thresholds tuned on dev), per_label.csv
and the figures (training curves, per-genre F1, precision-recall curves, genre
co-occurrence, attention over the poster for attention fusion) into
`RUN_DIR/evaluation/<checkpoint>-<split>/` or `--out`. Runs on one process.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, metavar="RUN_DIR", help="run folder (runs/<name>)")
    parser.add_argument(
        "--checkpoint",
        default="best",
        metavar="best|last|PATH",
        help="the run's best (default) or last checkpoint, or a checkpoint folder",
    )
    parser.add_argument("--split", choices=("dev", "test"), default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="report folder (default: RUN_DIR/evaluation/<checkpoint>-<split>/)"
    )
    parser.add_argument(
        "--shards", type=Path, metavar="DIR", help="shard set to evaluate on (default: the run's loader.shards_dir)"
    )
    parser.add_argument(
        "--attention-movies",
        type=int,
        default=4,
        metavar="N",
        help="posters in the attention figure of attention fusion (default: 4; 0: none)",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (cuda if available, the default), cpu, cuda:N"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..metrics import format_summary
    from ..report.evaluation import evaluate_checkpoint

    args.device = resolve_device(args.device)
    result = evaluate_checkpoint(
        args.run,
        args.checkpoint,
        args.split,
        args.out,
        args.shards,
        args.device,
        progress=not args.no_progress,
        attention_movies=args.attention_movies,
    )
    print(f"{result.checkpoint} on {args.split}:")
    print(format_summary({args.split: result.report}))
    print(f"report: {result.out_dir}/ (metrics.json, per_label.csv)")
    for path in result.figures:
        print(f"figure: {path}")
    return 0
