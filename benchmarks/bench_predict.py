"""Prediction cost: movies/s of `mmimdb-dist predict` from raw files against evaluation from shards.

Both sides run the same trained checkpoint on the same movies (one split) in one process,
on the CPU, with the checkpoint's eval batch size:

* baseline, `evaluate`'s path: the eval loader streams the split's shards (posters already
  resized and re-encoded at shard time) and the model predicts each batch;
* predict: `read_folder` + `predict_movies` from the raw MM-IMDb files: each poster is
  decoded at full size, resized and re-encoded exactly as `mmimdb-dist shard` did (so the
  probabilities match the evaluation's), then decoded and cropped like the eval loader.

The preparation alone (plots tokenised, posters prepared, no model) is timed too, since it
is what separates the two. Each command makes three interleaved runs and reports the best
of each side and the median ratio.

    python benchmarks/bench_predict.py --run runs/demo/runs/synth_demo_fusion --split test
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.inference.inputs import prepare, read_folder
from mmimdb_dist.inference.predictor import predict_movies
from mmimdb_dist.report.evaluation import _predict
from mmimdb_dist.run.checkpoints import resolve_checkpoint
from mmimdb_dist.run.export import load_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo/runs/synth_demo_fusion"))
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--raw", type=Path, help="raw MM-IMDb folder (default: the shard set's data.raw_dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bundle = load_bundle(resolve_checkpoint(args.run, "best"))
    manifest = load_manifest(bundle.cfg.loader.shards_dir)
    raw = args.raw or Path(yaml.safe_load((manifest.path.parent / "config.yaml").read_text())["data"]["raw_dir"])
    movies = list(read_folder(raw, args.split))
    count = len(movies)
    print(
        f"{args.run}: {bundle.cfg.model.name}, {args.split} split, {count} movies, image size "
        f"{bundle.cfg.loader.image_size}, eval batch {bundle.cfg.loader.eval_batch_size}, "
        f"{args.threads} torch thread(s)"
    )

    def shards() -> float:
        start = time.perf_counter()
        _predict(bundle, manifest, args.split, "cpu", progress=False)
        return count / (time.perf_counter() - start)

    def raw_files() -> float:
        start = time.perf_counter()
        for _ in predict_movies(bundle, movies):
            pass
        return count / (time.perf_counter() - start)

    def preparation() -> float:
        start = time.perf_counter()
        for movie in movies:
            prepare(movie, bundle)
        return count / (time.perf_counter() - start)

    results: dict[str, list[float]] = {"shards": [], "raw": [], "prepare": []}
    for repeat in range(args.repeats):
        for name, run in (("shards", shards), ("raw", raw_files), ("prepare", preparation)):
            results[name].append(run())
        print(
            f"  run {repeat + 1}: shards {results['shards'][-1]:.1f}, raw files {results['raw'][-1]:.1f}, "
            f"preparation alone {results['prepare'][-1]:.1f} movies/s"
        )
    ratios = [raw / shard for raw, shard in zip(results["raw"], results["shards"], strict=True)]
    print(f"\n| path | movies/s (best of {args.repeats}) |\n| --- | ---: |")
    print(f"| evaluate: eval loader over shards (baseline) | {max(results['shards']):.1f} |")
    print(f"| predict: raw files, shard-equivalent preparation | {max(results['raw']):.1f} |")
    print(f"| predict's preparation alone (no model) | {max(results['prepare']):.1f} |")
    print(f"\nraw / shards: per-run {', '.join(f'{r:.2f}x' for r in ratios)}; median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
