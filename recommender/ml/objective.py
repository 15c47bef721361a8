"""The ranking objective, and the guard that chooses by it.

Who gets chosen among everyone eligible is measured per viewer as NDCG@k of their
likes plus NDCG@k of their mutual likes over a viewer's served candidates
(:func:`objective_by_viewer`, :func:`objective`). The training stage
(``recommender.ml.pipeline``) chooses the reciprocal weight and the serving order
with it, only beyond doubt (:func:`guarded_choice`), and the auto-promotion gate
compares two ranking versions with it on the holdout (:func:`evaluate_everyone`).
"""

from __future__ import annotations

import numpy as np

from recommender.ml.cut import DEFAULT_K, CandidateRows
from recommender.ml.metrics import ndcg_by_group
from recommender.ml.ranking import RankingModel
from recommender.ml.recommend import served_scores

GUARD_RESAMPLES = 2_000


def objective_by_viewer(rows: CandidateRows, scores: np.ndarray, k: int) -> np.ndarray:
    """float64 [2, G]: each validation viewer's NDCG@k of likes and of mutual likes
    under ``scores`` (nan where the viewer has none): the parts of the objective
    that chooses the reciprocal weight."""
    return np.vstack(
        [
            ndcg_by_group(rows.group, rows.y, scores, k),
            ndcg_by_group(rows.group, rows.mutual, scores, k),
        ]
    )


def mean_counted(values: np.ndarray) -> float:
    """Mean of the non-nan values; nan when there are none (no warning)."""
    counted = ~np.isnan(values)
    return float(values[counted].mean()) if counted.any() else float("nan")


def objective(viewers: np.ndarray) -> float:
    """The validation objective from :func:`objective_by_viewer`'s parts: mean
    NDCG@k of likes plus mean NDCG@k of mutual likes (0 when nobody had one)."""
    return mean_counted(viewers[0]) + np.nan_to_num(mean_counted(viewers[1]))


def objective_advantage(
    base: np.ndarray, other: np.ndarray, *, seed: int, resamples: int = GUARD_RESAMPLES
) -> tuple[float, float]:
    """(advantage, lower bound): how much higher ``other``'s validation objective
    is than ``base``'s — mean NDCG@k of likes plus mean NDCG@k of mutual likes,
    each over the viewers who have some, from the parts of
    :func:`objective_by_viewer` ([2, G] each, the same viewers) — and the 2.5th
    percentile of that difference over a paired bootstrap of the viewers."""
    diff = other - base  # nan where the viewer has no like (or no mutual like)
    counted = ~np.isnan(diff)
    diff = np.nan_to_num(diff)

    def advantage_of(weights: np.ndarray) -> np.ndarray:
        # weights [B, G]: how often each viewer is drawn; a part nobody drawn has
        # counts as 0, as the objective's nan_to_num does.
        sums = weights @ (diff * counted).T  # [B, 2]
        counts = weights @ counted.T.astype(np.float64)
        return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).sum(1)

    viewers = diff.shape[1]
    if viewers == 0:
        return 0.0, 0.0
    advantage = float(advantage_of(np.ones((1, viewers)))[0])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(viewers, np.full(viewers, 1.0 / viewers), size=resamples)
    lower = float(np.percentile(advantage_of(draws.astype(np.float64)), 2.5))
    return advantage, lower


def guarded_choice(parts: dict, *, default, seed: int) -> tuple[object, dict]:
    """(choice, advantages): of the options in ``parts`` (each one's
    :func:`objective_by_viewer` parts on the same validation viewers), ``default``
    unless another beat it beyond doubt (:func:`clear_winner`), and every other
    option's (advantage, lower bound) over the default
    (:func:`objective_advantage`)."""
    advantages = {
        option: objective_advantage(parts[default], viewers, seed=seed)
        for option, viewers in parts.items()
        if option != default
    }
    return clear_winner(advantages, default=default), advantages


def clear_winner(advantages: dict, *, default):
    """The default choice, unless an alternative beat it on validation beyond
    doubt — the lower bound of its advantage (:func:`objective_advantage`) above
    zero — then the one with the largest advantage among those. A lead inside the
    noise keeps the default: tens or hundreds of validation viewers cannot tell two
    close choices apart. Serving's order (the model against ``BASELINE_ORDERS``:
    the model carries what the simple orders cannot see) and the reciprocal weight
    (:func:`default_reciprocal_weight` against the others) are chosen so."""
    clear = {choice: a for choice, (a, lower) in advantages.items() if lower > 0}
    if clear:
        return max(clear, key=clear.get)
    return default


def evaluate_everyone(
    model: RankingModel, rows: CandidateRows, *, k: int = DEFAULT_K
) -> dict:
    """How ``model`` ranks the holdout viewers' served candidates, the question
    serving answers (who is chosen among everyone eligible), with the objective
    that chose its reciprocal weight: ``{"objective", "ndcg@k", "mutual_ndcg@k",
    "viewers"}`` (objective = mean NDCG@k of likes + mean NDCG@k of mutual likes
    over the viewers). The auto-promotion gate compares two models on the same
    ``rows`` with it."""
    scores = served_scores(
        model, rows.forward, rows.backward, passed_viewer=rows.passed_viewer
    )
    by_viewer = objective_by_viewer(rows, scores, k)
    return {
        "objective": objective(by_viewer),
        f"ndcg@{k}": mean_counted(by_viewer[0]),
        f"mutual_ndcg@{k}": mean_counted(by_viewer[1]),
        "viewers": int(by_viewer.shape[1]),
    }
