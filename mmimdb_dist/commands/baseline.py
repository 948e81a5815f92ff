"""`mmimdb-dist baseline`: TF-IDF + one-vs-rest logistic regression on plots.

Reads a shard set (`--shards`, default loader.shards_dir) or a raw MM-IMDb folder
(`--raw`), trains on train, tunes per-genre thresholds on dev, evaluates dev and test, and
writes config.yaml (the resolved config, source path included), metrics.json and
per_label.csv to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..cli import add_config_arguments
from ..run.layout import CONFIG_FILE, PER_LABEL_CSV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--shards", metavar="DIR", help="shard set folder holding manifest.json (loader.shards_dir; the default source)"
    )
    source.add_argument(
        "--raw", metavar="DIR", help="raw MM-IMDb folder (data.raw_dir) holding split.json and dataset/, or its parent"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="runs/baseline",
        help="output folder for config.yaml, metrics.json, per_label.csv (default: runs/baseline)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..baseline import evaluate_baseline
    from ..data.manifest import load_manifest
    from ..data.plots import read_raw_texts, read_shard_texts
    from ..data.sources.mmimdb.raw import MMIMDB_LABELS
    from ..metrics import format_summary, write_metrics_json, write_per_label_csv
    from ..schema import load_config, save_config

    cfg = load_config(args.config, args.overrides)
    progress = not args.no_progress
    if args.raw is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, raw_dir=args.raw))
        splits, report = read_raw_texts(cfg.data.raw_dir, cfg.data.plot_policy, cfg.data.strict, progress)
        label_set = MMIMDB_LABELS
        source = {
            "kind": "raw",
            "path": cfg.data.raw_dir,
            "skipped": dict(sorted(report.counts.items())),
            "skipped_movies": [record.to_dict() for record in report.movies],
        }
    else:
        if args.shards is not None:
            cfg = dataclasses.replace(cfg, loader=dataclasses.replace(cfg.loader, shards_dir=args.shards))
        splits = read_shard_texts(cfg.loader.shards_dir, progress)
        label_set = load_manifest(cfg.loader.shards_dir).labels
        source = {"kind": "shards", "path": cfg.loader.shards_dir}

    results = evaluate_baseline(splits, cfg.baseline, cfg.seed, label_set)
    results["source"] = source

    out = Path(args.out)
    save_config(cfg, out / CONFIG_FILE)
    write_metrics_json(out / "metrics.json", results)
    write_per_label_csv(out / PER_LABEL_CSV, {"dev": results["dev"], "test": results["test"]})

    counts = results["num_samples"]
    print(
        f"TF-IDF + logistic regression: train {counts['train']}, dev {counts['dev']}, test {counts['test']} "
        f"movies ({source['kind']}: {source['path']})"
    )
    print(format_summary({"dev": results["dev"], "test": results["test"]}))
    print(f"(dev figures under tuned_on_dev are optimistic: the thresholds were tuned there)\nwrote {out}/")
    return 0
