"""`mmimdb-dist compare RUN_DIR...`: rank finished runs and baselines in one table.

Writes `model_comparison.csv` and `model_comparison.md` (default: into the folder that
holds the runs) and prints the Markdown table. A folder that is not itself a finished run
stands for the finished runs directly inside it (`mmimdb-dist compare runs/`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (final_metrics.json) or baseline folders (metrics.json)",
    )
    parser.add_argument(
        "--sort-by",
        default="f1_macro",
        metavar="METRIC",
        help="f1_micro, f1_macro (default), f1_weighted, f1_samples, subset_accuracy, "
        "roc_auc_macro, mean_average_precision, num_parameters, train_seconds, "
        "train_samples_per_s",
    )
    parser.add_argument(
        "--protocol",
        choices=("threshold_0.5", "tuned_on_dev"),
        default="threshold_0.5",
        help="which thresholds rank a threshold-dependent metric (default: threshold_0.5)",
    )
    parser.add_argument(
        "--split", choices=("test", "dev"), default="test", help="split whose metrics are compared (default: test)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for model_comparison.csv/.md (default: the runs' common parent)",
    )


def run(args: argparse.Namespace) -> int:
    from ..outputs import check_writable_folder
    from ..report.compare import compare_runs, markdown_table, write_comparison

    if args.out is not None:
        check_writable_folder(args.out, "--out", "the comparison")  # before the runs are read
    rows = compare_runs(args.run_dirs, sort_by=args.sort_by, protocol=args.protocol, split=args.split)
    out = args.out
    if out is None:
        parents = [str(Path(row["path"]).resolve().parent) for row in rows]
        out = Path(os.path.commonpath(parents))
    csv_path, md_path = write_comparison(rows, out)
    print(f"{args.split} split, ranked by {rows[0]['sort_metric']}:\n")
    print(markdown_table(rows))
    print(f"\nwrote {csv_path} and {md_path}")
    return 0
