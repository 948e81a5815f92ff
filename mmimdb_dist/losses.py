"""Multi-label losses over the 23 genres, chosen by config so a search can compare them.

MM-IMDb is heavily imbalanced (Drama is on about half the movies, Film-Noir on well under
1%), so plain BCE mostly learns the frequent genres. The alternatives here attack that in
different ways: weighted BCE up-weights the positives of rare genres by their training
odds, focal loss down-weights examples the model already gets right, and the asymmetric
loss (ASL) down-weights and partly discards easy negatives, which dominate multi-label data.

Every loss takes (logits B x 23, targets B x 23 float) and returns the MEAN over all B x 23
elements. That normalisation is the same for all four, so with their neutral settings
(focal gamma 0 / no alpha, pos_weight 1, ASL gammas 0 / clip 0) they all equal BCE, and a
learning rate tuned for one is in the right range for the others. (RetinaNet instead divides
the summed focal loss by the number of positives, and the ASL paper sums; both only rescale
the gradient.)

The `loss:` section itself (`LossConfig`) lives in the torch-free schema.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from .errors import ConfigError, DataError
from .schema import LOSS_NAMES, MULTICLASS_LOSSES, MULTILABEL_LOSSES, LossConfig

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- class weights


def pos_weight_from_counts(
    label_counts: Sequence[int], num_samples: int, max_value: float | None = None
) -> list[float]:
    """pos_weight_c = (N - n_c) / n_c: the negatives-to-positives odds of each genre.

    With it, the positives of a genre weigh as much in total as its negatives. Counts must
    come from the training split only; using dev or test counts would leak their labels.
    A genre with no training positive gets 1.0 (there is nothing to up-weight) and a warning.
    """
    if num_samples <= 0:
        raise DataError(f"train num_samples: expected a positive count, got {num_samples}")
    weights: list[float] = []
    for index, count in enumerate(label_counts):
        if not 0 <= count <= num_samples:
            raise DataError(f"train label_counts[{index}]: expected a count in [0, {num_samples}], got {count}")
        if count == 0:
            logger.warning("genre index %d has no positive training sample; its pos_weight is set to 1.0", index)
            weights.append(1.0)
            continue
        weight = (num_samples - count) / count
        weights.append(min(weight, max_value) if max_value is not None else weight)
    return weights


# --------------------------------------------------------------------------- loss functions


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    """Lin et al. (2017) via torchvision, averaged over all elements (see the module docstring)."""
    # torchvision's "no alpha weighting" is alpha = -1.
    return sigmoid_focal_loss(logits, targets, alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction="mean")


def asymmetric_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma_pos: float, gamma_neg: float, clip: float
) -> torch.Tensor:
    """Asymmetric loss of Ridnik et al. (2021), averaged over all elements.

    L+ = (1 - p)^gamma_pos * log(p),  L- = p_m^gamma_neg * log(1 - p_m),  p_m = max(p - clip, 0),
    loss = -mean(y * L+ + (1 - y) * L-). Logs come from logsigmoid where possible (exact for
    large logits); 1 - p_m = min(1 - p + clip, 1) >= clip is safe to log directly.
    """
    prob = torch.sigmoid(logits)
    log_pos = F.logsigmoid(logits)
    if clip > 0:
        one_minus_shifted = (1 - prob + clip).clamp(max=1.0)
        log_neg = torch.log(one_minus_shifted)
        shifted_prob = 1 - one_minus_shifted
    else:
        log_neg = F.logsigmoid(-logits)
        shifted_prob = prob
    loss_pos = targets * log_pos
    loss_neg = (1 - targets) * log_neg
    if gamma_pos > 0:
        loss_pos = loss_pos * (1 - prob).pow(gamma_pos)
    if gamma_neg > 0:
        loss_neg = loss_neg * shifted_prob.pow(gamma_neg)
    return -(loss_pos + loss_neg).mean()


class MultiLabelLoss(nn.Module):
    """Wraps a loss function and its hyperparameters as a module: (logits, targets) -> scalar."""

    def __init__(self, loss_fn: Any, **params: float | None) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.params = params

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, targets, **self.params)

    def extra_repr(self) -> str:
        return ", ".join([self.loss_fn.__name__, *(f"{k}={v}" for k, v in self.params.items())])


class MulticlassCrossEntropy(nn.Module):
    """Softmax cross-entropy for one-hot targets (B x C, as every sample format carries labels),
    with optional label smoothing: the loss of a multiclass task."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.argmax(dim=1), label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


def check_loss_fits(cfg: LossConfig, task: str, where: str) -> None:
    """One line when the loss does not fit the data's task kind (a multi-label loss on a
    multiclass set, or the reverse)."""
    fitting = MULTICLASS_LOSSES if task == "multiclass" else MULTILABEL_LOSSES
    if cfg.name not in fitting:
        raise ConfigError(
            f"loss.name: {cfg.name!r} does not fit the {task} task of {where}; expected one of {', '.join(fitting)}"
        )


def build_loss(cfg: LossConfig, label_counts: Sequence[int] | None = None, num_samples: int | None = None) -> nn.Module:
    """The loss module named by `cfg`; weighted_bce needs the TRAIN split's label counts."""
    if cfg.name not in LOSS_NAMES:  # a LossConfig mutated after construction
        raise ConfigError(f"loss.name: unknown loss {cfg.name!r}; valid: {', '.join(LOSS_NAMES)}")
    if cfg.name == "cross_entropy":
        return MulticlassCrossEntropy(cfg.label_smoothing)
    if cfg.name == "bce":
        return nn.BCEWithLogitsLoss()
    if cfg.name == "weighted_bce":
        if label_counts is None or num_samples is None:
            raise ConfigError(
                "loss.name: weighted_bce needs the train split's label_counts and num_samples (from the shard manifest)"
            )
        weights = pos_weight_from_counts(label_counts, num_samples, cfg.pos_weight_max)
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights, dtype=torch.float32))
    if cfg.name == "focal":
        return MultiLabelLoss(focal_loss, gamma=cfg.gamma, alpha=cfg.alpha)
    return MultiLabelLoss(asymmetric_loss, gamma_pos=cfg.gamma_pos, gamma_neg=cfg.gamma_neg, clip=cfg.clip)
