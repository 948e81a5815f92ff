"""`mmimdb-dist predict`: labels (genres, for MM-IMDb) of new samples from a trained checkpoint alone.

One movie:      mmimdb-dist predict --run runs/X --plot "A detective ..." --poster poster.jpeg
Leave out --plot or --poster to predict from the other modality (fusion models).
Many movies:    mmimdb-dist predict --run runs/X --input data/new_movies/ --output preds.jsonl
                (an MM-IMDb-format folder, optionally --split test of its split.json, or a
                JSONL file of {"id", "plot", "poster"} objects)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, metavar="RUN_DIR", help="run folder (runs/<name>)")
    parser.add_argument(
        "--checkpoint",
        default="best",
        metavar="best|last|PATH",
        help="the run's best (default) or last checkpoint, or a checkpoint folder",
    )
    parser.add_argument("--plot", help="plot summary of one movie")
    parser.add_argument("--poster", type=Path, metavar="FILE", help="poster image of one movie")
    parser.add_argument("--json", action="store_true", help="one movie: print the JSON record instead of a table")
    parser.add_argument(
        "--input", type=Path, metavar="DIR|FILE.jsonl", help="batch mode: an MM-IMDb-format folder or a JSONL file"
    )
    parser.add_argument(
        "--split",
        choices=("train", "dev", "test"),
        help="batch mode over a raw folder: only this split of its split.json",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE.jsonl", help="batch mode: where the JSONL results go (written atomically)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="batch mode: replace --output even when it is not an earlier predictions file",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="batch mode: a movie that cannot be read becomes an error record instead of stopping the run",
    )
    parser.add_argument(
        "--workers",
        type=_count(0),
        default=0,
        help="batch mode: processes preparing posters while the model runs (default: 0, all in this process)",
    )
    parser.add_argument(
        "--batch-size",
        type=_count(1),
        default=None,
        help="movies per forward pass (default: the run's loader.eval_batch_size)",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (cuda if available, the default), cpu, cuda:N"
    )
    parser.add_argument(
        "--threshold",
        default="tuned",
        metavar="tuned|X",
        help="decision rule: 'tuned' (default) applies the thresholds tuned on dev that "
        "the checkpoint carries (0.5 where it has none); a number X in (0, 1) "
        "applies X to every label, e.g. 0.5",
    )


def _count(minimum: int):
    """An argparse type: an integer of at least `minimum` (`--batch-size 0` and `--workers -2`
    are one error line, not a run that divides by zero or hangs)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {value}")
        return value

    return parse


def parse_threshold(choice: str) -> float | None:
    """None for 'tuned', else the one threshold for every label (checked before a model loads)."""
    from ..errors import MmimdbError

    if choice == "tuned":
        return None
    try:
        value = float(choice)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise MmimdbError(f"--threshold: expected 'tuned' or a number in (0, 1), got {choice!r}")
    return value


def apply_threshold(bundle, value: float | None) -> None:
    """Replace the bundle's tuned thresholds by `value` for every label (None keeps them); a
    multiclass model has none to replace (its answer is the most probable class)."""
    import numpy as np

    from ..errors import MmimdbError

    if value is not None:
        if bundle.labels.multiclass:
            raise MmimdbError(
                "--threshold: this model is multiclass and answers with its most probable class; it has no thresholds"
            )
        bundle.thresholds = np.full(len(bundle.thresholds), value)
        bundle.thresholds_source = f"{value:g} for every label (--threshold)"


def _print_table(record: dict, bundle) -> None:
    thresholds = dict(zip(bundle.labels.names, bundle.thresholds, strict=True))
    probabilities = sorted(record["probabilities"].items(), key=lambda item: -item[1])
    width = max(12, *(len(name) for name in bundle.labels.names))
    multiclass = bundle.labels.multiclass
    print(f"{'':2}{'label':<{width}} {'probability':>11}" + ("" if multiclass else f" {'threshold':>9}"))
    for name, probability in probabilities:
        mark = "*" if name in record["labels"] else " "
        print(f"{mark:2}{name:<{width}} {probability:11.4f}" + ("" if multiclass else f" {thresholds[name]:9.2f}"))
    missing = f"; missing: {', '.join(record['missing'])}" if record.get("missing") else ""
    print(
        ("* the most probable class" if multiclass else f"* above its threshold ({bundle.thresholds_source})") + missing
    )
    print(f"predicted: {', '.join(record['labels']) or '(none)'}")


def is_predictions_file(path: Path) -> bool:
    """An earlier `predict` output, judged by its content: empty, or JSONL whose first line is a
    prediction record (an id and `probabilities`) or an error record (exactly an id and `error`).
    An input JSONL (id, plot, poster) or any other file is not one, whatever its name."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
        if not first.strip():
            return True
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and isinstance(record.get("id"), str)
        and ("probabilities" in record or set(record) == {"id", "error"})
    )


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..errors import MmimdbError
    from ..inference.inputs import MovieInput, read_folder, read_jsonl
    from ..inference.predictor import predict_movies, write_jsonl
    from ..outputs import check_output_file, exclusive_file
    from ..run.checkpoints import resolve_checkpoint
    from ..run.export import load_bundle

    args.device = resolve_device(args.device)
    threshold = parse_threshold(args.threshold)
    single = args.plot is not None or args.poster is not None
    if single == (args.input is not None):
        raise MmimdbError("give either --plot and/or --poster (one movie) or --input (batch mode)")
    if args.input is not None and args.output is None:
        raise MmimdbError("--input needs --output FILE.jsonl")
    if args.output is not None:
        if args.input is not None and args.output.resolve() == args.input.resolve():
            raise MmimdbError(f"--output {args.output}: is the --input file; choose another name (it was not changed)")
        owned = (lambda path: True) if args.overwrite else is_predictions_file
        check_output_file(args.output, "--output", "a predictions file (.jsonl)", owned)
    if args.poster is not None and not args.poster.exists():
        raise MmimdbError(f"{args.poster}: poster file missing")  # before a model is loaded

    checkpoint = resolve_checkpoint(args.run, args.checkpoint)
    bundle = load_bundle(checkpoint, args.device)
    apply_threshold(bundle, threshold)
    if args.poster is not None and not bundle.uses_image:
        logger.warning(
            "--poster %s: this model reads no image (%s); the poster is not used", args.poster, bundle.cfg.model.name
        )
    if single:
        movie = MovieInput(
            id="movie", plot=args.plot, poster=args.poster, where=str(args.poster) if args.plot is None else "--plot"
        )
        if args.plot is not None and args.poster is not None:
            movie.where = f"--plot/--poster {args.poster}"
        record = next(predict_movies(bundle, [movie], device=args.device))
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            _print_table(record, bundle)
        return 0

    if args.input.is_dir():
        movies = list(read_folder(args.input, args.split))
    else:
        if args.split:
            raise MmimdbError("--split applies to a raw MM-IMDb folder, not to a JSONL file")
        movies = list(read_jsonl(args.input))
    records = predict_movies(
        bundle,
        movies,
        device=args.device,
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        total=len(movies),
    )
    errors = 0

    def counted(records):
        nonlocal errors
        for record in records:
            errors += "error" in record
            yield record

    with exclusive_file(args.output, "--output", "predict"):
        count = write_jsonl(counted(records), args.output)
    skipped = f", {errors} skipped (their lines hold the error)" if errors else ""
    print(
        f"{count - errors} movies predicted{skipped} with {checkpoint} (thresholds {bundle.thresholds_source}) "
        f"-> {args.output}"
    )
    return 0
