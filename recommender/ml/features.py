"""The feature code shared by training and serving (version :data:`FEATURE_VERSION`).

:func:`build_feature_store` turns members and the interactions the features may see
into per-member columns (a :class:`FeatureStore`); :func:`pair_features` turns
(viewer, candidate) row pairs of a store into the ranking model's input matrix. Both
training rows and serving rows come from these two functions, so a pair gets the same
features whether it is scored in a training batch or alone at request time.

Everything is vectorised over members and pairs; nothing loops over pairs in Python.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np

from recommender.ml.data import (
    SECONDS_PER_DAY,
    InteractionArrays,
    MemberArrays,
    sorted_positions,
)

FEATURE_VERSION = "f2"
MAX_VOCABULARY = 256
RECENT_DAYS = 14.0
DAYS_PER_YEAR = 365.25
# Bayesian smoothing of like rates: ``PRIOR_STRENGTH`` pseudo-interactions at the
# population rate, so a member with 1 like out of 1 is not "100 % liked".
PRIOR_STRENGTH = 10.0
UNKNOWN_DISTANCE_KM = 20_000.0  # half the Earth's circumference: farther than anyone
EARTH_RADIUS_KM = 6371.0
PAIR_CHUNK = 1 << 18  # pairs per block in pair_features (bounds temporary memory)
KEY_SHIFT = np.int64(1) << np.int64(32)  # a * KEY_SHIFT + b: one int64 key of a pair

PAIR_FEATURE_NAMES: list[str] = [
    "age_gap_years",
    "viewer_age_pref_violation_years",
    "candidate_age_pref_violation_years",
    "viewer_seeks_candidate_gender",
    "candidate_seeks_viewer_gender",
    "distance_km",
    "within_both_distance_prefs",
    "interest_jaccard",
    "interest_overlap",
    "taste_affinity",
    "reciprocal_affinity",
    "candidate_liked_viewer",
    "candidate_like_rate_received",
    "candidate_likes_received_recent_log1p",
    "candidate_like_rate_given",
    "viewer_like_rate_given",
    "candidate_recency_days",
    "candidate_account_age_days",
    "candidate_likes_received_log1p",
    "candidate_received_recent_log1p",
    "candidate_given_log1p",
    "viewer_given_log1p",
    "joined_gap_days_log1p",
    "neighbour_forward",
    "neighbour_backward",
    "seen_forward",
    "seen_backward",
]
# The per-pair graph scores pair_features takes as ``neighbours`` [p, 4], in this
# order; the other direction of a pair swaps 0 <-> 1 and 2 <-> 3.
NEIGHBOUR_COLUMNS = PAIR_FEATURE_NAMES[-4:]
REVERSED_NEIGHBOURS = [1, 0, 3, 2]


@dataclass
class FeatureStore:
    """Per-member feature columns, aligned with the :class:`MemberArrays` rows they
    were built from (``n`` members, ``W = ceil(len(vocabulary) / 64)`` words).

    * ``user_id`` int64 [n] ascending; ``gender`` int8 [n]; ``seeking_mask`` uint8 [n];
    * ``age`` float32 [n], years at ``now_ts``; ``lat``, ``lon`` float32 [n] (nan =
      unknown); ``min_age``, ``max_age`` int16 [n]; ``max_distance_km`` float32 [n]
      (inf = any);
    * ``interest_bits`` uint64 [n, W]: bit j set = member lists ``vocabulary[j]``;
    * ``like_rate_given``, ``like_rate_received`` float32 [n], smoothed towards the
      population like rate ``prior_like_rate``;
    * ``n_given``, ``n_received`` int32 [n] interactions given / received (any kind);
    * ``likes_received`` int32 [n]: likes received before ``now_ts`` (all-time
      popularity); ``likes_received_recent`` int32 [n]: those of the last 14 days
      (the trending signal); ``received_recent`` int32 [n]: interactions of any
      kind received in the last 14 days (who is being seen now);
    * ``recency_days`` float32 [n]: days since the member's last known activity
      (last own interaction in the history, ``last_active_ts`` if not after
      ``now_ts``, or joining), >= 0;
    * ``account_age_days`` float32 [n], >= 0; ``created_ts`` float64 [n], when the
      member joined (unix seconds; members who join together — at one event, in
      one campaign — tend to meet);
    * ``liked_keys`` int64 [L] sorted unique ``actor * 2**32 + target`` of the positive
      interactions of the history (user ids must be < 2**31);
    * ``vocabulary`` the interest strings behind the bits; ``now_ts`` the time the
      features describe; ``prior_like_rate`` the smoothing prior.
    """

    user_id: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    interest_bits: np.ndarray
    like_rate_given: np.ndarray
    like_rate_received: np.ndarray
    n_given: np.ndarray
    n_received: np.ndarray
    likes_received: np.ndarray
    likes_received_recent: np.ndarray
    received_recent: np.ndarray
    recency_days: np.ndarray
    account_age_days: np.ndarray
    created_ts: np.ndarray
    seeking_mask: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    max_distance_km: np.ndarray
    liked_keys: np.ndarray
    vocabulary: tuple[str, ...]
    now_ts: float
    prior_like_rate: float
    feature_version: str = FEATURE_VERSION

    @property
    def n(self) -> int:
        return int(self.user_id.shape[0])

    def index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """int64 [k] row positions of ``user_ids`` [k], -1 if absent."""
        return sorted_positions(self.user_id, user_ids)

    def take(self, positions: np.ndarray) -> FeatureStore:
        """The rows at ``positions`` (int64 [k], ascending), with the same
        ``liked_keys``, vocabulary and time: a serving-sized store."""
        positions = np.asarray(positions, dtype=np.int64)
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            per_member = isinstance(value, np.ndarray) and f.name != "liked_keys"
            values[f.name] = value[positions] if per_member else value
        return FeatureStore(**values)


def interest_vocabulary(
    interests: list[list[str]], *, size: int = MAX_VOCABULARY
) -> tuple[str, ...]:
    """The ``size`` most frequent interests (ties by name), most frequent first."""
    counts = Counter(chain.from_iterable(set(listed) for listed in interests))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked[:size])


def interest_bitsets(
    interests: list[list[str]], vocabulary: tuple[str, ...]
) -> np.ndarray:
    """uint64 [n, ceil(V / 64)] bitsets of each member's interests over
    ``vocabulary`` (V <= 256 strings); interests outside it are ignored."""
    if len(vocabulary) > MAX_VOCABULARY:
        raise ValueError(f"vocabulary has more than {MAX_VOCABULARY} entries")
    words = max(1, -(-len(vocabulary) // 64))
    n = len(interests)
    bits = np.zeros((n, words), dtype=np.uint64)
    lengths = np.fromiter(map(len, interests), dtype=np.int64, count=n)
    position = {name: j for j, name in enumerate(vocabulary)}
    total = int(lengths.sum())
    codes = np.fromiter(
        (position.get(name, -1) for name in chain.from_iterable(interests)),
        dtype=np.int64,
        count=total,
    )
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    known = codes >= 0
    rows, codes = rows[known], codes[known]
    values = np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64))
    np.bitwise_or.at(bits, (rows, codes // 64), values)
    return bits


def build_feature_store(
    members: MemberArrays,
    history: InteractionArrays,
    *,
    now_ts: float,
    vocabulary: tuple[str, ...] | list[str] | None = None,
) -> FeatureStore:
    """Per-member features as of ``now_ts`` from ``history``, the interactions the
    features may see (training passes only interactions before its label window; any
    interaction at or after ``now_ts`` is ignored too, and with a history of changed
    verdicts each pair counts with its verdict as it stood just before ``now_ts``).

    ``vocabulary``: the interests behind the bitsets; ``None`` = the 256 most frequent
    interests of ``members``. Pass the training vocabulary when building a store for
    a model trained earlier, so the bits mean the same interests.
    """
    now_ts = float(now_ts)
    history = history.before(now_ts)
    vocabulary = tuple(
        interest_vocabulary(members.interests) if vocabulary is None else vocabulary
    )
    n = members.n
    actor = members.index_of(history.actor)
    target = members.index_of(history.target)
    known = (actor >= 0) & (target >= 0)
    actor, target = actor[known], target[known]
    positive = history.is_positive[known]
    ts = history.ts[known]

    n_given = np.bincount(actor, minlength=n)
    n_received = np.bincount(target, minlength=n)
    likes_given = np.bincount(actor, weights=positive, minlength=n)
    likes_received = np.bincount(target, weights=positive, minlength=n)
    prior = float(positive.mean()) if positive.shape[0] else 0.0
    lately = ts >= now_ts - RECENT_DAYS * SECONDS_PER_DAY
    recent = positive & lately

    last_action = np.full(n, -np.inf)
    np.maximum.at(last_action, actor, ts)
    last_seen = np.where(
        members.last_active_ts <= now_ts, members.last_active_ts, -np.inf
    )  # nan (never) and future values (unknown at now_ts) do not count
    last_seen = np.maximum(np.maximum(last_action, last_seen), members.created_ts)

    liked_keys = np.unique(
        members.user_id[actor[positive]] * KEY_SHIFT + members.user_id[target[positive]]
    )
    age = (now_ts / SECONDS_PER_DAY - members.birth_day) / DAYS_PER_YEAR
    return FeatureStore(
        user_id=members.user_id.astype(np.int64, copy=True),
        age=age.astype(np.float32),
        gender=members.gender.astype(np.int8, copy=True),
        lat=members.lat.astype(np.float32, copy=True),
        lon=members.lon.astype(np.float32, copy=True),
        interest_bits=interest_bitsets(members.interests, vocabulary),
        like_rate_given=_smoothed(likes_given, n_given, prior),
        like_rate_received=_smoothed(likes_received, n_received, prior),
        n_given=n_given.astype(np.int32),
        n_received=n_received.astype(np.int32),
        likes_received=likes_received.astype(np.int32),
        likes_received_recent=np.bincount(target[recent], minlength=n).astype(np.int32),
        received_recent=np.bincount(target[lately], minlength=n).astype(np.int32),
        recency_days=_days(now_ts - last_seen),
        account_age_days=_days(now_ts - members.created_ts),
        created_ts=members.created_ts.astype(np.float64, copy=True),
        seeking_mask=members.seeking_mask.astype(np.uint8, copy=True),
        min_age=members.min_age.astype(np.int16, copy=True),
        max_age=members.max_age.astype(np.int16, copy=True),
        max_distance_km=members.max_distance_km.astype(np.float32, copy=True),
        liked_keys=liked_keys.astype(np.int64),
        vocabulary=vocabulary,
        now_ts=now_ts,
        prior_like_rate=prior,
    )


def _smoothed(likes: np.ndarray, total: np.ndarray, prior: float) -> np.ndarray:
    rate = (likes + PRIOR_STRENGTH * prior) / (total + PRIOR_STRENGTH)
    return rate.astype(np.float32)


def _days(seconds: np.ndarray) -> np.ndarray:
    return np.maximum(seconds / SECONDS_PER_DAY, 0.0).astype(np.float32)


# Per-member columns written to / read from the UserFeatures table.
_ROW_COLUMNS = (
    "age",
    "gender",
    "lat",
    "lon",
    "like_rate_given",
    "like_rate_received",
    "n_given",
    "n_received",
    "likes_received",
    "likes_received_recent",
    "received_recent",
    "recency_days",
    "account_age_days",
    "created_ts",
    "seeking_mask",
    "min_age",
    "max_age",
    "max_distance_km",
)


def user_feature_rows(store: FeatureStore) -> Iterator[tuple[int, dict]]:
    """``(user_id, feature_set)`` per member, the feature set JSON-able: Python
    floats/ints, ``None`` for nan/inf (unknown location, any distance) and
    ``interest_bits`` as a list of W unsigned ints. :func:`feature_store_from_rows`
    inverts it (float32 values round-trip exactly through Python floats)."""
    columns = {}
    for name in _ROW_COLUMNS:
        values = getattr(store, name)
        if values.dtype.kind == "f":
            as_objects = values.astype(object)
            as_objects[~np.isfinite(values)] = None
            columns[name] = as_objects.tolist()
        else:
            columns[name] = values.tolist()
    bits = store.interest_bits.tolist()
    user_ids = store.user_id.tolist()
    for i, user_id in enumerate(user_ids):
        row = {name: column[i] for name, column in columns.items()}
        row["interest_bits"] = bits[i]
        yield user_id, row


def feature_store_from_rows(
    user_ids: np.ndarray,
    rows: list[dict],
    *,
    vocabulary: tuple[str, ...] | list[str],
    now_ts: float,
    prior_like_rate: float,
    liked_keys: np.ndarray | None = None,
) -> FeatureStore:
    """A store from stored :func:`user_feature_rows` feature sets (``user_ids`` int64
    [k] ascending, ``rows`` k dicts), e.g. a serving batch of the viewer and their
    candidates. ``liked_keys`` (int64 sorted, see :class:`FeatureStore`) should
    cover at least the pairs that will be scored (e.g. the likes the viewer
    received); ``None`` = no reciprocal likes known."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if user_ids.shape[0] > 1 and not np.all(user_ids[1:] > user_ids[:-1]):
        raise ValueError("user_ids must be strictly ascending")
    words = max(1, -(-len(vocabulary) // 64))
    k = len(rows)
    values: dict[str, np.ndarray] = {}
    for name in _ROW_COLUMNS:
        # Rows written before a column existed (feature version f1) read as 0.
        column = [row.get(name, 0) for row in rows]
        if name in _FLOAT_COLUMNS:
            missing = np.inf if name == "max_distance_km" else np.nan
            values[name] = np.array(
                [missing if v is None else v for v in column],
                dtype=np.float64 if name == "created_ts" else np.float32,
            )
        else:
            values[name] = np.array(column, dtype=_INT_COLUMNS[name])
    bits = np.zeros((k, words), dtype=np.uint64)
    if k:
        bits[:] = np.array([row["interest_bits"] for row in rows], dtype=np.uint64)
    return FeatureStore(
        user_id=user_ids,
        interest_bits=bits,
        liked_keys=(
            np.zeros(0, dtype=np.int64)
            if liked_keys is None
            else np.asarray(liked_keys, dtype=np.int64)
        ),
        vocabulary=tuple(vocabulary),
        now_ts=float(now_ts),
        prior_like_rate=float(prior_like_rate),
        **values,
    )


_FLOAT_COLUMNS = {
    "age",
    "lat",
    "lon",
    "like_rate_given",
    "like_rate_received",
    "recency_days",
    "account_age_days",
    "created_ts",
    "max_distance_km",
}
_INT_COLUMNS = {
    "gender": np.int8,
    "n_given": np.int32,
    "n_received": np.int32,
    "likes_received": np.int32,
    "likes_received_recent": np.int32,
    "received_recent": np.int32,
    "seeking_mask": np.uint8,
    "min_age": np.int16,
    "max_age": np.int16,
}


def pair_features(
    store: FeatureStore,
    viewer_idx: np.ndarray,
    cand_idx: np.ndarray,
    *,
    taste: np.ndarray | None = None,
    appeal: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """float32 [p, F] features (columns :data:`PAIR_FEATURE_NAMES`) of the pairs
    (``viewer_idx[i]``, ``cand_idx[i]``), int64 [p] row positions in ``store``.

    ``taste``, ``appeal``: float32 [n, d] embeddings aligned with the store's rows
    (both or neither); the affinity features are 0 without them. ``neighbours``:
    float32 [p, 4] graph scores of each pair (:data:`NEIGHBOUR_COLUMNS`: viewer →
    candidate and candidate → viewer over the like graph, then over the graph of
    all interactions; ``recommender.ml.graph``), 0 when not given. Computed in blocks
    of pairs so memory stays bounded; every row depends only on its own pair, so a
    pair's row is identical in any batch.
    """
    viewer_idx = np.asarray(viewer_idx, dtype=np.int64)
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    if viewer_idx.shape != cand_idx.shape or viewer_idx.ndim != 1:
        raise ValueError("viewer_idx and cand_idx must be 1-d and of equal length")
    if (taste is None) != (appeal is None):
        raise ValueError("pass both taste and appeal, or neither")
    if taste is not None and not (taste.shape[0] == appeal.shape[0] == store.n):
        raise ValueError("taste and appeal must have one row per store member")
    p = viewer_idx.shape[0]
    if neighbours is None:
        neighbours = np.zeros((p, len(NEIGHBOUR_COLUMNS)), dtype=np.float32)
    neighbours = np.asarray(neighbours, dtype=np.float32)
    if neighbours.shape != (p, len(NEIGHBOUR_COLUMNS)):
        raise ValueError(f"neighbours must be [p, {len(NEIGHBOUR_COLUMNS)}]")
    out = np.empty((p, len(PAIR_FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, p, PAIR_CHUNK):
        stop = min(start + PAIR_CHUNK, p)
        block = slice(start, stop)
        out[block] = _pair_block(
            store,
            viewer_idx[block],
            cand_idx[block],
            taste,
            appeal,
            neighbours[block],
        )
    return out


def _pair_block(store, v, c, taste, appeal, neighbours) -> np.ndarray:
    age_v, age_c = store.age[v], store.age[c]
    years_v, years_c = np.floor(age_v), np.floor(age_c)
    viewer_violation = np.maximum(store.min_age[v] - years_c, 0) + np.maximum(
        years_c - store.max_age[v], 0
    )
    cand_violation = np.maximum(store.min_age[c] - years_v, 0) + np.maximum(
        years_v - store.max_age[c], 0
    )
    one = np.uint8(1)
    viewer_seeks = (store.seeking_mask[v] >> store.gender[c].astype(np.uint8)) & one
    cand_seeks = (store.seeking_mask[c] >> store.gender[v].astype(np.uint8)) & one

    distance = haversine_km(store.lat[v], store.lon[v], store.lat[c], store.lon[c])
    distance = np.where(np.isnan(distance), UNKNOWN_DISTANCE_KM, distance)
    within = (distance <= store.max_distance_km[v]) & (
        distance <= store.max_distance_km[c]
    )

    bits_v, bits_c = store.interest_bits[v], store.interest_bits[c]
    overlap = np.bitwise_count(bits_v & bits_c).sum(axis=1, dtype=np.int64)
    union = np.bitwise_count(bits_v | bits_c).sum(axis=1, dtype=np.int64)
    jaccard = overlap / np.maximum(union, 1)

    if taste is None:
        affinity = reciprocal = np.zeros(v.shape[0], dtype=np.float32)
    else:
        affinity = np.einsum("ij,ij->i", taste[v], appeal[c])
        reciprocal = np.einsum("ij,ij->i", taste[c], appeal[v])

    reverse_keys = store.user_id[c] * KEY_SHIFT + store.user_id[v]
    liked_viewer = sorted_positions(store.liked_keys, reverse_keys) >= 0

    columns = (
        np.abs(age_v - age_c),
        viewer_violation,
        cand_violation,
        viewer_seeks,
        cand_seeks,
        distance,
        within,
        jaccard,
        overlap,
        affinity,
        reciprocal,
        liked_viewer,
        store.like_rate_received[c],
        np.log1p(store.likes_received_recent[c]),
        store.like_rate_given[c],
        store.like_rate_given[v],
        store.recency_days[c],
        store.account_age_days[c],
        np.log1p(store.likes_received[c]),
        np.log1p(store.received_recent[c]),
        np.log1p(store.n_given[c]),
        np.log1p(store.n_given[v]),
        np.log1p(np.abs(store.created_ts[v] - store.created_ts[c]) / SECONDS_PER_DAY),
        *neighbours.T,
    )
    return np.stack([np.asarray(x, dtype=np.float32) for x in columns], axis=1)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """float64 [p] great-circle distances (km) between points given in degrees
    (float arrays [p]); nan where a coordinate is nan."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(x, dtype=np.float64)) for x in (lat1, lon1, lat2, lon2)
    )
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
