"""The pure offline pipeline behind the Django training stages.

Time-based evaluation without leaks: the interactions are cut at two times,
``t_label < t_holdout``::

    ─── history_for_training ───┤ training labels ├── holdout labels ──▶ ts
                              t_label          t_holdout
    ─────────────── history_for_holdout ──────────┤

The ranking model learns *who is chosen among the eligible*, the question serving
asks: at ``t_label`` the state serving would have held (population, like graph,
embeddings, index: :class:`CutState`, built only from interactions before
``t_label``) gives each sampled viewer their served candidates
(``recommender.ml.recommend``, the very functions serving calls), and the label of
a candidate is whether the viewer liked them in ``[t_label, t_holdout)``. Unrated
candidates are implicit negatives — learning P(like | the pair was rated) instead
cannot tell who gets chosen, since most rated pairs are likes on trust networks and
every Speed Dating pair met. The holdout state is rebuilt at ``t_holdout`` from
everything before it: what a model serving at ``t_holdout`` would have known.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.ml.candidates import (
    Embedding,
    Population,
    embedding_align,
    population_build,
)
from recommender.ml.data import InteractionArrays, MemberArrays, sorted_positions
from recommender.ml.embeddings import (
    EmbeddingModel,
    content_vectors,
    train_embeddings,
    vectors_for_index,
)
from recommender.ml.features import (
    FEATURE_VERSION,
    REVERSED_NEIGHBOURS,
    build_feature_store,
    pair_features,
)
from recommender.ml.graph import pair_neighbour_scores
from recommender.ml.index import build_index
from recommender.ml.metrics import log_loss, ndcg_at_k, ranking_metrics, roc_auc
from recommender.ml.ranking import RankingModel, predict_scores, train_ranking
from recommender.ml.recommend import (
    BASELINE_ORDERS,
    CANDIDATE_LIKED_VIEWER,
    MODEL_ORDER,
    ViewerState,
    baseline_scores,
    candidates_for,
    combine,
    pair_matrices,
    served_scores,
    viewer_context,
    viewer_state,
)

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # viewer ids, candidate ids, y
DEFAULT_K = 10
DEFAULT_MAX_TRAIN_ROWS = 2_000_000
_KEY_SHIFT = np.int64(1) << np.int64(32)


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
    when a window would be empty.

    With a history of changed verdicts (``InteractionArrays.until``), the fractions
    count verdicts given, and every part holds each pair's verdict as it stood at
    its cut (:meth:`~InteractionArrays.before`, :meth:`~InteractionArrays.between`):
    a like changed into a pass after ``t_label`` is still a like in the training
    history."""
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
        holdout_labels=interactions.between(t_holdout, np.inf),
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


class HistoryIndex:
    """Every interaction a member gave or received, found without scanning:
    ``of(user_id)`` is one member's slice of ``history`` (two sorted orders,
    O(log m) per look-up)."""

    def __init__(self, history: InteractionArrays):
        self.history = history
        self._by_actor = np.argsort(history.actor, kind="stable")
        self._by_target = np.argsort(history.target, kind="stable")
        self._actors = history.actor[self._by_actor]
        self._targets = history.target[self._by_target]

    def of(self, user_id: int) -> InteractionArrays:
        a = self._by_actor[
            np.searchsorted(self._actors, user_id, "left") : np.searchsorted(
                self._actors, user_id, "right"
            )
        ]
        t = self._by_target[
            np.searchsorted(self._targets, user_id, "left") : np.searchsorted(
                self._targets, user_id, "right"
            )
        ]
        # Positions, not a boolean mask: O(the member's degree), not O(m).
        return self.history.select(np.unique(np.concatenate([a, t])))

    @functools.cached_property
    def pass_keys(self) -> np.ndarray:
        """int64 [P] sorted unique ``actor * 2**32 + target`` of the passes
        (dislikes and blocks) in ``history``. Sorting them costs seconds at a
        million members, and the holdout is scored several times on one state
        (its metrics, then the promotion gate's new and active models): once."""
        history = self.history
        passes = ~history.is_positive
        return np.unique(history.actor[passes] * _KEY_SHIFT + history.target[passes])


