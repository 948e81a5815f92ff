"""Data pipeline benchmark: WebDataset shards vs the usual folder-of-files Dataset.

Both sides read the same synthetic movies with the same worker count, batch size, number of
samples and tokenizer (a word vocabulary, so text costs the same on both sides):

* baseline, as common projects do it: a map-style torch Dataset that opens `plot.txt` and
  the full-size `poster.jpg` of one movie per __getitem__, PIL decode, Resize(256),
  RandomCrop(224), horizontal flip, ColorJitter, ToTensor + Normalize in the worker;
* shards: `build_train_loader` (posters pre-resized at shard time, sequential tar reads,
  libjpeg-turbo decoding of the small poster, one uint8 crop+resize per sample). Colour
  jitter and normalisation belong on the accelerator (`to_device(..., color_jitter=0.4)`);
  the headline figure is the loader's uint8 output, and a second run also pays that
  `to_device` on this machine's CPU, in the training process.

Throughput is samples per second from creating the iterator (worker start-up included) to
the last batch, and per loader worker (one worker ~ one core). The mean padded plot length
per batch with and without length bucketing is reported too.

    python benchmarks/bench_data.py --movies 2000 --workers 2
    python benchmarks/bench_data.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmimdb_dist.data.device import to_device
from mmimdb_dist.data.loader import build_train_loader
from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset
from mmimdb_dist.data.vocab import Vocabulary
from mmimdb_dist.schema import LoaderConfig, load_config


def prepare(work: Path, movies: int, workers: int) -> tuple[Path, Path]:
    """Synthetic raw data, its shard set, and the baseline's folder of files (all cached)."""
    raw = work / "raw" / "mmimdb"
    if not (raw / "split.json").is_file():
        generate_dataset(work / "raw", movies, seed=0, workers=workers)
    shards = work / "shards"
    if not (shards / "manifest.json").is_file():
        cfg = load_config(None, [f"data.raw_dir={raw}", f"shard.out_dir={shards}", f"shard.workers={workers}"])
        shard_dataset(cfg)
    folder = work / "folder"
    if not (folder / "done").is_file():
        # One folder per train movie: the shard's plot text and the raw full-size poster.
        manifest = load_manifest(shards)
        for path in tqdm(manifest.shard_paths("train"), desc="folder of files", unit="shard"):
            with tarfile.open(path) as tar:
                for member in tar:
                    movie_id, ext = member.name.split(".", 1)
                    target = folder / movie_id
                    target.mkdir(parents=True, exist_ok=True)
                    data = tar.extractfile(member).read()
                    if ext == "txt":
                        (target / "plot.txt").write_bytes(data)
                    elif ext == "json":
                        (target / "labels.json").write_text(json.dumps(json.loads(data)["labels"]))
                        shutil.copyfile(raw / "dataset" / f"{movie_id}.jpeg", target / "poster.jpg")
        (folder / "done").write_text("")
    return shards, folder


class FolderDataset(Dataset):
    """The common baseline: one movie per __getitem__, every file opened on its own."""

    def __init__(self, folder: Path, encoder: Vocabulary, max_length: int, image_size: int) -> None:
        from torchvision import transforms

        self.movies = sorted(p for p in folder.iterdir() if p.is_dir())
        self.encoder, self.max_length = encoder, max_length
        self.transform = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.RandomCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ColorJitter(0.4, 0.4, 0.4),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def __len__(self) -> int:
        return len(self.movies)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        movie = self.movies[index]
        text = (movie / "plot.txt").read_text(encoding="utf-8")
        labels = json.loads((movie / "labels.json").read_text())
        with Image.open(movie / "poster.jpg") as image:
            pixels = self.transform(image.convert("RGB"))
        return {
            "input_ids": self.encoder.encode(text, self.max_length),
            "pixel_values": pixels,
            "labels": torch.tensor(labels, dtype=torch.float32),
        }


def pad_collate(samples: list[dict]) -> dict:
    longest = max(len(s["input_ids"]) for s in samples)
    input_ids = torch.zeros(len(samples), longest, dtype=torch.int64)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample["input_ids"])] = torch.tensor(sample["input_ids"])
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).long(),
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
    }


def time_batches(batches, num_batches: int, desc: str, move: bool) -> tuple[int, float]:
    samples = 0
    start = time.perf_counter()
    for index, batch in enumerate(tqdm(batches, total=num_batches, desc=desc, unit="batch", leave=False)):
        if move:
            batch = to_device(batch, "cpu", color_jitter=0.4, jitter_seed=index)
        samples += batch["pixel_values"].shape[0]
        if index + 1 == num_batches:
            break
    return samples, time.perf_counter() - start


