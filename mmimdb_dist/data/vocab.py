"""Word vocabulary for the BiLSTM text encoder.

Built from the train split only (a word seen only in dev or test must not get its own
embedding row, or evaluation leaks into the model's shape). Ids 0 and 1 are the padding and
unknown tokens; their spellings contain characters the tokeniser never produces, so no real
word can collide with them. Saved as JSON next to a checkpoint so a model and its ids travel
together. Implements the loaders' `TokenEncoder` protocol (`encode`, `pad_id`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..atomic import atomic_write_json
from ..errors import DataError

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
_FORMAT = "mmimdb-dist-vocabulary"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercase words and numbers; punctuation is dropped, inner apostrophes kept (don't)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id mapping with fixed PAD (0) and UNK (1) ids."""

    pad_id = 0
    unk_id = 1

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = [PAD_TOKEN, UNK_TOKEN, *words]
        self.stoi: dict[str, int] = {word: i for i, word in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be distinct and must not be the PAD/UNK tokens")

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 2, max_size: int = 50_000) -> Vocabulary:
        """The `max_size` most frequent words seen at least `min_freq` times (ties: alphabetical)."""
        counts = Counter(word for text in texts for word in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls(kept[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi and self.stoi[word] > self.unk_id

    def encode(self, text: str, max_length: int) -> list[int]:
        """Word ids of the first `max_length` words; out-of-vocabulary words map to UNK."""
        return [self.stoi.get(word, self.unk_id) for word in tokenize(text)[:max_length]]

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"format": _FORMAT, "version": 1, "words": self.itos[2:]})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: vocabulary file does not exist") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: vocabulary is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(f"{path}: key 'format': expected {_FORMAT!r}, this is not a vocabulary file")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"{path}: key 'words': expected a list of strings")
        try:
            return cls(words)
        except ValueError as exc:
            raise DataError(f"{path}: key 'words': {exc}") from None
