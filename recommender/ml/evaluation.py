"""Offline comparison of the served pipeline with baselines and textbook peers.

Protocol (what ``manage.py evaluate`` and the nightly evaluate stage report):

1. **Time split** — :func:`recommender.ml.cut.time_split`: the last
   ``holdout_fraction`` of the interactions (by time) are the *test period*, from
   ``t_holdout`` on. Everything a strategy uses is fitted on interactions before
   ``t_holdout``; hyperparameters are chosen on a *validation slice of the training
   period* (fitted before ``t_label``, scored on ``[t_label, t_holdout)``), never
   on the test period.
2. **The served pipeline** (``kindred``) is not re-implemented here: each test
   viewer's state at the cut (:class:`~recommender.ml.cut.CutState`) goes
   through ``recommender.ml.recommend.pipeline_run`` and ``final_ranking`` — the
   hard filters, candidate sources, ranking model, reciprocal scoring, freshness
   boost and diversity that serving runs per request, with the ranking model
   trained by the nightly recipe (``train_ranking_stage``). Only serving's
   database re-check of the shortlist is absent (here the state is exactly the
   population's).
3. **Baselines and peers** (:data:`STRATEGIES`) rank the same eligible members:
   random; popularity (likes received before the cut); "liked you, then
   popularity"; content-only (interest Jaccard); collaborative-only (the
   embedding affinity the FAISS source searches); and, from
   ``recommender.ml.peers``, implicit-feedback ALS, EASE, item-kNN and user-kNN,
   each also with reciprocal fusion (harmonic mean of both directions), every
   peer with a popularity fallback for viewers without history.
4. **Ranked among everyone**: for each sampled test viewer with a held-out like
   that passes the filters, every member the filters allow at the cut is ranked.
   Relevant = the viewer's held-out likes; everyone else counts as not relevant.
   Metrics at ``k``: precision, recall, NDCG (ties at their expected value) and
   mutual@k (share of top-k pairs that became a mutual like in the test period);
   paired differences of the served pipeline to each other strategy come with a
   95 % bootstrap interval over viewers.
5. **Candidate recall**: the share of each viewer's reachable held-out likes that
   each candidate source (and their union) retrieved, with the mean number of
   candidates per source.
6. **Exposure**: the Gini coefficient of top-k impressions over the eligible
   members and the share going to the most shown 1 %, per strategy.
7. **Like vs dislike**: AUC over the held-out rated pairs of the sampled viewers,
   and the same metrics ranking only those pairs (in Speed Dating: the partners
   met).

Shapes: members and interactions are :class:`~recommender.ml.data.MemberArrays` /
:class:`~recommender.ml.data.InteractionArrays`; scores are float64 [p].
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from recommender.ml.candidates import SOURCES, interest_jaccard
from recommender.ml.cut import CutState
from recommender.ml.data import InteractionArrays, MemberArrays, sorted_positions
from recommender.ml.evaluation_fit import (
    SERVED,
    EvaluationConfig,
    EvaluationResult,
    Fitted,
    fit_at_cut,
    sampled_cases,
    strategies_of,
)
from recommender.ml.features import KEY_SHIFT
from recommender.ml.metrics import exposure_concentration, ranking_metrics, roc_auc
from recommender.ml.pipeline import json_safe
from recommender.ml.ranking import RankingModel
from recommender.ml.recommend import (
    final_ranking,
    pair_matrices,
    pipeline_run,
    served_scores,
)


class _MutualPairs:
    """Ordered pairs (actor, target) whose mutual like was complete in the test
    period: both final verdicts positive, at least one given at or after the cut."""

    def __init__(self, interactions: InteractionArrays, t_cut: float):
        final = interactions.current()
        positive = final.select(final.is_positive)
        keys = positive.actor * KEY_SHIFT + positive.target
        reverse = positive.target * KEY_SHIFT + positive.actor
        order = np.argsort(keys)
        keys_sorted, ts_sorted = keys[order], positive.ts[order]
        back = sorted_positions(keys_sorted, reverse)
        found = back >= 0
        later = np.maximum(positive.ts[found], ts_sorted[back[found]])
        mutual = keys[found][later >= t_cut]
        self.keys = np.unique(mutual)
        self.count = int(self.keys.shape[0] // 2)

    def contains(self, actor_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
        return sorted_positions(self.keys, actor_ids * KEY_SHIFT + target_ids) >= 0


def _bootstrap_ci(values: np.ndarray, seed: int, resamples: int = 2_000) -> list:
    """95 % percentile bootstrap interval of the mean of ``values`` (float [v],
    one per viewer); ``[None, None]`` without values."""
    values = values[np.isfinite(values)]
    if values.shape[0] == 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _strategy_scores(
    fitted: Fitted, name: str, row: int, rows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """float64 [k] scores of a baseline or peer for viewer ``row`` over ``rows``."""
    state = fitted.state
    if name == "random":
        return rng.random(rows.shape[0])
    if name == "content":
        store = state.population.store
        return interest_jaccard(
            store.interest_bits[rows], store.interest_bits[row]
        ).astype(np.float64)
    if name == "collaborative":
        embedding = state.embedding
        return (embedding.appeal[rows] @ embedding.taste[row]).astype(np.float64)
    return np.asarray(fitted.peers[name].scores(row, rows), dtype=np.float64)


def served_ranking(
    state: CutState,
    model: RankingModel | None,
    user_id: int,
    *,
    limit: int,
    rng: np.random.Generator,
):
    """(population rows int64, best first; the pipeline's result): what serving
    shows ``user_id`` in ``state`` — ``recommender.ml.recommend.pipeline_run``
    then ``final_ranking`` (the diversified top ``limit``, then the rest of the
    candidates by score)."""
    result = pipeline_run(
        state.population,
        state.viewer(user_id),
        embedding=state.embedding,
        model=model,
        today=state.today,
        now_ts=state.now_ts,
        rng=rng,
    )
    ranking = final_ranking(
        result, embedding=state.embedding, limit=limit, population=state.population
    )
    return result.candidates.positions[ranking], result


def _served_everyone(fitted: Fitted, user_id: int, allowed, k, rng):
    """(scores float64 over ``allowed``, result): the served order as scores
    (best = highest), members outside the candidates last."""
    rows, result = served_ranking(fitted.state, fitted.model, user_id, limit=k, rng=rng)
    scores = np.full(allowed.shape[0], -np.inf)
    slots = np.searchsorted(allowed, rows)
    inside = (slots < allowed.shape[0]) & (
        allowed[np.minimum(slots, allowed.shape[0] - 1)] == rows
    )
    scores[slots[inside]] = -np.arange(rows.shape[0], dtype=np.float64)[inside]
    return scores, result


def strategies_evaluate(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    config: EvaluationConfig | None = None,
    ranking_model: RankingModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Fit at the cut (:func:`fit_at_cut`) and evaluate every strategy (module
    docstring). ``report``: ``{"k", "split", "counts", "strategies": {name:
    {"auc", "everyone": {...}, "labelled": {...}, "exposure": {...}}},
    "candidate_recall", "comparisons", "tuning", "timings"}``. Raises ValueError
    when the data cannot be split or has no held-out like."""
    config = config or EvaluationConfig()
    report = progress or (lambda message: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fitted = fit_at_cut(
        members,
        interactions,
        config=config,
        ranking_model=ranking_model,
        progress=report,
    )
    timings["fit"] = round(time.perf_counter() - started, 3)
    split, state, k = fitted.split, fitted.state, config.k
    store = state.population.store
    test = split.holdout_labels
    mutual = _MutualPairs(interactions, split.t_holdout)

    report("ranking test viewers among everyone")
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed + 1)
    cases = sampled_cases(state, test, config.max_viewers, config.seed)
    if not cases:
        raise ValueError("no test viewer has a held-out like the filters allow")
    keys = (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"mutual@{k}")
    names = strategies_of(config)
    per_viewer = {name: [] for name in names}
    shown = {name: [] for name in names}
    recall = {name: [] for name in (*SOURCES, "union")}
    found = {name: [] for name in (*SOURCES, "union")}
    eligible_sizes = []
    # What a perfect ranking would reach: a viewer's top k can hold no more likes
    # or mutual likes than they have among the eligible.
    ceiling_likes, ceiling_mutual = [], []
    for row, allowed, y, user_id in cases:
        eligible_sizes.append(allowed.shape[0])
        # Which eligible members became a mutual like: every strategy's top k is
        # looked up here.
        is_mutual = mutual.contains(
            np.full(allowed.shape[0], user_id), store.user_id[allowed]
        )
        ceiling_likes.append(min(int(y.sum()), k) / k)
        ceiling_mutual.append(min(int(is_mutual.sum()), k) / k)
        groups = np.zeros(allowed.shape[0], dtype=np.int64)
        for name in names:
            if name == SERVED:
                scores, result = _served_everyone(fitted, user_id, allowed, k, rng)
                _candidate_recall(result.candidates, allowed, y, recall, found)
            else:
                scores = _strategy_scores(fitted, name, row, allowed, rng)
            metrics = ranking_metrics(groups, y, scores, k=k)
            top = np.lexsort((rng.random(scores.shape[0]), -scores))[:k]
            top = top[np.isfinite(scores[top])]
            hits = is_mutual[top]
            per_viewer[name].append(
                (
                    metrics[keys[0]],
                    metrics[keys[1]],
                    metrics[keys[2]],
                    float(hits.sum()) / k,
                )
            )
            shown[name].append(allowed[top])
    timings["everyone"] = round(time.perf_counter() - started, 3)

    report("like vs dislike on the rated test pairs")
    started = time.perf_counter()
    labelled = _labelled(fitted, test, config, rng, names)
    timings["labelled"] = round(time.perf_counter() - started, 3)

    pool = int(np.unique(np.concatenate([c[1] for c in cases])).shape[0])
    strategies: dict = {}
    values = {
        name: np.asarray(per_viewer[name], dtype=np.float64).reshape(-1, 4)
        for name in names
    }
    for name in names:
        everyone = {key: float(values[name][:, j].mean()) for j, key in enumerate(keys)}
        everyone["viewers"] = int(values[name].shape[0])
        everyone[f"ndcg@{k}_ci95"] = _bootstrap_ci(values[name][:, 2], config.seed)
        everyone["mean_eligible"] = float(np.mean(eligible_sizes))
        strategies[name] = {
            "auc": labelled[name]["auc"],
            "everyone": everyone,
            "labelled": {
                key: value for key, value in labelled[name].items() if key != "auc"
            },
            "exposure": exposure_concentration(np.concatenate(shown[name]), store.n),
        }
    comparisons = {}
    for metric, j in ((f"ndcg@{k}", 2), (f"mutual@{k}", 3)):
        for other in names:
            if other == SERVED:
                continue
            diff = values[SERVED][:, j] - values[other][:, j]
            comparisons[f"{SERVED}_minus_{other}:{metric}"] = {
                "mean": float(diff.mean()),
                "ci95": _bootstrap_ci(diff, config.seed),
            }
    best = {
        metric: max(
            (name for name in names if name != SERVED),
            key=lambda name, j=j: values[name][:, j].mean(),
        )
        for metric, j in ((f"ndcg@{k}", 2), (f"mutual@{k}", 3))
    }
    positive_test = test.select(test.is_positive)
    liked = store.index_of(positive_test.target)
    liked = liked[liked >= 0]
    history = split.history_for_holdout
    popularity = np.bincount(
        np.maximum(store.index_of(history.target[history.is_positive]), 0),
        minlength=store.n,
    )
    result = {
        "k": k,
        "split": {
            "t_label": split.t_label,
            "t_holdout": split.t_holdout,
            "holdout_fraction": config.holdout_fraction,
            "label_fraction": config.label_fraction,
        },
        "counts": {
            "members": int(members.n),
            "interactions": int(interactions.current().m),
            "training_interactions": int(history.m),
            "test_interactions": int(test.m),
            "test_likes": int(test.is_positive.sum()),
            "test_dislikes": int((~test.is_positive).sum()),
            "viewers_ranked_among_everyone": len(cases),
            "mutual_pairs_formed_in_test": mutual.count,
            "ceiling": {
                f"precision@{k}": float(np.mean(ceiling_likes)),
                f"mutual@{k}": float(np.mean(ceiling_mutual)),
            },
            "ranking_model_type": fitted.model.model_type,
            "reciprocal_weight": float(getattr(fitted.model, "reciprocal_weight", 1.0)),
            "serving_order": getattr(fitted.model, "order", "model"),
            "eligible_pool": pool,
            "test_likes_to_members_without_earlier_likes": float(
                np.mean(popularity[liked] == 0) if liked.size else float("nan")
            ),
        },
        "strategies": strategies,
        "candidate_recall": {
            name: {
                "recall": float(np.mean(recall[name])) if recall[name] else None,
                "mean_candidates": float(np.mean(found[name])) if found[name] else None,
            }
            for name in (*SOURCES, "union")
        },
        "comparisons": comparisons,
        "best_other": best,
        "tuning": fitted.tuning,
        "timings": timings,
    }
    return EvaluationResult(report=json_safe(result), fitted=fitted)


def _candidate_recall(candidates, allowed, y, recall, found) -> None:
    relevant = allowed[y]
    for j, name in enumerate((*SOURCES, "union")):
        if name == "union":
            rows = candidates.positions
        else:
            rows = candidates.positions[(candidates.tags >> j) & 1 == 1]
        found[name].append(int(rows.shape[0]))
        recall[name].append(float(np.isin(relevant, rows).mean()))


def _labelled(fitted: Fitted, test: InteractionArrays, config, rng, names) -> dict:
    """AUC (like vs dislike) and ranking metrics over the held-out rated pairs of
    a seeded sample of test viewers, for every strategy."""
    state = fitted.state
    store = state.population.store
    actor, target = store.index_of(test.actor), store.index_of(test.target)
    known = (actor >= 0) & (target >= 0)
    actor, target, y = actor[known], target[known], test.is_positive[known]
    viewers = np.unique(actor)
    if viewers.shape[0] > config.max_viewers:
        sample = np.random.default_rng(config.seed).choice(
            viewers, size=config.max_viewers, replace=False
        )
        keep = np.isin(actor, sample)
        actor, target, y = actor[keep], target[keep], y[keep]
        viewers = np.unique(actor)
    scores = {name: np.zeros(actor.shape[0]) for name in names}
    for row in viewers.tolist():
        pairs = np.flatnonzero(actor == row)
        rows = target[pairs]
        for name in names:
            if name == SERVED:
                values = _served_pairs(fitted, int(store.user_id[row]), rows)
            else:
                values = _strategy_scores(fitted, name, row, rows, rng)
            scores[name][pairs] = values
    out = {}
    for name in names:
        metrics = ranking_metrics(actor, y.astype(np.int8), scores[name], k=config.k)
        out[name] = {"auc": roc_auc(y, scores[name]), **metrics}
    return out


def _served_pairs(fitted: Fitted, user_id: int, rows: np.ndarray) -> np.ndarray:
    """The served stage-2 scores of the viewer's pairs with ``rows``."""
    state = fitted.state
    context = state.context(state.viewer(user_id))
    forward, backward = pair_matrices(
        state.population, context, rows, embedding=state.embedding
    )
    return served_scores(
        fitted.model,
        forward,
        backward,
        passed_viewer=np.isin(rows, context.signals.passers),
    )
