"""`mmimdb-dist train`: train a configured model; plain or under `accelerate launch`, same command."""

from __future__ import annotations

import argparse

from ..cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        default=None,
        help="continue a run: 'auto' picks the newest complete checkpoint of the run "
        "folder (starts fresh when there is none), or give a checkpoint folder",
    )


def run(args: argparse.Namespace) -> int:
    from ..metrics import format_summary
    from ..run.checkpoints import resolve_resume
    from ..run.layout import FINAL_METRICS, checkpoints_dir_of, run_dir_of
    from ..schema import load_config
    from ..train.loop import train

    cfg = load_config(args.config, args.overrides)
    if args.resume not in (None, "auto"):
        # A mistyped path fails here, before any process group or model is set up.
        resolve_resume(args.resume, checkpoints_dir_of(run_dir_of(cfg)))
    result = train(cfg, resume=args.resume)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(format_summary({"dev": result["dev"], "test": result["test"]}))
        print(
            f"best checkpoint {result['best_checkpoint']} (epoch {result['best_epoch']}, "
            f"dev {result['select_metric']} {result['best_dev_metric']:.4f}); results in "
            f"{run_dir_of(cfg) / FINAL_METRICS}"
        )
    return 0
