"""User embeddings from the like graph, with a content-based fallback.

Each member gets two vectors in one d-dimensional space:

* ``taste`` — whom they like (a row of the actor side of the like matrix);
* ``appeal`` — who likes them (the target side).

``score(u -> v) = taste[u] · appeal[v]`` approximates how much u would like v, so the
candidate index holds appeal vectors and is searched with taste queries, and two
members who like the same people have nearby taste vectors.

Training factorises, with scikit-learn's randomized
:class:`~sklearn.decomposition.TruncatedSVD`, the actor rows of a hybrid matrix
``Z = [A | w·P]`` (n x (n + c)):

* ``A`` — the weighted positive actor x target matrix (like = 1, super-like = 2, each
  target's column damped by its popularity ``(likes + 1) ** -alpha`` so a few very
  popular members do not fill the leading components), rows scaled to unit length;
* ``P`` — each actor's *liked-content profile*: the mean content vector of the members
  they liked, rows scaled to unit length ``w`` (``content_weight``).

Why the ``P`` block: a dating like graph is very sparse (a handful of likes per
member), below the level where pure co-like factorisation can separate taste groups
(on the synthetic data, taste groups are indistinguishable with ``w = 0``). The
liked-content profile ties "liked different people of the same kind" together, and the
targets' appeal, ``A``'s side of ``V``, is then the (scaled) mean taste of their likers.

``Z ≈ U S Vᵀ``; ``taste = U √S``, ``appeal = V[:n] √S`` (the target columns), then
both are L2-normalised row by row, so ``taste · appeal`` is a cosine in [-1, 1]:

* comparable across model versions (the ranking model learns on one embedding
  version and may serve with the next);
* searchable: an HNSW graph over unit vectors reaches recall@100 >= 0.95 at
  efSearch 128, where the raw maximum-inner-product vectors needed ~1,000 (measured
  at 100,000 members);
* popularity, which the norms carried, is left to the ranking model's own
  popularity features and the popularity candidate source.

A ridge regression from content vectors (:func:`content_vectors`) to taste and to
appeal, fitted on members with history, embeds everyone without history in the same
space: a member who never liked anyone gets a content-based taste, one never liked by
anyone a content-based appeal (cold start). :func:`embed_from_content` does the same
for members who joined after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import Ridge

from recommender.ml.data import SUPER_LIKE, InteractionArrays, sorted_positions
from recommender.ml.features import FeatureStore

AGE_BUCKET_EDGES = (25.0, 30.0, 35.0, 40.0, 50.0)  # 6 buckets: <25, 25-29, …, 50+


@dataclass
class EmbeddingModel:
    """A trained embedding model (``n`` members, ``d`` dims, ``c`` content columns).

    * ``user_id`` int64 [n] ascending;
    * ``taste``, ``appeal`` float32 [n, d], unit rows (see the module docstring);
    * ``has_taste``, ``has_appeal`` bool [n]: the vector was learned from likes
      given / received (False = content-based, cold start);
    * ``taste_projection``, ``appeal_projection`` float32 [c, d] and
      ``taste_intercept``, ``appeal_intercept`` float32 [d]: the ridge maps from
      content vectors;
    * ``vocabulary``: interests behind the content vectors' interest columns;
    * ``hyperparameters``, ``metrics``: JSON-able dicts for the registry.
    """

    user_id: np.ndarray
    taste: np.ndarray
    appeal: np.ndarray
    has_taste: np.ndarray
    has_appeal: np.ndarray
    taste_projection: np.ndarray
    taste_intercept: np.ndarray
    appeal_projection: np.ndarray
    appeal_intercept: np.ndarray
    vocabulary: tuple[str, ...] = ()
    hyperparameters: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.taste.shape[1])

    def index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """int64 [k] rows of ``user_ids`` [k], -1 for members unknown to the model."""
        return sorted_positions(self.user_id, user_ids)


def content_vectors(store: FeatureStore) -> np.ndarray:
    """float32 [n, c] content vectors of the store's members, ``c = V + 3 + 6 + 3``:
    the interest bits over ``store.vocabulary`` (V columns, each row's interests
    scaled to unit length), gender one-hot (3), age bucket one-hot (6, edges
    :data:`AGE_BUCKET_EDGES`) and the sought genders (3)."""
    n, v = store.n, len(store.vocabulary)
    as_bytes = store.interest_bits.astype("<u8").view(np.uint8).reshape(n, -1)
    interests = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :v]
    interests = interests.astype(np.float32)
    counts = interests.sum(axis=1, keepdims=True)
    interests /= np.sqrt(np.maximum(counts, 1.0))
    gender = np.zeros((n, 3), dtype=np.float32)
    gender[np.arange(n), np.clip(store.gender, 0, 2)] = 1.0
    buckets = np.zeros((n, len(AGE_BUCKET_EDGES) + 1), dtype=np.float32)
    buckets[np.arange(n), np.searchsorted(AGE_BUCKET_EDGES, store.age, "right")] = 1.0
    seeking = (store.seeking_mask[:, None] >> np.arange(3, dtype=np.uint8)) & 1
    return np.hstack([interests, gender, buckets, seeking.astype(np.float32)])


def train_embeddings(
    members_user_id: np.ndarray,
    history: InteractionArrays,
    content: np.ndarray,
    *,
    dim: int = 32,
    seed: int = 0,
    n_iter: int = 5,
    popularity_damping: float = 0.5,
    content_weight: float = 0.5,
    super_like_weight: float = 2.0,
    ridge_alpha: float = 1.0,
    vocabulary: tuple[str, ...] | list[str] = (),
) -> EmbeddingModel:
    """Learn taste and appeal vectors (see the module docstring).

    ``members_user_id`` int64 [n] ascending; ``history`` the interactions to learn
    from (positives only are used; rows with a user outside ``members_user_id`` are
    dropped; of a history of changed verdicts, each pair's latest one:
    ``InteractionArrays.current``); ``content`` float32 [n, c] from
    :func:`content_vectors`, aligned with
    ``members_user_id``. Deterministic in ``seed``. ``vocabulary`` is recorded on the
    model (the store's vocabulary that ``content`` was built with).
    """
    members_user_id = np.asarray(members_user_id, dtype=np.int64)
    content = np.asarray(content, dtype=np.float32)
    n = members_user_id.shape[0]
    if content.shape[0] != n:
        raise ValueError("content must have one row per member")
    if dim < 1:
        raise ValueError("dim must be >= 1")

    history = history.current()
    positive = history.is_positive
    actor = sorted_positions(members_user_id, history.actor[positive])
    target = sorted_positions(members_user_id, history.target[positive])
    weight = np.where(history.kind[positive] == SUPER_LIKE, super_like_weight, 1.0)
    known = (actor >= 0) & (target >= 0)
    actor, target, weight = actor[known], target[known], weight[known]
    likes_received = np.bincount(target, minlength=n)
    has_taste = np.bincount(actor, minlength=n) > 0
    has_appeal = likes_received > 0
    likes = sp.csr_matrix(
        (weight.astype(np.float32), (actor, target)), shape=(n, n), dtype=np.float32
    )  # duplicates (if any) are summed
    damped = likes @ sp.diags(
        ((likes_received + 1.0) ** -popularity_damping).astype(np.float32)
    )
    profile = likes @ content  # [n, c] dense: summed content of the liked members
    profile *= _inverse_norms(profile)[:, None]
    if has_taste.any():
        # Centred: what everyone likes (e.g. the sought gender's share) would
        # otherwise fill the first component and make all tastes look alike.
        profile[has_taste] -= profile[has_taste].mean(axis=0)
    hybrid = sp.hstack(
        [
            sp.diags(_inverse_norms(damped)) @ damped,
            sp.csr_matrix(
                profile * (content_weight * _inverse_norms(profile))[:, None]
            ),
        ],
        format="csr",
        dtype=np.float32,
    )
    del damped, profile

    taste = np.zeros((n, dim), dtype=np.float32)
    appeal = np.zeros((n, dim), dtype=np.float32)
    rank = min(dim, n - 1, int(has_taste.sum()))
    explained = 0.0
    if rank >= 1 and hybrid.nnz:
        svd = TruncatedSVD(
            n_components=rank, algorithm="randomized", n_iter=n_iter, random_state=seed
        )
        projected = svd.fit_transform(hybrid)  # U S, [n, rank]
        root = np.sqrt(np.maximum(svd.singular_values_, 1e-12))
        taste[:, :rank] = projected / root
        appeal[:, :rank] = svd.components_[:, :n].T * root
        explained = float(svd.explained_variance_ratio_.sum())
    taste, appeal = _unit_rows(taste), _unit_rows(appeal)

    taste_projection, taste_intercept = _ridge(
        content, taste, has_taste, ridge_alpha, dim
    )
    appeal_projection, appeal_intercept = _ridge(
        content, appeal, has_appeal, ridge_alpha, dim
    )
    taste[~has_taste] = _unit_rows(
        content[~has_taste] @ taste_projection + taste_intercept
    )
    appeal[~has_appeal] = _unit_rows(
        content[~has_appeal] @ appeal_projection + appeal_intercept
    )

    return EmbeddingModel(
        user_id=members_user_id.copy(),
        taste=np.ascontiguousarray(taste, dtype=np.float32),
        appeal=np.ascontiguousarray(appeal, dtype=np.float32),
        has_taste=has_taste,
        has_appeal=has_appeal,
        taste_projection=taste_projection,
        taste_intercept=taste_intercept,
        appeal_projection=appeal_projection,
        appeal_intercept=appeal_intercept,
        vocabulary=tuple(vocabulary),
        hyperparameters={
            "dim": dim,
            "seed": seed,
            "n_iter": n_iter,
            "popularity_damping": popularity_damping,
            "content_weight": content_weight,
            "super_like_weight": super_like_weight,
            "ridge_alpha": ridge_alpha,
            "algorithm": "truncated_svd_randomized_hybrid",
        },
        metrics={
            "members": n,
            "positive_interactions": int(likes.nnz),
            "learned_taste": int(has_taste.sum()),
            "learned_appeal": int(has_appeal.sum()),
            "content_taste": int(n - has_taste.sum()),
            "content_appeal": int(n - has_appeal.sum()),
            "rank": rank,
            "explained_variance_ratio": explained,
        },
    )


def _ridge(
    content: np.ndarray,
    vectors: np.ndarray,
    learned: np.ndarray,
    alpha: float,
    dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge map float32 [c, d] + intercept [d] from content to learned vectors."""
    c = content.shape[1]
    if learned.sum() < 2:
        return np.zeros((c, dim), dtype=np.float32), np.zeros(dim, dtype=np.float32)
    ridge = Ridge(alpha=alpha, fit_intercept=True, solver="cholesky")
    ridge.fit(content[learned], vectors[learned])
    return (
        np.ascontiguousarray(ridge.coef_.T, dtype=np.float32),
        np.asarray(ridge.intercept_, dtype=np.float32),
    )


def _inverse_norms(matrix) -> np.ndarray:
    """float32 [n]: 1 / L2 norm of each row of ``matrix`` (sparse or dense), 0 for
    all-zero rows."""
    if sp.issparse(matrix):
        squared = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
    else:
        squared = np.einsum("ij,ij->i", matrix, matrix)
    norms = np.sqrt(squared)
    return np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(
        np.float32
    )


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embed_from_content(
    model: EmbeddingModel, content: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(taste, appeal), float32 [k, d] each, for members known only by their content
    vectors float32 [k, c] (built with the model's vocabulary), e.g. members who
    joined after training. Same treatment as the model's own cold-start members."""
    content = np.asarray(content, dtype=np.float32)
    if content.ndim != 2 or content.shape[1] != model.taste_projection.shape[0]:
        raise ValueError(
            f"content must be [k, {model.taste_projection.shape[0]}]; build it from "
            "a feature store with the model's vocabulary"
        )
    taste = _unit_rows(content @ model.taste_projection + model.taste_intercept)
    appeal = _unit_rows(content @ model.appeal_projection + model.appeal_intercept)
    return taste, appeal


def vectors_for_index(model: EmbeddingModel) -> np.ndarray:
    """float32 [n, d] C-contiguous vectors to index (the appeal vectors, aligned
    with ``model.user_id``); the index is searched with taste queries."""
    return np.ascontiguousarray(model.appeal, dtype=np.float32)


def taste_cosine(model: EmbeddingModel, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 [p] cosine similarity of the taste vectors of rows ``a[i]``, ``b[i]``
    (int64 [p])."""
    ta, tb = _unit_rows(model.taste[a]), _unit_rows(model.taste[b])
    return np.einsum("ij,ij->i", ta, tb)
