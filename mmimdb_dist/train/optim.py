"""AdamW parameter groups and the learning-rate schedule.

Two rates: pretrained encoders move slowly (`encoder_lr`) so fine-tuning does not wipe out
what they learnt, while heads and from-scratch parts use `lr`. Within each, weight decay
applies to weight matrices only: decaying biases, norm gains and 1-d embeddings pulls them
towards zero for no regularisation benefit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..schema import ModelConfig, TrainConfig


def pretrained_modules(model: nn.Module, model_cfg: ModelConfig) -> list[nn.Module]:
    """The encoders that start from pretrained weights, which get `encoder_lr`."""
    modules = []
    text = getattr(model, "text_encoder", None)
    if text is not None and model_cfg.text.brings_tokenizer and model_cfg.text.pretrained:
        modules.append(text)
    image = getattr(model, "image_encoder", None)
    if image is not None and (model_cfg.image.pretrained or model_cfg.image.weights_path):
        modules.append(image)
    return modules


def param_groups(model: nn.Module, model_cfg: ModelConfig, cfg: TrainConfig) -> list[dict]:
    """Up to four named AdamW groups: (encoder | head) x (decay | no_decay); frozen params left out."""
    pretrained = {id(p) for module in pretrained_modules(model, model_cfg) for p in module.parameters()}
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if id(param) in pretrained else "head"
        decay = param.ndim >= 2
        key = part if decay else f"{part}_no_decay"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "param_names": [],
                "lr": cfg.encoder_lr if part == "encoder" else cfg.lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    order = ("encoder", "encoder_no_decay", "head", "head_no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(model: nn.Module, model_cfg: ModelConfig, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = param_groups(model, model_cfg, cfg)
    for group in groups:
        del group["param_names"]  # names are for inspection; the optimizer state holds tensors only
    return torch.optim.AdamW(groups)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else round(cfg.warmup_ratio * total_steps)


def lr_multiplier(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Factor applied to every group's base lr after `step` optimizer steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps(cfg, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup, cfg.schedule)
    )
