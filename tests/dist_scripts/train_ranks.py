"""Run on every rank of a 2-process launch: train a config, and record what each rank holds.

Usage: train_ranks.py CONFIG_YAML OUT_DIR
Writes OUT_DIR/rank<r>.json with the sha256 of the rank's parameters at the end of training
(before the best checkpoint is reloaded for testing) and the dev ids its eval loader reads.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from mmimdb_dist.data.loader import build_eval_loader
from mmimdb_dist.schema import load_config
from mmimdb_dist.train.accelerator import build_accelerator
from mmimdb_dist.train.loop import Trainer


class RecordingTrainer(Trainer):
    """The trainer, plus a fingerprint of this rank's weights taken when training ends."""

    def final_evaluation(self):
        state = self.accelerator.unwrap_model(self.model).state_dict()
        digest = hashlib.sha256()
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        self.weights_sha256 = digest.hexdigest()
        return super().final_evaluation()


def main() -> None:
    config, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(config)
    accelerator = build_accelerator(cfg)
    try:
        trainer = RecordingTrainer(cfg, accelerator)
        result = trainer.fit()
        dev_ids = [
            i
            for batch in build_eval_loader(
                cfg.loader,
                trainer.manifest,
                "dev",
                trainer.token_encoder,
                rank=trainer.rank,
                world_size=trainer.world_size,
            )
            for i in batch["ids"]
        ]
        report = {
            "rank": trainer.rank,
            "world_size": trainer.world_size,
            "weights_sha256": trainer.weights_sha256,
            "dev_ids": dev_ids,
            "device": str(accelerator.device),
            "best_checkpoint": result["best_checkpoint"],
            "find_unused_parameters": getattr(trainer.model, "find_unused_parameters", None),
        }
        (out / f"rank{trainer.rank}.json").write_text(json.dumps(report))
    finally:
        accelerator.end_training()


if __name__ == "__main__":
    main()
