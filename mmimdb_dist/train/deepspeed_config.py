"""Fitting a DeepSpeed config (`accelerate launch --use_deepspeed`) to the experiment config.

Accelerate fills most "auto" entries of a DeepSpeed JSON from the objects passed to
`prepare()`, but the trainer passes no loaders (each rank builds its own) and Accelerate's
own defaults would ignore the experiment config. So, before `prepare()`:

* `train_micro_batch_size_per_gpu` "auto" <- `loader.batch_size` (per process);
* `gradient_clipping` "auto" <- `train.max_grad_norm` (0.0, DeepSpeed's "off", when null);
  an explicit value that disagrees is refused rather than silently winning;
* `gradient_accumulation_steps` must be "auto" or 1: the trainer accumulates
  `train.grad_accum_steps` micro-batches itself and marks the last one of each group as
  DeepSpeed's accumulation boundary (see `mark_boundary`); a larger value would make DeepSpeed
  divide the loss a second time and step on its own count;
* precision is the JSON's `bf16.enabled` / `fp16.enabled` (Accelerate lets it win over
  everything else; `train.mixed_precision: auto` follows it): an explicit precision that says
  otherwise is refused instead of being silently ignored.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from ..schema import ExperimentConfig


def deepspeed_plugin(accelerator: Any) -> Any | None:
    return getattr(accelerator.state, "deepspeed_plugin", None)


def _source() -> str:
    return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or "the DeepSpeed config"


def fill_deepspeed_config(accelerator: Any, cfg: ExperimentConfig) -> None:
    """Resolve the entries Accelerate cannot fill from this trainer; no-op without DeepSpeed."""
    plugin = deepspeed_plugin(accelerator)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    wanted = cfg.train.mixed_precision
    if wanted not in (None, "auto") and wanted != accelerator.mixed_precision:
        raise ConfigError(
            f"{_source()}: runs in {accelerator.mixed_precision!r} precision but "
            f"train.mixed_precision is {wanted!r}; set it to auto or use the matching config"
        )
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        ds["train_micro_batch_size_per_gpu"] = cfg.loader.batch_size
    clipping = cfg.train.max_grad_norm if cfg.train.max_grad_norm is not None else 0.0
    if plugin.is_auto("gradient_clipping") or "gradient_clipping" not in ds:
        ds["gradient_clipping"] = clipping
    elif float(ds["gradient_clipping"]) != clipping:
        raise ConfigError(
            f"{_source()}: gradient_clipping is {ds['gradient_clipping']} but "
            f'train.max_grad_norm is {cfg.train.max_grad_norm}; set it to "auto"'
        )
    accumulation = ds.get("gradient_accumulation_steps", "auto")
    if accumulation == "auto":
        ds["gradient_accumulation_steps"] = 1
    elif int(accumulation) != 1:
        raise ConfigError(
            f'{_source()}: gradient_accumulation_steps is {accumulation}; expected "auto" '
            f"(the trainer accumulates train.grad_accum_steps={cfg.train.grad_accum_steps} "
            "micro-batches itself)"
        )


def mark_boundary(accelerator: Any, last_of_group: bool) -> None:
    """Tell DeepSpeed whether this micro-batch ends a group: it reduces and steps only then.

    `accelerator.backward` hands Accelerate's sync flag to DeepSpeed as the accumulation
    boundary; the trainer does its own grouping instead of `accelerator.accumulate()`, so it
    sets that flag per micro-batch.
    """
    accelerator.gradient_state._set_sync_gradients(last_of_group)


def broadcast_buffers(model: Any) -> None:
    """Give every rank rank 0's buffers (BatchNorm's running statistics), as DDP does before
    each forward. DeepSpeed does not: each rank's statistics follow its own batches, so ranks
    evaluated their shares of dev with different statistics, and the dev metric logged during
    training differed from the one of the saved checkpoint (which holds rank 0's)."""
    import torch

    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


def buffers_to(model: Any, dtype: Any) -> None:
    """DeepSpeed's bf16 and fp16 modes cast parameters only: BatchNorm's running statistics
    stay fp32, and a half-precision BatchNorm refuses them. Cast floating-point buffers to match."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.data = buffer.data.to(dtype)
