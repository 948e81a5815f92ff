"""Train-step throughput of the text, image and fusion models, fp32 against bf16 autocast.

One step is what the trainer does per batch: uint8 posters to normalised floats on the device
(`to_device`), forward, the configured loss, backward, gradient clipping and an AdamW step
with the trainer's parameter groups. Batches are random tensors of the config's shapes
(batch size, poster size, `max_text_length` tokens), so the figure is the model's and the
optimizer's, not the data pipeline's (benchmarks/bench_data.py measures that).

For each config the fp32 run comes first; bf16 is reported as a ratio to it, measured in the
same process. FLOPs per step are counted once with `torch.utils.flop_counter.FlopCounterMode`
(matmuls and convolutions, forward and backward). On a GPU whose name is in PEAK_BF16_TFLOPS
the model FLOPs utilisation is those FLOPs over the step time and the card's dense bf16 peak.

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --quick
    python benchmarks/bench_train.py --configs configs/early_fusion.yaml --steps 50 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mmimdb_dist.atomic import atomic_write_text
from mmimdb_dist.data.device import to_device
from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.losses import build_loss
from mmimdb_dist.models.registry import build_model
from mmimdb_dist.schema import ExperimentConfig, load_config
from mmimdb_dist.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/synth_bilstm_text.yaml", "configs/synth_cnn_image.yaml", "configs/synth_early_fusion.yaml")
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name().
# Order matters: the first key found in the name wins ("H100 PCIe" before "H100").
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}
VOCAB_SIZE = 5000


@dataclass
class Result:
    config: str
    model: str
    precision: str
    batch_size: int
    samples_per_s: float
    step_ms: float
    gflop_per_step: float
    achieved_tflops: float
    mfu: float | None
    ratio_to_fp32: float | None = None
    note: str = ""


def peak_bf16_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def synthetic_batch(cfg: ExperimentConfig, generator: torch.Generator) -> dict:
    """A host batch in the loader's format: uint8 posters, full-length plots, multi-hot labels."""
    size, length, batch = cfg.loader.image_size, cfg.loader.max_text_length, cfg.loader.batch_size
    return {
        "ids": [f"{i:07d}" for i in range(batch)],
        "pixel_values": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
        "input_ids": torch.randint(1, VOCAB_SIZE, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.int64),
        "labels": (torch.rand(batch, len(GENRES), generator=generator) < 0.15).float(),
    }


class StepRunner:
    """The trainer's per-batch work for one model, without Accelerate's bookkeeping."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device, bf16: bool) -> None:
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.model = build_model(cfg.model, num_labels=23, vocab_size=VOCAB_SIZE, pad_id=0).to(device).train()
        self.optimizer = build_optimizer(self.model, cfg.model, cfg.train)
        counts = [100] * len(GENRES)  # weighted losses need train counts; any positive ones do here
        self.loss_fn = build_loss(cfg.loss, counts, 1000).to(device)
        self.bf16 = bf16
        # oneDNN's CPU LSTM rejects some bf16 inputs; then the step runs without oneDNN.
        self.onednn = True

    def step(self, host_batch: dict) -> None:
        try:
            self._step(host_batch)
        except RuntimeError as exc:
            if not self.onednn or "LSTM" not in str(exc):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self.onednn = False
            self._step(host_batch)

    def _step(self, host_batch: dict) -> None:
        batch = to_device(host_batch, self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with torch.backends.mkldnn.flags(enabled=self.onednn), autocast:
            outputs = self.model(batch)
        labels = batch["labels"]
        loss = self.loss_fn(outputs["logits"].float(), labels)
        for branch in (outputs.get("branch_logits") or {}).values():
            loss = loss + self.cfg.model.fusion.branch_loss_weight * self.loss_fn(branch.float(), labels)
        loss.backward()
        if self.cfg.train.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def count_flops(runner: StepRunner, batch: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    # oneDNN's CPU LSTM cannot run under a dispatch mode; the native kernel can.
    onednn, runner.onednn = runner.onednn, False
    with FlopCounterMode(display=False) as counter:
        runner.step(batch)
    runner.onednn = onednn
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: str, cfg: ExperimentConfig, device: torch.device, bf16: bool, warmup: int, steps: int) -> Result:
    runner = StepRunner(cfg, device, bf16)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(cfg, generator) for _ in range(4)]
    flops = count_flops(runner, batches[0])
    for i in range(warmup):
        runner.step(batches[i % len(batches)])
    synchronize(device)
    times = []
    for i in tqdm(range(steps), desc=f"{cfg.name} {'bf16' if bf16 else 'fp32'}", leave=False):
        start = time.perf_counter()
        runner.step(batches[i % len(batches)])
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    peak = peak_bf16_flops(device)
    return Result(
        config=config,
        model=cfg.model.name,
        precision="bf16" if bf16 else "fp32",
        batch_size=cfg.loader.batch_size,
        samples_per_s=cfg.loader.batch_size / step_s,
        step_ms=step_s * 1e3,
        gflop_per_step=flops / 1e9,
        achieved_tflops=flops / step_s / 1e12,
        mfu=flops / step_s / peak if peak else None,
        note="" if runner.onednn else "without oneDNN (its LSTM rejected bf16)",
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def print_table(results: list[Result], device: torch.device) -> None:
    print(f"\ntrain-step throughput on {device_name(device)} (median step; bf16 ratio against fp32 of the same run)")
    print(
        f"{'model':<14} {'precision':<9} {'batch':>5} {'samples/s':>10} {'step ms':>9} {'GFLOP/step':>11} "
        f"{'TFLOP/s':>8} {'MFU':>7} {'vs fp32':>8}"
    )
    for r in results:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        ratio = f"{r.ratio_to_fp32:.2f}x" if r.ratio_to_fp32 is not None else "1.00x"
        print(
            f"{r.model:<14} {r.precision:<9} {r.batch_size:>5} {r.samples_per_s:>10.1f} {r.step_ms:>9.1f} "
            f"{r.gflop_per_step:>11.2f} {r.achieved_tflops:>8.3f} {mfu:>7} {ratio:>8}  {r.note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per config and precision")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="override loader.batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine",
    )
    parser.add_argument("--quick", action="store_true", help="a few steps only, to check the script runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    results = []
    for config in args.configs:
        overrides = [f"loader.batch_size={args.batch_size}"] if args.batch_size else []
        cfg = load_config(REPO / config if not Path(config).is_absolute() else config, overrides)
        fp32 = measure(config, cfg, device, bf16=False, warmup=args.warmup, steps=args.steps)
        bf16 = measure(config, cfg, device, bf16=True, warmup=args.warmup, steps=args.steps)
        bf16.ratio_to_fp32 = bf16.samples_per_s / fp32.samples_per_s
        results += [fp32, bf16]
    print_table(results, device)
    if args.json:
        payload = {
            "device": device_name(device),
            "steps": args.steps,
            "warmup": args.warmup,
            "results": [asdict(r) for r in results],
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
