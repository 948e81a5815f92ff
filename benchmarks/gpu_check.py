"""GPU run kit: what only an accelerator shows, in one command and under 10 minutes.

On a machine with a CUDA GPU this measures the train step of the DistilBERT + ResNet-18 early
fusion model (configs/early_fusion.yaml's architecture, random weights: compute nodes are often
offline, and the cost of a step does not depend on the weights) and prints one Markdown table
in benchmarks/RESULTS.md's format (append it there with the command line):

1. samples/s and model FLOP utilisation (MFU) of the step in fp32, bf16 autocast, bf16 +
   torch.compile, and bf16 + channels_last, at batch `--batch-size` with plots of the
   MM-IMDb median length (147 word pieces; `--seq-len`) and 224 px posters;
2. with two or more GPUs: the same bf16 step under DDP on 2 processes over NCCL, and its
   overhead against one process (samples/s per GPU);
3. a DeepSpeed ZeRO-2 bf16 step over NCCL (1 process, or 2 with two GPUs), when DeepSpeed is
   installed.

MFU = (3 x forward FLOPs per sample, counted by torch.utils.flop_counter) x samples/s / peak,
with the peak of the GPU's dense bf16 tensor cores (H100/H200 SXM 989 TFLOP/s, A100 312; other
GPUs: --peak-tflops). fp32 rows use the same bf16 peak, so their MFU says what bf16 gains.

Without a GPU it says so, runs every variant once on CPU at a tiny size (a smoke run of the
code paths, no figures worth keeping) and exits 0.

    python benchmarks/gpu_check.py                 # the table (GPU), or the CPU smoke run
    python benchmarks/gpu_check.py --steps 30      # more timed steps per variant
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
MEDIAN_PLOT_PIECES = 147


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def build_model(tiny: bool) -> torch.nn.Module:
    """configs/early_fusion.yaml's model with random weights (DistilBERT-base, ResNet-18)."""
    from mmimdb_dist.models.registry import build_model as build
    from mmimdb_dist.schema import load_config

    cfg = load_config(REPO / "configs" / "early_fusion.yaml").model
    cfg.text.pretrained = False
    cfg.image.pretrained = False
    cfg.text.hf_config = {"model_type": "distilbert"}
    if tiny:
        cfg.text.hf_config.update(dim=32, n_layers=2, n_heads=2, hidden_dim=64)
        cfg.fusion.hidden = 32
    return build(cfg, num_labels=23, pad_id=0)  # MM-IMDb's 23 genres


def synthetic_batch(batch_size: int, seq_len: int, image_size: int, device: torch.device, vocab: int = 30522) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "ids": [str(i) for i in range(batch_size)],
        "input_ids": torch.randint(1000, vocab, (batch_size, seq_len), generator=gen).to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
        "pixel_values": torch.rand(batch_size, 3, image_size, image_size, generator=gen).to(device),
        "labels": (torch.rand(batch_size, 23, generator=gen) < 0.1).float().to(device),
    }


