"""Classical baseline: TF-IDF on plots + one-vs-rest logistic regression, one model per genre.

It needs no GPU and trains on the full training split in about a minute, which makes it
the reference every neural model has to beat under the same split, the same metrics and
the same two threshold protocols (fixed 0.5, and per-genre thresholds tuned on dev).

Texts come either from a shard set (only the `.txt` and `.json` members of each sample are
read; posters are never decoded) or straight from a raw MM-IMDb folder.

Only light modules are imported at the top: the config schema imports `BaselineConfig`
from here, and scikit-learn alone takes seconds to import.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError, DataError
from .genres import GENRES, NUM_GENRES

if TYPE_CHECKING:
    import numpy as np

    from .data.raw import SkipReport

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
MODEL_NAME = "tfidf_logreg"


@dataclass
class BaselineConfig:
    """`baseline:` section: TF-IDF features and the per-genre logistic regressions."""

    # Vocabulary size cap (most frequent n-grams kept); null keeps every n-gram seen min_df times.
    max_features: int | None = 200_000
    # Word n-grams from 1 to ngram_max.
    ngram_max: int = 2
    # An n-gram must occur in at least this many training plots.
    min_df: int = 2
    # Inverse L2 regularisation strength of each logistic regression.
    C: float = 1.0
    # "balanced" re-weights each genre's positives by its training odds; null = unweighted.
    class_weight: Literal["balanced"] | None = "balanced"
    max_iter: int = 1000

    def __post_init__(self) -> None:
        for key in ("ngram_max", "min_df", "max_iter"):
            if getattr(self, key) < 1:
                raise ConfigError(f"baseline.{key}: expected an integer >= 1, got {getattr(self, key)}")
        if self.max_features is not None and self.max_features < 1:
            raise ConfigError(f"baseline.max_features: expected an integer >= 1 or null, got {self.max_features}")
        if self.C <= 0:
            raise ConfigError(f"baseline.C: expected a positive number, got {self.C}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"baseline.class_weight: expected 'balanced' or null, got {self.class_weight!r}")


@dataclass
class TextSplit:
    """Plots and labels (columns in GENRES order) of one split."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int64, N x 23

    def __len__(self) -> int:
        return len(self.texts)


def _text_split(ids: list[str], texts: list[str], labels: list[list[int]]) -> TextSplit:
    import numpy as np

    array = np.asarray(labels, dtype=np.int64).reshape(len(labels), NUM_GENRES)
    return TextSplit(ids=ids, texts=texts, labels=array)


# --------------------------------------------------------------------------- reading

# WebDataset's key rule: the key is the member name up to the first dot of its base name.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def _sample_labels(meta: Any, where: str) -> list[int]:
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if (not isinstance(labels, list) or len(labels) != NUM_GENRES
            or any(type(v) is not int or v not in (0, 1) for v in labels)):
        raise DataError(f"{where}: key 'labels': expected a list of {NUM_GENRES} ints 0/1, got {labels!r}")
    return labels


def read_shard_split_texts(shard_paths: list[Path], split: str) -> TextSplit:
    """Plot text and labels of every sample in `shard_paths`, in shard order."""
    ids: list[str] = []
    texts: list[str] = []
    labels: list[list[int]] = []
    for path in shard_paths:
        samples: dict[str, dict[str, bytes]] = {}
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    match = _MEMBER_NAME.match(member.name)
                    if not member.isfile() or not match or match.group(2) not in ("txt", "json"):
                        continue  # posters and anything else are not read
                    handle = tar.extractfile(member)
                    samples.setdefault(match.group(1), {})[match.group(2)] = handle.read() if handle else b""
        except FileNotFoundError:
            raise DataError(f"{path}: {split} shard listed in the manifest is missing") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable tar shard: {exc}") from None
        for key, members in samples.items():
            where = f"{path}:{key}"
            for ext in ("txt", "json"):
                if ext not in members:
                    raise DataError(f"{where}: sample has no .{ext} member (expected .jpg, .txt and .json)")
            try:
                meta = json.loads(members["json"].decode("utf-8"))
                text = members["txt"].decode("utf-8")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{where}: sample .json/.txt is not valid UTF-8 JSON/text: {exc}") from None
            ids.append(key.rsplit("/", 1)[-1])
            texts.append(text)
            labels.append(_sample_labels(meta, f"{where}.json"))
    return _text_split(ids, texts, labels)


