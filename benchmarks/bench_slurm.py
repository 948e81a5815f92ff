"""What Slurm adds to a run: the same tiny training run started directly and sent as a job.

`mmimdb-dist train` on one process is the baseline; `mmimdb-dist submit train --wait` on the
single-node Slurm of launch/slurm/ is measured against it, end to end (from the command to
its exit, as a user waits), and split with sacct into the wait in the queue (Submit to
Start) and the job itself (Start to End). The trainer's own `train_seconds` is the same in
both. Runs alternate (direct, job, direct, job, ...) so that a busy machine weighs on both.

    eval "$(launch/slurm/start.sh)"      # as root
    python benchmarks/bench_slurm.py --repeats 2 --work-dir /tmp/bench-slurm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_config(shards: Path, output_dir: Path, name: str) -> dict:
    """The trainer tests' tiny early-fusion model (tests/dist_scripts/train_fixtures.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from dist_scripts.train_fixtures import tiny_config as make

    return make(shards, output_dir, name, epochs=2)


def build_shards(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from dist_scripts.loader_fixtures import build_shards as build

    return build(work, 600, 25, name="shards")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


def _sacct_times(job_id: str) -> tuple[float, float]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Submit,Start,End"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    submit, start, end = (datetime.fromisoformat(value) for value in out.split("|"))
    return (start - submit).total_seconds(), (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-slurm"))
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("SLURM_CONF is not set: start the cluster with launch/slurm/start.sh first")
    work = args.work_dir
    shutil.rmtree(work / "runs", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    shards = build_shards(work)
    cli = [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING"]
    rows = {"direct": [], "job": [], "queue": [], "in_job": [], "train_direct": [], "train_job": []}
    for repeat in range(args.repeats):
        for kind in ("direct", "job"):
            name = f"{kind}-{repeat}"
            config = work / f"{name}.yaml"
            config.write_text(yaml.safe_dump(tiny_config(shards, work / "runs", name)), encoding="utf-8")
            if kind == "direct":
                elapsed, _ = _timed([*cli, "train", "--config", str(config)], work)
            else:
                elapsed, stdout = _timed(
                    [*cli, "submit", "train", "--config", str(config), "--cluster", "slurm", "--time", "10", "--wait"],
                    work,
                )
                job_id = stdout.split("submitted job ")[1].split()[0]
                time.sleep(2)  # the end time reaches the accounting database a moment later
                queue, in_job = _sacct_times(job_id)
                rows["queue"].append(queue)
                rows["in_job"].append(in_job)
            rows[kind].append(elapsed)
            final = json.loads((work / "runs" / name / "final_metrics.json").read_text())
            rows[f"train_{kind}"].append(final["train_seconds"])
            print(f"{name}: {elapsed:.1f} s end to end, trainer {final['train_seconds']:.1f} s", flush=True)
    median = {key: statistics.median(values) for key, values in rows.items() if values}
    print("\n| | median s |\n| --- | ---: |")
    print(f"| `mmimdb-dist train` (baseline), end to end | {median['direct']:.1f} |")
    print(f"| `mmimdb-dist submit train --wait`, end to end | {median['job']:.1f} |")
    print(f"| of which in the queue (sacct Submit to Start) | {median['queue']:.1f} |")
    print(f"| of which the job (sacct Start to End) | {median['in_job']:.1f} |")
    print(f"| trainer's train_seconds, direct / job | {median['train_direct']:.1f} / {median['train_job']:.1f} |")
    print(
        f"\njob / direct, end to end: {median['job'] / median['direct']:.2f}x; "
        f"added by Slurm and submitit: {median['job'] - median['direct']:.1f} s per run"
    )


if __name__ == "__main__":
    main()
