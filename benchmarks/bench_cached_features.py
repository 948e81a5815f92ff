"""One search trial end to end against the same trial on cached encoder features.

The trial is what `mmimdb-dist tune` runs per configuration: `train(cfg)` on the synthetic
shards, an early-fusion head over frozen encoders, dev evaluation every epoch, then the
best checkpoint evaluated on dev and test. End to end, every batch of every epoch and
every evaluation goes through the encoders again; on cached features
(`mmimdb-dist cache-features`, then `loader.features_dir`) only the head runs. The
encoders have the architectures of DistilBERT-base (6 layers, 768-d, 256 tokens) and
ResNet-18 (224 px posters), frozen, as in a search over heads on pretrained encoders; their
weights are random here (this machine is offline), which changes nothing about their cost.

Both trials are timed in this process (wall time of `train`, start-up of Python and
imports excluded), as is the one-off caching run. Printed: the three times, the per-trial
speed-up, and the break-even number of trials once the caching run is paid.

    python benchmarks/bench_cached_features.py --movies 300 --work-dir /tmp/bench/cf
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from mmimdb_dist.schema import ExperimentConfig, from_dict, load_config

DISTILBERT = {
    "model_type": "distilbert",
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
}


def build_data(work: Path, movies: int) -> Path:
    from mmimdb_dist.data.shard import shard_dataset
    from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset

    shards = work / "shards"
    if (shards / "manifest.json").is_file():
        return shards
    raw = work / "raw"
    if not (raw / "mmimdb" / "split.json").is_file():
        generate_dataset(raw, movies, seed=0, workers=2)
    shard_dataset(
        load_config(
            None,
            [
                f"data.raw_dir={raw / 'mmimdb'}",
                f"shard.out_dir={shards}",
                "shard.samples_per_shard=32",
                "shard.min_shards=2",
            ],
        )
    )
    return shards


def build_tokenizer(work: Path, shards: Path) -> Path:
    """A WordPiece tokenizer trained on the train plots, saved as a Hugging Face folder."""
    import tarfile

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    folder = work / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    plots = []
    for tar_path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            plots += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(plots, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(str(folder))
    return folder


def trial_config(shards: Path, tokenizer: Path, runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "trial",
        "seed": 0,
        "output_dir": str(runs),
        "loader": {
            "shards_dir": str(shards),
            "batch_size": args.batch_size,
            "eval_batch_size": 32,
            "num_workers": 1,
            "image_size": 224,
            "max_text_length": args.max_text_length,
            "augment": False,
            "shuffle_buffer": 128,
        },
        "model": {
            "name": "early_fusion",
            "text": {
                "kind": "hf",
                "name": str(tokenizer),
                "pretrained": False,
                "hf_config": DISTILBERT,
                "freeze_layers": DISTILBERT["n_layers"],
                "pooling": "cls",
            },
            "image": {"kind": "resnet18", "pretrained": False, "freeze_until": "layer4"},
            "fusion": {"hidden": 256, "dropout": 0.1},
        },
        "loss": {"name": "weighted_bce", "pos_weight_max": 10.0},
        "train": {"epochs": args.epochs, "lr": 1e-3, "eval_every": "epoch", "log_every": 10, "keep_checkpoints": 1},
    }


def timed_trial(cfg: ExperimentConfig) -> tuple[float, dict[str, Any]]:
    from mmimdb_dist.run.layout import run_dir_of
    from mmimdb_dist.train.loop import train

    shutil.rmtree(run_dir_of(cfg), ignore_errors=True)
    start = time.perf_counter()
    result = train(cfg)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-text-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work-dir", default="/tmp/bench/cached_features")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    shards = build_data(work, args.movies)
    tokenizer = build_tokenizer(work, shards)
    base = trial_config(shards, tokenizer, work / "runs", args)
    cfg = from_dict(ExperimentConfig, base)

    from mmimdb_dist.models.cache_features import cache_features

    end_to_end, e2e_result = timed_trial(cfg)
    features = work / "features"
    start = time.perf_counter()
    cache_features(cfg, features, progress=False)
    caching = time.perf_counter() - start
    cached_cfg = from_dict(
        ExperimentConfig, {**base, "name": "trial_cached", "loader": {**base["loader"], "features_dir": str(features)}}
    )
    cached, cached_result = timed_trial(cached_cfg)

    ratio = end_to_end / cached
    break_even = caching / max(end_to_end - cached, 1e-9)
    manifest = json.loads((shards / "manifest.json").read_text())
    counts = {name: split["num_samples"] for name, split in manifest["splits"].items()}
    print(
        f"data: {counts} synthetic movies; {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.max_text_length} tokens, 224 px; torch threads {torch.get_num_threads()}"
    )
    print(f"end-to-end trial (frozen DistilBERT-base + ResNet-18 run every step): {end_to_end:8.1f} s")
    print(f"trial on cached features (head only):                               {cached:8.2f} s")
    print(f"speed-up per trial:                                                 {ratio:8.1f}x")
    print(
        f"one-off cache-features run:                                         {caching:8.1f} s "
        f"(pays for itself after {break_even:.1f} trials)"
    )
    for name, result in (("end to end", e2e_result), ("cached", cached_result)):
        print(
            f"  {name:10s}: best dev macro-F1 {result['best_dev_f1_macro']:.4f}, test macro-F1 "
            f"{result['test']['threshold_0.5']['f1_macro']:.4f}, trainable parameters "
            f"{result['trainable_parameters']:,} of {result['num_parameters']:,}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "end_to_end_s": end_to_end,
                    "cached_s": cached,
                    "cache_features_s": caching,
                    "ratio": ratio,
                    "movies": counts,
                    "epochs": args.epochs,
                    "threads": torch.get_num_threads(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