def read_shard_texts(shards_dir: str | Path, progress: bool = True) -> dict[str, TextSplit]:
    """Texts of all three splits of a shard set, checked against its manifest's counts."""
    from .data.manifest import load_manifest
    from .progress import progress as progress_bar

    manifest = load_manifest(shards_dir)
    splits: dict[str, TextSplit] = {}
    for split in progress_bar(SPLITS, desc="reading shard texts", unit="split", disable=not progress):
        data = read_shard_split_texts(manifest.shard_paths(split), split)
        expected = manifest.split(split).num_samples
        if len(data) != expected:
            raise DataError(f"{manifest.path}: splits.{split}.num_samples says {expected} samples, "
                            f"the shards hold {len(data)} (re-run `mmimdb-dist shard --verify`)")
        splits[split] = data
    return splits


def read_raw_texts(raw_dir: str | Path, plot_policy: str = "longest", strict: bool = False,
                   progress: bool = True) -> tuple[dict[str, TextSplit], SkipReport]:
    """Texts of all three splits straight from a raw MM-IMDb folder, plus the reader's SkipReport.

    Movies are kept or skipped by the same rules as when sharding, so both sources give the
    same samples.
    """
    from .data.raw import SkipReport, iter_movies

    report = SkipReport()
    rows: dict[str, tuple[list[str], list[str], list[list[int]]]] = {s: ([], [], []) for s in SPLITS}
    for movie in iter_movies(raw_dir, SPLITS, plot_policy, strict, report, progress):
        ids, texts, labels = rows[movie.split]
        ids.append(movie.id)
        texts.append(movie.plot)
        labels.append(movie.labels)
    if report.total:
        logger.warning("%s: %s", raw_dir, report.summary())
    return {split: _text_split(*rows[split]) for split in SPLITS}, report


# --------------------------------------------------------------------------- model


def build_model(cfg: BaselineConfig, seed: int = 0) -> Any:
    """TF-IDF (sublinear tf, word 1..ngram_max-grams) -> one logistic regression per genre."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    vectorizer = TfidfVectorizer(ngram_range=(1, cfg.ngram_max), sublinear_tf=True, min_df=cfg.min_df,
                                 max_features=cfg.max_features, strip_accents="unicode", dtype=np.float32)
    classifier = LogisticRegression(C=cfg.C, class_weight=cfg.class_weight, solver="liblinear",
                                    max_iter=cfg.max_iter, random_state=seed)
    return make_pipeline(vectorizer, OneVsRestClassifier(classifier))


def _check_trainable(splits: Mapping[str, TextSplit]) -> None:
    for split in SPLITS:
        if split not in splits or len(splits[split]) == 0:
            raise DataError(f"{split} split has no samples: the baseline trains on train, tunes "
                            "thresholds on dev and evaluates on dev and test")
    empty = [GENRES[g] for g in range(NUM_GENRES) if splits["train"].labels[:, g].sum() == 0]
    if empty:
        logger.warning("no training positive for %s: the baseline never predicts them", ", ".join(empty))


def fit_predict(splits: Mapping[str, TextSplit], cfg: BaselineConfig, seed: int = 0) -> dict[str, Any]:
    """Fit on train; return genre probabilities (N x 23) for dev and test, and the fit's cost.

    A genre with no training positive gets a constant 0 probability (scikit-learn's
    one-vs-rest does that itself, with a warning) instead of failing the whole fit.
    The cost (`num_parameters`: one weight per TF-IDF feature and genre plus the
    intercepts; `train_seconds` of the fit) makes the baseline comparable with trained runs.
    """
    import time
    import warnings

    _check_trainable(splits)
    train = splits["train"]
    model = build_model(cfg, seed)
    logger.info("fitting TF-IDF + logistic regression on %d plots", len(train))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        model.fit(train.texts, train.labels)
    seconds = time.perf_counter() - start
    num_features = len(model[0].vocabulary_)
    return {"probabilities": {split: model.predict_proba(splits[split].texts) for split in ("dev", "test")},
            "num_parameters": (num_features + 1) * NUM_GENRES, "train_seconds": seconds}


def evaluate_baseline(splits: Mapping[str, TextSplit], cfg: BaselineConfig, seed: int = 0) -> dict[str, Any]:
    """Train on train, tune thresholds on dev, evaluate dev and test under both protocols."""
    from .metrics import evaluation_report, tune_thresholds

    fitted = fit_predict(splits, cfg, seed)
    probabilities = fitted["probabilities"]
    thresholds = tune_thresholds(splits["dev"].labels, probabilities["dev"])
    seconds = fitted["train_seconds"]
    return {
        "model": MODEL_NAME,
        "num_samples": {split: len(splits[split]) for split in SPLITS},
        "num_parameters": fitted["num_parameters"], "trainable_parameters": fitted["num_parameters"],
        "train_seconds": seconds,
        "train_samples_per_s": len(splits["train"]) / seconds if seconds > 0 else None,
        "dev": evaluation_report(splits["dev"].labels, probabilities["dev"], thresholds),
        "test": evaluation_report(splits["test"].labels, probabilities["test"], thresholds),
    }
