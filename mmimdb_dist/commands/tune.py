"""`mmimdb-dist tune --config configs/tune/X.yaml [--resume] [--address HOST:PORT]`."""

from __future__ import annotations

import argparse

from ..cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted search of this config (Tuner.restore): finished "
        "trials are kept, unfinished ones go on from their last checkpoint",
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join a running Ray cluster (e.g. started by a Slurm job) instead of starting a local one",
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..tune.runner import quiet_ray_environment

    quiet_ray_environment()  # before anything imports ray
    from ..tune.runner import run_search
    from ..tune.space import load_search

    if not args.config:
        raise ConfigError("--config: expected a search YAML, e.g. configs/tune/fusion_search.yaml")
    loaded = load_search(args.config, args.overrides)
    outcome = run_search(loaded, resume=args.resume, address=args.address)
    print(f"{outcome.num_trials} trials: {outcome.results_md}")
    print(outcome.results_md.read_text(encoding="utf-8"))
    if outcome.best_config is not None:
        print(f"best config: {outcome.best_config}\ntrain it: mmimdb-dist train --config {outcome.best_config}")
    return 0
