"""How cost grows with the number of movies: synth, shard, a train epoch of the loader, an
evaluation pass and cache-features, per movie, at several dataset sizes.

For each size (default 2,600 and 25,959, the real MM-IMDb's count; add 259,590 on a machine
with the disk and the hours) this runs, each step in a fresh process so its peak RSS is its own:
1. `synth` (movies/s, disk per movie of the raw layout);
2. `shard` (movies/s, peak RSS, disk per movie of the shard set);
3. one train epoch of the shard loader with `--workers` workers at `--image-size` px
   (samples/s, peak RSS), and the gap between the last batch of epoch 0 and the first of
   epoch 1 when the next epoch's loader is started only then (`cold`, as before) and when it
   was started before a simulated 2 s end-of-epoch evaluation (`prefetched`, as the trainer does);
4. one evaluation pass over the test split (samples/s);
5. `cache-features` of the demo's small BiLSTM + CNN encoders over every split (movies/s).
Cost per movie should stay flat as the size grows; the table says where it does not.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sizes 2600 25959 --work /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# --------------------------------------------------------------------------- steps (child processes)


def step_synth(args: argparse.Namespace) -> dict:
    from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset

    start = time.perf_counter()
    root = generate_dataset(Path(args.out), args.movies, seed=0, workers=args.workers)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "per_s": args.movies / seconds, "disk_mb": _disk_mb(root)}


def step_shard(args: argparse.Namespace) -> dict:
    from mmimdb_dist.data.shard import shard_dataset
    from mmimdb_dist.schema import load_config

    cfg = load_config(
        REPO / "configs" / "synth_data.yaml",
        [f"data.raw_dir={args.raw}", f"shard.out_dir={args.out}", f"shard.workers={args.workers}"],
    )
    start = time.perf_counter()
    manifest = shard_dataset(cfg)
    seconds = time.perf_counter() - start
    kept = sum(split.num_samples for split in manifest.splits.values())
    return {"seconds": seconds, "per_s": kept / seconds, "disk_mb": _disk_mb(Path(args.out)), "kept": kept}


def _loader_setup(args: argparse.Namespace):
    import dataclasses

    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.data.vocab import Vocabulary
    from mmimdb_dist.schema import LoaderConfig

    manifest = load_manifest(args.shards)
    cfg = LoaderConfig(
        shards_dir=args.shards,
        batch_size=32,
        eval_batch_size=64,
        num_workers=args.workers,
        image_size=args.image_size,
        max_text_length=256,
    )
    vocabulary = Vocabulary.build(["the a of in to and movie story"], min_freq=1)
    return dataclasses.replace(cfg), manifest, vocabulary


def step_loader(args: argparse.Namespace) -> dict:
    import torch

    from mmimdb_dist.data.loader import build_eval_loader, build_train_loader

    torch.set_num_threads(1)
    cfg, manifest, vocabulary = _loader_setup(args)

    def train_loader(epoch: int):
        return build_train_loader(cfg, manifest, vocabulary, rank=0, world_size=1, epoch=epoch, seed=0)

    start = time.perf_counter()
    samples = 0
    batches = train_loader(0).start()
    last = None
    for batch in batches:
        samples += len(batch["ids"])
        last = time.perf_counter()
    epoch_seconds = last - start
    begin = time.perf_counter()  # cold: the next epoch's loader started when it is needed
    next(train_loader(1).start())
    cold_gap = time.perf_counter() - begin
    prefetched = train_loader(2).start()  # started, then a 2 s "evaluation", then the first batch
    time.sleep(2.0)
    begin = time.perf_counter()
    next(prefetched)
    prefetched_gap = time.perf_counter() - begin
    del prefetched

    start = time.perf_counter()
    evaluated = sum(
        len(batch["ids"]) for batch in build_eval_loader(cfg, manifest, "test", vocabulary, rank=0, world_size=1)
    )
    eval_seconds = time.perf_counter() - start
    return {
        "train_per_s": samples / epoch_seconds,
        "train_samples": samples,
        "cold_gap_s": cold_gap,
        "prefetched_gap_s": prefetched_gap,
        "eval_per_s": evaluated / eval_seconds,
        "eval_samples": evaluated,
    }


def step_cache(args: argparse.Namespace) -> dict:
    from mmimdb_dist.models.cache_features import cache_features
    from mmimdb_dist.schema import load_config

    cfg = load_config(
        REPO / "configs" / "synth_demo_fusion.yaml", [f"loader.shards_dir={args.shards}", "train.num_threads=1"]
    )
    start = time.perf_counter()
    features = cache_features(cfg, args.out, sequences=False, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    movies = sum(split.num_samples for split in features.manifest.splits.values())
    return {"seconds": seconds, "per_s": movies / seconds, "disk_mb": _disk_mb(Path(args.out))}


STEPS = {"synth": step_synth, "shard": step_shard, "loader": step_loader, "cache": step_cache}


# --------------------------------------------------------------------------- driver


def run_step(name: str, **kwargs) -> dict:
    argv = [sys.executable, __file__, "--step", name]
    for key, value in kwargs.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2600, 25959])
    parser.add_argument("--work", type=Path, default=Path("runs/scale"))
    parser.add_argument("--workers", type=int, default=4, help="loader workers (and synth/shard processes)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--keep", action="store_true", help="keep each size's data (default: removed)")
    # Child-process arguments.
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    parser.add_argument("--movies", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        result = STEPS[args.step](args)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return

    print(
        f"{os.cpu_count()} CPU cores, {args.workers} workers, posters at {args.image_size} px; "
        "each step in its own process",
        flush=True,
    )
    header = (
        "| movies | synth movies/s | raw KB/movie | shard movies/s | shard peak RSS MB | shard KB/movie "
        "| loader samples/s | loader peak RSS MB | epoch gap cold / prefetched (s) | eval samples/s "
        "| cache-features movies/s |"
    )
    rows = [header, "|" + "---:|" * 11]
    for size in args.sizes:
        folder = args.work / str(size)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        synth = run_step("synth", out=folder / "raw", movies=size, workers=args.workers)
        shard = run_step("shard", raw=folder / "raw", out=folder / "shards", workers=args.workers)
        loader = run_step("loader", shards=folder / "shards", workers=args.workers, image_size=args.image_size)
        cache = run_step("cache", shards=folder / "shards", out=folder / "features")
        rows.append(
            f"| {size:,} | {synth['per_s']:.0f} | {synth['disk_mb'] * 1024 / size:.0f} "
            f"| {shard['per_s']:.0f} | {shard['peak_rss_mb']:.0f} | {shard['disk_mb'] * 1024 / shard['kept']:.1f} "
            f"| {loader['train_per_s']:.0f} | {loader['peak_rss_mb']:.0f} "
            f"| {loader['cold_gap_s']:.2f} / {loader['prefetched_gap_s']:.3f} | {loader['eval_per_s']:.0f} "
            f"| {cache['per_s']:.0f} |"
        )
        print(rows[-1], flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n".join(["", *rows]))


if __name__ == "__main__":
    main()
