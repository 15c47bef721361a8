"""The pure offline pipeline behind the Django training stages.

Time-based evaluation without leaks: the interactions are cut at two times,
``t_label < t_holdout``::

    ─── history_for_training ───┤ training labels ├── holdout labels ──▶ ts
                              t_label          t_holdout
    ─────────────── history_for_holdout ──────────┤

Training rows are the labelled pairs of ``[t_label, t_holdout)`` with features and
embeddings built only from interactions before ``t_label``; holdout rows are the pairs
from ``t_holdout`` on, with features and embeddings from everything before
``t_holdout`` — what a model serving at ``t_holdout`` would have known.

Labelled pairs are the viewed pairs: like / super-like = 1, dislike / block = 0 (the
model learns P(like | the viewer was shown the candidate); impressions without a
verdict are not in the interaction data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.embeddings import EmbeddingModel, content_vectors, train_embeddings
from recommender.ml.features import (
    FEATURE_VERSION,
    FeatureStore,
    build_feature_store,
    pair_features,
)
from recommender.ml.metrics import log_loss, ranking_metrics, roc_auc
from recommender.ml.ranking import RankingModel, predict_scores, train_ranking

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # viewer ids, candidate ids, y
DEFAULT_K = 10
DEFAULT_MAX_TRAIN_ROWS = 2_000_000


@dataclass
class Split:
    """A time split (see the module docstring); the cut times are unix seconds."""

    t_label: float
    t_holdout: float
    history_for_training: InteractionArrays
    training_labels: InteractionArrays
    history_for_holdout: InteractionArrays
    holdout_labels: InteractionArrays


def time_split(
    interactions: InteractionArrays,
    *,
    holdout_fraction: float = 0.15,
    label_fraction: float = 0.15,
) -> Split:
    """Cut ``interactions`` by time: the last ``holdout_fraction`` of them (by
    ``ts``) are holdout labels, the ``label_fraction`` before that training labels.
    Cuts fall on interaction times; every row with ``ts == t`` goes to the later side,
    so no training label shares a timestamp with a holdout label. Raises ValueError
    when a window would be empty."""
    if not (0 < holdout_fraction < 1 and 0 < label_fraction < 1):
        raise ValueError("holdout_fraction and label_fraction must be in (0, 1)")
    if holdout_fraction + label_fraction >= 1:
        raise ValueError("holdout_fraction + label_fraction must be < 1")
    m = interactions.m
    if m == 0:
        raise ValueError("no interactions to split")
    ordered = np.sort(interactions.ts)
    t_holdout = float(ordered[int(np.floor((1 - holdout_fraction) * m))])
    t_label = float(ordered[int(np.floor((1 - holdout_fraction - label_fraction) * m))])
    split = Split(
        t_label=t_label,
        t_holdout=t_holdout,
        history_for_training=interactions.before(t_label),
        training_labels=interactions.between(t_label, t_holdout),
        history_for_holdout=interactions.before(t_holdout),
        holdout_labels=interactions.select(interactions.ts >= t_holdout),
    )
    if split.training_labels.m == 0 or split.holdout_labels.m == 0:
        raise ValueError("too few distinct interaction times for a time split")
    return split


def labelled_pairs(labels: InteractionArrays) -> Pairs:
    """(viewer ids int64 [p], candidate ids int64 [p], y int8 [p]): one row per
    interaction, y = 1 for like / super-like, 0 for dislike / block."""
    return (
        labels.actor.astype(np.int64),
        labels.target.astype(np.int64),
        labels.is_positive.astype(np.int8),
    )


def pair_rows(
    store: FeatureStore,
    viewer_ids: np.ndarray,
    cand_ids: np.ndarray,
    *,
    taste: np.ndarray | None = None,
    appeal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [q, F], kept bool [p]): features of the pairs (user ids int64 [p])
    whose two members are both in ``store``; ``kept`` marks those pairs."""
    viewer_idx, cand_idx = store.index_of(viewer_ids), store.index_of(cand_ids)
    kept = (viewer_idx >= 0) & (cand_idx >= 0)
    X = pair_features(
        store, viewer_idx[kept], cand_idx[kept], taste=taste, appeal=appeal
    )
    return X, kept


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
    store: FeatureStore,
    taste: np.ndarray | None,
    appeal: np.ndarray | None,
    pairs: Pairs,
    *,
    k: int = DEFAULT_K,
) -> dict:
    """Holdout metrics of ``model`` on ``pairs`` (viewer ids, candidate ids, y; see
    :func:`labelled_pairs`) with features from ``store`` and embeddings ``taste`` /
    ``appeal`` (float32 [n, d] aligned with the store, or None): ``{"auc",
    "log_loss", "precision@k", "recall@k", "ndcg@k", "groups", "rows"}``, ranking
    metrics grouped by viewer. Use the same store, embeddings and pairs to compare two
    models fairly (the auto-promotion gate)."""
    if model.feature_version != store.feature_version:
        raise ValueError(
            f"model uses features {model.feature_version!r}, "
            f"store has {store.feature_version!r}"
        )
    viewer_ids, cand_ids, y = pairs
    X, kept = pair_rows(store, viewer_ids, cand_ids, taste=taste, appeal=appeal)
    scores = predict_scores(model, X)
    return evaluate_scores(viewer_ids[kept], y[kept], scores, k=k, probabilities=True)


