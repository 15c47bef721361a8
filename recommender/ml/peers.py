"""Textbook collaborative-filtering peers the offline evaluation compares against.

Everything lives in a *row space*: members are rows ``0..n-1`` and the likes before a
cut are a :class:`LikeGraph` (actor row -> target row, one entry per like). Every peer
answers one question, :meth:`Peer.scores`: how much would ``viewer`` like each of
these candidate rows (float64 [k], higher is better)? Each also answers the reverse,
:meth:`Peer.scores_towards` (how much would each of these actors like one target),
which :class:`ReciprocalPeer` needs.

Peers (``name`` in brackets, the key of :data:`DEFAULT_GRIDS` and :func:`make_peer`):

* :class:`ALSPeer` (``als``) — implicit-feedback matrix factorisation (Hu, Koren &
  Volinsky 2008) through the ``implicit`` package: ``user_factors[v] ·
  item_factors[c]``;
* :class:`EASEPeer` (``ease``) — Steck 2019's closed-form item-item model on the
  ``max_items`` most-liked members;
* :class:`ItemKNNPeer` (``item_knn``) — cosine item-item neighbourhoods;
* :class:`UserKNNPeer` (``user_knn``) — cosine user-user neighbourhoods;
* :class:`PopularityPeer` (``popularity``) — likes received;
* :class:`LikedYouThenPopularityPeer` (``liked_you_then_popularity``) — members who
  already liked the viewer first, then popularity;
* :class:`ReciprocalPeer` (``<base>_reciprocal``) — harmonic mean of both directions
  of a base peer.

Cold start: a viewer who gave no like before the cut has nothing for a collaborative
model to work from (ALS would give them a zero vector and every candidate the same
score), so :meth:`Peer.scores` answers with popularity for them; see
:attr:`Peer.popularity_fallback`. A candidate nobody liked scores what the model gives
it (0 for the neighbourhood models, about 0 for ALS, the lowest for EASE), never NaN.

Pure numpy / scipy / implicit; no Django.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recommender.ml.metrics import ndcg_at_k
from recommender.ml.peer_math import cosine_top_k, ease_weights

# Rows of the similarity matrices computed at once by the kNN peers: bounds the
# memory of the unpruned co-like counts (a popular member's likers are all co-likers).


@dataclass(eq=False)
class LikeGraph:
    """Positive interactions before a cut in row space.

    ``n`` members (rows ``0..n-1``); ``actor`` and ``target`` int64 [m]: row
    ``actor[i]`` liked row ``target[i]``. Repeated pairs count once.
    """

    n: int
    actor: np.ndarray
    target: np.ndarray

    def __post_init__(self) -> None:
        self.n = int(self.n)
        self.actor = np.asarray(self.actor, dtype=np.int64)
        self.target = np.asarray(self.target, dtype=np.int64)
        if self.actor.ndim != 1 or self.actor.shape != self.target.shape:
            raise ValueError("actor and target must be 1-d arrays of the same length")
        for rows in (self.actor, self.target):
            if rows.size and (rows.min() < 0 or rows.max() >= self.n):
                raise ValueError("rows must lie in [0, n)")

    @cached_property
    def csr(self) -> sp.csr_matrix:
        """float32 (n, n) CSR, 1 at (actor, target) for every distinct like."""
        ones = np.ones(self.actor.shape[0], dtype=np.float32)
        matrix = sp.csr_matrix(
            (ones, (self.actor, self.target)), shape=(self.n, self.n)
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    @cached_property
    def csr_t(self) -> sp.csr_matrix:
        """float32 (n, n) CSR of the transpose: row t holds the members who liked t."""
        return self.csr.T.tocsr()

    @cached_property
    def popularity(self) -> np.ndarray:
        """float64 [n]: distinct likes each member received."""
        return np.diff(self.csr_t.indptr).astype(np.float64)

    @cached_property
    def likes_given(self) -> np.ndarray:
        """float64 [n]: distinct likes each member gave (0 = no history)."""
        return np.diff(self.csr.indptr).astype(np.float64)


class Peer:
    """A recommender fitted on a :class:`LikeGraph`.

    Subclasses set ``name``, store their settings in ``params`` (every setting,
    defaults included) and implement :meth:`_fit`, :meth:`_scores` and
    :meth:`_scores_towards`.
    """

    name: str = "peer"
    #: Viewers with no likes given are scored by popularity (see the module doc).
    popularity_fallback: bool = True

    def __init__(self, **params) -> None:
        self.params: dict = params
        self.graph: LikeGraph | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def fit(self, graph: LikeGraph) -> Peer:
        """Learn from ``graph``; returns ``self``."""
        self._fit(graph)
        self.graph = graph
        return self

    def scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        """float64 [k]: how much row ``viewer`` would like each candidate row in
        ``cands`` (int [k]); higher is better."""
        graph = self._fitted()
        viewer = _row(viewer, graph.n)
        cands = _rows(cands, graph.n)
        if self.popularity_fallback and graph.likes_given[viewer] == 0:
            return graph.popularity[cands].copy()
        return np.asarray(self._scores(viewer, cands), dtype=np.float64)

    def scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        """float64 [k]: how much each row in ``actors`` (int [k]) would like row
        ``target``, on the scale of :meth:`scores`. Actors with no likes given get
        the popularity fallback, ``popularity[target]``."""
        graph = self._fitted()
        target = _row(target, graph.n)
        actors = _rows(actors, graph.n)
        out = np.full(actors.shape[0], graph.popularity[target], dtype=np.float64)
        known = (
            graph.likes_given[actors] > 0
            if self.popularity_fallback
            else np.ones(actors.shape[0], dtype=bool)
        )
        if np.any(known):
            out[known] = self._scores_towards(target, actors[known])
        return out

    def _fitted(self) -> LikeGraph:
        if self.graph is None:
            raise RuntimeError(f"{self!r} is not fitted: call fit(graph) first")
        return self.graph

    def _fit(self, graph: LikeGraph) -> None:
        raise NotImplementedError

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        # Correct for any peer, one call per actor; the built-in peers vectorise it.
        single = np.array([target], dtype=np.int64)
        return np.array([self._scores(int(a), single)[0] for a in actors], np.float64)


class PopularityPeer(Peer):
    """Likes received before the cut, whoever the viewer is."""

    name = "popularity"
    popularity_fallback = False

    def _fit(self, graph: LikeGraph) -> None:
        pass

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        return self.graph.popularity[cands]

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        return np.full(actors.shape[0], self.graph.popularity[target])


class LikedYouThenPopularityPeer(Peer):
    """Candidates who already liked the viewer first (by popularity among them),
    then everyone else by popularity: score = liked_viewer * (max popularity + 1)
    + popularity."""

    name = "liked_you_then_popularity"
    popularity_fallback = False  # works without the viewer's own likes

    def _fit(self, graph: LikeGraph) -> None:
        self._bonus = float(graph.popularity.max(initial=0.0)) + 1.0

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        likers = _row_indices(self.graph.csr_t, viewer)
        liked_you = np.isin(cands, likers)
        return liked_you * self._bonus + self.graph.popularity[cands]

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        liked_by_target = _row_indices(self.graph.csr, target)
        target_liked_actor = np.isin(actors, liked_by_target)
        return target_liked_actor * self._bonus + self.graph.popularity[target]


class ALSPeer(Peer):
    """Implicit ALS (``implicit.cpu.als.AlternatingLeastSquares``) on the like matrix
    (users = actors, items = targets): score = ``user_factors[v] · item_factors[c]``.

    ``alpha`` scales the confidence of a like; ``threads`` caps implicit's own
    thread pool (BLAS is held to one thread during the fit, as implicit advises).
    Factors are float32: user (n, factors), item (n, factors).
    """

    name = "als"

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 10.0,
        random_state: int = 0,
        threads: int = 1,
    ) -> None:
        super().__init__(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            alpha=alpha,
            random_state=random_state,
            threads=threads,
        )

    def _fit(self, graph: LikeGraph) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        # implicit checks the BLAS pool when the model is built (and warns unless it
        # is one thread): a threaded BLAS slows its many small solves down badly.
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=p["factors"],
                regularization=p["regularization"],
                iterations=p["iterations"],
                alpha=p["alpha"],
                random_state=p["random_state"],
                num_threads=p["threads"],
            )
            # implicit >= 0.5 takes the user x item matrix: rows are actors.
            model.fit(graph.csr, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        return self.item_factors[cands].astype(np.float64) @ self.user_factors[viewer]

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        return self.user_factors[actors].astype(np.float64) @ self.item_factors[target]


class EASEPeer(Peer):
    """EASE (Steck 2019): ``B = I - P / diag(P)``, ``P = (XᵀX + l2·I)⁻¹``, score =
    ``X[v] · B[:, c]``.

    Only the ``max_items`` most-liked members (with at least one like) are items, so
    the dense ``B`` stays at most ``max_items``² float32; candidates outside them
    score below every item (the smallest item score among the candidates, or 0,
    minus 1). ``threads`` caps BLAS/LAPACK during the inversion.
    """

    name = "ease"

    def __init__(
        self, *, l2: float = 50.0, max_items: int = 4_000, threads: int = 1
    ) -> None:
        super().__init__(l2=l2, max_items=max_items, threads=threads)

    def _fit(self, graph: LikeGraph) -> None:
        liked = np.flatnonzero(graph.popularity > 0)
        order = np.argsort(-graph.popularity[liked], kind="stable")
        self.items = np.sort(liked[order[: self.params["max_items"]]])
        self.column = np.full(graph.n, -1, dtype=np.int64)
        self.column[self.items] = np.arange(self.items.shape[0])
        self.x = graph.csr[:, self.items].tocsr()  # (n, m)
        self.b = ease_weights(self.x, self.params["l2"], self.params["threads"])

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        item_scores = np.asarray(self.x[viewer] @ self.b).ravel()
        column = self.column[cands]
        inside = column >= 0
        out = np.zeros(cands.shape[0], dtype=np.float64)
        out[inside] = item_scores[column[inside]]
        out[~inside] = min(out[inside].min(initial=0.0), 0.0) - 1.0
        return out

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        column = self.column[target]
        if column < 0:  # the target is not an item: every actor scores the same
            return np.zeros(actors.shape[0])
        return self.x[actors] @ self.b[:, column].astype(np.float64)


class _SparseProductPeer(Peer):
    """score(v, c) = (left @ right)[v, c] with sparse ``left`` and ``right`` (n, n)."""

    left: sp.csr_matrix
    right: sp.csr_matrix
    right_t: sp.csr_matrix

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        row = (self.left[viewer] @ self.right).toarray().ravel()
        return row[cands].astype(np.float64)

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        column = self.right_t[target].T  # (n, 1)
        return (self.left[actors] @ column).toarray().ravel().astype(np.float64)


class ItemKNNPeer(_SparseProductPeer):
    """Item-item kNN: cosine similarity of members by who liked them,
    ``sim(i, j) = co_likers / ((|likers i|·|likers j|)^½ + shrinkage)``, each item
    keeping its ``neighbours`` most similar items; score(v, c) = sum of ``sim(i, c)``
    over the members i that v liked."""

    name = "item_knn"

    def __init__(self, *, neighbours: int = 100, shrinkage: float = 0.0) -> None:
        super().__init__(neighbours=neighbours, shrinkage=shrinkage)

    def _fit(self, graph: LikeGraph) -> None:
        p = self.params
        self.left = graph.csr
        self.right = cosine_top_k(graph.csr_t, p["neighbours"], p["shrinkage"])
        self.right_t = self.right.T.tocsr()


class UserKNNPeer(_SparseProductPeer):
    """User-user kNN: cosine similarity of members by whom they liked (same formula
    as :class:`ItemKNNPeer` on the rows), each viewer keeping their ``neighbours``
    most similar members; score(v, c) = sum of ``sim(v, u)`` over those neighbours u
    who liked c."""

    name = "user_knn"

    def __init__(self, *, neighbours: int = 100, shrinkage: float = 0.0) -> None:
        super().__init__(neighbours=neighbours, shrinkage=shrinkage)

    def _fit(self, graph: LikeGraph) -> None:
        p = self.params
        self.left = cosine_top_k(graph.csr, p["neighbours"], p["shrinkage"])
        self.right = graph.csr
        self.right_t = graph.csr_t


class ReciprocalPeer(Peer):
    """Reciprocal fusion of a base peer: a match needs both sides to like.

    For viewer v and candidates c: ``forward = base.scores(v, c)`` and ``backward =
    base.scores_towards(v, c)`` (how much each c would like v). Each direction is
    min-max normalised to [0, 1] over the candidate list (a constant direction
    becomes all 1: it cannot tell the candidates apart), a candidate with no likes
    given has an unknown backward direction and gets 0.5, and the score is the
    harmonic mean ``2·f·b / (f + b)`` (0 when both are 0). The harmonic mean is
    dominated by the weaker direction, so a candidate the viewer likes but who would
    not like back ranks low. Scores are relative to the list they were given with.
    """

    popularity_fallback = False  # the base applies its own

    def __init__(self, base: Peer) -> None:
        super().__init__(**base.params)
        self.base = base
        self.name = f"{base.name}_reciprocal"
        self.graph = base.graph

    def __repr__(self) -> str:
        return f"ReciprocalPeer({self.base!r})"

    def fit(self, graph: LikeGraph) -> Peer:
        """Fit the base on ``graph`` (unless it already is); returns ``self``."""
        if self.base.graph is not graph:
            self.base.fit(graph)
        self.graph = graph
        return self

    def _scores(self, viewer: int, cands: np.ndarray) -> np.ndarray:
        forward = _min_max(self.base.scores(viewer, cands))
        backward = np.full(cands.shape[0], 0.5)
        known = self.graph.likes_given[cands] > 0
        if np.any(known):
            backward[known] = _min_max(self.base.scores_towards(viewer, cands[known]))
        total = forward + backward
        with np.errstate(divide="ignore", invalid="ignore"):
            fused = np.where(total > 0, 2.0 * forward * backward / total, 0.0)
        return fused

    def _scores_towards(self, target: int, actors: np.ndarray) -> np.ndarray:
        # The harmonic mean is symmetric in the two directions.
        return self._scores(target, actors)


PEERS: dict[str, type[Peer]] = {
    peer.name: peer
    for peer in (
        ALSPeer,
        EASEPeer,
        ItemKNNPeer,
        UserKNNPeer,
        PopularityPeer,
        LikedYouThenPopularityPeer,
    )
}

# Two or three settings per peer, each fit taking seconds at ~10k members / 60k likes
# on one thread. A "<name>_reciprocal" peer uses its base's grid.
DEFAULT_GRIDS: dict[str, list[dict]] = {
    "als": [
        {"factors": 32, "regularization": 0.05, "alpha": 10.0},
        {"factors": 64, "regularization": 0.05, "alpha": 10.0},
        {"factors": 64, "regularization": 0.5, "alpha": 40.0},
    ],
    "ease": [{"l2": 10.0}, {"l2": 50.0}, {"l2": 250.0}],
    "item_knn": [
        {"neighbours": 50},
        {"neighbours": 200},
        {"neighbours": 100, "shrinkage": 10.0},
    ],
    "user_knn": [
        {"neighbours": 50},
        {"neighbours": 200},
        {"neighbours": 100, "shrinkage": 10.0},
    ],
    "popularity": [{}],
    "liked_you_then_popularity": [{}],
}


def make_peer(name: str, params: dict | None = None) -> Peer:
    """An unfitted peer by ``name`` (a :data:`PEERS` key, optionally with the suffix
    ``_reciprocal``) with keyword ``params``."""
    base_name = name.removesuffix("_reciprocal")
    if base_name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
    peer = PEERS[base_name](**(params or {}))
    return ReciprocalPeer(peer) if name.endswith("_reciprocal") else peer


@dataclass
class ValidationCase:
    """One viewer's validation question: ``candidates`` int64 [k] rows the viewer may
    be shown, ``relevant`` bool [k] which of them the viewer liked after the cut."""

    viewer: int
    candidates: np.ndarray
    relevant: np.ndarray


def peer_ndcg(peer: Peer, cases: list[ValidationCase], k: int = 10) -> float:
    """Mean NDCG@k of a fitted ``peer`` over ``cases`` (those with a relevant row);
    ties count at their expected value (``metrics.ndcg_at_k``). nan if none has."""
    if not cases:
        return float("nan")
    sizes = [len(case.candidates) for case in cases]
    groups = np.repeat(np.arange(len(cases), dtype=np.int64), sizes)
    y = np.concatenate([np.asarray(case.relevant, dtype=bool) for case in cases])
    scores = np.concatenate(
        [peer.scores(case.viewer, case.candidates) for case in cases]
    )
    return ndcg_at_k(groups, y, scores, k)


def tune(
    make: Callable[[dict], Peer],
    grid: list[dict],
    graph: LikeGraph,
    cases: list[ValidationCase],
    k: int = 10,
) -> tuple[Peer, dict]:
    """Fit ``make(params)`` on ``graph`` for each ``params`` in ``grid``, score NDCG@k
    on ``cases``; return the best fitted peer and ``{"chosen": params, "ndcg":
    {str(params): value}}``. The first setting wins ties; a nan NDCG never wins
    unless every setting has one."""
    if not grid:
        raise ValueError("grid must hold at least one setting")
    best: tuple[float, Peer, dict] | None = None
    ndcg: dict[str, float] = {}
    for params in grid:
        peer = make(params).fit(graph)
        value = peer_ndcg(peer, cases, k)
        ndcg[str(params)] = value
        rank_value = -math.inf if math.isnan(value) else value
        if best is None or rank_value > best[0]:
            best = (rank_value, peer, params)
    _, peer, chosen = best
    return peer, {"chosen": chosen, "ndcg": ndcg}


def _row(row: int, n: int) -> int:
    row = int(row)
    if not 0 <= row < n:
        raise ValueError(f"row {row} outside [0, {n})")
    return row


def _rows(rows: np.ndarray, n: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must lie in [0, {n})")
    return rows


def _row_indices(matrix: sp.csr_matrix, row: int) -> np.ndarray:
    """int [d]: the column indices stored in ``row`` of a CSR matrix."""
    return matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]


def _min_max(values: np.ndarray) -> np.ndarray:
    """float64 [k] rescaled to [0, 1]; a constant (or empty) input becomes all 1."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = values.min(), values.max()
    if not high > low:
        return np.ones_like(values)
    return (values - low) / (high - low)
