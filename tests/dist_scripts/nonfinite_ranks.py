"""Run on every rank of a DeepSpeed launch: train until a non-finite loss stops the run, then
record what the engine holds (its step count, whether its weights are finite) and the error.

Usage: nonfinite_ranks.py CONFIG_YAML OUT_DIR  (writes OUT_DIR/rank<r>.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mmimdb_dist.errors import NonFiniteLossError
from mmimdb_dist.schema import load_config
from mmimdb_dist.train.accelerator import build_accelerator
from mmimdb_dist.train.loop import Trainer


def main() -> None:
    config, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(config)
    accelerator = build_accelerator(cfg)
    try:
        trainer = Trainer(cfg, accelerator)
        try:
            trainer.fit()
            error = None
        except NonFiniteLossError as exc:
            error = str(exc)
        engine = trainer.model
        weights = [p for p in engine.module.parameters() if p.is_floating_point()]
        report = {
            "rank": trainer.rank,
            "error": error,
            "engine_steps": int(engine.global_steps),
            "trainer_steps": trainer.state.step,
            "weights_finite": all(bool(torch.isfinite(p).all()) for p in weights),
        }
        (out / f"rank{trainer.rank}.json").write_text(json.dumps(report))
    finally:
        accelerator.end_training()


if __name__ == "__main__":
    main()
