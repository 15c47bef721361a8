"""The state at a time cut, and the labelled feature rows built from it.

Time-based evaluation without leaks: the interactions are cut at two times,
``t_label < t_holdout``::

    ─── history_for_training ───┤ training labels ├── holdout labels ──▶ ts
                              t_label          t_holdout
    ─────────────── history_for_holdout ──────────┤

:func:`time_split` cuts; :func:`cut_state` builds what serving would have held at
a cut (population, like graph, embeddings, index: :class:`CutState`, only from the
interactions before it); :func:`candidate_rows` turns the served candidates of
sampled viewers into training rows (y = liked in the window after the cut) and
:func:`holdout_rows` labelled pairs into model-independent feature rows. The
training stage that learns from them is ``recommender.ml.pipeline``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass

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
    KEY_SHIFT,
    REVERSED_NEIGHBOURS,
    build_feature_store,
    pair_features,
)
from recommender.ml.graph import pair_neighbour_scores
from recommender.ml.index import build_index
from recommender.ml.recommend import (
    ViewerContext,
    ViewerState,
    candidates_for,
    pair_matrices,
    viewer_context,
    viewer_state,
)

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
        return np.unique(history.actor[passes] * KEY_SHIFT + history.target[passes])


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

    def context(self, viewer: ViewerState) -> ViewerContext:
        """``viewer``'s :class:`ViewerContext` at the cut: serving's step 1 with
        this state's population, embedding, day and time."""
        return viewer_context(
            self.population,
            viewer,
            embedding=self.embedding,
            today=self.today,
            now_ts=self.now_ts,
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
        labels.actor[labels.is_positive] * KEY_SHIFT + labels.target[labels.is_positive]
    )
    parts: list[tuple] = []
    total = 0
    for user_id in rng.permutation(viewers).tolist():
        viewer = state.viewer(user_id)
        context = state.context(viewer)
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
            population.store.user_id[rows] * KEY_SHIFT + user_id, later_likes
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
    reverse_keys = store.user_id[c] * KEY_SHIFT + store.user_id[v]
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
