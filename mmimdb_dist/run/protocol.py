"""The evaluation protocol, in one place: thresholds tuned on dev, and both reports of a split.

The trainer's final test, `evaluate` and the baseline (and so `compare` and Tune, which read
what those wrote) all report through `protocol_report`, so the protocols cannot drift apart:
thresholds are tuned on dev only (never on the split being reported, unless that is dev
itself), and every split is reported at 0.5 and at those thresholds. Pure numpy: the
baseline reports without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import evaluation_report, tune_thresholds


def protocol_report(dev_labels: np.ndarray, dev_probs: np.ndarray,
                    others: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """`thresholds` tuned on dev, and a report per split (`dev` and each of `others`: labels,
    probabilities) at 0.5 and at those thresholds."""
    thresholds = tune_thresholds(dev_labels, dev_probs)
    reports = {"dev": evaluation_report(dev_labels, dev_probs, thresholds)}
    for split, (labels, probs) in others.items():
        reports[split] = evaluation_report(labels, probs, thresholds)
    return {"thresholds": thresholds, **reports}
