"""A run's token encoder, in one place: chosen from the config, saved beside what it made, loaded back.

Three things travel with a tokenizer and must agree on it: a training run (its loaders and its
text encoder), a features set (`cache-features` tokenised the plots it encoded) and an
inference export (`evaluate`, `predict`). Each of them chooses, saves and loads it here:

- **Choice.** A model that reads plots with a Hugging Face or CLIP-family encoder uses that
  encoder's own tokenizer (windowed for CLIP: plots are cut into the text tower's length).
  Everything else, the BiLSTM and image-only models alike, uses a word `Vocabulary` built from
  the TRAIN split only: the loaders tokenise every sample whatever the model reads, and an
  image-only model must not need a text model's files.
- **Saving.** `vocabulary.json`, or the tokenizer's own files under `tokenizer/`.
- **Loading.** Whichever of the two a folder holds; a CLIP-family text tower's window comes from
  its saved config, so a folder loads offline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..hub import load_hf_config
from ..run.layout import TOKENIZER_DIR, VOCABULARY_FILE
from ..schema import ExperimentConfig, TextEncoderConfig
from .manifest import Manifest
from .plots import read_shard_split_texts
from .text import HFTokenEncoder, TokenEncoder, WindowedTokenEncoder
from .vocab import Vocabulary


def text_window(config: Any) -> int:
    """Positions of a CLIP-family text tower (its Hugging Face config): the window for long plots."""
    return int(config.text_config.max_position_embeddings)


def reads_own_tokenizer(cfg: ExperimentConfig) -> bool:
    """Whether the run tokenises with its text encoder's own tokenizer (else a train vocabulary)."""
    return cfg.model.uses_text and cfg.model.text.brings_tokenizer


def build_token_encoder(cfg: TextEncoderConfig, train_texts: Iterable[str] = ()) -> TokenEncoder:
    """The tokenizer of text encoder `cfg`: a word vocabulary built from the train plots for the
    BiLSTM, the encoder's own tokenizer (hub name or local folder) for a Hugging Face encoder,
    the same cutting plots into windows of the text tower's length for a CLIP-family one."""
    if cfg.kind == "bilstm":
        vocab = Vocabulary.build(train_texts, min_freq=cfg.vocab_min_freq, max_size=cfg.vocab_max_size)
        if len(vocab) == 2:
            raise ConfigError(
                f"model.text.vocab_min_freq: no train word is seen {cfg.vocab_min_freq} times; "
                "the BiLSTM vocabulary would be empty (are the train plots empty?)"
            )
        return vocab
    if cfg.kind == "hf":
        return HFTokenEncoder.from_pretrained(cfg.name)
    if cfg.kind == "clip":
        config = load_hf_config("model.text.name", cfg.name, **cfg.hf_config)
        return WindowedTokenEncoder(HFTokenEncoder.from_pretrained(cfg.name).tokenizer, text_window(config))
    raise ConfigError(f"model.text.kind: {cfg.kind!r} has no tokenizer; expected bilstm, hf or clip")


def choose_token_encoder(cfg: ExperimentConfig, train_texts: Callable[[], Iterable[str]]) -> TokenEncoder:
    """The token encoder of experiment `cfg` (see the module docstring); `train_texts` is called
    only when a vocabulary is to be built."""
    if reads_own_tokenizer(cfg):
        return build_token_encoder(cfg.model.text)
    return build_token_encoder(dataclasses.replace(cfg.model.text, kind="bilstm"), train_texts())


def token_encoder_size(encoder: TokenEncoder) -> int:
    """Number of ids the encoder can produce: the `vocab_size` to pass to `build_model`."""
    if isinstance(encoder, HFTokenEncoder):
        return len(encoder.tokenizer)
    if isinstance(encoder, Vocabulary):
        return len(encoder)
    raise TypeError(f"not a token encoder of this toolkit: {type(encoder).__name__}")


def save_token_encoder(encoder: TokenEncoder, folder: Path) -> None:
    """`folder/vocabulary.json`, or the tokenizer's own files in `folder/tokenizer/`."""
    if isinstance(encoder, Vocabulary):
        encoder.save(folder / VOCABULARY_FILE)
    elif isinstance(encoder, HFTokenEncoder):
        encoder.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    else:
        raise TypeError(f"not a token encoder of this toolkit: {type(encoder).__name__}")


def load_token_encoder(folder: Path, *, clip_config: Path | None = None) -> TokenEncoder:
    """The token encoder saved in `folder` (a run, a features set or an export). `clip_config`:
    the saved config folder of a CLIP-family text tower, whose length the plots are cut to."""
    if (folder / VOCABULARY_FILE).is_file():
        return Vocabulary.load(folder / VOCABULARY_FILE)
    if not (folder / TOKENIZER_DIR).is_dir():
        raise DataError(f"{folder}: neither {VOCABULARY_FILE} nor {TOKENIZER_DIR}/ (no saved token encoder)")
    encoder = HFTokenEncoder.from_pretrained(folder / TOKENIZER_DIR)
    if clip_config is None:
        return encoder
    return WindowedTokenEncoder(encoder.tokenizer, text_window(load_hf_config("model.text.name", str(clip_config))))


def owns_token_file(name: str) -> bool:
    """Whether a folder entry `name` is a saved token encoder (what a rewrite may replace)."""
    return name in (VOCABULARY_FILE, TOKENIZER_DIR)


def run_token_encoder(
    cfg: ExperimentConfig, manifest: Manifest, run_dir: Path, accelerator: Any
) -> tuple[TokenEncoder, int]:
    """(token encoder, vocabulary size to build the model with) of a training run.

    A vocabulary is built by the main rank from the train split and saved in the run folder;
    every rank, and a resumed run, reads that file, so all use exactly the same ids. A run on
    cached features uses the tokenizer saved with them.
    """
    if cfg.loader.features_dir:
        encoder = load_token_encoder(Path(cfg.loader.features_dir))
    elif reads_own_tokenizer(cfg):
        encoder = build_token_encoder(cfg.model.text)
    else:
        if accelerator.is_main_process and not (run_dir / VOCABULARY_FILE).is_file():
            vocabulary = choose_token_encoder(cfg, lambda: read_shard_split_texts(manifest, "train").texts)
            save_token_encoder(vocabulary, run_dir)
        accelerator.wait_for_everyone()
        encoder = load_token_encoder(run_dir)
    return encoder, token_encoder_size(encoder)
