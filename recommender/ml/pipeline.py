"""The ranking stage: learn who is chosen among the eligible, and measure it.

The ranking model learns *who is chosen among the eligible*, the question serving
asks: at ``t_label`` (``recommender.ml.cut``: the time split, and the state serving
would have held then, built only from interactions before it) each sampled
viewer's served candidates (``recommender.ml.recommend``, the very functions
serving calls) are labelled by whether the viewer liked them in
``[t_label, t_holdout)``. Unrated candidates are implicit negatives — learning
P(like | the pair was rated) instead cannot tell who gets chosen, since most rated
pairs are likes on trust networks and every Speed Dating pair met. The holdout
state is rebuilt at ``t_holdout`` from everything before it: what a model serving
at ``t_holdout`` would have known.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.ml.cut import (
    DEFAULT_K,
    DEFAULT_MAX_TRAIN_ROWS,
    CandidateRows,
    CutState,
    HoldoutRows,
    Pairs,
    Split,
    candidate_rows,
    cut_state,
    holdout_rows,
    labelled_pairs,
    state_with_index,
    time_split,
)
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.features import (
    FEATURE_VERSION,
    KEY_SHIFT,
)
from recommender.ml.metrics import (
    log_loss,
    ndcg_at_k,
    ranking_metrics,
    roc_auc,
)
from recommender.ml.objective import (
    evaluate_everyone,
    guarded_choice,
    mean_counted,
    objective,
    objective_by_viewer,
)
from recommender.ml.ranking import RankingModel, predict_scores, train_ranking
from recommender.ml.recommend import (
    BASELINE_ORDERS,
    CANDIDATE_LIKED_VIEWER,
    MODEL_ORDER,
    baseline_scores,
    combine,
    served_scores,
)


def evaluate_scores(
    groups: np.ndarray,
    y: np.ndarray,
    scores: np.ndarray,
    *,
    k: int = DEFAULT_K,
    probabilities: bool = False,
) -> dict:
    """AUC, precision/recall/NDCG@k grouped by ``groups`` (int64 [p]) for ``scores``
    (float [p]) and labels ``y`` (int [p]); log loss too when ``probabilities``."""
    result = {"auc": roc_auc(y, scores)}
    if probabilities:
        result["log_loss"] = log_loss(y, scores)
    result.update(ranking_metrics(groups, y, scores, k=k))
    result["rows"] = int(np.asarray(y).shape[0])
    return result


def evaluate_ranking(
    model: RankingModel,
    state: CutState,
    pairs: Pairs,
    *,
    k: int = DEFAULT_K,
    rows: HoldoutRows | None = None,
) -> dict:
    """Holdout metrics of ``model`` on ``pairs`` (viewer ids, candidate ids, y; see
    :func:`labelled_pairs`) with features as of ``state``: ``{"auc",
    "precision@k", "recall@k", "ndcg@k", "groups", "rows"}`` over the served
    scores, grouped by viewer. Use the same state and pairs to compare two models
    fairly (the auto-promotion gate); ``rows`` = their :func:`holdout_rows` when
    already computed (the features do not depend on the model)."""
    if rows is None:
        rows = holdout_rows(state, pairs)
    if model.feature_version != rows.feature_version:
        raise ValueError(
            f"model uses features {model.feature_version!r}, "
            f"store has {rows.feature_version!r}"
        )
    return evaluate_scores(rows.viewer, rows.y, _rows_scores(model, rows), k=k)


def _rows_scores(model: RankingModel, rows: HoldoutRows) -> np.ndarray:
    return served_scores(model, rows.forward, rows.backward, passed_viewer=rows.passed)


@dataclass
class RankingStageResult:
    """What :func:`train_ranking_stage` produced. Unpacks as ``model, metrics``.

    ``holdout`` (the state at the holdout cut) and ``holdout_pairs`` are the holdout
    evaluation's inputs and ``holdout_rows`` their feature rows, to score another
    model (e.g. the active one) on exactly the same rows with
    :func:`evaluate_ranking` without computing the features again.
    ``everyone_rows`` are the served candidates of sampled holdout viewers at the
    holdout cut, labelled by the holdout period (None when no holdout viewer has a
    like serving could rank), for :func:`evaluate_everyone`.
    """

    model: RankingModel
    metrics: dict
    split: Split
    holdout: CutState
    holdout_pairs: Pairs
    holdout_rows: HoldoutRows
    everyone_rows: CandidateRows | None = None
    timings: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.metrics))


RECIPROCAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
# p(v likes c) * p(c likes v): the chance the pair becomes a match when the two
# decide independently, what a dating recommendation is for. A smaller weight
# serves only when validation shows it better beyond doubt (``clear_winner``).
DEFAULT_RECIPROCAL_WEIGHT = 1.0
# Where no validation viewer formed a mutual like (members who are liked never
# like back: a one-sided graph), p(c likes v) predicts nothing the data shows:
# the viewer's side alone is the default.
ONE_SIDED_RECIPROCAL_WEIGHT = 0.0
DEFAULT_MAX_TRAIN_VIEWERS = 6_000
DEFAULT_TRAINING_WINDOWS = 4
# Each window costs a state of its own (features, embeddings, like graphs over
# every member): fewer windows for large populations (250,000 members: 4;
# 1,000,000: 1, as many embedding fits as before the windows).
WINDOW_MEMBER_BUDGET = 1_000_000
# Each training viewer costs a pass over every member (filters, content and
# popularity sources, exact search): the viewer count shrinks as the population
# grows so this stage stays bounded (~33 ms a viewer at 100,000 members: 2,000
# viewers there; 1,000,000 members: the 500 minimum).
VIEWER_MEMBER_BUDGET = 200_000_000
MIN_TRAIN_VIEWERS = 500
DEFAULT_NEGATIVE_SHARE = 0.25


def _training_windows(
    interactions: InteractionArrays, split: Split, label_fraction: float, count: int
) -> list[tuple[float, float]]:
    """``[(start, end), ...]``, latest first: the split's label window, then up to
    ``count - 1`` earlier windows of as many interactions (fewer when the history
    is too short for them)."""
    windows = [(split.t_label, split.t_holdout)]
    ordered = np.sort(interactions.ts)
    m = ordered.shape[0]
    end_position = int(np.searchsorted(ordered, split.t_label, "left"))
    size = max(1, int(np.floor(label_fraction * m)))
    for _ in range(count - 1):
        start_position = end_position - size
        if start_position < size:  # keep some history before every window
            break
        start, end = float(ordered[start_position]), windows[-1][0]
        if not start < end:
            break
        windows.append((start, end))
        end_position = start_position
    return windows


def train_ranking_stage(
    members: MemberArrays,
    interactions: InteractionArrays,
    embedding_trainer_kwargs: dict | None = None,
    now_ts: float | None = None,
    seed: int = 0,
    *,
    holdout_fraction: float = 0.15,
    label_fraction: float = 0.15,
    validation_fraction: float = 0.2,
    max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS,
    max_train_viewers: int = DEFAULT_MAX_TRAIN_VIEWERS,
    impressions: InteractionArrays | None = None,
    training_windows: int = DEFAULT_TRAINING_WINDOWS,
    negative_share: float = DEFAULT_NEGATIVE_SHARE,
    k: int = DEFAULT_K,
    progress: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> RankingStageResult:
    """Train the ranking model on a time split and evaluate it on the holdout.

    1. :func:`time_split` of the interactions before ``now_ts`` (default: all).
    2. Training rows (:func:`candidate_rows`): at ``t_label``, the served
       candidates of viewers who liked someone in ``[t_label, t_holdout)``, with
       features, embeddings and the like graph of the history before ``t_label``;
       y = liked in the window. ``training_windows`` > 1 adds as many earlier
       windows of the same size, each with the state at its start (more likes to
       learn from, and more moments to learn them at — a cut through an evening
       of speed dates teaches what a half-met wave looks like; fewer windows for
       large populations, see ``WINDOW_MEMBER_BUDGET``; at most
       ``max_train_viewers`` viewers — fewer for large
       populations, see ``VIEWER_MEMBER_BUDGET`` — and ``max_train_rows`` rows
       over all windows). A seeded ``validation_fraction`` of the latest
       window's viewers validate: model selection by NDCG@k per viewer,
       calibration, and the reciprocal weight (:func:`default_reciprocal_weight`
       unless another of ``RECIPROCAL_WEIGHTS`` beats it beyond doubt on NDCG@k
       of likes plus NDCG@k of mutual likes, :func:`guarded_choice`); the model
       fits on the other rows, keeping a seeded ``negative_share`` of their
       negatives.
    3. Holdout: the state rebuilt at ``t_holdout``; the served scores of the
       labelled pairs from ``t_holdout`` on (like vs dislike AUC, ranking among
       the rated pairs; at most ``HOLDOUT_MAX_VIEWERS`` viewers' pairs) beside
       popularity, embedding affinity and random scores.
    """
    report = progress or (lambda stage: None)
    kwargs = {"seed": seed, **(embedding_trainer_kwargs or {})}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    if now_ts is not None:
        # The history as known then, changes of mind included: each window below
        # cuts it at its own times.
        interactions = interactions.as_of(now_ts)
    report("split")
    split = time_split(
        interactions, holdout_fraction=holdout_fraction, label_fraction=label_fraction
    )
    lap("split")

    training_windows = max(
        1, min(training_windows, WINDOW_MEMBER_BUDGET // max(members.n, 1))
    )
    windows = _training_windows(interactions, split, label_fraction, training_windows)
    max_train_viewers = min(
        max_train_viewers, max(MIN_TRAIN_VIEWERS, VIEWER_MEMBER_BUDGET // members.n)
    )
    parts = []
    for number, (t_start, t_end) in enumerate(windows):
        report(f"training rows, window {number + 1} of {len(windows)}")
        state = cut_state(
            members, interactions.before(t_start), t_start, kwargs, index="exact"
        )
        shown = None
        if impressions is not None:
            shown = impressions.between(t_start, t_end)
        part = candidate_rows(
            state,
            interactions.between(t_start, t_end),
            max_viewers=max(1, max_train_viewers // len(windows)),
            max_rows=max(1, max_train_rows // len(windows)),
            seed=seed + number,
            impressions=shown,
        )
        part.group = part.viewer + np.int64(number) * KEY_SHIFT
        parts.append(part)
        del state
        lap(f"training_rows_window_{number + 1}")
    rows = CandidateRows.concat(parts)
    latest = parts[0]
    viewers = np.unique(latest.viewer)
    window = split.training_labels
    training_likes = int(np.isin(window.actor[window.is_positive], viewers).sum())
    rng = np.random.default_rng(seed)
    # Validation: a seeded share of the latest window's viewers (model selection,
    # calibration and the reciprocal weight); training: everything else, with a
    # seeded share of the negatives (the likes are rare: ~0.5 % of the rows).
    groups = np.unique(latest.group)
    valid_groups = rng.choice(
        groups,
        size=max(1, int(round(validation_fraction * groups.shape[0]))),
        replace=False,
    )
    in_valid = np.isin(rows.group, valid_groups)
    if in_valid.all():  # one viewer: validate on their rows too
        in_valid = np.zeros_like(in_valid)
    kept = ~in_valid & ((rows.y == 1) | (rng.random(rows.p) < negative_share))
    train, valid = rows.take(np.flatnonzero(kept)), rows.take(np.flatnonzero(in_valid))
    if not in_valid.any() or np.unique(valid.y).shape[0] < 2:
        valid = train
    lap("training_rows")

    report("ranking model")
    model, candidates = train_ranking(
        train.forward,
        train.y,
        valid.forward,
        valid.y,
        seed=seed,
        threads=threads,
        groups_valid=valid.group,
    )
    p = predict_scores(model, np.vstack([valid.forward, valid.backward]))
    half = valid.p
    liked_viewer = valid.forward[:, CANDIDATE_LIKED_VIEWER] > 0

    def parts(scores: np.ndarray) -> np.ndarray:
        return objective_by_viewer(valid, scores, k)

    by_weight = {
        weight: parts(
            combine(p[:half], p[half:], weight, liked_viewer, valid.passed_viewer)
        )
        for weight in RECIPROCAL_WEIGHTS
    }
    choice = {weight: objective(viewers) for weight, viewers in by_weight.items()}
    weight, weight_advantages = guarded_choice(
        by_weight, default=default_reciprocal_weight(valid), seed=seed
    )
    model.reciprocal_weight = float(weight)
    served = by_weight[model.reciprocal_weight]
    by_order = {
        order: parts(baseline_scores(order, valid.forward)) for order in BASELINE_ORDERS
    }
    orders = {order: objective(viewers) for order, viewers in by_order.items()}
    model.order, advantages = guarded_choice(
        {MODEL_ORDER: served, **by_order}, default=MODEL_ORDER, seed=seed
    )
    # NDCG@k of likes alone, beside random and the simple orders.
    random = np.random.default_rng(seed).random(valid.p)
    validation = {
        "model": mean_counted(served[0]),
        "random": ndcg_at_k(valid.group, valid.y, random, k),
        **{order: mean_counted(viewers[0]) for order, viewers in by_order.items()},
    }
    model.hyperparameters["reciprocal_weight"] = model.reciprocal_weight
    model.hyperparameters["order"] = model.order
    lap("ranking_fit")

    report("holdout features")
    holdout = cut_state(
        members, split.history_for_holdout, split.t_holdout, kwargs, index="none"
    )
    lap("holdout_state")

    report("holdout evaluation")
    holdout_pairs = _sampled_pairs(labelled_pairs(split.holdout_labels), seed=seed)
    rows_holdout = holdout_rows(holdout, holdout_pairs)
    metrics = _holdout_metrics(model, holdout, rows_holdout, k=k, seed=seed)
    lap("holdout_evaluation")

    report("holdout among everyone")
    everyone_rows = _everyone_rows(
        holdout, split.holdout_labels, members=members.n, seed=seed
    )
    metrics["holdout_everyone"] = (
        evaluate_everyone(model, everyone_rows, k=k)
        if everyone_rows is not None
        else None
    )
    lap("holdout_everyone")
    metrics.update(
        model_type=model.model_type,
        feature_version=FEATURE_VERSION,
        train_rows=int(train.p),
        validation_rows=int(valid.p),
        validation_viewers=int(np.unique(valid.group).shape[0]),
        latest_window_viewers=int(viewers.shape[0]),
        training_windows=[list(w) for w in windows],
        training_viewers=int(np.unique(rows.group).shape[0]),
        max_train_viewers=int(max_train_viewers),
        training_positives=int(rows.y.sum()),
        training_likes=int(training_likes),
        training_likes_retrieved=float(latest.y.sum() / max(training_likes, 1)),
        labelled_training_pairs=int(split.training_labels.m),
        reciprocal_weight=model.reciprocal_weight,
        validation_ndcg=validation,
        candidate_rows=int(rows.p),
        reciprocal_weight_validation={str(w): v for w, v in choice.items()},
        reciprocal_weight_advantage={
            str(w): list(a) for w, a in weight_advantages.items()
        },
        order=model.order,
        order_validation={MODEL_ORDER: choice[model.reciprocal_weight], **orders},
        order_advantage={order: list(a) for order, a in advantages.items()},
        t_label=split.t_label,
        t_holdout=split.t_holdout,
        candidates=candidates,
        embedding_hyperparameters=holdout.embeddings.hyperparameters,
        timings=timings,
    )
    return RankingStageResult(
        model=model,
        metrics=json_safe(metrics),
        split=split,
        holdout=holdout,
        holdout_pairs=holdout_pairs,
        holdout_rows=rows_holdout,
        everyone_rows=everyone_rows,
        timings=timings,
    )


# The holdout ranked among everyone costs a pass over every member per viewer
# (~33 ms at 100,000 members): 400 viewers up to 125,000 members, fewer beyond
# (1,000,000 members: the 100 minimum, ~35 s), so the nightly run stays bounded.
EVERYONE_MAX_VIEWERS = 400
EVERYONE_MIN_VIEWERS = 100
EVERYONE_MEMBER_BUDGET = 50_000_000
EVERYONE_MAX_ROWS = 400_000


def _everyone_rows(
    holdout: CutState, labels: InteractionArrays, *, members: int, seed: int
) -> CandidateRows | None:
    """The served candidates of sampled holdout viewers at the holdout cut
    (exact search), labelled by the holdout period; None when there are none."""
    viewers = min(
        EVERYONE_MAX_VIEWERS,
        max(EVERYONE_MIN_VIEWERS, EVERYONE_MEMBER_BUDGET // max(members, 1)),
    )
    try:
        return candidate_rows(
            state_with_index(holdout, exact=True),
            labels,
            max_viewers=viewers,
            max_rows=EVERYONE_MAX_ROWS,
            seed=seed,
        )
    except ValueError:  # no holdout viewer with a like serving could rank
        return None


def default_reciprocal_weight(rows: CandidateRows) -> float:
    """The reciprocal weight that serves unless another wins beyond doubt:
    ``DEFAULT_RECIPROCAL_WEIGHT`` where some of ``rows`` (validation) are mutual
    likes, else ``ONE_SIDED_RECIPROCAL_WEIGHT``."""
    if rows.mutual.any():
        return DEFAULT_RECIPROCAL_WEIGHT
    return ONE_SIDED_RECIPROCAL_WEIGHT


HOLDOUT_MAX_VIEWERS = 2_000


def _sampled_pairs(pairs: Pairs, *, seed: int) -> Pairs:
    """The pairs of at most ``HOLDOUT_MAX_VIEWERS`` viewers (a seeded sample):
    the graph scores of a holdout pair cost a two-hop walk per viewer (190 s for
    every viewer at 100,000 members), and 2,000 viewers measure AUC and NDCG
    well enough."""
    viewers = np.unique(pairs[0])
    if viewers.shape[0] <= HOLDOUT_MAX_VIEWERS:
        return pairs
    chosen = np.random.default_rng(seed).choice(
        viewers, size=HOLDOUT_MAX_VIEWERS, replace=False
    )
    kept = np.isin(pairs[0], chosen)
    return tuple(column[kept] for column in pairs)


def json_safe(value):
    """``value`` (nested dicts/lists of numbers) with nan/inf floats replaced by None
    and numpy scalars by Python ones: storable in a JSON column (PostgreSQL's jsonb
    rejects NaN)."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _holdout_metrics(
    model: RankingModel, state: CutState, rows: HoldoutRows, *, k: int, seed: int
) -> dict:
    groups, y = rows.viewer, rows.y
    metrics = evaluate_scores(groups, y, _rows_scores(model, rows), k=k)
    # The log loss of the viewer's side alone (a probability; the served score,
    # p(v likes c) * p(c likes v) ** w, is not one).
    metrics["log_loss"] = log_loss(y, predict_scores(model, rows.forward))
    store = state.population.store
    cand_idx = store.index_of(rows.candidate)
    viewer_idx = store.index_of(rows.viewer)
    popularity = store.likes_received[cand_idx].astype(np.float64)
    affinity = np.einsum(
        "ij,ij->i", state.embedding.taste[viewer_idx], state.embedding.appeal[cand_idx]
    )
    random = np.random.default_rng(seed).random(y.shape[0])
    metrics["holdout_rows"] = int(y.shape[0])
    metrics["baseline_popularity"] = evaluate_scores(groups, y, popularity, k=k)
    metrics["baseline_embedding"] = evaluate_scores(groups, y, affinity, k=k)
    metrics["baseline_random"] = evaluate_scores(groups, y, random, k=k)
    return metrics