@dataclass
class RankingStageResult:
    """What :func:`train_ranking_stage` produced. Unpacks as ``model, metrics``.

    ``holdout_store``, ``holdout_embeddings`` and ``holdout_pairs`` are the holdout
    evaluation's inputs, to score another model (e.g. the active one) on exactly the
    same rows with :func:`evaluate_ranking`.
    """

    model: RankingModel
    metrics: dict
    split: Split
    holdout_store: FeatureStore
    holdout_embeddings: EmbeddingModel
    holdout_pairs: Pairs
    timings: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.metrics))


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
    k: int = DEFAULT_K,
    progress: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> RankingStageResult:
    """Train the ranking model on a time split and evaluate it on the holdout.

    1. :func:`time_split` of the interactions before ``now_ts`` (default: all).
    2. Training rows: pairs labelled in ``[t_label, t_holdout)``, features from a
       store and embeddings (``train_embeddings(**embedding_trainer_kwargs)``) built
       on the history before ``t_label``. At most ``max_train_rows`` rows, a seeded
       uniform sample when there are more (recorded in the metrics). The last
       ``validation_fraction`` of them by time validate (model selection and
       calibration in :func:`train_ranking`).
    3. Holdout: pairs from ``t_holdout`` on, store and embeddings rebuilt on the
       history before ``t_holdout``; the model, a popularity baseline (score = the
       candidate's likes received in the last 14 days), the raw embedding affinity
       and random scores are all evaluated on the same rows.

    ``metrics`` holds the model's holdout ``auc``, ``log_loss``, ``precision@k``,
    ``recall@k``, ``ndcg@k`` and ``baseline_popularity``, ``baseline_random``,
    ``baseline_embedding`` (same keys without log loss), row counts, cut times,
    the candidates' validation metrics and stage timings. ``threads``: see
    :func:`train_ranking`; ``progress`` is called with a stage name as each begins.
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
        interactions = interactions.before(now_ts)
    report("split")
    split = time_split(
        interactions, holdout_fraction=holdout_fraction, label_fraction=label_fraction
    )
    lap("split")

    report("training features")
    store, embeddings = _store_and_embeddings(
        members, split.history_for_training, split.t_label, kwargs, vocabulary=None
    )
    lap("training_features_and_embeddings")
    viewer_ids, cand_ids, y = labelled_pairs(split.training_labels)
    ts = split.training_labels.ts
    available = viewer_ids.shape[0]
    rng = np.random.default_rng(seed)
    if available > max_train_rows:
        chosen = np.sort(rng.choice(available, size=max_train_rows, replace=False))
        viewer_ids, cand_ids, y, ts = (a[chosen] for a in (viewer_ids, cand_ids, y, ts))
    X, kept = pair_rows(
        store, viewer_ids, cand_ids, taste=embeddings.taste, appeal=embeddings.appeal
    )
    y, ts = y[kept], ts[kept]
    by_time = np.argsort(ts, kind="stable")
    cut = int(np.floor((1 - validation_fraction) * by_time.shape[0]))
    train_rows, valid_rows = by_time[:cut], by_time[cut:]
    lap("training_rows")

    report("ranking model")
    model, candidates = train_ranking(
        X[train_rows],
        y[train_rows],
        X[valid_rows],
        y[valid_rows],
        seed=seed,
        threads=threads,
    )
    del X
    lap("ranking_fit")

    report("holdout features")
    holdout_store, holdout_embeddings = _store_and_embeddings(
        members, split.history_for_holdout, split.t_holdout, kwargs, store.vocabulary
    )
    lap("holdout_features_and_embeddings")

    report("holdout evaluation")
    holdout_pairs = labelled_pairs(split.holdout_labels)
    metrics = _holdout_metrics(
        model, holdout_store, holdout_embeddings, holdout_pairs, k=k, seed=seed
    )
    lap("holdout_evaluation")
    metrics.update(
        model_type=model.model_type,
        feature_version=FEATURE_VERSION,
        train_rows=int(train_rows.shape[0]),
        validation_rows=int(valid_rows.shape[0]),
        labelled_training_pairs=int(available),
        sampled_training_pairs=bool(available > max_train_rows),
        t_label=split.t_label,
        t_holdout=split.t_holdout,
        candidates=candidates,
        embedding_hyperparameters=embeddings.hyperparameters,
        timings=timings,
    )
    return RankingStageResult(
        model=model,
        metrics=json_safe(metrics),
        split=split,
        holdout_store=holdout_store,
        holdout_embeddings=holdout_embeddings,
        holdout_pairs=holdout_pairs,
        timings=timings,
    )


def json_safe(value):
    """``value`` (nested dicts/lists of numbers) with nan/inf floats replaced by None
    and numpy scalars by Python ones: storable in a JSON column (PostgreSQL's jsonb
    rejects NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _store_and_embeddings(
    members: MemberArrays,
    history: InteractionArrays,
    now_ts: float,
    embedding_kwargs: dict,
    vocabulary: tuple[str, ...] | None,
) -> tuple[FeatureStore, EmbeddingModel]:
    store = build_feature_store(members, history, now_ts=now_ts, vocabulary=vocabulary)
    embeddings = train_embeddings(
        members.user_id,
        history,
        content_vectors(store),
        vocabulary=store.vocabulary,
        **embedding_kwargs,
    )
    return store, embeddings


def _holdout_metrics(
    model: RankingModel,
    store: FeatureStore,
    embeddings: EmbeddingModel,
    pairs: Pairs,
    *,
    k: int,
    seed: int,
) -> dict:
    viewer_ids, cand_ids, y = pairs
    X, kept = pair_rows(
        store, viewer_ids, cand_ids, taste=embeddings.taste, appeal=embeddings.appeal
    )
    groups, y = viewer_ids[kept], y[kept]
    metrics = evaluate_scores(
        groups, y, predict_scores(model, X), k=k, probabilities=True
    )
    cand_idx = store.index_of(cand_ids[kept])
    viewer_idx = store.index_of(viewer_ids[kept])
    popularity = store.likes_received_recent[cand_idx].astype(np.float64)
    affinity = np.einsum(
        "ij,ij->i", embeddings.taste[viewer_idx], embeddings.appeal[cand_idx]
    )
    random = np.random.default_rng(seed).random(y.shape[0])
    metrics["holdout_rows"] = int(y.shape[0])
    metrics["baseline_popularity"] = evaluate_scores(groups, y, popularity, k=k)
    metrics["baseline_embedding"] = evaluate_scores(groups, y, affinity, k=k)
    metrics["baseline_random"] = evaluate_scores(groups, y, random, k=k)
    return metrics
