import numpy as np
import pytest

from recommender.ml.artifacts import dumps, loads, sha256_hex
from recommender.ml.features import FEATURE_VERSION
from recommender.ml.metrics import roc_auc
from recommender.ml.ranking import predict_scores, train_ranking

NAMES = ["signal", "noise", "interaction"]


def _rows(rng, n):
    X = rng.standard_normal((n, 3)).astype(np.float32)
    logit = 1.5 * X[:, 0] + 1.0 * X[:, 0] * X[:, 2] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return X, y


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X_train, y_train = _rows(rng, 6_000)
    X_valid, y_valid = _rows(rng, 3_000)
    X_test, y_test = _rows(rng, 3_000)
    model, metrics = train_ranking(
        X_train, y_train, X_valid, y_valid, seed=0, feature_names=NAMES
    )
    return model, metrics, X_test, y_test


def test_the_better_candidate_is_kept_and_reported(trained):
    model, metrics, _, _ = trained
    candidates = metrics["candidates"]

    assert set(candidates) == {"logistic_regression", "hist_gradient_boosting"}
    best = max(candidates, key=lambda name: candidates[name]["auc"])
    assert metrics["chosen"] == model.model_type == best
    # The interaction term is invisible to a linear model.
    assert model.model_type == "hist_gradient_boosting"
    assert model.feature_names == NAMES and model.feature_version == FEATURE_VERSION


def test_scores_are_calibrated_probabilities_that_rank_well(trained):
    model, _, X_test, y_test = trained

    scores = predict_scores(model, X_test)

    assert scores.shape == (3_000,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert roc_auc(y_test, scores) > 0.75
    assert abs(scores.mean() - y_test.mean()) < 0.03
    high = scores > 0.6
    assert abs(y_test[high].mean() - scores[high].mean()) < 0.08


def test_model_survives_the_artifact_round_trip(trained):
    model, _, X_test, _ = trained
    data = dumps(model)

    restored = loads(data, expected_sha256=sha256_hex(data))

    assert np.array_equal(
        predict_scores(restored, X_test), predict_scores(model, X_test)
    )


def test_bad_input_is_refused(trained):
    model, _, X_test, y_test = trained

    with pytest.raises(ValueError):
        predict_scores(model, X_test[:, :2])
    with pytest.raises(ValueError):
        train_ranking(X_test, np.zeros(3_000), X_test, y_test, feature_names=NAMES)
    with pytest.raises(ValueError):
        train_ranking(X_test, y_test, X_test, y_test)  # 3 columns, not the F pair ones