def mean_padded_length(cfg: LoaderConfig, manifest, encoder, bucket: bool) -> float:
    """Mean token width of the train batches of one epoch (images shrunk: only text matters)."""
    cfg = dataclasses.replace(cfg, bucket_by_length=bucket, image_size=16, augment=False)
    widths = [
        batch["input_ids"].shape[1]
        for batch in build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=0, seed=0)
    ]
    return sum(widths) / len(widths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=2000, help="synthetic movies (60%% are train)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers on both sides")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-text-length", type=int, default=512)
    parser.add_argument("--work-dir", type=Path, help="keep data here and reuse it (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; the best is reported")
    parser.add_argument("--quick", action="store_true", help="200 movies, one run: checks the benchmark runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.movies, args.repeats = 200, 1
    temp = None
    if args.work_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="bench-data-")
        args.work_dir = Path(temp.name)
    try:
        shards, folder = prepare(args.work_dir, args.movies, max(args.workers, 1))
        manifest = load_manifest(shards)
        encoder = Vocabulary.build((folder / p.name / "plot.txt").read_text() for p in folder.iterdir() if p.is_dir())
        cfg = LoaderConfig(
            batch_size=args.batch_size,
            num_workers=args.workers,
            image_size=args.image_size,
            max_text_length=args.max_text_length,
        )

        baseline_set = FolderDataset(folder, encoder, args.max_text_length, args.image_size)
        num_batches = len(build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=0, seed=0))
        runs: dict[str, list[tuple[int, float]]] = {"baseline": [], "shards": [], "shards_cpu": []}
        skipped = 0
        # Interleaved repeats, best of each kept: the machine may be shared, and the best run
        # is the one least disturbed by other processes.
        for repeat in range(args.repeats):
            baseline = DataLoader(
                baseline_set,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                collate_fn=pad_collate,
                drop_last=True,
            )
            runs["baseline"].append(time_batches(baseline, num_batches, "folder baseline", move=False))
            for name, move in (("shards", False), ("shards_cpu", True)):
                loader = build_train_loader(cfg, manifest, encoder, rank=0, world_size=1, epoch=repeat, seed=0)
                runs[name].append(time_batches(loader, num_batches, name, move=move))
                skipped += loader.skipped
            rates = {name: n / t for name, (n, t) in ((k, v[-1]) for k, v in runs.items())}
            print(
                f"  run {repeat + 1}: "
                + ", ".join(f"{name} {rate:.1f} samples/s" for name, rate in rates.items())
                + f"; shards / baseline {rates['shards'] / rates['baseline']:.2f}x",
                flush=True,
            )
        (base_samples, base_s), (shard_samples, shard_s), (cpu_samples, cpu_s) = (
            min(runs[name], key=lambda run: run[1] / run[0]) for name in ("baseline", "shards", "shards_cpu")
        )

        cores = max(args.workers, 1)
        base_rate, shard_rate = base_samples / base_s, shard_samples / shard_s
        padded_on = mean_padded_length(cfg, manifest, encoder, True)
        padded_off = mean_padded_length(cfg, manifest, encoder, False)
        print(
            f"data pipeline: {args.movies} synthetic movies, {shard_samples} train samples, "
            f"batch {args.batch_size}, {args.workers} workers, image {args.image_size}, "
            f"torch threads {torch.get_num_threads()}, best of {args.repeats}"
        )
        print(
            f"  folder baseline: {base_samples} samples in {base_s:.2f} s = {base_rate:.1f} samples/s "
            f"= {base_rate / cores:.1f} samples/s per worker"
        )
        print(
            f"  shards:          {shard_samples} samples in {shard_s:.2f} s = {shard_rate:.1f} samples/s "
            f"= {shard_rate / cores:.1f} samples/s per worker"
        )
        print(
            f"  shards + to_device (jitter, normalise) on CPU: {cpu_samples} samples in {cpu_s:.2f} s = "
            f"{cpu_samples / cpu_s:.1f} samples/s"
        )
        ratios = sorted(
            (ns / ts) / (nb / tb) for (nb, tb), (ns, ts) in zip(runs["baseline"], runs["shards"], strict=True)
        )
        print(f"  median of the per-run ratios: {ratios[len(ratios) // 2]:.2f}x")
        print(
            f"  ratio shards / baseline (same workers, so also per core): {shard_rate / base_rate:.2f}x "
            f"({cpu_samples / cpu_s / base_rate:.2f}x with jitter and normalisation on the CPU)"
        )
        print(
            f"  mean padded length per batch (word tokens, max {args.max_text_length}): "
            f"{padded_off:.1f} without bucketing, {padded_on:.1f} with bucketing "
            f"({100 * (1 - padded_on / padded_off):.0f}% less)"
        )
        print(f"  skipped samples: {skipped}")
    finally:
        if temp is not None:
            temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
