"""Offline comparison of the served pipeline with baselines and textbook peers.

Protocol (what ``manage.py evaluate`` and the nightly evaluate stage report):

1. **Time split** — :func:`recommender.ml.pipeline.time_split`: the last
   ``holdout_fraction`` of the interactions (by time) are the *test period*, from
   ``t_holdout`` on. Everything a strategy uses is fitted on interactions before
   ``t_holdout``; hyperparameters are chosen on a *validation slice of the training
   period* (fitted before ``t_label``, scored on ``[t_label, t_holdout)``), never
   on the test period.
2. **The served pipeline** (``kindred``) is not re-implemented here: each test
   viewer's state at the cut (:class:`~recommender.ml.pipeline.CutState`) goes
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
from dataclasses import dataclass, field

import numpy as np

from recommender.ml import peers as peer_lib
from recommender.ml.candidates import SOURCES, interest_jaccard
from recommender.ml.data import InteractionArrays, MemberArrays, sorted_positions
from recommender.ml.metrics import ranking_metrics, roc_auc
from recommender.ml.pipeline import (
    CutState,
    Split,
    cut_state,
    json_safe,
    state_with_index,
    time_split,
    train_ranking_stage,
)
from recommender.ml.ranking import RankingModel
from recommender.ml.recommend import (
    final_ranking,
    pair_matrices,
    pipeline_run,
    served_scores,
    viewer_context,
)

SERVED = "kindred"
PEER_NAMES = ("als", "ease", "item_knn", "user_knn")
STRATEGIES = (
    "random",
    "popularity",
    "liked_you_then_popularity",
    "content",
    "collaborative",
    *(name + suffix for name in PEER_NAMES for suffix in ("", "_reciprocal")),
    SERVED,
)


def strategies_of(config: EvaluationConfig) -> tuple[str, ...]:
    """The strategies an evaluation with ``config`` compares, in report order."""
    peers = {name + suffix for name in config.peers for suffix in ("", "_reciprocal")}
    return tuple(
        name
        for name in STRATEGIES
        if name in BASELINES or name in peers or name == SERVED
    )


STRATEGY_LABELS = {
    "random": "random",
    "popularity": "popularity",
    "liked_you_then_popularity": "liked you, then popularity",
    "content": "content-only",
    "collaborative": "collaborative-only (embeddings)",
    "als": "ALS (implicit)",
    "als_reciprocal": "ALS + reciprocal",
    "ease": "EASE",
    "ease_reciprocal": "EASE + reciprocal",
    "item_knn": "item-kNN",
    "item_knn_reciprocal": "item-kNN + reciprocal",
    "user_knn": "user-kNN",
    "user_knn_reciprocal": "user-kNN + reciprocal",
    SERVED: "Kindred two-stage pipeline (served)",
}
BASELINES = (
    "random",
    "popularity",
    "liked_you_then_popularity",
    "content",
    "collaborative",
)
PROTOCOLS = ("everyone", "labelled")
VALIDATION_VIEWERS = 300
_KEY_SHIFT = np.int64(1) << np.int64(32)


@dataclass
class EvaluationConfig:
    """Knobs of :func:`strategies_evaluate` (defaults = the nightly recipe's split)."""

    k: int = 10
    holdout_fraction: float = 0.15
    label_fraction: float = 0.15
    seed: int = 0
    max_viewers: int = 1_000
    embedding_kwargs: dict = field(default_factory=dict)
    threads: int | None = None
    peers: tuple[str, ...] = PEER_NAMES


@dataclass
class Fitted:
    """What the strategies know at the cut: the split, the served ranking model,
    the holdout :class:`CutState` and the fitted peers by strategy name."""

    split: Split
    model: RankingModel
    state: CutState
    peers: dict[str, peer_lib.Peer]
    tuning: dict


@dataclass
class EvaluationResult:
    """``report`` is the JSON-able result (see :func:`strategies_evaluate`);
    ``fitted`` what the strategies were fitted on (for inspection and tests)."""

    report: dict
    fitted: Fitted


def _like_graph(
    state: CutState, history: InteractionArrays, *, every_kind: bool = False
) -> peer_lib.LikeGraph:
    """The positive interactions of ``history`` (with ``every_kind``: all of
    them, the implicit feedback "rated at all") in the state's member rows."""
    store = state.population.store
    if not every_kind:
        history = history.select(history.is_positive)
    actor, target = store.index_of(history.actor), store.index_of(history.target)
    known = (actor >= 0) & (target >= 0)
    return peer_lib.LikeGraph(n=store.n, actor=actor[known], target=target[known])


# Peers may learn from likes only or from every interaction (implicit feedback:
# who rated whom at all); which is better is chosen on the validation slice.
FEEDBACK = ("likes", "interactions")


def _validation_cases(
    members: MemberArrays, split: Split, config: EvaluationConfig
) -> tuple[CutState, list[peer_lib.ValidationCase]]:
    """The validation slice: the state at ``t_label`` and, for a seeded sample of
    viewers who liked someone in ``[t_label, t_holdout)``, every member the filters
    allowed them at ``t_label`` with those likes as relevant."""
    state = cut_state(
        members,
        split.history_for_training,
        split.t_label,
        {"seed": config.seed, **config.embedding_kwargs},
    )
    labels = split.training_labels
    cases = _cases(state, labels, VALIDATION_VIEWERS, config.seed)
    return state, [
        peer_lib.ValidationCase(viewer=v, candidates=allowed, relevant=y)
        for v, allowed, y, _ in cases
    ]


def _cases(state: CutState, labels: InteractionArrays, limit: int, seed: int):
    """(viewer row, allowed rows int64, relevant bool, user id) for a seeded
    sample of ``limit`` viewers with a like in ``labels`` that the filters allow
    at the state's cut."""
    store = state.population.store
    positive = labels.select(labels.is_positive)
    viewers = np.unique(positive.actor)
    viewers = viewers[store.index_of(viewers) >= 0]
    rng = np.random.default_rng(seed)
    if viewers.shape[0] > limit:
        viewers = np.sort(rng.choice(viewers, size=limit, replace=False))
    cases = []
    for user_id in viewers.tolist():
        viewer = state.viewer(user_id)
        context = viewer_context(
            state.population,
            viewer,
            embedding=None,
            today=state.today,
            now_ts=state.now_ts,
        )
        allowed = np.flatnonzero(context.mask)
        liked = store.index_of(positive.target[positive.actor == user_id])
        y = np.isin(allowed, liked)
        if y.any():
            row = int(store.index_of(np.array([user_id]))[0])
            cases.append((row, allowed, y, user_id))
    return cases


def fit_at_cut(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    config: EvaluationConfig,
    ranking_model: RankingModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> Fitted:
    """Fit every strategy on the interactions before the test period.

    Without ``ranking_model`` one is trained with the nightly recipe
    (:func:`~recommender.ml.pipeline.train_ranking_stage`, same split fractions);
    with one (e.g. the version a nightly run just registered, trained on the same
    data and split), it is used as is. Peers are tuned on the validation slice
    (module docstring), then refitted on everything before the cut.
    """
    report = progress or (lambda message: None)
    embedding_kwargs = {"seed": config.seed, **config.embedding_kwargs}
    if ranking_model is None:
        stage = train_ranking_stage(
            members,
            interactions,
            embedding_kwargs,
            None,
            config.seed,
            holdout_fraction=config.holdout_fraction,
            label_fraction=config.label_fraction,
            k=config.k,
            progress=report,
            threads=config.threads,
        )
        split, model = stage.split, stage.model
        report("holdout index")
        state = state_with_index(stage.holdout)
    else:
        split = time_split(
            interactions,
            holdout_fraction=config.holdout_fraction,
            label_fraction=config.label_fraction,
        )
        report("holdout state")
        state = cut_state(
            members, split.history_for_holdout, split.t_holdout, embedding_kwargs
        )
        model = ranking_model

    report("peers: validation slice")
    validation_state, cases = _validation_cases(members, split, config)
    graphs = {
        feedback: (
            _like_graph(
                validation_state,
                split.history_for_training,
                every_kind=feedback == "interactions",
            ),
            _like_graph(
                state, split.history_for_holdout, every_kind=feedback == "interactions"
            ),
        )
        for feedback in FEEDBACK
    }
    fitted: dict[str, peer_lib.Peer] = {}
    tuning: dict = {}
    for name in ("popularity", "liked_you_then_popularity", *config.peers):
        report(f"peers: {name}")
        grid = peer_lib.DEFAULT_GRIDS.get(name, [{}])
        extra = {"threads": 1} if name == "als" else {}
        feedback, chosen = "likes", grid[0]
        if name in config.peers and cases:
            best = -np.inf
            tuning[name] = {}
            for kind in FEEDBACK:
                _, tuned = peer_lib.tune(
                    lambda params, name=name, extra=extra: peer_lib.make_peer(
                        name, {**params, **extra}
                    ),
                    grid,
                    graphs[kind][0],
                    cases,
                    k=config.k,
                )
                tuning[name][kind] = tuned
                value = np.nan_to_num(max(tuned["ndcg"].values()), nan=-1.0)
                if value > best:
                    best, feedback, chosen = value, kind, tuned["chosen"]
            tuning[name]["chosen"] = {"feedback": feedback, **chosen}
        graph = graphs[feedback][1]
        peer = peer_lib.make_peer(name, {**chosen, **extra}).fit(graph)
        fitted[name] = peer
        if name in config.peers:
            fitted[name + "_reciprocal"] = peer_lib.ReciprocalPeer(peer).fit(graph)
    return Fitted(split=split, model=model, state=state, peers=fitted, tuning=tuning)


class _MutualPairs:
    """Ordered pairs (actor, target) whose mutual like was complete in the test
    period: both final verdicts positive, at least one given at or after the cut."""

    def __init__(self, interactions: InteractionArrays, t_cut: float):
        final = interactions.current()
        positive = final.select(final.is_positive)
        keys = positive.actor * _KEY_SHIFT + positive.target
        reverse = positive.target * _KEY_SHIFT + positive.actor
        order = np.argsort(keys)
        keys_sorted, ts_sorted = keys[order], positive.ts[order]
        back = sorted_positions(keys_sorted, reverse)
        found = back >= 0
        later = np.maximum(positive.ts[found], ts_sorted[back[found]])
        mutual = keys[found][later >= t_cut]
        self.keys = np.unique(mutual)
        self.count = int(self.keys.shape[0] // 2)

    def contains(self, actor_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
        return sorted_positions(self.keys, actor_ids * _KEY_SHIFT + target_ids) >= 0


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
    cases = _cases(state, test, config.max_viewers, config.seed)
    if not cases:
        raise ValueError("no test viewer has a held-out like the filters allow")
    keys = (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"mutual@{k}")
    names = strategies_of(config)
    per_viewer = {name: [] for name in names}
    shown = {name: [] for name in names}
    recall = {name: [] for name in (*SOURCES, "union")}
    found = {name: [] for name in (*SOURCES, "union")}
    eligible_sizes = []
    for row, allowed, y, user_id in cases:
        eligible_sizes.append(allowed.shape[0])
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
            hits = mutual.contains(
                np.full(top.shape[0], user_id), store.user_id[allowed[top]]
            )
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
            "exposure": peer_lib.exposure_concentration(
                np.concatenate(shown[name]), store.n
            ),
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
    context = viewer_context(
        state.population,
        state.viewer(user_id),
        embedding=state.embedding,
        today=state.today,
        now_ts=state.now_ts,
    )
    forward, backward = pair_matrices(
        state.population, context, rows, embedding=state.embedding
    )
    return served_scores(
        fitted.model,
        forward,
        backward,
        passed_viewer=np.isin(rows, context.signals.passers),
    )


# --- reports --------------------------------------------------------------------------


def report_table(report: dict, *, protocol: str) -> list[list[str]]:
    """Rows (header first) of one protocol's table: strategy, AUC, the top-k
    metrics and (among everyone) exposure; values to 3 decimals ("–" where
    undefined)."""
    k = report["k"]
    columns = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    if protocol == "everyone":
        columns.append(f"mutual@{k}")
    header = ["strategy", "AUC", *columns]
    if protocol == "everyone":
        header += ["exposure Gini", "top 1 % share"]
    table = [header]
    for name in STRATEGIES:
        entry = report["strategies"].get(name)
        if entry is None:
            continue
        metrics = entry[protocol]
        row = [
            STRATEGY_LABELS[name],
            _fmt(entry["auc"]),
            *(_fmt(metrics.get(c)) for c in columns),
        ]
        if protocol == "everyone":
            row += [
                _fmt(entry["exposure"]["gini"]),
                _fmt(entry["exposure"]["top1_share"]),
            ]
        table.append(row)
    return table


def recall_table(report: dict) -> list[list[str]]:
    """Rows (header first): candidate recall and mean candidates per source."""
    table = [["candidate source", "recall of held-out likes", "mean candidates"]]
    for name, entry in report["candidate_recall"].items():
        table.append([name, _fmt(entry["recall"]), _fmt(entry["mean_candidates"], 1)])
    return table


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _markdown_table(table: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in table[1:]]


def comparison_lines(report: dict) -> list[str]:
    """The served pipeline minus the best other strategy, per metric, with the
    95 % bootstrap interval of the paired difference over viewers."""
    lines = []
    for metric, other in report["best_other"].items():
        entry = report["comparisons"][f"{SERVED}_minus_{other}:{metric}"]
        low, high = entry["ci95"]
        verdict = (
            "better"
            if low is not None and low > 0
            else "worse"
            if high is not None and high < 0
            else "not distinguishable"
        )
        lines.append(
            f"{metric}: served − best other ({STRATEGY_LABELS[other]}) = "
            f"{entry['mean']:+.3f} (95 % CI {_fmt(low)} … {_fmt(high)}): {verdict}"
        )
    return lines


def report_markdown(report: dict, *, title: str, chart: str | None = None) -> str:
    """The report as Markdown: both protocols' tables, candidate recall, the
    comparisons, the split and counts."""
    counts = report["counts"]
    lines = [f"## {title}", ""]
    lines.append(
        f"{counts['members']:,} members, {counts['interactions']:,} interactions; "
        f"trained on {counts['training_interactions']:,} before the cut, tested on "
        f"{counts['test_interactions']:,} after it ({counts['test_likes']:,} likes, "
        f"{counts['test_dislikes']:,} dislikes; "
        f"{counts['mutual_pairs_formed_in_test']:,} mutual likes completed). "
        f"{counts['viewers_ranked_among_everyone']:,} viewers ranked among everyone. "
        f"Ranking model: {counts['ranking_model_type']}, reciprocal weight "
        f"{counts['reciprocal_weight']:g}."
    )
    if counts.get("serving_order", "model") != "model":
        lines[-1] += (
            f" The order {counts['serving_order']!r} beat the model on validation,"
            " so the served pipeline ranks its candidates by that order."
        )
    lines.append("")
    for protocol, heading in (
        ("everyone", "Ranked among everyone the strategy may recommend"),
        ("labelled", "Ranked among the pairs rated in the test period"),
    ):
        lines += [f"**{heading}** (AUC: like vs dislike on held-out pairs)", ""]
        lines += _markdown_table(report_table(report, protocol=protocol))
        lines.append("")
    lines += ["**Candidate recall** (served sources, among everyone)", ""]
    lines += _markdown_table(recall_table(report))
    lines.append("")
    lines += [f"- {line}" for line in comparison_lines(report)]
    lines.append("")
    if chart:
        lines += [f"![{title}]({chart})", ""]
    return "\n".join(lines)


def report_chart(report: dict, path, *, title: str) -> None:
    """Write a PNG bar chart comparing the strategies (NDCG@k and mutual@k among
    everyone, AUC, exposure Gini) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    panels = (
        (f"NDCG@{k}, among everyone", lambda e: e["everyone"][f"ndcg@{k}"]),
        (f"mutual@{k}, among everyone", lambda e: e["everyone"][f"mutual@{k}"]),
        ("AUC (like vs dislike)", lambda e: e["auc"]),
        ("exposure Gini", lambda e: e["exposure"]["gini"]),
    )
    names = [name for name in STRATEGIES if name in report["strategies"]]
    labels = [STRATEGY_LABELS[name] for name in names]
    colors = ["#0d47a1" if name == SERVED else "#90a4ae" for name in names]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 4.4), dpi=80)
    for ax, (panel, get) in zip(axes, panels, strict=True):
        values = [get(report["strategies"][s]) for s in names]
        values = [0.0 if v is None else v for v in values]
        ax.barh(labels, values, color=colors)
        ax.set_title(panel, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.3f}", va="center", fontsize=7)
        ax.set_xlim(0, max(max(values) * 1.25, 0.05))
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