def forward_flops(model: torch.nn.Module, batch: dict) -> float:
    """Forward FLOPs per sample (matmuls and convolutions), counted on the real device."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    model.train()
    return counter.get_total_flops() / batch["input_ids"].shape[0]


def time_steps(model, optimizer, batch, steps: int, autocast_dtype, warmup: int = 3) -> float:
    """Seconds per train step (forward, BCE loss, backward, AdamW), synchronised at both ends."""
    device = batch["input_ids"].device
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )

    def step():
        with autocast:
            logits = model(batch)["logits"]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def single_device_rows(args, device: torch.device, tiny: bool) -> list[dict]:
    rows = []
    variants = [
        ("fp32", None, False, False),
        ("bf16", torch.bfloat16, False, False),
        ("bf16 + compile", torch.bfloat16, True, False),
        ("bf16 + channels_last", torch.bfloat16, False, True),
    ]
    flops = None
    for name, dtype, compile_model, channels_last in variants:
        torch.manual_seed(0)
        model = build_model(tiny).to(device)
        batch = synthetic_batch(args.batch_size, args.seq_len, args.image_size, device)
        if flops is None:
            flops = forward_flops(model, batch)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        if compile_model:  # on CPU (the smoke run) trace only: inductor's C++ build takes minutes
            model = torch.compile(model, backend="inductor" if device.type == "cuda" else "aot_eager")
        seconds = time_steps(
            model, optimizer, batch, args.steps, dtype, warmup=args.warmup + (5 if compile_model else 0)
        )
        rows.append(
            {
                "variant": name,
                "processes": 1,
                "samples_per_s": args.batch_size / seconds,
                "step_ms": 1000 * seconds,
                "flops_per_sample": flops,
            }
        )
        print(f"  {name}: {args.batch_size / seconds:,.0f} samples/s ({1000 * seconds:.1f} ms/step)", flush=True)
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- DDP / ZeRO-2 (torchrun children)


def distributed_child(args) -> None:
    """One rank of the DDP or ZeRO-2 measurement; rank 0 prints `RESULT samples_per_s`."""
    import torch.distributed as dist

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = build_model(False).to(device)
    batch = synthetic_batch(args.batch_size, args.seq_len, args.image_size, device)
    if args.child == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        seconds = time_steps(model, optimizer, batch, args.steps, torch.bfloat16, warmup=args.warmup)
    else:
        import deepspeed

        config = {
            "train_micro_batch_size_per_gpu": args.batch_size,
            "gradient_accumulation_steps": 1,
            "bf16": {"enabled": True},
            "zero_optimization": {"stage": 2, "overlap_comm": True},
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "steps_per_print": 10**9,
        }
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)

        def step():
            logits = engine(batch)["logits"]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"])
            engine.backward(loss)
            engine.step()

        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.steps
    if rank == 0:
        print(f"RESULT {args.batch_size * world / seconds} {1000 * seconds}", flush=True)
    dist.destroy_process_group()


def launch_distributed(kind: str, processes: int, args) -> dict | None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        f"--master_port={port}",
        __file__,
        "--child",
        kind,
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        print(f"  {kind} on {processes} process(es) failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    samples_per_s, step_ms = map(float, lines[-1].split()[1:])
    name = {"ddp": "bf16 DDP (NCCL)", "zero2": "bf16 ZeRO-2 (NCCL)"}[kind]
    print(f"  {name}, {processes} process(es): {samples_per_s:,.0f} samples/s", flush=True)
    return {"variant": name, "processes": processes, "samples_per_s": samples_per_s, "step_ms": step_ms}


def table(rows: list[dict], flops: float, peak: float | None, device_name: str, args) -> str:
    lines = [
        f"GPU run kit on {device_name}: train step of the DistilBERT + ResNet-18 early fusion model, batch "
        f"{args.batch_size} per GPU, plots of {args.seq_len} word pieces, {args.image_size} px posters; "
        f"{flops / 1e9:.1f} GFLOP forward per sample; MFU against {peak or '?'} TFLOP/s dense bf16 per GPU.",
        "",
        "    python benchmarks/gpu_check.py" + (f" --steps {args.steps}" if args.steps != 20 and peak else ""),
        "",
        "| variant | processes | samples/s | samples/s per GPU | step (ms) | MFU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_gpu = row["samples_per_s"] / row["processes"]
        mfu = f"{100 * 3 * flops * per_gpu / (peak * 1e12):.1f} %" if peak else "n/a"
        lines.append(
            f"| {row['variant']} | {row['processes']} | {row['samples_per_s']:,.0f} | {per_gpu:,.0f} | "
            f"{row['step_ms']:.1f} | {mfu} |"
        )
    single = next((r for r in rows if r["variant"] == "bf16"), None)
    ddp = next((r for r in rows if r["variant"].startswith("bf16 DDP")), None)
    if single and ddp:
        overhead = 1 - (ddp["samples_per_s"] / ddp["processes"]) / single["samples_per_s"]
        lines += ["", f"DDP overhead on {ddp['processes']} GPUs: {100 * overhead:.1f} % of one GPU's samples/s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=MEDIAN_PLOT_PIECES)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU, when not known")
    parser.add_argument("--child", choices=("ddp", "zero2"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        distributed_child(args)
        return 0

    if not torch.cuda.is_available():
        print(
            "no CUDA GPU on this machine: nothing to measure. Smoke run of every single-device variant "
            "on CPU at a tiny size (the code paths, not figures):",
            flush=True,
        )
        args.batch_size, args.seq_len, args.image_size, args.steps, args.warmup = 2, 16, 64, 1, 1
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        rows = single_device_rows(args, torch.device("cpu"), tiny=True)
        print(table(rows, rows[0]["flops_per_sample"], None, "CPU (smoke run)", args))
        print("smoke run complete; run this on a GPU node for the table")
        return 0

    from mmimdb_dist.train.accelerator import apply_backend_policy

    apply_backend_policy(images=True)  # the trainer's own policy: its "fp32" row is what a run does
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, args.peak_tflops)
    gpus = torch.cuda.device_count()
    print(f"{name} x {gpus}; peak {peak or 'unknown'} TFLOP/s bf16", flush=True)
    rows = single_device_rows(args, torch.device("cuda"), tiny=False)
    flops = rows[0]["flops_per_sample"]
    if gpus >= 2:
        ddp = launch_distributed("ddp", 2, args)
        rows += [ddp] if ddp else []
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        zero2 = launch_distributed("zero2", min(gpus, 2), args)
        rows += [zero2] if zero2 else []
    else:
        print("  DeepSpeed is not installed: no ZeRO-2 row (make install installs it)")
    print()
    print(table(rows, flops, peak, f"{gpus} x {name}", args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
