"""mmimdb-dist: distributed multimodal (text + image) classification; MM-IMDb is its flagship dataset.

Each subcommand lives in its own module under `mmimdb_dist.commands` and is imported only
when it runs, so `mmimdb-dist --help` and light commands do not pay for importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import MmimdbError

# name -> (module under mmimdb_dist.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("download", "fetch and safely extract the MM-IMDb archive (resumable, checksummed)"),
    "synth": ("synth", "generate a synthetic dataset: MM-IMDb's raw layout, or a table with labels of its own"),
    "shard": ("shard", "shard raw MM-IMDb or a table into WebDataset tar shards with a manifest (or --verify)"),
    "inspect": ("inspect", "stream batches from a shard set and report what the loaders produce"),
    "baseline": ("baseline", "TF-IDF + logistic regression on the texts (classical baseline)"),
    "train": ("train", "train a configured model on the shards, on one device or under accelerate launch"),
    "evaluate": ("evaluate", "evaluate a run's checkpoint on dev or test: metrics, per-label CSV and figures"),
    "compare": (
        "compare",
        "rank finished runs in one table (CSV and Markdown), at 0.5 and tuned thresholds (or arg-max)",
    ),
    "predict": ("predict", "labels of new samples from a run's checkpoint: one text/image, a folder or JSONL"),
    "config": ("config", "print the resolved config (base: merged, --set applied, checked) without running it"),
    "prefetch": ("prefetch", "download the encoders, tokenizers and processors a config needs, for offline nodes"),
    "cache-features": ("cache_features", "run frozen encoders once over the shards and store their features"),
    "tune": (
        "tune",
        "Ray Tune search over fusion hyperparameters and the loss (ASHA on the trials' dev select_metric)",
    ),
    "submit": ("submit", "send training runs, sweeps and Tune searches to Slurm through submitit"),
    "demo": ("demo", "the embedded default end to end: synth -> shard -> verify -> read back -> baseline -> fusion"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML experiment config (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set loader.batch_size=16 (repeatable)",
    )


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only the `selected` one's module is imported."""
    parser = argparse.ArgumentParser(prog="mmimdb-dist", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="logging level (default: INFO)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress lines (bars are drawn only when stderr is a "
        "terminal; elsewhere progress is a plain log line every 30 s)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(f"mmimdb_dist.commands.{module_name}")
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in argv if arg in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    from .progress import log_formatter, plain_third_party_output, progress_disabled

    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    plain_third_party_output()

    # --no-progress before the command, or after it for the commands that also take it there
    quiet = progress_disabled() if getattr(args, "no_progress", False) else contextlib.nullcontext()
    try:
        with quiet:
            return int(args._run(args) or 0)
    except MmimdbError as exc:
        # One line whatever the message quotes (a parser's multi-line report, a name from data).
        message = " ".join(str(exc).split())
        print(f"mmimdb-dist {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmimdb-dist {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
