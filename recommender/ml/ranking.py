"""The stage-2 ranking model: P(viewer likes candidate) from pair features.

Two candidates are fitted on the training rows — a logistic regression (standardised
features) and a histogram gradient-boosted tree model — and the one with the better
AUC on a *selection* half of the validation rows is kept. Its probabilities are then
calibrated on the other, *calibration* half: ``CalibratedClassifierCV`` around a
``FrozenEstimator`` (scikit-learn >= 1.6; ``cv="prefit"`` is gone in 1.8+), so the
fitted model is not refitted. Platt (sigmoid) calibration is the default: it is
strictly monotone, so calibration never reorders candidates (isotonic would create
ties); pass ``calibration="isotonic"`` for large validation sets if preferred.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from recommender.ml.features import FEATURE_VERSION, PAIR_FEATURE_NAMES
from recommender.ml.metrics import log_loss, ndcg_at_k, roc_auc

LOGISTIC_REGRESSION = "logistic_regression"
GRADIENT_BOOSTING = "hist_gradient_boosting"
MIN_CALIBRATION_ROWS = 200


@dataclass
class RankingModel:
    """A trained ranking model: a fitted scikit-learn classifier (``estimator``,
    calibrated), the feature columns it expects (``feature_names``, in order), the
    ``feature_version`` of the code that produced them and ``model_type``."""

    estimator: object
    feature_names: list[str]
    feature_version: str
    model_type: str
    hyperparameters: dict = field(default_factory=dict)
    # Serving's score is p(v likes c) * p(c likes v) ** reciprocal_weight; chosen
    # on validation data by the training stage (recommender.ml.pipeline).
    reciprocal_weight: float = 1.0
    # "model", or a simple order served instead of the model because it ranked the
    # validation candidates better (recommender.ml.recommend.BASELINE_ORDERS).
    order: str = "model"


def _candidates(seed: int) -> dict[str, object]:
    return {
        LOGISTIC_REGRESSION: make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=1_000)
        ),
        GRADIENT_BOOSTING: HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=15,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        ),
    }


def train_ranking(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    seed: int = 0,
    feature_names: list[str] | None = None,
    calibration: str = "sigmoid",
    threads: int | None = None,
    groups_valid: np.ndarray | None = None,
) -> tuple[RankingModel, dict]:
    """Fit, select and calibrate (see the module docstring).

    ``X_train`` float32 [p, F], ``y_train`` int/bool [p] (1 = liked); ``X_valid``,
    ``y_valid`` the same for later rows (validation; split in two seeded halves for
    selection and calibration). ``feature_names`` defaults to
    :data:`PAIR_FEATURE_NAMES`. Returns the model and a JSON-able dict with each
    candidate's selection-half AUC / log loss / fit time, the choice, and the
    calibrated model's log loss on the selection half. ``threads`` caps the
    OpenMP/BLAS threads while fitting (None = the libraries' default, all cores;
    OpenMP pools spin-wait, so on a box shared with other busy processes a cap of 1
    can be many times faster). With ``groups_valid`` (int64 [q], the viewer of each
    validation row) the candidate with the best NDCG@10 per viewer on the selection
    half wins (ranking, what serving does), else the one with the best AUC.
    """
    with threadpool_limits(limits=threads):
        return _train_ranking(
            X_train,
            y_train,
            X_valid,
            y_valid,
            seed=seed,
            feature_names=feature_names,
            calibration=calibration,
            groups_valid=groups_valid,
        )


def _train_ranking(
    X_train,
    y_train,
    X_valid,
    y_valid,
    *,
    seed,
    feature_names,
    calibration,
    groups_valid,
) -> tuple[RankingModel, dict]:
    feature_names = list(feature_names or PAIR_FEATURE_NAMES)
    X_train, X_valid = (np.asarray(x, dtype=np.float32) for x in (X_train, X_valid))
    y_train = (np.asarray(y_train) != 0).astype(np.int8)
    y_valid = (np.asarray(y_valid) != 0).astype(np.int8)
    for name, X, y in (("train", X_train, y_train), ("valid", X_valid, y_valid)):
        if X.ndim != 2 or X.shape[1] != len(feature_names) or X.shape[0] != len(y):
            raise ValueError(
                f"X_{name} must be [p, {len(feature_names)}] like y_{name}"
            )
        if np.unique(y).shape[0] < 2:
            raise ValueError(f"y_{name} needs both positive and negative rows")

    selection, calibration_rows = _halves(y_valid, seed)
    metrics: dict = {"candidates": {}}
    fitted = {}
    for name, estimator in _candidates(seed).items():
        started = time.perf_counter()
        estimator.fit(X_train, y_train)
        p = estimator.predict_proba(X_valid[selection])[:, 1]
        fitted[name] = estimator
        metrics["candidates"][name] = {
            "auc": roc_auc(y_valid[selection], p),
            "log_loss": log_loss(y_valid[selection], p),
            "fit_seconds": round(time.perf_counter() - started, 3),
        }
        if groups_valid is not None:
            metrics["candidates"][name]["ndcg@10"] = ndcg_at_k(
                np.asarray(groups_valid)[selection], y_valid[selection], p, 10
            )
    criterion = "ndcg@10" if groups_valid is not None else "auc"
    chosen = max(fitted, key=lambda name: metrics["candidates"][name][criterion])

    calibrated = CalibratedClassifierCV(
        FrozenEstimator(fitted[chosen]), method=calibration
    )
    calibrated.fit(X_valid[calibration_rows], y_valid[calibration_rows])
    p = calibrated.predict_proba(X_valid[selection])[:, 1]
    metrics.update(
        chosen=chosen,
        selected_by=criterion,
        calibration=calibration,
        calibrated_log_loss=log_loss(y_valid[selection], p),
        calibrated_auc=roc_auc(y_valid[selection], p),
        train_rows=int(X_train.shape[0]),
        selection_rows=int(selection.shape[0]),
        calibration_rows=int(calibration_rows.shape[0]),
    )
    model = RankingModel(
        estimator=calibrated,
        feature_names=feature_names,
        feature_version=FEATURE_VERSION,
        model_type=chosen,
        hyperparameters={
            "seed": seed,
            "calibration": calibration,
            "candidates": {
                name: _params(estimator) for name, estimator in fitted.items()
            },
        },
    )
    return model, metrics


def _halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified split of the validation rows into (selection, calibration)
    int64 positions; with too few rows both halves are all rows."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    if y.shape[0] < 2 * MIN_CALIBRATION_ROWS or counts.min() < 2:
        # Too few rows, or a class too rare to be in both halves.
        everything = np.arange(y.shape[0])
        return everything, everything
    rng = np.random.default_rng(seed)
    halves = ([], [])
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        halves[0].append(rows[::2])
        halves[1].append(rows[1::2])
    return np.sort(np.concatenate(halves[0])), np.sort(np.concatenate(halves[1]))


def _params(estimator) -> dict:
    return {
        key: value
        for key, value in estimator.get_params(deep=True).items()
        if isinstance(value, str | int | float | bool | type(None))
    }


def predict_scores(model: RankingModel, X: np.ndarray) -> np.ndarray:
    """float64 [p] calibrated like-probabilities for feature rows ``X`` (float32
    [p, F], columns ``model.feature_names``)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != len(model.feature_names):
        raise ValueError(f"X must be [p, {len(model.feature_names)}]")
    if X.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    return model.estimator.predict_proba(X)[:, 1].astype(np.float64)
