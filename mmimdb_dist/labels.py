"""A dataset's label set: the names of its labels, in order, and its task kind.

The label set is data, not code. The shard step reads it from the source (MM-IMDb's 23
genres, or a table's own labels, counted on its train split) and writes it into the shard
manifest; from there it travels with everything made from those shards: the model's output
width, the class statistics, the metrics and their per-label CSV, the figures' axes, the
thresholds and the inference export, so `predict` answers with the dataset's own names.
Two label sets that differ are refused wherever they meet (a checkpoint and another shard
set, features made from other shards) with one line naming both.

Task kinds:
- `multilabel`: any subset of the labels per sample; sigmoid outputs, thresholds at 0.5
  and tuned on dev (both reported). A binary task is a multilabel task with one label.
- `multiclass`: exactly one label per sample; softmax outputs, the arg-max is the answer,
  no thresholds. Samples still carry a 0/1 vector (one-hot), so every sample format and
  loader serves both kinds unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DataError

TASKS: tuple[str, ...] = ("multilabel", "multiclass")
# The reports of a split, by task: names of its protocols, the first one the primary one.
PROTOCOLS: dict[str, tuple[str, ...]] = {"multilabel": ("threshold_0.5", "tuned_on_dev"), "multiclass": ("argmax",)}


@dataclass(frozen=True)
class LabelSet:
    """Ordered label names and the task kind; a label index means the same label everywhere."""

    names: tuple[str, ...]
    task: str = "multilabel"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.names:
            raise DataError("label set: expected at least one label, got none")
        if len(set(self.names)) != len(self.names):
            twice = sorted({n for n in self.names if self.names.count(n) > 1})
            raise DataError(f"label set: label {twice[0]!r} appears twice")
        if self.task == "multiclass" and len(self.names) < 2:
            raise DataError(f"label set: a multiclass task needs at least 2 classes, got {list(self.names)}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def multiclass(self) -> bool:
        return self.task == "multiclass"

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS[self.task]

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def multi_hot(self, names: Iterable[str]) -> list[int]:
        """0/1 vector over the label set for names that are all in it."""
        index = self.index()
        vector = [0] * len(self.names)
        for name in names:
            vector[index[name]] = 1
        return vector

    def names_of(self, vector: Sequence[int]) -> list[str]:
        return [name for name, flag in zip(self.names, vector, strict=True) if flag]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "task": self.task}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LabelSet:
        """Read `{"names": [...], "task": ...}`; errors name `where` and the key."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object with keys names and task, got {data!r:.80}")
        names = data.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"{where}: key 'names': expected a non-empty list of label names, got {names!r:.80}")
        task = data.get("task", "multilabel")
        try:
            return cls(tuple(names), task)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None

    def describe(self) -> str:
        shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
        return f"{len(self.names)} {self.task} labels ({shown})"

    def check_same(self, other: LabelSet, mine: str, theirs: str) -> None:
        """Refuse `other` unless it is this label set, in one line naming both and the first
        difference (a model's output index would otherwise mean another label)."""
        if self == other:
            return
        if self.task != other.task:
            difference = f"task {self.task} vs {other.task}"
        else:
            position = next(
                (i for i, (a, b) in enumerate(zip(self.names, other.names, strict=False)) if a != b),
                min(len(self.names), len(other.names)),
            )
            first = self.names[position] if position < len(self.names) else "(none)"
            second = other.names[position] if position < len(other.names) else "(none)"
            difference = f"first difference at label {position}: {first!r} vs {second!r}"
        raise DataError(
            f"{mine} has {len(self.names)} {self.task} labels, {theirs} has "
            f"{len(other.names)} {other.task} labels ({difference}): a model answers "
            "in the label set it was trained on"
        )


def frequency_order(counts: dict[str, int]) -> list[str]:
    """Label names by decreasing count, ties broken by name: a label set read from data."""
    return sorted(counts, key=lambda name: (-counts[name], name))
