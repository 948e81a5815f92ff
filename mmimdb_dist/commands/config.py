"""`mmimdb-dist config --config X [--set KEY=VALUE ...]`: the resolved config, checked, run nothing.

What a run of X would use, as YAML: its `base:` configs merged under it, the `--set` overrides
applied, every default written out and every value validated (a mistake is the same one line
`train` would give), without the sections its model never reads (`schema.used_config`: the
text encoder of an image-only model, the other text-encoder family's keys). The output is a
complete config: `mmimdb-dist train --config` runs it as it is, and a run saves the same.
"""

from __future__ import annotations

import argparse

from ..cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..schema import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0
