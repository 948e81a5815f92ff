"""The token encoder a run's loaders and text encoder share.

A Hugging Face encoder brings its own tokenizer (by hub name or local folder). Everything
else uses a word `Vocabulary` built from the TRAIN split only, saved into the run folder so
a resumed run, and every rank, use exactly the same ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..data.manifest import Manifest

VOCABULARY_FILE = "vocabulary.json"


def build_vocabulary(cfg: ExperimentConfig, manifest: Manifest, path: Path) -> None:
    from ..baseline import read_shard_split_texts
    from ..data.vocab import Vocabulary

    texts = read_shard_split_texts(manifest.shard_paths("train"), "train").texts
    Vocabulary.build(texts, cfg.model.text.vocab_min_freq, cfg.model.text.vocab_max_size).save(path)


def load_token_encoder(cfg: ExperimentConfig, manifest: Manifest, run_dir: Path,
                       accelerator: Any) -> tuple[Any, int]:
    """(token encoder, vocabulary size); the main rank builds the vocabulary, the others wait."""
    if cfg.model.uses_text and cfg.model.text.kind == "hf":
        from ..data.text import HFTokenEncoder

        encoder = HFTokenEncoder.from_pretrained(cfg.model.text.name)
        return encoder, len(encoder.tokenizer)
    from ..data.vocab import Vocabulary

    path = run_dir / VOCABULARY_FILE
    if accelerator.is_main_process and not path.is_file():
        build_vocabulary(cfg, manifest, path)
    accelerator.wait_for_everyone()
    vocabulary = Vocabulary.load(path)
    return vocabulary, len(vocabulary)
