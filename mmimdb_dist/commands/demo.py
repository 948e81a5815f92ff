"""`mmimdb-dist demo`: the embedded default end to end, on one machine, in a few minutes.

generate a synthetic MM-IMDb -> reshard it -> verify the shards against their manifest ->
read every split back through the streaming loaders (every dev/test movie exactly once,
equal train batches for two simulated ranks) -> train and evaluate the classical TF-IDF
baseline -> train a text-only BiLSTM, a poster-only CNN and their early fusion with the
real trainer (same recipe, same budget, same shards) -> evaluate the fusion's best
checkpoint on test with figures (`mmimdb-dist evaluate`) -> rank the four models in one
table under both threshold protocols (`mmimdb-dist compare`). Every step is the same code
path a real run on the real dataset takes.

The comparison is the point: a fusion model is only worth its cost if it beats each
modality alone and a bag of words on the same movies, by more than the test set's noise.

`--dataset table` runs the same seven steps on the second built-in dataset: a synthetic
table of texts, image files and ten labels of its own (`mmimdb-dist synth --format table`),
sharded through the table source; `--task multiclass` makes it one label per row (softmax,
cross-entropy, accuracy and macro-F1, a confusion matrix).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import add_config_arguments
from ..run.layout import CONFIG_FILE, PER_LABEL_CSV

STEPS = 7
# The models the demo trains, in order; resolved against the current folder, then the source tree.
DEFAULT_TRAIN_CONFIGS = (
    "configs/synth_demo_text.yaml",
    "configs/synth_demo_image.yaml",
    "configs/synth_demo_fusion.yaml",
)
TABLE_TRAIN_CONFIGS = (
    "configs/table_demo_text.yaml",
    "configs/table_demo_image.yaml",
    "configs/table_demo_fusion.yaml",
)
# What a multiclass table changes in a training config: the loss and a metric of that kind.
MULTICLASS_OVERRIDES = ("loss.name=cross_entropy", "train.select_metric=f1_macro")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        default=None,
        type=Path,
        help="folder for the raw data, shards and results (default: runs/demo, runs/demo-table with --dataset table)",
    )
    parser.add_argument(
        "--dataset",
        choices=("mmimdb", "table"),
        default="mmimdb",
        help="mmimdb: synthetic MM-IMDb (23 genres); table: a synthetic table of texts, "
        "images and ten labels of its own, through the table source (default: mmimdb)",
    )
    parser.add_argument(
        "--task",
        choices=("multilabel", "multiclass"),
        default="multilabel",
        help="--dataset table: several labels per row, or exactly one (default: multilabel)",
    )
    parser.add_argument(
        "--movies",
        "--rows",
        dest="movies",
        type=int,
        default=2000,
        help="synthetic movies, or table rows (default: 2000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes for generation and sharding (default: CPU cores, at most 4)",
    )
    parser.add_argument(
        "--train-config",
        action="append",
        metavar="YAML",
        help="a model to train (repeatable; the last one is evaluated with figures); "
        f"default: {', '.join(DEFAULT_TRAIN_CONFIGS)}",
    )
    parser.add_argument("--skip-training", action="store_true", help="stop after the baseline (data path only)")


def _train_config_path(name: str) -> Path:
    from ..errors import DataError

    for candidate in (Path(name), Path(__file__).resolve().parents[2] / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name}: training config not found (run from the repository root or pass --train-config)")


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def _read_back(cfg, manifest) -> list[str]:
    """Stream every split; return problems (empty when every count matches the manifest)."""
    from ..data.loader import build_eval_loader, build_train_loader
    from ..data.plan import train_batches_per_rank
    from ..data.plots import read_shard_split_texts
    from ..data.vocab import Vocabulary

    problems = []
    train_texts = read_shard_split_texts(manifest, "train")
    vocabulary = Vocabulary.build(train_texts.texts)
    for split in ("dev", "test"):
        seen: list[str] = []
        for batch in build_eval_loader(cfg.loader, manifest, split, vocabulary, rank=0, world_size=1):
            seen.extend(batch["ids"])
        expected = manifest.split(split).num_samples
        unique = len(set(seen))
        print(f"  {split:<5} {len(seen)} samples streamed, {unique} distinct, manifest says {expected}")
        if len(seen) != expected or unique != expected:
            problems.append(f"{split}: streamed {len(seen)} ({unique} distinct), manifest {expected}")

    world_size = 2
    counts = []
    for rank in range(world_size):
        loader = build_train_loader(
            cfg.loader, manifest, vocabulary, rank=rank, world_size=world_size, epoch=0, seed=cfg.seed
        )
        batches = list(loader)
        counts.append(len(batches))
        first = batches[0]
        shapes = ", ".join(f"{key} {tuple(first[key].shape)}" for key in ("pixel_values", "input_ids", "labels"))
        print(f"  train rank {rank}/{world_size}: {len(batches)} batches ({shapes})")
    expected_batches = train_batches_per_rank(
        manifest.split("train").num_samples, world_size, cfg.loader.batch_size, cfg.loader.drop_last
    )
    if len(set(counts)) != 1 or counts[0] != expected_batches:
        problems.append(f"train: batches per rank {counts}, expected {expected_batches} on each")
    return problems


def margins(rows) -> str:
    """One line per protocol: the leader and its lead over the runner-up, in test macro-F1."""
    lines = []
    multiclass = bool(rows) and rows[0].get("task") == "multiclass"
    for suffix, label in (("0.5", "(arg-max)"),) if multiclass else (("0.5", "at 0.5"), ("tuned", "tuned on dev")):
        ranked = sorted(rows, key=lambda row: -(row.get(f"f1_macro@{suffix}") or 0.0))
        if len(ranked) >= 2:
            first, second = ranked[0], ranked[1]
            lead = first[f"f1_macro@{suffix}"] - second[f"f1_macro@{suffix}"]
            lines.append(f"macro-F1 {label}: {first['run']} leads {second['run']} by {lead:+.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..baseline import evaluate_baseline
    from ..data.manifest import load_manifest
    from ..data.plots import read_shard_texts
    from ..data.shard import shard_dataset, summary
    from ..data.sources.mmimdb.synth import generate_dataset
    from ..data.sources.synth_table import generate_table
    from ..data.verify import verify_shards
    from ..errors import DataError
    from ..metrics import format_summary, write_metrics_json, write_per_label_csv
    from ..schema import load_config, save_config

    table = args.dataset == "table"
    out: Path = args.out or Path("runs/demo-table" if table else "runs/demo")
    source = (
        [
            "data.source=table",
            f"data.table={out / 'data' / 'items.csv'}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.image=image",
            f"data.task={args.task}",
            f"data.columns.labels={'label' if args.task == 'multiclass' else 'labels'}",
        ]
        if table
        else [f"data.raw_dir={out / 'data' / 'mmimdb'}"]
    )
    overrides = [
        *source,
        f"shard.out_dir={out / 'shards'}",
        f"loader.shards_dir={out / 'shards'}",
        f"shard.workers={args.workers}",
        *args.overrides,
    ]
    cfg = load_config(args.config, overrides)
    save_config(cfg, out / CONFIG_FILE)

    if table:
        _step(1, f"synthetic table ({args.task}): {args.movies} rows -> {cfg.data.table}")
        generate_table(out / "data", args.movies, seed=cfg.seed, task=args.task)
    else:
        _step(1, f"synthetic MM-IMDb: {args.movies} movies -> {cfg.data.raw_dir}")
        generate_dataset(out / "data", args.movies, seed=cfg.seed, workers=args.workers)

    _step(2, f"WebDataset shards -> {cfg.shard.out_dir}")
    manifest = shard_dataset(cfg)
    print(summary(manifest))

    _step(3, "verify shards against manifest.json")
    problems = verify_shards(cfg.shard.out_dir)
    if problems:
        raise DataError("shard verification failed: " + "; ".join(problems))
    print("  every shard present, sizes, sha256 and sample counts match")

    _step(4, "read back through the streaming loaders")
    problems = _read_back(cfg, manifest)
    if problems:
        raise DataError("loader read-back failed: " + "; ".join(problems))

    _step(5, "classical baseline: TF-IDF + logistic regression on the texts")
    splits = read_shard_texts(cfg.loader.shards_dir, progress=False)
    results = evaluate_baseline(splits, cfg.baseline, cfg.seed, load_manifest(cfg.loader.shards_dir).labels)
    baseline_dir = out / "baseline"
    save_config(cfg, baseline_dir / CONFIG_FILE)
    write_metrics_json(baseline_dir / "metrics.json", results)
    write_per_label_csv(baseline_dir / PER_LABEL_CSV, {"dev": results["dev"], "test": results["test"]})
    print(format_summary({"dev": results["dev"], "test": results["test"]}))
    compared = [baseline_dir]
    evaluation = None

    if not args.skip_training:
        from ..report.evaluation import evaluate_checkpoint
        from ..run.layout import run_dir_of
        from ..train.loop import train

        configs = args.train_config or list(TABLE_TRAIN_CONFIGS if table else DEFAULT_TRAIN_CONFIGS)
        kind = list(MULTICLASS_OVERRIDES) if manifest.labels.multiclass else []
        _step(6, f"train {len(configs)} models with the same recipe on the same shards")
        for config in configs:
            train_cfg = load_config(
                _train_config_path(config),
                [f"loader.shards_dir={cfg.loader.shards_dir}", f"output_dir={out / 'runs'}", f"seed={cfg.seed}", *kind],
            )
            print(f"  {train_cfg.name}: {train_cfg.model.name} ({config})", flush=True)
            result = train(train_cfg)
            run_dir = run_dir_of(train_cfg)
            print(f"  best checkpoint {result['best_checkpoint']} (epoch {result['best_epoch']}); run folder {run_dir}")
            compared.append(run_dir)

        _step(7, f"evaluate the best checkpoint on test, with figures (mmimdb-dist evaluate --run {run_dir})")
        evaluation = evaluate_checkpoint(run_dir, "best", "test")
        print(format_summary({"test": evaluation.report}))

    from ..report.compare import compare_runs, markdown_table, write_comparison

    rows = compare_runs(compared, sort_by="f1_macro", protocol="tuned_on_dev")
    csv_path, md_path = write_comparison(rows, out)
    print(
        "\nmodels trained, test split, ranked by macro-F1 "
        + (
            "(multiclass: the most probable class)"
            if manifest.labels.multiclass
            else "with thresholds tuned on dev (both protocols shown)"
        )
        + ":\n"
    )
    print(markdown_table(rows))
    print(f"\n{margins(rows)}")
    print(f"\ncomparison: {csv_path}, {md_path}")
    if evaluation is not None:
        print(f"figures: {evaluation.out_dir}/ ({', '.join(path.name for path in evaluation.figures)})")
    data_source = f"table {cfg.data.table}" if table else f"raw data {cfg.data.raw_dir}"
    print(f"done: {data_source}, shards {cfg.shard.out_dir}, baseline {baseline_dir}, runs {out / 'runs'}")
    return 0