@dataclass
class CutState:
    """What serving would hold at ``now_ts``: the population, the embedding model
    trained on the history before it (aligned, with a FAISS index as serving
    builds one) and the history itself, indexed per member."""

    now_ts: float
    population: Population
    embeddings: EmbeddingModel
    embedding: Embedding
    history: HistoryIndex

    @property
    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.now_ts, tz=dt.UTC).date()

    def viewer(self, user_id: int) -> ViewerState:
        """The member's :class:`ViewerState` at the cut."""
        row = int(self.population.store.index_of(np.array([user_id]))[0])
        return viewer_state(
            user_id, self.population.members.take([row]), self.history.of(user_id)
        )


INDEX_CHOICES = ("serving", "exact", "none")


def cut_state(
    members: MemberArrays,
    history: InteractionArrays,
    now_ts: float,
    embedding_kwargs: dict,
    *,
    index: str = "serving",
) -> CutState:
    """The :class:`CutState` at ``now_ts`` from the interactions before it.
    ``index``: "serving" = the index serving would build for this many members,
    "exact" = a flat one whatever the size (the training rows' candidates), "none"
    = no index (no FAISS source; scoring labelled pairs needs none)."""
    if index not in INDEX_CHOICES:
        raise ValueError(f"index must be one of {INDEX_CHOICES}")
    history = history.before(now_ts)
    store = build_feature_store(members, history, now_ts=now_ts)
    embeddings = train_embeddings(
        members.user_id,
        history,
        content_vectors(store),
        vocabulary=store.vocabulary,
        **embedding_kwargs,
    )
    population = population_build(
        members, history, vocabulary=store.vocabulary, now_ts=now_ts
    )
    taste, appeal, learned = embedding_align(embeddings, population)
    embedding = Embedding(
        model_id=0,
        version=0,
        model=embeddings,
        taste=taste,
        appeal=appeal,
        learned_taste=learned,
    )
    state = CutState(
        now_ts=float(now_ts),
        population=population,
        embeddings=embeddings,
        embedding=embedding,
        history=HistoryIndex(history),
    )
    return state if index == "none" else state_with_index(state, exact=index == "exact")


def state_with_index(state: CutState, *, exact: bool = False) -> CutState:
    """``state`` with a FAISS index over its embeddings' appeal vectors (flat with
    ``exact``, else as serving builds one for this many members)."""
    threshold = {"exact_threshold": 1 << 62} if exact else {}
    built, _ = build_index(
        vectors_for_index(state.embeddings), state.embeddings.user_id, **threshold
    )
    embedding = dataclasses.replace(state.embedding, index=built, index_id=0)
    return dataclasses.replace(state, embedding=embedding)


@dataclass
class CandidateRows:
    """Ranking rows from the served candidates of sampled viewers at a cut:
    ``forward``, ``backward`` float32 [p, F] (both directions' features), ``y``
    int8 [p] (the viewer liked them in the label window), ``mutual`` int8 [p]
    (... and they liked the viewer, before or in the window), ``viewer`` int64
    [p] user ids, ``row`` int64 [p] population rows, ``retrieved`` bool [p]
    (found by a candidate source; the others were shown to the viewer),
    ``passed_viewer`` bool [p] (the candidate had passed on the viewer at the
    cut) and ``group`` int64 [p] (one per viewer and training window; default
    ``viewer``)."""

    forward: np.ndarray
    backward: np.ndarray
    y: np.ndarray
    mutual: np.ndarray
    viewer: np.ndarray
    row: np.ndarray
    retrieved: np.ndarray
    passed_viewer: np.ndarray
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = self.viewer

    @property
    def p(self) -> int:
        return int(self.y.shape[0])

    @classmethod
    def concat(cls, parts: list[CandidateRows]) -> CandidateRows:
        return cls(
            **{
                name: np.concatenate([getattr(part, name) for part in parts])
                for name in cls.__dataclass_fields__
            }
        )

    def take(self, rows: np.ndarray) -> CandidateRows:
        return CandidateRows(
            **{name: getattr(self, name)[rows] for name in self.__dataclass_fields__}
        )


