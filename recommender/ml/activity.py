"""Will a candidate act at all in the coming window?

A match needs the candidate to come back and like the viewer. The ranking model
answers p(c likes v) the way it learned it: from viewers who liked someone in a
label window (``recommender.ml.cut.candidate_rows`` samples only those), so its
backward score is p(c likes v | c is active) and says nothing of whether c will
be active at all. A member who left a month ago looks as likely to like back as
one who is online now. The activity model supplies the missing factor,
p(c likes anyone in the window), from the candidate's side of the forward pair
rows — how recently they acted, how much they give and receive, how long they
have been members — so the reciprocal score becomes

    p(v likes c) · [p(c active) · p(c likes v | c active)] ** w.

It is a logistic regression on standardised columns, kept as plain arrays so
serving scores a candidate with one dot product (no scikit-learn call per request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from recommender.ml.features import PAIR_FEATURE_NAMES

# Columns of the forward pair rows (viewer → candidate) that describe the
# candidate alone; the two raw day counts are taken as log1p like the others.
ACTIVITY_FEATURES = (
    "candidate_recency_days",
    "candidate_account_age_days",
    "candidate_given_log1p",
    "candidate_like_rate_given",
    "candidate_received_recent_log1p",
    "candidate_likes_received_recent_log1p",
    "candidate_likes_received_log1p",
)
LOGGED_FEATURES = ("candidate_recency_days", "candidate_account_age_days")
MAX_ACTIVITY_ROWS = 200_000


@dataclass
class ActivityModel:
    """p(candidate likes anyone in a window like the training one) from forward
    pair rows: ``columns`` int64 [a] positions in ``PAIR_FEATURE_NAMES``,
    ``logged`` bool [a] (log1p first), ``mean``, ``scale``, ``coef`` float64 [a]
    and ``intercept``; ``base_rate`` is the share of active candidates it was
    fitted on."""

    columns: np.ndarray
    logged: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    base_rate: float

    def predict(self, forward: np.ndarray) -> np.ndarray:
        """float64 [k] in (0, 1) for forward pair rows float32 [k, F]."""
        z = _columns(forward, self.columns, self.logged)
        logit = ((z - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))


def _columns(forward: np.ndarray, columns: np.ndarray, logged: np.ndarray):
    z = np.asarray(forward, dtype=np.float64)[:, columns]
    z[:, logged] = np.log1p(np.maximum(z[:, logged], 0.0))
    return z


def activity_fit(
    forward: np.ndarray, active: np.ndarray, *, seed: int = 0
) -> ActivityModel | None:
    """Fit on forward pair rows float32 [p, F] whose candidate did (``active``
    bool [p] True) or did not like anyone in the label window; a seeded sample of
    ``MAX_ACTIVITY_ROWS`` at most. None when the rows hold one class only (nothing
    to learn: every candidate acted, or none did)."""
    active = np.asarray(active, dtype=bool)
    if active.shape[0] != forward.shape[0]:
        raise ValueError("forward and active must have as many rows")
    if active.all() or not active.any():
        return None
    if active.shape[0] > MAX_ACTIVITY_ROWS:
        rows = np.random.default_rng(seed).choice(
            active.shape[0], size=MAX_ACTIVITY_ROWS, replace=False
        )
        forward, active = forward[rows], active[rows]
        if active.all() or not active.any():
            return None
    columns = np.array(
        [PAIR_FEATURE_NAMES.index(name) for name in ACTIVITY_FEATURES], dtype=np.int64
    )
    logged = np.isin(np.array(ACTIVITY_FEATURES), LOGGED_FEATURES)
    z = _columns(forward, columns, logged)
    mean = z.mean(axis=0)
    scale = z.std(axis=0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=1.0, max_iter=1_000).fit((z - mean) / scale, active)
    return ActivityModel(
        columns=columns,
        logged=logged,
        mean=mean,
        scale=scale,
        coef=fitted.coef_[0].astype(np.float64),
        intercept=float(fitted.intercept_[0]),
        base_rate=float(active.mean()),
    )
