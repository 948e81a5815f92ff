"""The evaluation protocol, in one place: thresholds tuned on dev, and both reports of a split.

The trainer's final test, `evaluate` and the baseline (and so `compare` and Tune, which read
what those wrote) all report through `protocol_report`, so the protocols cannot drift apart:
thresholds are tuned on dev only (never on the split being reported, unless that is dev
itself), and every split is reported at 0.5 and at those thresholds. For a multiclass label set there is
one protocol, the arg-max. Pure numpy: the baseline reports without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..labels import LabelSet
from ..metrics import evaluation_report, tune_thresholds


def protocol_report(
    dev_labels: np.ndarray, dev_probs: np.ndarray, others: dict[str, tuple[np.ndarray, np.ndarray]], label_set: LabelSet
) -> dict[str, Any]:
    """`thresholds` tuned on dev, and a report per split (`dev` and each of `others`: labels,
    probabilities) at 0.5 and at those thresholds; for a multiclass label set the arg-max
    report of each split, and `thresholds` None."""
    names, task = label_set.names, label_set.task
    thresholds = None if label_set.multiclass else tune_thresholds(dev_labels, dev_probs)
    reports = {"dev": evaluation_report(dev_labels, dev_probs, thresholds, names, task)}
    for split, (labels, probs) in others.items():
        reports[split] = evaluation_report(labels, probs, thresholds, names, task)
    return {"thresholds": thresholds, **reports}


def primary_report(split_report: dict[str, Any], protocol: str | None = None) -> dict[str, Any]:
    """The metrics of one split's report under `protocol` (default: the report's first,
    `threshold_0.5` or `argmax`); a multiclass report answers any protocol with its arg-max,
    since it has no thresholds to choose between."""
    report: dict[str, Any] = split_report["argmax" if "argmax" in split_report else protocol or "threshold_0.5"]
    return report
