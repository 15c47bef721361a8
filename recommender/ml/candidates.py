"""Stage 1: the members held in memory and the candidate sources.

A :class:`Population` is every member as of a time (the serving load, or a cut of
the training and evaluation time split), with the feature store built by
``build_feature_store``, the filter columns, the like graph and popularity orders.
An :class:`Embedding` aligns one embedding version (and the FAISS index of that
version) with the population's rows. :func:`candidates_generate` runs the sources
over the viewer's filter mask and merges them, each candidate tagged with every
source that produced it:

* ``liked_you``: members who liked the viewer and await an answer (most recent
  first) — in a reciprocal setting the strongest single signal there is;
* ``neighbours``: item-kNN over the like graph (``recommender.ml.graph``), the best
  of forward (liked by those who liked whom you liked) and backward (they like
  people like you) scores — works where a factorisation of a sparse graph fails;
* ``collaborative``: FAISS search of the viewer's learned taste vector over the
  appeal vectors (over-fetched, then masked);
* ``content``: interest overlap (Jaccard) over the mask, plus, for a viewer with no
  learned taste, the FAISS search with their content-based taste (cold start);
* ``popular``: most likes received in the last 14 days, and of all time;
* ``newcomers``: the members who joined closest to the viewer's own joining when
  the viewer is new (people who join together — one event, one campaign — meet),
  else the newest members: they have no history for the other sources to find;
* ``explore``: a small random slice of the mask.

Everything is vectorised over the population; nothing queries the database, and
serving, the ranking model's training rows and the offline evaluation all call
these same functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.embeddings import (
    EmbeddingModel,
    content_vectors,
    embed_from_content,
)
from recommender.ml.features import FeatureStore, build_feature_store
from recommender.ml.filters import FilterArrays, filter_arrays_build
from recommender.ml.graph import (
    LikeGraph,
    NeighbourScores,
    like_graph_build,
    neighbour_scores,
)
from recommender.ml.index import search

SOURCES = (
    "collaborative",
    "content",
    "popular",
    "explore",
    "liked_you",
    "neighbours",
    "newcomers",
)
COLLABORATIVE, CONTENT, POPULAR, EXPLORE, LIKED_YOU, NEIGHBOURS, NEWCOMERS = (
    1 << i for i in range(len(SOURCES))
)

COLLABORATIVE_WANT = 200
CONTENT_WANT = 150
POPULAR_WANT = 100  # of each order: recent and all-time
EXPLORE_WANT = 20
LIKED_YOU_WANT = 200
NEIGHBOURS_WANT = 300
NEWCOMERS_WANT = 100
NEW_MEMBER_DAYS = 14.0
OVERFETCH = 4
MAX_SEARCH_K = 4096


@dataclass
class Population:
    """The members held in memory (``n`` rows sorted by user id): ``members``
    (the loaded ``MemberArrays``), ``store`` (their ``FeatureStore``), ``filters``
    (their ``FilterArrays``), ``graph`` (their ``LikeGraph`` of likes), ``seen``
    (the same over every interaction, any kind: who is around and rated by whom),
    ``popularity_order``
    and ``all_time_order`` int64 [n] (rows by likes received in the last 14 days /
    ever, most first), ``popularity`` float32 [n] in [0, 1] (log-scaled recent
    likes received) and ``loaded_at`` (unix seconds, the time the features
    describe)."""

    members: MemberArrays
    store: FeatureStore
    filters: FilterArrays
    graph: LikeGraph
    seen: LikeGraph
    popularity_order: np.ndarray
    all_time_order: np.ndarray
    popularity: np.ndarray
    loaded_at: float

    @property
    def n(self) -> int:
        return self.store.n


def population_build(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    inactive_user_ids: np.ndarray | None = None,
    vocabulary: tuple[str, ...] | None,
    now_ts: float | None = None,
) -> Population:
    """The population of ``members`` as of ``now_ts`` (default: now) with features
    and the like graph from the ``interactions`` before it (the same
    ``build_feature_store`` as training; ``vocabulary`` = the embedding model's,
    so the interest bits mean what its content projection expects)."""
    now_ts = time.time() if now_ts is None else float(now_ts)
    store = build_feature_store(
        members, interactions, now_ts=now_ts, vocabulary=vocabulary
    )
    history = interactions.before(now_ts)
    actor, target = store.index_of(history.actor), store.index_of(history.target)
    known = (actor >= 0) & (target >= 0)
    liked = known & history.is_positive
    graph = like_graph_build(store.n, actor[liked], target[liked])
    seen = like_graph_build(store.n, actor[known], target[known])
    recent = store.likes_received_recent.astype(np.float64)
    popularity = np.log1p(recent) / max(np.log1p(recent.max(initial=0.0)), 1e-9)
    order = np.lexsort((-store.like_rate_received, -recent)).astype(np.int64)
    all_time = np.lexsort((-recent, -store.likes_received)).astype(np.int64)
    return Population(
        members=members,
        store=store,
        filters=filter_arrays_build(members, inactive_user_ids=inactive_user_ids),
        graph=graph,
        seen=seen,
        popularity_order=order,
        all_time_order=all_time,
        popularity=popularity.astype(np.float32),
        loaded_at=now_ts,
    )


@dataclass
class Embedding:
    """One embedding version aligned with a population: ``taste``, ``appeal``
    float32 [n, d] per population row (members unknown to the model get the model's
    content-based vectors), ``learned_taste`` bool [n]; the FAISS ``index`` of that
    version (None if it has none) holding appeal vectors labelled by user id."""

    model_id: int
    version: int
    model: EmbeddingModel
    taste: np.ndarray
    appeal: np.ndarray
    learned_taste: np.ndarray
    index: object | None = None
    index_id: int | None = None

    @property
    def index_size(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0


def embedding_align(
    model: EmbeddingModel, population: Population
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(taste, appeal float32 [n, d], learned_taste bool [n]) of the population's
    members under ``model``; members who joined after training are embedded from
    their content, as ``rebuild_index`` does."""
    rows = model.index_of(population.store.user_id)
    known = rows >= 0
    n, d = population.n, model.dim
    taste = np.empty((n, d), dtype=np.float32)
    appeal = np.empty((n, d), dtype=np.float32)
    taste[known] = model.taste[rows[known]]
    appeal[known] = model.appeal[rows[known]]
    learned = np.zeros(n, dtype=bool)
    learned[known] = model.has_taste[rows[known]]
    if (~known).any():
        newcomers = np.flatnonzero(~known)
        new_taste, new_appeal = embed_from_content(
            model, content_vectors(_store_for(model, population, newcomers))
        )
        taste[newcomers], appeal[newcomers] = new_taste, new_appeal
    return taste, appeal, learned


