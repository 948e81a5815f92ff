"""Losses against values written out from their formulas, and their reductions to BCE."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from mmimdb_dist.data.manifest import load_manifest
from mmimdb_dist.data.sources.mmimdb.genres import GENRES, NUM_GENRES
from mmimdb_dist.errors import ConfigError, DataError
from mmimdb_dist.losses import build_loss, pos_weight_from_counts
from mmimdb_dist.schema import LossConfig, load_config

LOGITS = [[0.0, 2.0, -1.0], [-1.5, 0.5, 3.0]]
TARGETS = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean_by_hand(term) -> float:
    values = [
        term(x, y) for row_x, row_y in zip(LOGITS, TARGETS, strict=True) for x, y in zip(row_x, row_y, strict=True)
    ]
    return sum(values) / len(values)


def run_loss(cfg: LossConfig, **kwargs) -> float:
    loss = build_loss(cfg, **kwargs)
    return float(loss(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(TARGETS, dtype=torch.float64)))


def bce_term(x: float, y: float) -> float:
    p = sigmoid(x)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_bce_matches_formula():
    assert run_loss(LossConfig(name="bce")) == pytest.approx(mean_by_hand(bce_term), rel=1e-12)


def test_weighted_bce_matches_formula_with_train_odds():
    # 3 genres, 10 training movies: 5, 2 and 1 positives -> pos_weight 1, 4, 9.
    counts, n = [5, 2, 1], 10
    weights = [1.0, 4.0, 9.0]
    assert pos_weight_from_counts(counts, n) == weights

    def term(x: float, y: float, w: float) -> float:
        p = sigmoid(x)
        return -(w * y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (
        sum(
            term(x, y, w)
            for row_x, row_y in zip(LOGITS, TARGETS, strict=True)
            for x, y, w in zip(row_x, row_y, weights, strict=True)
        )
        / 6
    )
    got = run_loss(LossConfig(name="weighted_bce"), label_counts=counts, num_samples=n)
    assert got == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_clips_pos_weight():
    assert pos_weight_from_counts([5, 2, 1], 10, max_value=5.0) == [1.0, 4.0, 5.0]
    loss = build_loss(LossConfig(name="weighted_bce", pos_weight_max=5.0), label_counts=[5, 2, 1], num_samples=10)
    assert loss.pos_weight.tolist() == [1.0, 4.0, 5.0]


def test_weighted_bce_with_unit_weights_equals_bce():
    # n_c = N / 2 for every genre gives pos_weight 1.
    weighted = run_loss(LossConfig(name="weighted_bce"), label_counts=[4, 4, 4], num_samples=8)
    assert weighted == pytest.approx(run_loss(LossConfig(name="bce")), rel=1e-6)


def test_weighted_bce_needs_counts_and_checks_them(caplog):
    with pytest.raises(ConfigError, match="weighted_bce needs the train split"):
        build_loss(LossConfig(name="weighted_bce"))
    with pytest.raises(DataError, match=r"label_counts\[1\].*\[0, 10\].*11"):
        pos_weight_from_counts([5, 11, 1], 10)
    with pytest.raises(DataError, match="num_samples"):
        pos_weight_from_counts([0, 0], 0)
    assert pos_weight_from_counts([5, 0], 10) == [1.0, 1.0]
    assert "genre index 1 has no positive" in caplog.text


def test_focal_matches_formula():
    gamma, alpha = 2.0, 0.25

    def term(x: float, y: float) -> float:
        p = sigmoid(x)
        p_t = p if y == 1 else 1 - p
        alpha_t = alpha if y == 1 else 1 - alpha
        return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)

    got = run_loss(LossConfig(name="focal", gamma=gamma, alpha=alpha))
    assert got == pytest.approx(mean_by_hand(term), rel=1e-9)


def test_focal_without_alpha_matches_formula():
    def term(x: float, y: float) -> float:
        p_t = sigmoid(x) if y == 1 else 1 - sigmoid(x)
        return -((1 - p_t) ** 1.5) * math.log(p_t)

    assert run_loss(LossConfig(name="focal", gamma=1.5, alpha=None)) == pytest.approx(mean_by_hand(term), rel=1e-9)


def test_focal_gamma0_no_alpha_equals_bce():
    focal = run_loss(LossConfig(name="focal", gamma=0.0, alpha=None))
    assert focal == pytest.approx(run_loss(LossConfig(name="bce")), rel=1e-12)


def test_asl_matches_formula():
    gamma_pos, gamma_neg, clip = 1.0, 4.0, 0.05

    def term(x: float, y: float) -> float:
        p = sigmoid(x)
        if y == 1:
            return -((1 - p) ** gamma_pos) * math.log(p)
        p_m = max(p - clip, 0.0)
        return -(p_m**gamma_neg) * math.log(1 - p_m)

    got = run_loss(LossConfig(name="asl", gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip))
    assert got == pytest.approx(mean_by_hand(term), rel=1e-9)


def test_asl_margin_discards_easy_negatives():
    # A negative with p = sigmoid(-4) ~ 0.018 < clip contributes exactly zero.
    loss = build_loss(LossConfig(name="asl", gamma_neg=0.0, clip=0.05))
    assert float(loss(torch.tensor([[-4.0]]), torch.tensor([[0.0]]))) == 0.0


def test_asl_gamma0_clip0_equals_bce():
    asl = run_loss(LossConfig(name="asl", gamma_pos=0.0, gamma_neg=0.0, clip=0.0))
    assert asl == pytest.approx(run_loss(LossConfig(name="bce")), rel=1e-12)


@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_losses_are_finite_for_extreme_logits_and_give_gradients(name):
    logits = torch.tensor([[80.0, -80.0, 0.0], [-80.0, 80.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    value = build_loss(LossConfig(name=name))(logits, targets)
    value.backward()
    assert value.ndim == 0
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_unknown_loss_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="bce.*weighted_bce.*focal.*asl"):
        LossConfig(name="hinge")
    with pytest.raises(ConfigError, match="loss.name.*'bce', 'weighted_bce', 'focal', 'asl'"):
        load_config(overrides=["loss.name=hinge"])
    cfg = LossConfig()
    cfg.name = "hinge"
    with pytest.raises(ConfigError, match="valid: bce, weighted_bce, focal, asl"):
        build_loss(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss.alpha=1.5", "loss.alpha"),
        ("loss.clip=1.0", "loss.clip"),
        ("loss.gamma=-1", "loss.gamma"),
        ("loss.gamma_neg=-0.5", "loss.gamma_neg"),
        ("loss.pos_weight_max=0", "loss.pos_weight_max"),
    ],
)
def test_bad_loss_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_loss_section_loads_from_config():
    cfg = load_config(overrides=["loss.name=focal", "loss.alpha=null", "loss.gamma=1"])
    assert cfg.loss == LossConfig(name="focal", alpha=None, gamma=1.0)


def test_multilabel_loss_pickles():
    loss = build_loss(LossConfig(name="asl"))
    restored = pickle.loads(pickle.dumps(loss))
    assert type(restored) is type(loss)
    assert restored.params == loss.params


def _write_manifest(directory, train_counts, train_n):
    def split(n, counts, prefix):
        return {
            "num_samples": n,
            "label_counts": counts,
            "shards": [{"name": f"{prefix}-000000.tar", "num_samples": n, "sha256": "0" * 64, "bytes": 1}],
        }

    manifest = {
        "format": "mmimdb-dist-shards",
        "format_version": 1,
        "genres": list(GENRES),
        "settings": {},
        "skipped": {"count_by_reason": {}, "movies": []},
        "splits": {
            "train": split(train_n, train_counts, "train"),
            # dev/test counts differ wildly: reading them instead of train would show.
            "dev": split(2, [1] * NUM_GENRES, "dev"),
            "test": split(2, [2] * NUM_GENRES, "test"),
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_weighted_bce_from_a_manifest_takes_the_train_split_only(tmp_path):
    # What the trainer does: the loss from the manifest's train counts (dev and test differ wildly).
    counts = [50, 20, 10] + [5] * (NUM_GENRES - 3)
    _write_manifest(tmp_path, counts, 100)
    train = load_manifest(tmp_path).split("train")
    loss = build_loss(LossConfig(name="weighted_bce"), train.label_counts, train.num_samples)
    assert loss.pos_weight.tolist()[:3] == [1.0, 4.0, 9.0]
    assert loss.pos_weight.tolist()[3:] == [19.0] * (NUM_GENRES - 3)
    capped = build_loss(LossConfig(name="weighted_bce", pos_weight_max=8.0), train.label_counts, train.num_samples)
    assert capped.pos_weight.tolist()[2:4] == [8.0, 8.0]
