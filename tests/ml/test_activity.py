"""The activity factor: a candidate who will not come back cannot like the viewer
back, however well they would match."""

from types import SimpleNamespace

import numpy as np
import pytest

from recommender.ml.activity import ACTIVITY_FEATURES, activity_fit
from recommender.ml.features import PAIR_FEATURE_NAMES
from recommender.ml.ranking import train_ranking
from recommender.ml.recommend import (
    CANDIDATE_LIKED_VIEWER,
    candidate_activity,
    served_scores,
)

RECENCY = PAIR_FEATURE_NAMES.index("candidate_recency_days")
GIVEN = PAIR_FEATURE_NAMES.index("candidate_given_log1p")


def _rows(n: int, seed: int):
    """Forward rows whose candidates act in the window the more recently they
    acted before it and the more they give (a planted rule), and that label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(PAIR_FEATURE_NAMES))).astype(np.float32)
    X[:, RECENCY] = rng.exponential(20.0, size=n)
    X[:, GIVEN] = np.log1p(rng.poisson(5.0, size=n))
    logit = 1.0 - 0.15 * X[:, RECENCY] + 0.8 * (X[:, GIVEN] - 1.5)
    active = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return X, active


def test_the_activity_model_learns_who_comes_back():
    X, active = _rows(4_000, seed=0)
    model = activity_fit(X, active, seed=0)
    assert model is not None
    assert [PAIR_FEATURE_NAMES[c] for c in model.columns] == list(ACTIVITY_FEATURES)
    assert model.base_rate == pytest.approx(active.mean())

    X_test, active_test = _rows(2_000, seed=1)
    p = model.predict(X_test)
    assert p.shape == (2_000,) and p.dtype == np.float64
    assert np.all((p > 0) & (p < 1))
    # It ranks who acts above who does not, far from chance ...
    order = np.argsort(p)
    ranks = np.empty(p.shape[0])
    ranks[order] = np.arange(p.shape[0])
    positives = active_test.sum()
    auc = (ranks[active_test].sum() - positives * (positives - 1) / 2) / (
        positives * (p.shape[0] - positives)
    )
    assert auc > 0.75
    # ... and is calibrated on average.
    assert p.mean() == pytest.approx(active_test.mean(), abs=0.05)
    # The same member, gone for longer, is less likely to come back.
    recent, gone = X_test[:1].copy(), X_test[:1].copy()
    recent[0, RECENCY], gone[0, RECENCY] = 0.5, 90.0
    assert model.predict(gone)[0] < model.predict(recent)[0]


def test_nothing_to_learn_when_every_candidate_acted_or_none_did():
    X, _ = _rows(100, seed=2)
    assert activity_fit(X, np.ones(100, dtype=bool)) is None
    assert activity_fit(X, np.zeros(100, dtype=bool)) is None
    with pytest.raises(ValueError):
        activity_fit(X, np.ones(99, dtype=bool))


def _ranking_model(X: np.ndarray):
    y = (X[:, 0] > 0).astype(np.int8)
    model, _ = train_ranking(X[:300], y[:300], X[300:400], y[300:400], seed=0)
    model.reciprocal_weight = 1.0
    return model


def test_serving_scales_the_other_side_by_how_likely_they_are_to_come_back():
    X, active = _rows(4_000, seed=3)
    model = _ranking_model(X)
    forward = np.repeat(X[400:401], 3, axis=0)
    backward = np.repeat(X[401:402], 3, axis=0)
    forward[:, CANDIDATE_LIKED_VIEWER] = 0
    forward[:, RECENCY] = [0.5, 60.0, 60.0]
    forward[2, CANDIDATE_LIKED_VIEWER] = 1  # already liked the viewer: a fact

    without = served_scores(model, forward, backward)
    model.activity = activity_fit(X, active, seed=0)
    scores = served_scores(model, forward, backward)

    # Same pair otherwise (the ranking model does read recency, so compare each
    # row with itself): each unanswered candidate's score is multiplied by their
    # chance of acting at all; the one who already liked the viewer is unchanged.
    a = candidate_activity(model, forward)
    assert a[0] > a[1]
    assert np.allclose(scores[:2], without[:2] * a[:2])
    assert scores[2] == pytest.approx(without[2])
    # At weight 0 the other side plays no part, activity included.
    model.reciprocal_weight = 0.0
    alone = served_scores(model, forward, backward)
    model.activity = None
    assert np.array_equal(alone, served_scores(model, forward, backward))


def test_a_model_saved_before_the_activity_model_serves_as_it_did():
    X, _ = _rows(1_000, seed=4)
    model = _ranking_model(X)
    old = SimpleNamespace(**{k: v for k, v in vars(model).items() if k != "activity"})
    forward, backward = X[400:420], X[420:440]
    assert np.array_equal(candidate_activity(old, forward), np.ones(20))
    assert np.allclose(
        served_scores(old, forward, backward), served_scores(model, forward, backward)
    )
