"""Stage 1 of serving: the members held in memory and the candidate sources.

A :class:`Population` is every member as of the last load, with the feature store
built by the training code (``build_feature_store``), the filter columns and a
popularity order. An :class:`Embedding` aligns one embedding version (and the FAISS
index of that version) with the population's rows. :func:`candidates_generate` runs
the sources over the viewer's filter mask and merges them, each candidate tagged
with every source that produced it:

* ``collaborative``: FAISS search of the viewer's learned taste vector over the
  appeal vectors (over-fetched, then masked);
* ``content``: interest overlap (Jaccard) over the mask, plus, for a viewer with no
  learned taste, the FAISS search with their content-based taste (cold start);
* ``popular``: most likes received in the last 14 days among the mask;
* ``explore``: a small random slice of the mask.

Everything is vectorised over the population; nothing queries the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recommender.filters import FilterArrays, filter_arrays_build
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.embeddings import (
    EmbeddingModel,
    content_vectors,
    embed_from_content,
)
from recommender.ml.features import FeatureStore, build_feature_store
from recommender.ml.index import search

SOURCES = ("collaborative", "content", "popular", "explore")
COLLABORATIVE, CONTENT, POPULAR, EXPLORE = (1 << i for i in range(len(SOURCES)))

COLLABORATIVE_WANT = 200
CONTENT_WANT = 150
POPULAR_WANT = 60
EXPLORE_WANT = 20
OVERFETCH = 4
MAX_SEARCH_K = 4096


@dataclass
class Population:
    """The members held in memory (``n`` rows sorted by user id): ``members``
    (the loaded ``MemberArrays``), ``store`` (their ``FeatureStore``), ``filters``
    (their ``FilterArrays``), ``popularity_order`` int64 [n] (rows by recent likes
    received, most first), ``popularity`` float32 [n] in [0, 1] (log-scaled recent
    likes received) and ``loaded_at`` (unix seconds)."""

    members: MemberArrays
    store: FeatureStore
    filters: FilterArrays
    popularity_order: np.ndarray
    popularity: np.ndarray
    loaded_at: float

    @property
    def n(self) -> int:
        return self.store.n


def population_build(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    inactive_user_ids: np.ndarray,
    vocabulary: tuple[str, ...] | None,
    now_ts: float | None = None,
) -> Population:
    """The population of ``members`` with features from ``interactions`` (the same
    ``build_feature_store`` as training; ``vocabulary`` = the embedding model's, so
    the interest bits mean what its content projection expects)."""
    now_ts = time.time() if now_ts is None else now_ts
    store = build_feature_store(
        members, interactions, now_ts=now_ts, vocabulary=vocabulary
    )
    recent = store.likes_received_recent.astype(np.float64)
    popularity = np.log1p(recent) / max(np.log1p(recent.max(initial=0.0)), 1e-9)
    order = np.lexsort((-store.like_rate_received, -recent)).astype(np.int64)
    return Population(
        members=members,
        store=store,
        filters=filter_arrays_build(members, inactive_user_ids=inactive_user_ids),
        popularity_order=order,
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
    ``reciprocal`` float32 [k] (taste/appeal cosines, 0 without an embedding) and
    ``score`` float32 [k], the candidate score used when nothing ranks them."""

    positions: np.ndarray
    tags: np.ndarray
    jaccard: np.ndarray
    affinity: np.ndarray
    reciprocal: np.ndarray
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


def candidates_generate(
    population: Population,
    mask: np.ndarray,
    viewer_store: FeatureStore,
    *,
    embedding: Embedding | None,
    viewer_taste: np.ndarray | None,
    viewer_appeal: np.ndarray | None,
    learned_taste: bool,
    rng: np.random.Generator,
) -> Candidates:
    """Run every source over ``mask`` (bool [n], the allowed population rows) and
    merge them. ``viewer_store`` is the viewer's fresh one-row store; with an
    ``embedding`` and the viewer's vectors, the FAISS source runs (tagged
    collaborative for a learned taste, content otherwise)."""
    found: list[tuple[np.ndarray, int]] = []
    allowed = np.flatnonzero(mask)
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
        order = population.popularity_order
        found.append((order[mask[order]][:POPULAR_WANT], POPULAR))
        size = min(EXPLORE_WANT, allowed.size)
        found.append((rng.choice(allowed, size=size, replace=False), EXPLORE))
    if not found:
        return _merge(
            population, [], viewer_store, embedding, viewer_taste, viewer_appeal
        )
    return _merge(
        population, found, viewer_store, embedding, viewer_taste, viewer_appeal
    )


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
    population, found, viewer_store, embedding, viewer_taste, viewer_appeal
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
    # Keep the order in which sources found them (collaborative first, best first).
    order = np.argsort(first, kind="stable")
    unique, tags = unique[order], tags[order]

    jaccard = interest_jaccard(
        population.store.interest_bits[unique], viewer_store.interest_bits[0]
    )
    popularity = population.popularity[unique]
    if embedding is not None and viewer_taste is not None:
        affinity = embedding.appeal[unique] @ viewer_taste
        reciprocal = embedding.taste[unique] @ viewer_appeal
        mutual = np.sqrt(
            np.clip((1 + affinity) / 2, 0, 1) * np.clip((1 + reciprocal) / 2, 0, 1)
        )
        score = 0.6 * mutual + 0.25 * jaccard + 0.15 * popularity
    else:
        affinity = reciprocal = np.zeros(unique.shape[0], dtype=np.float32)
        score = 0.6 * jaccard + 0.4 * popularity
    return Candidates(
        positions=unique,
        tags=tags,
        jaccard=jaccard,
        affinity=affinity.astype(np.float32),
        reciprocal=reciprocal.astype(np.float32),
        score=score.astype(np.float32),
    )