def candidate_rows(
    state: CutState,
    labels: InteractionArrays,
    *,
    max_viewers: int,
    max_rows: int,
    seed: int,
    impressions: InteractionArrays | None = None,
) -> CandidateRows:
    """Rows to train the ranking model on *who is chosen among the eligible*: for
    each sampled viewer with a like in ``labels`` (interactions after the cut),
    every candidate the served sources find at the cut (y = liked in the labels;
    the unrated ones are implicit negatives), plus the members ``impressions``
    (shown after the cut, as ``RecommendationLog`` has them; ``kind`` ignored)
    showed them. Only what serving could rank is a row: a liked member that no
    source retrieves is left out, since adding labelled pairs alone would teach
    the model that "not retrieved" means "rated", hence liked. At most
    ``max_viewers`` viewers and about ``max_rows`` rows (seeded)."""
    rng = np.random.default_rng(seed)
    population = state.population
    positive = labels.select(labels.is_positive)
    viewers = np.unique(positive.actor)
    viewers = viewers[population.store.index_of(viewers) >= 0]
    if viewers.shape[0] > max_viewers:
        viewers = np.sort(rng.choice(viewers, size=max_viewers, replace=False))
    by_viewer = HistoryIndex(labels)
    shown = HistoryIndex(impressions) if impressions is not None else None
    later_likes = np.unique(
        labels.actor[labels.is_positive] * _KEY_SHIFT
        + labels.target[labels.is_positive]
    )
    parts: list[tuple] = []
    total = 0
    for user_id in rng.permutation(viewers).tolist():
        viewer = state.viewer(user_id)
        context = viewer_context(
            population,
            viewer,
            embedding=state.embedding,
            today=state.today,
            now_ts=state.now_ts,
        )
        candidates = candidates_for(
            population, context, embedding=state.embedding, rng=rng
        )
        own = by_viewer.of(user_id)
        own = own.select((own.actor == user_id) & own.is_positive)
        liked = population.store.index_of(own.target)
        rows = candidates.positions
        if shown is not None:
            seen = shown.of(user_id)
            extra = population.store.index_of(seen.target[seen.actor == user_id])
            extra = np.unique(extra[extra >= 0])
            extra = extra[context.mask[extra] & ~np.isin(extra, rows)]
            rows = np.concatenate([rows, extra])
        X_forward, X_backward = pair_matrices(
            population, context, rows, embedding=state.embedding
        )
        y = np.isin(rows, liked)
        if not y.any():
            continue  # every like of theirs is out of the filters: nothing to learn
        liked_them_back = np.isin(population.store.user_id[rows], _likers_of(viewer))
        later_back = np.isin(
            population.store.user_id[rows] * _KEY_SHIFT + user_id, later_likes
        )
        mutual = y & (liked_them_back | later_back)
        retrieved = np.arange(rows.shape[0]) < candidates.k
        parts.append(
            (
                X_forward,
                X_backward,
                y,
                mutual,
                np.full(rows.shape, user_id),
                rows,
                retrieved,
                np.isin(rows, context.signals.passers),
            )
        )
        total += rows.shape[0]
        if total >= max_rows:
            break
    if not parts:
        raise ValueError("no viewer with a like after the cut")
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
    return CandidateRows(
        forward=columns[0],
        backward=columns[1],
        y=columns[2].astype(np.int8),
        mutual=columns[3].astype(np.int8),
        viewer=columns[4].astype(np.int64),
        row=columns[5].astype(np.int64),
        retrieved=columns[6],
        passed_viewer=columns[7],
    )


def _likers_of(viewer: ViewerState) -> np.ndarray:
    history = viewer.history
    return history.actor[(history.target == viewer.user_id) & history.is_positive]


