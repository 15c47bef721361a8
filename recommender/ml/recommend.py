"""The recommendation pipeline, once: what serving runs per request, what the
ranking model's training rows are made of, and what ``manage.py evaluate`` measures.

For one viewer (:class:`ViewerState`: their profile row and every interaction they
gave or received) against a :class:`~recommender.ml.candidates.Population`:

1. hard filters — :func:`recommender.ml.filters.population_mask`;
2. the viewer's one-row feature store (:func:`viewer_store_build`) and their
   signals from the like graph (``viewer_signals``: who liked them, neighbour
   scores);
3. stage 1 — ``candidates_generate`` (liked-you, neighbours, FAISS, content,
   popular, explore);
4. stage 2 — :func:`rank_scores`: the ranking model scores both directions of
   each pair, ``score = p(v → c) · p(c → v) ** reciprocal_weight`` (the weight is
   chosen on validation data at training, see ``recommender.ml.pipeline``);
5. post-processing — :func:`freshness_boost` (new and recently active members),
   then, on the shortlist that serving re-checks against the database,
   :func:`diversify` (maximal marginal relevance).

:func:`pipeline_run` does 1–5 up to the shortlist order; serving adds its database
re-check between the order and :func:`diversify`, evaluation (where the state is
exactly the population's) does not need it. Nothing here touches Django.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np

from recommender.ml.candidates import (
    Candidates,
    Embedding,
    Population,
    ViewerSignals,
    candidates_generate,
    viewer_signals,
    viewer_vectors,
)
from recommender.ml.data import SECONDS_PER_DAY, InteractionArrays, MemberArrays
from recommender.ml.features import (
    KEY_SHIFT,
    PAIR_FEATURE_NAMES,
    PRIOR_STRENGTH,
    RECENT_DAYS,
    REVERSED_NEIGHBOURS,
    FeatureStore,
    build_feature_store,
    pair_features,
)
from recommender.ml.filters import excluded_ids, population_mask
from recommender.ml.ranking import RankingModel, predict_scores

SHORTLIST_FACTOR = 1.5  # candidates re-checked against the database per result
DIVERSITY_LAMBDA = 0.8  # MMR: relevance weight (1 - it: similarity penalty)
NEW_MEMBER_DAYS = 14.0
NEW_MEMBER_BOOST = 0.10
RECENTLY_ACTIVE_DAYS = 1.0
RECENTLY_ACTIVE_BOOST = 0.05
# Forward-pair column saying the candidate already liked the viewer: their side of
# the pair is then known, not predicted (see :func:`combine`).
CANDIDATE_LIKED_VIEWER = PAIR_FEATURE_NAMES.index("candidate_liked_viewer")
CANDIDATE_POPULARITY = PAIR_FEATURE_NAMES.index("candidate_likes_received_log1p")

# What orders stage 2's candidates: the ranking model (the default), or a simple
# order the training stage chose instead because it beat the model on validation
# (a guard for data on which the model learned less than a popularity list knows).
MODEL_ORDER = "model"
BASELINE_ORDERS = ("liked_you_then_popularity", "popularity")


@dataclass
class ViewerState:
    """The member asking, as fresh as the caller has it: ``members`` a one-row
    ``MemberArrays`` (profile and preferences), ``history`` every interaction they
    gave or received, ``excluded`` int64 sorted user ids never to show (themself,
    everyone they interacted with, everyone who blocked them)."""

    user_id: int
    members: MemberArrays
    history: InteractionArrays
    excluded: np.ndarray


def viewer_state(
    user_id: int, members: MemberArrays, history: InteractionArrays
) -> ViewerState:
    """The :class:`ViewerState` of ``user_id`` (``members``: their one row)."""
    return ViewerState(
        user_id=int(user_id),
        members=members,
        history=history,
        excluded=excluded_ids(user_id=int(user_id), history=history),
    )


def liked_viewer_keys(*, user_id: int, history: InteractionArrays) -> np.ndarray:
    """int64 sorted ``actor * 2**32 + target`` keys of the likes the viewer
    received (the ``candidate_liked_viewer`` feature of the viewer's pairs)."""
    liked = (history.target == user_id) & history.is_positive
    keys = history.actor[liked] * KEY_SHIFT + np.int64(user_id)
    return np.unique(keys.astype(np.int64))


def viewer_store_build(
    viewer: ViewerState, population: Population, *, now_ts: float
) -> FeatureStore:
    """The viewer's one-row feature store as of ``now_ts``, from their own rows;
    the behaviour columns use the population's like-rate prior, as
    ``build_feature_store`` would over everyone (it keeps only interactions between
    members it holds, so it cannot count the viewer's alone)."""
    store = build_feature_store(
        viewer.members,
        viewer.history,
        now_ts=now_ts,
        vocabulary=population.store.vocabulary,
    )
    history = viewer.history.before(now_ts)
    uid = viewer.user_id
    given, received = history.actor == uid, history.target == uid
    positive = history.is_positive
    prior = population.store.prior_like_rate

    def smoothed(likes, total):
        return np.float32((likes + PRIOR_STRENGTH * prior) / (total + PRIOR_STRENGTH))

    lately = history.ts >= now_ts - RECENT_DAYS * SECONDS_PER_DAY
    store.n_given[0], store.n_received[0] = given.sum(), received.sum()
    store.like_rate_given[0] = smoothed((given & positive).sum(), given.sum())
    store.like_rate_received[0] = smoothed((received & positive).sum(), received.sum())
    store.likes_received[0] = (received & positive).sum()
    store.likes_received_recent[0] = (received & positive & lately).sum()
    store.received_recent[0] = (received & lately).sum()
    last_seen = float(viewer.members.created_ts[0])
    if given.any():
        last_seen = max(last_seen, float(history.ts[given].max()))
    last_active = float(viewer.members.last_active_ts[0])
    if last_active <= now_ts:  # nan (never) compares false
        last_seen = max(last_seen, last_active)
    store.recency_days[0] = max((now_ts - last_seen) / SECONDS_PER_DAY, 0.0)
    store.liked_keys = liked_viewer_keys(user_id=uid, history=history)
    return store


@dataclass
class ViewerContext:
    """Everything stage 1 and 2 know about the viewer: the filter ``mask`` (bool
    [n]), the one-row ``store``, the like-graph ``signals`` and, with an
    embedding, the ``taste`` / ``appeal`` vectors (float32 [d]) and whether the
    taste was ``learned``."""

    mask: np.ndarray
    store: FeatureStore
    signals: ViewerSignals
    taste: np.ndarray | None
    appeal: np.ndarray | None
    learned: bool


def viewer_context(
    population: Population,
    viewer: ViewerState,
    *,
    embedding: Embedding | None,
    today: dt.date,
    now_ts: float,
) -> ViewerContext:
    """Steps 1–2 of the pipeline (module docstring) for ``viewer``."""
    mask = population_mask(
        population.filters, viewer.members, viewer.excluded, today=today
    )
    store = viewer_store_build(viewer, population, now_ts=now_ts)
    signals = viewer_signals(population, viewer.user_id, viewer.history)
    taste = appeal = None
    learned = False
    if embedding is not None:
        taste, appeal, learned = viewer_vectors(embedding, store)
    return ViewerContext(mask, store, signals, taste, appeal, learned)


def candidates_for(
    population: Population,
    context: ViewerContext,
    *,
    embedding: Embedding | None,
    rng: np.random.Generator,
) -> Candidates:
    """Step 3: every candidate source over the viewer's mask, merged."""
    return candidates_generate(
        population,
        context.mask,
        context.store,
        context.signals,
        embedding=embedding,
        viewer_taste=context.taste,
        viewer_appeal=context.appeal,
        learned_taste=context.learned,
        rng=rng,
    )


def _store_concat(first: FeatureStore, rest: FeatureStore) -> FeatureStore:
    values = {}
    for f in fields(first):
        a, b = getattr(first, f.name), getattr(rest, f.name)
        per_member = isinstance(a, np.ndarray) and f.name != "liked_keys"
        values[f.name] = np.concatenate([a, b]) if per_member else a
    return FeatureStore(**values)


def pair_matrices(
    population: Population,
    context: ViewerContext,
    rows: np.ndarray,
    *,
    embedding: Embedding | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) float32 [k, F] ranking features of the pairs (viewer,
    ``rows[i]``) and (``rows[i]``, viewer), population rows int64 [k]; the viewer's
    features come from their fresh one-row store."""
    rows = np.asarray(rows, dtype=np.int64)
    k = rows.shape[0]
    store = _store_concat(context.store, population.store.take(rows))
    taste = appeal = None
    if embedding is not None and context.taste is not None:
        taste = np.vstack([context.taste[None, :], embedding.taste[rows]])
        appeal = np.vstack([context.appeal[None, :], embedding.appeal[rows]])
    viewer = np.zeros(k, dtype=np.int64)
    others = np.arange(1, k + 1, dtype=np.int64)
    neighbours = context.signals.at(rows)
    X = pair_features(
        store,
        np.concatenate([viewer, others]),
        np.concatenate([others, viewer]),
        taste=taste,
        appeal=appeal,
        neighbours=np.vstack([neighbours, neighbours[:, REVERSED_NEIGHBOURS]]),
    )
    return X[:k], X[k:]


def combine(
    p_forward: np.ndarray,
    p_backward: np.ndarray,
    reciprocal_weight: float,
    liked_viewer: np.ndarray | None = None,
    passed_viewer: np.ndarray | None = None,
) -> np.ndarray:
    """float64 [k] ``p_forward · p_backward ** reciprocal_weight`` (0 = the viewer's
    side alone, 1 = the product of both sides). Where the candidate already gave
    their verdict on the viewer, their side is an observed fact, not a prediction
    (the ranking model never learned the direction of an already-rated pair, so
    its score there means nothing): ``liked_viewer`` (bool [k]) makes
    ``p_backward`` 1, ``passed_viewer`` (bool [k]) makes it 0 — a member who
    passed on the viewer cannot become a match, so with any weight above 0 they
    rank after everyone who still can."""
    if passed_viewer is not None:
        p_backward = np.where(passed_viewer, 0.0, p_backward)
    if liked_viewer is not None:
        p_backward = np.where(liked_viewer, 1.0, p_backward)
    if reciprocal_weight == 0:
        return np.asarray(p_forward, dtype=np.float64)
    return p_forward * np.power(np.maximum(p_backward, 1e-12), reciprocal_weight)


def served_scores(
    model: RankingModel,
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    passed_viewer: np.ndarray | None = None,
) -> np.ndarray:
    """float64 [k] stage-2 scores of pairs from both directions' feature rows
    (float32 [k, F] each): the model's probability each way, combined (:func:`combine`)
    with the model's reciprocal weight; whether the candidate liked the viewer is
    read from ``forward``, whether they passed on them is ``passed_viewer`` (bool
    [k], None = nobody did). A model whose ``order`` is one of ``BASELINE_ORDERS``
    (the training stage found that order better on validation) scores the pairs
    with :func:`baseline_scores` instead."""
    order = getattr(model, "order", MODEL_ORDER)
    if order != MODEL_ORDER:
        return baseline_scores(order, forward)
    k = forward.shape[0]
    p = predict_scores(model, np.vstack([forward, backward]))
    if not np.all(np.isfinite(p)):
        raise ValueError("ranking model returned non-finite scores")
    return combine(
        p[:k],
        p[k:],
        getattr(model, "reciprocal_weight", 1.0),
        forward[:, CANDIDATE_LIKED_VIEWER] > 0,
        passed_viewer,
    )


def baseline_scores(order: str, forward: np.ndarray) -> np.ndarray:
    """float64 [k] in [0, 1) of a simple order of pairs, from their forward feature
    rows: ``"popularity"`` (likes the candidate received), or
    ``"liked_you_then_popularity"`` (candidates who liked the viewer first, each
    part by popularity). The training stage scores its validation rows with this
    same function when it weighs the model against these orders."""
    likes = np.asarray(forward[:, CANDIDATE_POPULARITY], dtype=np.float64)
    popularity = likes / (1.0 + likes)  # log1p(likes) squashed into [0, 1)
    if order == "popularity":
        return popularity
    if order == "liked_you_then_popularity":
        liked = forward[:, CANDIDATE_LIKED_VIEWER] > 0
        return (liked + popularity) / 2.0
    raise ValueError(f"unknown order {order!r}")


def rank_scores(
    population: Population,
    context: ViewerContext,
    candidates: Candidates,
    model: RankingModel,
    *,
    embedding: Embedding | None,
) -> np.ndarray:
    """Step 4: float64 [k] stage-2 scores of the candidates (module docstring)."""
    if not candidates.k:
        return np.zeros(0, dtype=np.float64)
    X_forward, X_backward = pair_matrices(
        population, context, candidates.positions, embedding=embedding
    )
    return served_scores(
        model,
        X_forward,
        X_backward,
        passed_viewer=np.isin(candidates.positions, context.signals.passers),
    )


def freshness_boost(
    store: FeatureStore, rows: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(boosted float64 [k], new bool [k]): scores of population ``rows`` raised
    10 % for members who joined in the last 14 days, 5 % for those active in the
    last day."""
    new = store.account_age_days[rows] < NEW_MEMBER_DAYS
    active = store.recency_days[rows] < RECENTLY_ACTIVE_DAYS
    boosted = scores * (1 + NEW_MEMBER_BOOST * new + RECENTLY_ACTIVE_BOOST * active)
    return boosted, new


@dataclass
class PipelineResult:
    """What :func:`pipeline_run` produced: the ``candidates``, their final
    ``scores`` (float64 [k], freshness boost applied), ``order`` (int64 [k],
    best first), ``new`` (bool [k]), whether a ranking model scored them
    (``ranked``) and the viewer's ``context``."""

    candidates: Candidates
    scores: np.ndarray
    order: np.ndarray
    new: np.ndarray
    ranked: bool
    context: ViewerContext


def pipeline_run(
    population: Population,
    viewer: ViewerState,
    *,
    embedding: Embedding | None,
    model: RankingModel | None,
    today: dt.date,
    now_ts: float,
    rng: np.random.Generator,
    on_ranking_error=None,
    lap=None,
) -> PipelineResult:
    """Steps 1–4 and the freshness boost for ``viewer``. Without a ``model`` (or
    when it raises, reported to ``on_ranking_error`` when given, else re-raised)
    the candidates keep their source scores. ``lap``, when given, is called with
    "filters", "candidates" and "ranking" as each stage ends (serving's timings)."""
    lap = lap or (lambda stage: None)
    context = viewer_context(
        population, viewer, embedding=embedding, today=today, now_ts=now_ts
    )
    lap("filters")
    candidates = candidates_for(population, context, embedding=embedding, rng=rng)
    lap("candidates")
    scores = candidates.score.astype(np.float64)
    ranked = False
    if model is not None:
        try:
            scores = rank_scores(
                population, context, candidates, model, embedding=embedding
            )
            ranked = True
        except Exception as error:
            if on_ranking_error is None:
                raise
            on_ranking_error(error)
    lap("ranking")
    boosted, new = freshness_boost(population.store, candidates.positions, scores)
    order = np.argsort(-boosted, kind="stable")
    return PipelineResult(candidates, boosted, order, new, ranked, context)


def shortlist_size(limit: int) -> int:
    """How many of the best candidates serving re-checks for ``limit`` results."""
    return int(SHORTLIST_FACTOR * limit) + 10


def diversify(
    chosen: np.ndarray,
    relevance: np.ndarray,
    rows: np.ndarray,
    *,
    appeal: np.ndarray | None,
    store: FeatureStore,
    limit: int,
) -> list[int]:
    """Maximal marginal relevance over candidate positions ``chosen`` (int64, best
    first): greedily the one maximising λ·relevance − (1−λ)·max similarity to those
    already picked, ``limit`` at most. Similarity is the cosine of appeal vectors
    (``appeal`` float32 [n, d] aligned with the population; who likes them), or
    interest Jaccard without one. ``relevance`` float [k] and ``rows`` int64 [k]
    (population rows) are indexed by candidate position."""
    if chosen.size <= 1:
        return chosen.tolist()[:limit]
    rel = relevance[chosen]
    top = rel.max()
    rel = rel / top if top > 0 else rel
    if appeal is not None:
        vectors = appeal[rows[chosen]]
        similarity = vectors @ vectors.T
    else:
        bits = store.interest_bits[rows[chosen]]
        overlap = np.bitwise_count(bits[:, None, :] & bits[None, :, :]).sum(axis=2)
        union = np.bitwise_count(bits[:, None, :] | bits[None, :, :]).sum(axis=2)
        similarity = overlap / np.maximum(union, 1)
    nearest = np.zeros(chosen.size)
    taken = np.zeros(chosen.size, dtype=bool)
    picked = []
    for _ in range(min(limit, chosen.size)):
        value = DIVERSITY_LAMBDA * rel - (1 - DIVERSITY_LAMBDA) * nearest
        value[taken] = -np.inf
        j = int(np.argmax(value))
        picked.append(int(chosen[j]))
        taken[j] = True
        nearest = np.maximum(nearest, similarity[:, j])
    return picked


def final_ranking(
    result: PipelineResult,
    *,
    embedding: Embedding | None,
    limit: int,
    population: Population,
) -> np.ndarray:
    """int64 candidate positions as served when every shortlisted candidate passes
    the database re-check (evaluation's state is the population's): the
    diversified top ``limit`` of the shortlist, then the rest by score."""
    size = shortlist_size(limit)
    shortlist = result.order[:size]
    picked = diversify(
        shortlist,
        result.scores,
        result.candidates.positions,
        appeal=embedding.appeal if embedding is not None else None,
        store=population.store,
        limit=limit,
    )
    rest = result.order[~np.isin(result.order, picked)]
    return np.concatenate([np.asarray(picked, dtype=np.int64), rest])
