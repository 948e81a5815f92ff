"""Sharding a table source: peak memory and rate from 10^4 to 10^6 rows.

The table source streams its rows into an on-disk spool and keeps counts only, so the shard
step's peak RSS should not grow with the number of rows. For each size this writes a
text-only table (id, text of ~40 words, 1-3 of 12 labels joined with "|"; no split column, so
the stratified split is generated too) and shards it in a fresh process (one worker, in
process, so the peak RSS measured is the whole step's), reporting rows/s, peak RSS and the
ratio of each size's peak to the smallest size's.

    OMP_NUM_THREADS=1 python benchmarks/bench_table.py --sizes 10000 1000000 --work /tmp/bench-table
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = [f"label {chr(0x3B1 + i)}" for i in range(12)]  # "label α", "label β", ...
WORDS = (
    "river",
    "stone",
    "letter",
    "garden",
    "window",
    "harbour",
    "bridge",
    "silence",
    "promise",
    "shadow",
    "market",
    "summer",
    "winter",
    "forest",
    "desert",
    "engine",
    "signal",
    "ladder",
)


def write_table(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "labels"])
        for index in range(rows):
            labels = rng.sample(LABELS, rng.randint(1, 3))
            text = " ".join(rng.choice(WORDS) for _ in range(40))
            writer.writerow([f"r{index}", text, "|".join(labels)])


def shard_step(table: str, out: str) -> dict:
    """Run in a child process: shard `table` into `out`; its own peak RSS and time."""
    from mmimdb_dist.data.shard import shard_dataset
    from mmimdb_dist.schema import load_config

    cfg = load_config(
        None,
        [
            "data.source=table",
            f"data.table={table}",
            "data.columns.id=id",
            "data.columns.text=text",
            "data.columns.labels=labels",
            f"shard.out_dir={out}",
            "shard.workers=1",
            "shard.samples_per_shard=2000",
        ],
    )
    start = time.perf_counter()
    manifest = shard_dataset(cfg)
    seconds = time.perf_counter() - start
    rows = sum(manifest.num_samples.values())
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shards": sum(len(info.shards) for info in manifest.splits.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-table"))
    parser.add_argument("--child", nargs=2, metavar=("TABLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(shard_step(*args.child)))
        return
    results = []
    for size in args.sizes:
        folder = args.work / str(size)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        table = folder / "items.csv"
        write_table(table, size)
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(table), str(folder / "shards")],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        result = json.loads(output.stdout.strip().splitlines()[-1])
        result["table_mb"] = table.stat().st_size / 2**20
        results.append(result)
        shutil.rmtree(folder, ignore_errors=True)
    base = results[0]["peak_rss_mb"]
    columns = ("table MB", 9), ("shards", 7), ("seconds", 8), ("rows/s", 8), ("peak RSS MB", 12), ("vs smallest", 12)
    print(f"{'rows':>10} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for r in results:
        print(
            f"{r['rows']:>10,} {r['table_mb']:>9.1f} {r['shards']:>7} {r['seconds']:>8.1f} {r['rows_per_s']:>8,.0f} "
            f"{r['peak_rss_mb']:>12.1f} {r['peak_rss_mb'] / base:>11.2f}x"
        )


if __name__ == "__main__":
    main()