def _store_for(model: EmbeddingModel, population: Population, rows: np.ndarray):
    if tuple(model.vocabulary) == tuple(population.store.vocabulary):
        return population.store.take(rows)
    return build_feature_store(
        population.members.take(rows),
        InteractionArrays.empty(),
        now_ts=population.store.now_ts,
        vocabulary=model.vocabulary,
    )


def viewer_vectors(
    embedding: Embedding, viewer_store: FeatureStore
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(taste [d], appeal [d], learned) of the viewer (row 0 of ``viewer_store``):
    the model's vectors when it knows them, else content-based ones."""
    row = int(embedding.model.index_of(viewer_store.user_id[:1])[0])
    if row >= 0:
        return (
            embedding.model.taste[row],
            embedding.model.appeal[row],
            bool(embedding.model.has_taste[row]),
        )
    if tuple(embedding.model.vocabulary) != tuple(viewer_store.vocabulary):
        return (
            np.zeros(embedding.model.dim, np.float32),
            np.zeros(embedding.model.dim, np.float32),
            False,
        )
    taste, appeal = embed_from_content(embedding.model, content_vectors(viewer_store))
    return taste[0], appeal[0], False


@dataclass
class Candidates:
    """Merged candidates: ``positions`` int64 [k] population rows (unique),
    ``tags`` uint8 [k] source bits (:data:`SOURCES`), ``jaccard``, ``affinity``,
    ``reciprocal`` float32 [k] (taste/appeal cosines, 0 without an embedding),
    ``neighbours`` float32 [k, 4] (the viewer's graph scores,
    ``recommender.ml.features.NEIGHBOUR_COLUMNS``), ``liked_you`` bool [k] and
    ``score`` float32 [k], the candidate score used when nothing ranks them."""

    positions: np.ndarray
    tags: np.ndarray
    jaccard: np.ndarray
    affinity: np.ndarray
    reciprocal: np.ndarray
    neighbours: np.ndarray
    liked_you: np.ndarray
    score: np.ndarray

    @property
    def k(self) -> int:
        return int(self.positions.shape[0])

    def sources_of(self, i: int) -> list[str]:
        bits = int(self.tags[i])
        return [name for j, name in enumerate(SOURCES) if bits >> j & 1]


def interest_jaccard(bits: np.ndarray, viewer_bits: np.ndarray) -> np.ndarray:
    """float32 [k] Jaccard similarity of interest bitsets ``bits`` uint64 [k, W]
    with ``viewer_bits`` uint64 [W]."""
    overlap = np.bitwise_count(bits & viewer_bits).sum(axis=1, dtype=np.int64)
    union = np.bitwise_count(bits | viewer_bits).sum(axis=1, dtype=np.int64)
    return (overlap / np.maximum(union, 1)).astype(np.float32)


@dataclass
class ViewerSignals:
    """What the viewer's own fresh interactions say, in population rows: the rows
    they liked (``liked`` int64), the rows that liked them and await an answer,
    most recent first (``likers`` int64), the rows whose verdict on them is a pass
    (``passers`` int64, sorted), and their neighbour scores over the
    like graph (``forward``, ``backward``) and over every interaction
    (``seen_forward``, ``seen_backward``; see ``recommender.ml.graph``)."""

    liked: np.ndarray
    likers: np.ndarray
    passers: np.ndarray
    forward: NeighbourScores
    backward: NeighbourScores
    seen_forward: NeighbourScores
    seen_backward: NeighbourScores

    def at(self, rows: np.ndarray) -> np.ndarray:
        """float32 [k, 4] the scores of population ``rows`` (int64 [k]), columns
        ``recommender.ml.features.NEIGHBOUR_COLUMNS``."""
        return np.stack(
            [
                self.forward.at(rows),
                self.backward.at(rows),
                self.seen_forward.at(rows),
                self.seen_backward.at(rows),
            ],
            axis=1,
        )


def viewer_signals(
    population: Population, user_id: int, history: InteractionArrays
) -> ViewerSignals:
    """The viewer's :class:`ViewerSignals` from ``history`` (every interaction
    they gave or received, fresh)."""
    given = history.actor == user_id
    liked = population.store.index_of(history.target[given & history.is_positive])
    answered = history.target[given]
    received = (history.target == user_id) & history.is_positive
    received &= ~np.isin(history.actor, answered)
    order = np.argsort(-history.ts[received], kind="stable")
    likers = population.store.index_of(history.actor[received][order])
    all_likers = population.store.index_of(
        history.actor[(history.target == user_id) & history.is_positive]
    )
    liked, likers = liked[liked >= 0], likers[likers >= 0]
    passers = population.store.index_of(
        history.actor[(history.target == user_id) & ~history.is_positive]
    )
    passers = np.unique(passers[passers >= 0])
    forward, backward = neighbour_scores(
        population.graph, liked, all_likers[all_likers >= 0]
    )
    rated = population.store.index_of(answered)
    raters = population.store.index_of(history.actor[history.target == user_id])
    seen_forward, seen_backward = neighbour_scores(
        population.seen, rated[rated >= 0], raters[raters >= 0]
    )
    return ViewerSignals(
        liked=liked,
        likers=likers,
        passers=passers,
        forward=forward,
        backward=backward,
        seen_forward=seen_forward,
        seen_backward=seen_backward,
    )


def candidates_generate(
    population: Population,
    mask: np.ndarray,
    viewer_store: FeatureStore,
    signals: ViewerSignals,
    *,
    embedding: Embedding | None,
    viewer_taste: np.ndarray | None,
    viewer_appeal: np.ndarray | None,
    learned_taste: bool,
    rng: np.random.Generator,
) -> Candidates:
    """Run every source over ``mask`` (bool [n], the allowed population rows) and
    merge them. ``viewer_store`` is the viewer's fresh one-row store, ``signals``
    their :func:`viewer_signals`; with an ``embedding`` and the viewer's vectors,
    the FAISS source runs (tagged collaborative for a learned taste, content
    otherwise)."""
    found: list[tuple[np.ndarray, int]] = []
    allowed = np.flatnonzero(mask)
    likers = signals.likers[mask[signals.likers]]
    if likers.size:
        found.append((likers[:LIKED_YOU_WANT], LIKED_YOU))
    found.append(
        (_neighbour_source(signals.forward, signals.backward, mask), NEIGHBOURS)
    )
    found.append(
        (
            _neighbour_source(signals.seen_forward, signals.seen_backward, mask),
            NEIGHBOURS,
        )
    )
    if (
        embedding is not None
        and embedding.index is not None
        and viewer_taste is not None
    ):
        tag = COLLABORATIVE if learned_taste else CONTENT
        found.append((_faiss_source(population, mask, embedding, viewer_taste), tag))
    if allowed.size:
        viewer_bits = viewer_store.interest_bits[0]
        jaccard = interest_jaccard(population.store.interest_bits[allowed], viewer_bits)
        # Ties (many share 1-2 interests) go to the more popular.
        ranked = jaccard + 1e-3 * population.popularity[allowed]
        found.append((allowed[_top(ranked, CONTENT_WANT)], CONTENT))
        for order in (population.popularity_order, population.all_time_order):
            found.append((order[mask[order]][:POPULAR_WANT], POPULAR))
        found.append((_newcomers(population, allowed, viewer_store), NEWCOMERS))
        size = min(EXPLORE_WANT, allowed.size)
        found.append((rng.choice(allowed, size=size, replace=False), EXPLORE))
    return _merge(
        population, found, viewer_store, signals, embedding, viewer_taste, viewer_appeal
    )


def _newcomers(
    population: Population, allowed: np.ndarray, viewer_store: FeatureStore
) -> np.ndarray:
    """The allowed rows who joined closest to the viewer (a new viewer) or to
    now (anyone else), closest first."""
    viewer_joined = float(viewer_store.created_ts[0])
    anchor = viewer_joined
    if viewer_store.account_age_days[0] >= NEW_MEMBER_DAYS:
        anchor = float(population.store.now_ts)
    gap = np.abs(population.store.created_ts[allowed] - anchor)
    return allowed[_top(-gap, NEWCOMERS_WANT)]


def _neighbour_source(
    forward: NeighbourScores, backward: NeighbourScores, mask: np.ndarray
) -> np.ndarray:
    """The allowed rows with the best forward scores and those with the best
    backward scores (half of ``NEIGHBOURS_WANT`` each, best first, without
    repeats). Each side is cut with a partial sort of its own rows: a union of
    the two sparse vectors first cost ~1.5 ms a request at 100,000 members."""
    picks = []
    for scores in (forward, backward):
        allowed = mask[scores.rows]
        rows, values = scores.rows[allowed], scores.values[allowed]
        picks.append(rows[_top(values, NEIGHBOURS_WANT // 2)])
    merged = np.concatenate(picks)
    _, first = np.unique(merged, return_index=True)
    return merged[np.sort(first)]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``, best first."""
    if scores.shape[0] <= k:
        return np.argsort(-scores, kind="stable")
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def _faiss_source(
    population: Population, mask: np.ndarray, embedding: Embedding, taste: np.ndarray
) -> np.ndarray:
    """Population rows of the nearest appeal vectors to ``taste`` that pass the
    mask, best first; the search widens (4x) while too few pass."""
    k = COLLABORATIVE_WANT * OVERFETCH
    total = embedding.index_size
    while True:
        k = min(k, total, MAX_SEARCH_K)
        _, ids = search(embedding.index, taste[None, :], k)
        rows = population.store.index_of(ids[0][ids[0] >= 0])
        rows = rows[rows >= 0]
        rows = rows[mask[rows]]
        if rows.size >= COLLABORATIVE_WANT or k >= min(total, MAX_SEARCH_K):
            return rows[:COLLABORATIVE_WANT]
        k *= 4


def _merge(
    population, found, viewer_store, signals, embedding, viewer_taste, viewer_appeal
) -> Candidates:
    if found:
        positions = np.concatenate([rows for rows, _ in found]).astype(np.int64)
        bits = np.concatenate(
            [np.full(rows.shape[0], tag, dtype=np.uint8) for rows, tag in found]
        )
    else:
        positions = np.zeros(0, dtype=np.int64)
        bits = np.zeros(0, dtype=np.uint8)
    unique, first, inverse = np.unique(
        positions, return_index=True, return_inverse=True
    )
    tags = np.zeros(unique.shape[0], dtype=np.uint8)
    np.bitwise_or.at(tags, inverse, bits)
    # Keep the order in which sources found them (liked-you first, best first).
    order = np.argsort(first, kind="stable")
    unique, tags = unique[order], tags[order]

    jaccard = interest_jaccard(
        population.store.interest_bits[unique], viewer_store.interest_bits[0]
    )
    popularity = population.popularity[unique]
    neighbour_scores_ = signals.at(unique)
    forward, backward = neighbour_scores_[:, 0], neighbour_scores_[:, 1]
    liked_you = (tags & LIKED_YOU) > 0
    neighbours = np.sqrt(
        forward
        / max(float(forward.max(initial=0.0)), 1e-9)
        * (backward / max(float(backward.max(initial=0.0)), 1e-9))
    )
    if embedding is not None and viewer_taste is not None:
        affinity = embedding.appeal[unique] @ viewer_taste
        reciprocal = embedding.taste[unique] @ viewer_appeal
        mutual = np.sqrt(
            np.clip((1 + affinity) / 2, 0, 1) * np.clip((1 + reciprocal) / 2, 0, 1)
        )
        score = 0.4 * mutual + 0.2 * neighbours + 0.2 * jaccard + 0.2 * popularity
    else:
        affinity = reciprocal = np.zeros(unique.shape[0], dtype=np.float32)
        score = 0.3 * neighbours + 0.4 * jaccard + 0.3 * popularity
    score = score + liked_you  # someone who liked you first: a likely match
    return Candidates(
        positions=unique,
        tags=tags,
        jaccard=jaccard,
        affinity=affinity.astype(np.float32),
        reciprocal=reciprocal.astype(np.float32),
        neighbours=neighbour_scores_,
        liked_you=liked_you,
        score=score.astype(np.float32),
    )
