"""`mmimdb-dist prefetch --config X.yaml`: fill the caches with what X loads, for offline nodes."""

from __future__ import annotations

import argparse

from ..cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..models.prefetch import prefetch
    from ..schema import load_config

    cfg = load_config(args.config, args.overrides)
    fetched = prefetch(cfg)
    for item in fetched:
        print(f"{item.key} {item.name}: {item.what}")
    if not fetched:
        print("nothing to fetch: this config loads no pretrained files")
    else:
        print("compute nodes sharing these caches (HF_HOME, TORCH_HOME) can now run it with HF_HUB_OFFLINE=1")
    return 0
