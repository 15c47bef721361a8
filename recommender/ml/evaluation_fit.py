"""What an offline evaluation compares, fitted at the cut: the strategies
(:data:`STRATEGIES`), the configuration, and :func:`fit_at_cut` — the served
pipeline's ranking model and state, the baselines' inputs and the peers tuned on
the validation slice of the training period (``recommender.ml.evaluation`` has
the protocol)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.ml import peers as peer_lib
from recommender.ml.cut import CutState, Split, cut_state, state_with_index, time_split
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.pipeline import train_ranking_stage
from recommender.ml.ranking import RankingModel
from recommender.ml.recommend import (
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
    cases = sampled_cases(state, labels, VALIDATION_VIEWERS, config.seed)
    return state, [
        peer_lib.ValidationCase(viewer=v, candidates=allowed, relevant=y)
        for v, allowed, y, _ in cases
    ]


def sampled_cases(state: CutState, labels: InteractionArrays, limit: int, seed: int):
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
