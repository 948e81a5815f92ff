"""Metrics against hand-computed values and scikit-learn; threshold tuning; report files."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from mmimdb_dist.data.sources.mmimdb.genres import GENRES, NUM_GENRES
from mmimdb_dist.metrics import (
    compute_metrics,
    evaluation_report,
    format_summary,
    tune_thresholds,
    write_metrics_json,
    write_per_label_csv,
)

NAMES3 = ("A", "B", "C")
TRUE3 = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
PROB3 = [[0.9, 0.2, 0.4], [0.6, 0.7, 0.1], [0.8, 0.3, 0.2]]
# At 0.5 the predictions are [[1,0,0],[1,1,0],[1,0,0]]: TP 3, FP 1, FN 2.


def test_three_by_three_case_by_hand():
    m = compute_metrics(TRUE3, PROB3, genres=NAMES3)
    assert m["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # 2/3
    assert m["precision_micro"] == pytest.approx(3 / 4)
    assert m["recall_micro"] == pytest.approx(3 / 5)
    # Per genre: A TP2 FP1 -> F1 4/5; B TP1 FN1 -> 2/3; C TP0 FN1 -> 0.
    assert [g["f1"] for g in m["per_label"]] == pytest.approx([4 / 5, 2 / 3, 0.0])
    assert m["f1_macro"] == pytest.approx((4 / 5 + 2 / 3) / 3)
    assert m["f1_samples"] == pytest.approx(2 / 3)  # every movie: 1 hit of 2 (true or predicted)
    assert m["subset_accuracy"] == 0.0
    assert m["hamming_loss"] == pytest.approx(3 / 9)
    assert [g["support"] for g in m["per_label"]] == [2, 2, 1]
    assert [g["threshold"] for g in m["per_label"]] == [0.5, 0.5, 0.5]
    # Every positive outranks every negative of its genre.
    assert m["roc_auc_macro"] == 1.0
    assert m["roc_auc_labels_skipped"] == 0
    assert m["mean_average_precision"] == 1.0
    assert m["num_samples"] == 3


def test_per_label_thresholds_change_predictions():
    m = compute_metrics(TRUE3, PROB3, thresholds=[0.5, 0.25, 0.35], genres=NAMES3)
    # Now B predicts [0,1,1] and C [1,0,0]: all exact except A's false positive.
    assert m["f1_micro"] == pytest.approx(2 * 5 / (2 * 5 + 1))
    assert m["per_label"][2]["threshold"] == 0.35
    assert m["per_label"][2]["f1"] == 1.0


def _random_case(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, NUM_GENRES)) < np.linspace(0.5, 0.03, NUM_GENRES)).astype(int)
    y_prob = np.clip(0.35 * y_true + 0.65 * rng.random((n, NUM_GENRES)), 0, 1)
    return y_true, y_prob


def test_matches_scikit_learn_on_random_case():
    y_true, y_prob = _random_case(1)
    y_pred = (y_prob >= 0.5).astype(int)
    m = compute_metrics(y_true, y_prob, genres=GENRES)
    for average in ("micro", "macro", "weighted", "samples"):
        assert m[f"f1_{average}"] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0))
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y_true, y_prob, average="macro"))
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(y_true, y_prob, average="micro"))
    assert m["mean_average_precision"] == pytest.approx(average_precision_score(y_true, y_prob, average="macro"))
    assert [g["label"] for g in m["per_label"]] == list(GENRES)


def test_degenerate_genres_are_skipped_and_counted():
    y_true, y_prob = _random_case(2, n=60)
    y_true[0], y_true[1] = 1, 0  # every other genre has both classes
    y_true[:, 5] = 0  # no positive
    y_true[:, 9] = 1  # no negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may fall back on a warning
        m = compute_metrics(y_true, y_prob)
    defined = [g for g in range(NUM_GENRES) if g not in (5, 9)]
    assert m["roc_auc_labels_skipped"] == 2
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y_true[:, defined], y_prob[:, defined]))
    with_positives = [g for g in range(NUM_GENRES) if g != 5]
    assert m["average_precision_labels_skipped"] == 1
    assert m["mean_average_precision"] == pytest.approx(
        average_precision_score(y_true[:, with_positives], y_prob[:, with_positives])
    )
    assert m["per_label"][5]["support"] == 0
    assert m["per_label"][5]["f1"] == 0.0


def test_all_genres_degenerate_gives_none_not_a_crash():
    m = compute_metrics([[0, 0], [0, 0]], [[0.2, 0.7], [0.1, 0.4]], genres=("A", "B"))
    assert m["roc_auc_macro"] is None
    assert m["roc_auc_micro"] is None
    assert m["mean_average_precision"] is None
    assert m["roc_auc_labels_skipped"] == 2
    assert m["f1_micro"] == 0.0


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="same N x G shape"):
        compute_metrics([[1, 0]], [[0.1, 0.2, 0.3]], genres=("A", "B"))
    with pytest.raises(ValueError, match="2 label columns but 3 label names"):
        compute_metrics([[1, 0]], [[0.1, 0.2]], genres=NAMES3)
    with pytest.raises(ValueError, match="thresholds: expected a number or 3 values"):
        compute_metrics(TRUE3, PROB3, thresholds=[0.5, 0.5], genres=NAMES3)
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(TRUE3, [[np.nan, 0, 0]] * 3, genres=NAMES3)
    with pytest.raises(ValueError, match="0/1"):
        compute_metrics([[2, 0, 0]] * 3, PROB3, genres=NAMES3)


def test_tuned_thresholds_improve_dev_f1_and_fall_back_for_empty_genres():
    # Genre 0: a calibrated-low model (positives ~0.3, negatives ~0.1): F1 0 at 0.5, 1 when tuned.
    # Genre 1: positives ~0.9 and negatives ~0.6: 0.5 over-predicts.  Genre 2: no dev positive.
    y_true = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]])
    y_prob = np.array(
        [
            [0.30, 0.90, 0.7],
            [0.32, 0.62, 0.2],
            [0.12, 0.88, 0.9],
            [0.08, 0.61, 0.1],
            [0.10, 0.58, 0.6],
            [0.28, 0.55, 0.3],
        ]
    )
    thresholds = tune_thresholds(y_true, y_prob, min_positives=1)
    assert 0.12 < thresholds[0] <= 0.28
    assert 0.62 < thresholds[1] <= 0.88
    # No dev positive: the shared threshold (best micro-F1 over all genres), not a guess of its own.
    shared = tune_thresholds(y_true, y_prob, min_positives=10**6)
    assert len(set(shared)) == 1
    assert thresholds[2] == shared[2]
    at_half = compute_metrics(y_true, y_prob, 0.5, genres=NAMES3)
    tuned = compute_metrics(y_true, y_prob, thresholds, genres=NAMES3)
    assert at_half["per_label"][0]["f1"] == 0.0
    assert tuned["per_label"][0]["f1"] == 1.0
    assert tuned["per_label"][1]["f1"] == 1.0 > at_half["per_label"][1]["f1"]
    assert tuned["f1_micro"] > at_half["f1_micro"]
    assert tuned["f1_macro"] > at_half["f1_macro"]


def test_tuning_never_loses_to_half_on_dev():
    y_true, y_prob = _random_case(3)
    thresholds = tune_thresholds(y_true, y_prob, min_positives=1)
    at_half = compute_metrics(y_true, y_prob, 0.5)["per_label"]
    tuned = compute_metrics(y_true, y_prob, thresholds)["per_label"]
    assert all(t["f1"] >= h["f1"] - 1e-12 for t, h in zip(tuned, at_half, strict=True))


def test_ties_prefer_the_threshold_closest_to_half():
    # Any threshold in (0.2, 0.8] separates perfectly; 0.5 is the least extreme.
    assert tune_thresholds([[1], [0]], [[0.8], [0.2]], min_positives=1)[0] == 0.5


def test_rare_genres_share_one_bounded_threshold_instead_of_predicting_every_movie():
    """A genre with 4 dev positives and an uninformative score: tuned alone its best dev F1 is
    at a threshold that predicts it for nearly every movie; shared, it cannot be."""
    rng = np.random.default_rng(7)
    n = 300
    y_true = np.zeros((n, 3), dtype=int)
    y_true[:, 0] = rng.random(n) < 0.4  # a frequent genre the model ranks well
    y_true[rng.choice(n, 4, replace=False), 1] = 1  # a rare genre the model knows nothing of
    y_true[:, 2] = rng.random(n) < 0.3
    y_prob = np.column_stack(
        [
            np.clip(0.3 * y_true[:, 0] + rng.random(n) * 0.5, 0, 1),
            rng.random(n) * 0.1,
            np.clip(0.4 * y_true[:, 2] + rng.random(n) * 0.5, 0, 1),
        ]
    )
    alone = tune_thresholds(y_true, y_prob, min_positives=1)
    # Tuned alone it is predicted for a fifth of the movies or more (its true rate: 4 in 300).
    assert (y_prob[:, 1] >= alone[1]).mean() > 0.15
    thresholds = tune_thresholds(y_true, y_prob, min_positives=20)
    assert thresholds[0] == alone[0]
    assert thresholds[2] == alone[2]
    assert thresholds[1] != alone[1]
    assert 0.05 <= thresholds[1] <= 0.95
    assert (y_prob[:, 1] >= thresholds[1]).mean() == 0.0
    tuned = compute_metrics(y_true, y_prob, thresholds, genres=NAMES3)
    assert tuned["labels_per_sample_predicted"] < 2 * tuned["labels_per_sample_true"]
    assert tuned["labels_per_sample_true"] == pytest.approx(y_true.sum(1).mean())


def test_report_applies_dev_thresholds_to_the_evaluated_split(tmp_path):
    dev_true, dev_prob = _random_case(4)
    test_true, test_prob = _random_case(5)
    thresholds = tune_thresholds(dev_true, dev_prob)
    report = evaluation_report(test_true, test_prob, thresholds, GENRES)
    assert set(report) == {"threshold_0.5", "tuned_on_dev", "thresholds"}
    assert report["thresholds"] == pytest.approx(list(thresholds))
    assert report["tuned_on_dev"] == compute_metrics(test_true, test_prob, thresholds, GENRES)
    assert report["threshold_0.5"] == compute_metrics(test_true, test_prob, 0.5, GENRES)
    # Not re-tuned on test: the thresholds optimal on test are different ones.
    assert not np.allclose(tune_thresholds(test_true, test_prob), thresholds)

    reports = {"dev": evaluation_report(dev_true, dev_prob, thresholds, GENRES), "test": report}
    json_path = write_metrics_json(tmp_path / "out" / "metrics.json", {"splits": reports, "note": float("nan")})
    loaded = json.loads(json_path.read_text())
    assert loaded["note"] is None
    assert loaded["splits"]["test"]["tuned_on_dev"]["f1_micro"] == pytest.approx(report["tuned_on_dev"]["f1_micro"])
    assert not list((tmp_path / "out").glob(".*.tmp"))

    csv_path = write_per_label_csv(tmp_path / "out" / "per_label.csv", reports)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 * NUM_GENRES
    drama_test = next(r for r in rows if r["split"] == "test" and r["label"] == "Drama")
    assert float(drama_test["threshold_tuned"]) == pytest.approx(thresholds[0])
    assert float(drama_test["f1_tuned"]) == pytest.approx(report["tuned_on_dev"]["per_label"][0]["f1"], abs=1e-4)
    assert int(drama_test["support"]) == int(test_true[:, 0].sum())

    summary = format_summary(reports)
    assert "tuned_on_dev" in summary
    assert f"{report['threshold_0.5']['f1_micro']:.4f}" in summary
