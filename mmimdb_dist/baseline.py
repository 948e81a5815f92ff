"""Classical baseline: TF-IDF on texts + logistic regression: one-vs-rest, one model per label, for a
multi-label task; one multinomial model for a multiclass one.

It needs no GPU and trains on the full training split in about a minute, which makes it
the reference every neural model has to beat under the same split, the same metrics and
the same two threshold protocols (fixed 0.5, and per-label thresholds tuned on dev; the
arg-max for a multiclass task).

Texts come either from a shard set or straight from a raw MM-IMDb folder (`data/plots.py`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from .data.manifest import SPLITS
from .data.plots import TextSplit
from .errors import DataError
from .labels import LabelSet
from .run.protocol import protocol_report
from .schema import BaselineConfig

logger = logging.getLogger(__name__)

MODEL_NAME = "tfidf_logreg"


# --------------------------------------------------------------------------- model


def build_model(cfg: BaselineConfig, seed: int = 0, multiclass: bool = False) -> Any:
    """TF-IDF (sublinear tf, word 1..ngram_max-grams) -> one logistic regression per label
    (`multiclass`: one multinomial logistic regression over the classes)."""
    vectorizer = TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        sublinear_tf=True,
        min_df=cfg.min_df,
        max_features=cfg.max_features,
        strip_accents="unicode",
        dtype=np.float32,
    )
    if multiclass:
        return make_pipeline(
            vectorizer,
            LogisticRegression(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, random_state=seed),
        )
    classifier = LogisticRegression(
        C=cfg.C, class_weight=cfg.class_weight, solver="liblinear", max_iter=cfg.max_iter, random_state=seed
    )
    return make_pipeline(vectorizer, OneVsRestClassifier(classifier))


def _label_set(splits: Mapping[str, TextSplit], label_set: LabelSet | None) -> LabelSet:
    if label_set is not None:
        return label_set
    width = splits["train"].labels.shape[1]
    return LabelSet(tuple(str(i) for i in range(width)))


def _check_trainable(splits: Mapping[str, TextSplit], names: tuple[str, ...]) -> None:
    for split in SPLITS:
        if split not in splits or len(splits[split]) == 0:
            raise DataError(
                f"{split} split has no samples: the baseline trains on train, tunes "
                "thresholds on dev and evaluates on dev and test"
            )
    empty = [names[g] for g in range(len(names)) if splits["train"].labels[:, g].sum() == 0]
    if empty:
        logger.warning("no training positive for %s: the baseline never predicts them", ", ".join(empty))


def fit_predict(
    splits: Mapping[str, TextSplit], cfg: BaselineConfig, seed: int = 0, label_set: LabelSet | None = None
) -> dict[str, Any]:
    """Fit on train; return label probabilities (N x labels) for dev and test, and the fit's cost.

    A label with no training positive gets a constant 0 probability (scikit-learn's
    one-vs-rest does that itself, with a warning; a multiclass fit gets a 0 column for a
    class it never saw) instead of failing the whole fit. The cost (`num_parameters`: one
    weight per TF-IDF feature and label plus the intercepts; `train_seconds` of the fit)
    makes the baseline comparable with trained runs.
    """
    label_set = _label_set(splits, label_set)
    _check_trainable(splits, label_set.names)
    train = splits["train"]
    model = build_model(cfg, seed, label_set.multiclass)
    logger.info("fitting TF-IDF + logistic regression on %d texts", len(train))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        model.fit(train.texts, train.labels.argmax(axis=1) if label_set.multiclass else train.labels)
    seconds = time.perf_counter() - start
    num_features = len(model[0].vocabulary_)

    def predict(texts: list[str]) -> np.ndarray:
        probs = model.predict_proba(texts)
        if not label_set.multiclass:
            return probs
        full = np.zeros((len(texts), len(label_set)), dtype=np.float64)  # classes unseen in train: 0
        full[:, model[-1].classes_] = probs
        return full

    return {
        "probabilities": {split: predict(splits[split].texts) for split in ("dev", "test")},
        "num_parameters": (num_features + 1) * len(label_set),
        "train_seconds": seconds,
    }


def evaluate_baseline(
    splits: Mapping[str, TextSplit], cfg: BaselineConfig, seed: int = 0, label_set: LabelSet | None = None
) -> dict[str, Any]:
    """Train on train, tune thresholds on dev, evaluate dev and test under both protocols (the
    arg-max for a multiclass label set). `label_set` None: numbered multi-label columns."""
    label_set = _label_set(splits, label_set)
    fitted = fit_predict(splits, cfg, seed, label_set)
    probabilities = fitted["probabilities"]
    report = protocol_report(
        splits["dev"].labels, probabilities["dev"], {"test": (splits["test"].labels, probabilities["test"])}, label_set
    )
    seconds = fitted["train_seconds"]
    return {
        "model": MODEL_NAME,
        "num_samples": {split: len(splits[split]) for split in SPLITS},
        "num_parameters": fitted["num_parameters"],
        "trainable_parameters": fitted["num_parameters"],
        "train_seconds": seconds,
        "train_samples_per_s": len(splits["train"]) / seconds if seconds > 0 else None,
        "dev": report["dev"],
        "test": report["test"],
    }
