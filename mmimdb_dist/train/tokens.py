"""The token encoder a run's loaders and text encoder share, made once per run folder.

A Hugging Face or CLIP-family encoder brings its own tokenizer. Everything else uses a word `Vocabulary`
built from the TRAIN split only (`models.registry.build_token_encoder`); it is saved into
the run folder by the main rank and read back by every rank, so all ranks, and a resumed
run, use exactly the same ids. Image-only models get one too: the loaders tokenise every
sample whatever the model reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..data.manifest import Manifest
from ..run.layout import VOCABULARY_FILE
from ..schema import ExperimentConfig


def load_token_encoder(cfg: ExperimentConfig, manifest: Manifest, run_dir: Path,
                       accelerator: Any) -> tuple[Any, int]:
    """(token encoder, vocabulary size to build the model with)."""
    from ..data.vocab import Vocabulary
    from ..models.registry import build_token_encoder, token_encoder_size

    text_cfg = cfg.model.text
    if cfg.loader.features_dir:
        # Training on cached features: the tokenizer that made them goes with the run.
        from ..data.training_data import features_token_encoder

        encoder = features_token_encoder(cfg.loader.features_dir)
        return encoder, token_encoder_size(encoder)
    if text_cfg.brings_tokenizer:
        encoder = build_token_encoder(text_cfg)
        return encoder, token_encoder_size(encoder)
    path = run_dir / VOCABULARY_FILE
    if accelerator.is_main_process and not path.is_file():
        from ..data.plots import read_shard_split_texts

        texts = read_shard_split_texts(manifest, "train").texts
        build_token_encoder(dataclasses.replace(text_cfg, kind="bilstm"), texts).save(path)
    accelerator.wait_for_everyone()
    vocabulary = Vocabulary.load(path)
    return vocabulary, token_encoder_size(vocabulary)