def labelled_pair_matrices(
    state: CutState, viewer_ids: np.ndarray, cand_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(forward, backward float32 [q, F], kept bool [p], passed bool [q]): both
    directions' features of the pairs (user ids int64 [p]) whose members are both
    in the population, as of the cut (the same columns serving computes), and
    whether the candidate had passed on the viewer by then."""
    population = state.population
    store = population.store
    v, c = store.index_of(viewer_ids), store.index_of(cand_ids)
    kept = (v >= 0) & (c >= 0)
    v, c = v[kept], c[kept]
    neighbours = np.column_stack(
        [
            *pair_neighbour_scores(population.graph, v, c),
            *pair_neighbour_scores(population.seen, v, c),
        ]
    )
    embedding = state.embedding
    X = pair_features(
        store,
        np.concatenate([v, c]),
        np.concatenate([c, v]),
        taste=embedding.taste,
        appeal=embedding.appeal,
        neighbours=np.vstack([neighbours, neighbours[:, REVERSED_NEIGHBOURS]]),
    )
    q = v.shape[0]
    reverse_keys = store.user_id[c] * _KEY_SHIFT + store.user_id[v]
    passed = sorted_positions(state.history.pass_keys, reverse_keys) >= 0
    return X[:q], X[q:], kept, passed


@dataclass
class HoldoutRows:
    """Labelled pairs as feature rows, model-independent: computed once per holdout
    and scored by every model compared on it (the stage's own metrics, the
    promotion gate's new and active versions). ``forward``, ``backward`` float32
    [q, F], ``passed`` bool [q] (see :func:`labelled_pair_matrices`), ``viewer``,
    ``candidate`` int64 [q] user ids and ``y`` [q] of the kept pairs, and the
    store's ``feature_version``."""

    forward: np.ndarray
    backward: np.ndarray
    passed: np.ndarray
    viewer: np.ndarray
    candidate: np.ndarray
    y: np.ndarray
    feature_version: str


def holdout_rows(state: CutState, pairs: Pairs) -> HoldoutRows:
    """The :class:`HoldoutRows` of ``pairs`` (viewer ids, candidate ids, y) as of
    ``state``."""
    viewer_ids, cand_ids, y = pairs
    forward, backward, kept, passed = labelled_pair_matrices(
        state, viewer_ids, cand_ids
    )
    return HoldoutRows(
        forward=forward,
        backward=backward,
        passed=passed,
        viewer=viewer_ids[kept],
        candidate=cand_ids[kept],
        y=y[kept],
        feature_version=state.population.store.feature_version,
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
    """

    model: RankingModel
    metrics: dict
    split: Split
    holdout: CutState
    holdout_pairs: Pairs
    holdout_rows: HoldoutRows
    timings: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.metrics))


RECIPROCAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
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
       calibration, and the reciprocal weight (``RECIPROCAL_WEIGHTS``, by NDCG@k
       of likes plus NDCG@k of mutual likes); the model fits on the other rows,
       keeping a seeded ``negative_share`` of their negatives.
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
        part.group = part.viewer + np.int64(number) * _KEY_SHIFT
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
    valid_groups = rng.choice(
        latest.group,
        size=max(1, int(round(validation_fraction * viewers.shape[0]))),
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

    def objective(scores: np.ndarray) -> float:
        return ndcg_at_k(valid.group, valid.y, scores, k) + np.nan_to_num(
            ndcg_at_k(valid.group, valid.mutual, scores, k)
        )

    choice = {
        weight: objective(
            combine(p[:half], p[half:], weight, liked_viewer, valid.passed_viewer)
        )
        for weight in RECIPROCAL_WEIGHTS
    }
    model.reciprocal_weight = float(max(choice, key=choice.get))
    orders = {
        order: objective(baseline_scores(order, valid.forward))
        for order in BASELINE_ORDERS
    }
    model.order = serving_order(choice[model.reciprocal_weight], orders)
    validation = {
        "model": ndcg_at_k(
            valid.group,
            valid.y,
            combine(
                p[:half],
                p[half:],
                model.reciprocal_weight,
                liked_viewer,
                valid.passed_viewer,
            ),
            k,
        ),
        **_validation_baselines(valid, k=k, seed=seed),
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
    metrics.update(
        model_type=model.model_type,
        feature_version=FEATURE_VERSION,
        train_rows=int(train.p),
        validation_rows=int(valid.p),
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
        order=model.order,
        order_validation={MODEL_ORDER: choice[model.reciprocal_weight], **orders},
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
        timings=timings,
    )


def serving_order(model_objective: float, orders: dict[str, float]) -> str:
    """Which order serves: the model, unless a simple order (``BASELINE_ORDERS``)
    scored strictly higher on the same validation objective — then that order
    (the best one). The model wins ties: it is what the validation chose it on."""
    best = max(orders, key=orders.get, default=None)
    if best is not None and orders[best] > model_objective:
        return best
    return MODEL_ORDER


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


def _validation_baselines(rows: CandidateRows, *, k: int, seed: int) -> dict:
    """NDCG@k of simple orders of the validation rows (the served candidates):
    random, and the ``BASELINE_ORDERS`` as serving would score them."""
    random = np.random.default_rng(seed).random(rows.p)
    return {
        "random": ndcg_at_k(rows.group, rows.y, random, k),
        **{
            order: ndcg_at_k(
                rows.group, rows.y, baseline_scores(order, rows.forward), k
            )
            for order in BASELINE_ORDERS
        },
    }


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
