"""`mmimdb-dist cache-features --config X.yaml [--out DIR]`: frozen encoders once, features as shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="features folder (default: <loader.shards_dir>-features-<name>)")
    parser.add_argument(
        "--pooled-only",
        action="store_true",
        help="store only pooled vectors (smaller; attention fusion needs the sequences)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage type of the features (float16 halves the size)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device for the encoders: auto (cuda if available, the default), cpu, cuda:N",
    )


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..models.cache_features import cache_features
    from ..schema import load_config

    device = resolve_device(args.device)
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(f"{cfg.loader.shards_dir.rstrip('/')}-features-{cfg.name}")
    features = cache_features(cfg, out, sequences=not args.pooled_only, dtype=args.dtype, device=device)
    counts = ", ".join(f"{name} {info.num_samples}" for name, info in features.manifest.splits.items())
    spec = features.spec
    print(
        f"features of {cfg.model.text.kind} + {cfg.model.image.kind} written to {out}: {counts}; "
        f"text {spec.text_dim}-d, image {spec.image_dim}-d, "
        f"{'with token/patch sequences' if spec.sequences else 'pooled only'}, {spec.dtype}"
    )
    print(f"train a head on them: --set loader.features_dir={out}")
    return 0
