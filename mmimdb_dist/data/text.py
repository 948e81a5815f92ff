"""Plot text -> token ids, behind one small protocol shared by every text encoder.

The loaders tokenise inside their worker processes, per sample and before batching, so
that bucketing can sort by the real token length and the training process receives ready
integer tensors. Anything with `encode(text, max_length)` and a `pad_id` works: the
Hugging Face adapter below for transformer encoders, or a word `Vocabulary` for the BiLSTM.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import DataError
from ..hub import load_pretrained


@runtime_checkable
class TokenEncoder(Protocol):
    """What the loaders need from a tokenizer; must be picklable (it travels to workers)."""

    pad_id: int

    def encode(self, text: str, max_length: int) -> list[int]:
        """Token ids of `text`, at most `max_length` of them, special tokens included."""
        ...


class HFTokenEncoder:
    """A Hugging Face tokenizer seen through the `TokenEncoder` protocol.

    Truncation keeps the special tokens ([CLS] ... [SEP]) inside `max_length`, which is what
    BERT-style encoders with a fixed position table need.
    """

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.pad_token_id is None:
            raise DataError(
                f"tokenizer {tokenizer.name_or_path!r} has no pad token; "
                "the loaders pad every batch to its longest plot and need one"
            )
        # Parallelism comes from the loader workers; a Rust thread pool inherited across
        # fork() would only warn and serialise.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path) -> HFTokenEncoder:
        from transformers import AutoTokenizer

        try:
            tokenizer = load_pretrained(
                "model.text.name", str(name_or_dir), AutoTokenizer.from_pretrained, filename="tokenizer_config.json"
            )
        except (OSError, ValueError) as exc:
            raise DataError(
                f"cannot load tokenizer {str(name_or_dir)!r}: expected a local folder "
                f"with tokenizer files or a cached model name ({exc})"
            ) from exc
        return cls(tokenizer)

    def encode(self, text: str, max_length: int) -> list[int]:
        return list(self.tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"])


class WindowedTokenEncoder(HFTokenEncoder):
    """A CLIP-family tokenizer for plots longer than its text tower (64-77 positions).

    Policy: the plot's word pieces are cut into consecutive windows of `window` positions,
    each wrapped in the tokenizer's own special tokens (CLIP: <start> ... <end>; SigLIP:
    ... </s>) and padded to exactly `window` ids, as these towers were trained (SigLIP reads
    the last position, CLIP the end token under a causal mask). The text encoder embeds every
    window and averages them (models/dual.py). At most `max_length // window` windows are kept
    (`loader.max_text_length`; 512 keeps 6 CLIP windows, ~450 word pieces), at least one.
    The encoded length is always a multiple of `window`, which is how the encoder splits it.
    """

    def __init__(self, tokenizer: Any, window: int) -> None:
        super().__init__(tokenizer)
        self.window = int(window)
        probe_plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        probe_full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
        at = next((i for i in range(len(probe_full)) if probe_full[i : i + len(probe_plain)] == probe_plain), None)
        if at is None:
            raise DataError(f"tokenizer {tokenizer.name_or_path!r}: cannot tell where its special tokens go")
        self.prefix, self.suffix = probe_full[:at], probe_full[at + len(probe_plain) :]
        self.per_window = self.window - len(self.prefix) - len(self.suffix)
        if self.per_window < 1:
            raise DataError(
                f"tokenizer {tokenizer.name_or_path!r}: a window of {self.window} leaves no room "
                "for words between its special tokens"
            )

    def encode(self, text: str, max_length: int) -> list[int]:
        windows = max(1, max_length // self.window)
        pieces = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=windows * self.per_window)[
            "input_ids"
        ]
        ids: list[int] = []
        for start in range(0, max(len(pieces), 1), self.per_window):
            window = self.prefix + list(pieces[start : start + self.per_window]) + self.suffix
            ids += window + [self.pad_id] * (self.window - len(window))
        return ids
