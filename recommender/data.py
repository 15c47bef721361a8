"""Django adapter of the ML library: database rows ⇄ ``recommender.ml`` arrays.

Loaders read members and interactions into ``MemberArrays`` / ``InteractionArrays``
without building a model instance per row (``values_list`` in chunks; on PostgreSQL
the interactions come through one binary ``COPY``, which parses straight into numpy
at tens of millions of rows a minute). Writers put feature rows and embedding vectors
back in bulk (``COPY`` on PostgreSQL, batched ``bulk_create`` elsewhere).

Stored embedding layout: ``UserEmbedding.vector`` holds one member's ``taste`` then
``appeal`` vector, float32 little-endian, ``2 * dim`` values (see
:func:`embedding_pack`). Serving queries the index with ``taste`` and the index holds
``appeal`` vectors, so both halves are needed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator

import numpy as np
from django.db import connection, connections, router
from django.db.models import Exists, OuterRef, Q

from accounts.models import Profile, User
from interactions.models import Interaction, InteractionHistory
from recommender.ml.data import (
    GENDER_CODES,
    KIND_CODES,
    InteractionArrays,
    MemberArrays,
)
from recommender.models import RecommendationLog, UserEmbedding, UserFeatures

CHUNK_ROWS = 20_000
BULK_BATCH_SIZE = 5_000
_EPOCH_DAY = dt.date(1970, 1, 1)
_ALL_GENDERS_MASK = (1 << len(GENDER_CODES)) - 1
# PostgreSQL binary COPY: 11-byte signature, int32 flags, int32 header-extension size.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER_SIZE = 19


# --- members -----------------------------------------------------------------------


def members_load(
    *, joined_before: dt.datetime | None = None, user_ids: Iterable[int] | None = None
) -> MemberArrays:
    """Every member (a user with a profile) as ``MemberArrays``, sorted by user id.

    ``joined_before`` keeps only profiles created before that time (a training run's
    data cutoff); ``user_ids`` only those members. Missing preferences mean the
    defaults: every gender, ages 18-99, any distance.
    """
    profiles = Profile.objects.order_by("user_id")
    if joined_before is not None:
        profiles = profiles.filter(created_at__lt=joined_before)
    if user_ids is not None:
        profiles = profiles.filter(user_id__in=list(user_ids))
    rows = profiles.values_list(
        "user_id",
        "birth_date",
        "gender",
        "latitude",
        "longitude",
        "interests",
        "created_at",
        "last_active_at",
        "is_visible",
        "user__preferences__seeking_genders",
        "user__preferences__min_age",
        "user__preferences__max_age",
        "user__preferences__max_distance_km",
    )
    columns: list[list] = [[] for _ in range(13)]
    for row in rows.iterator(chunk_size=CHUNK_ROWS):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    (
        user_id,
        birth_date,
        gender,
        latitude,
        longitude,
        interests,
        created_at,
        last_active_at,
        is_visible,
        seeking,
        min_age,
        max_age,
        max_distance,
    ) = columns
    nan = float("nan")
    return MemberArrays(
        user_id=np.asarray(user_id, dtype=np.int64),
        birth_day=np.asarray(
            [(day - _EPOCH_DAY).days for day in birth_date], dtype=np.int32
        ),
        gender=np.asarray([GENDER_CODES[g] for g in gender], dtype=np.int8),
        lat=np.asarray([nan if v is None else v for v in latitude], dtype=np.float32),
        lon=np.asarray([nan if v is None else v for v in longitude], dtype=np.float32),
        interests=[_interest_list(value) for value in interests],
        created_ts=np.asarray([t.timestamp() for t in created_at], dtype=np.float64),
        last_active_ts=np.asarray(
            [nan if t is None else t.timestamp() for t in last_active_at],
            dtype=np.float64,
        ),
        is_visible=np.asarray(is_visible, dtype=bool),
        seeking_mask=np.asarray([_seeking_mask(s) for s in seeking], dtype=np.uint8),
        min_age=np.asarray([18 if v is None else v for v in min_age], dtype=np.int16),
        max_age=np.asarray([99 if v is None else v for v in max_age], dtype=np.int16),
        max_distance_km=np.asarray(
            [np.inf if v is None else v for v in max_distance], dtype=np.float32
        ),
    )


def _interest_list(value) -> list[str]:
    if not isinstance(value, list):
        return []
    return [" ".join(str(item).split()).lower() for item in value if str(item).strip()]


def _seeking_mask(genders) -> int:
    if not genders:
        return _ALL_GENDERS_MASK
    mask = 0
    for gender in genders:
        code = GENDER_CODES.get(gender)
        if code is not None:
            mask |= 1 << code
    return mask or _ALL_GENDERS_MASK


# --- interactions ------------------------------------------------------------------


def interactions_load(
    *, created_before: dt.datetime | None = None, with_history: bool = False
) -> InteractionArrays:
    """Every pair's verdict, in no particular order: ``actor``/``target`` user ids,
    ``kind`` codes, ``ts`` seconds (when that verdict was given).

    Without ``created_before``, the current verdicts. With it, the verdicts as they
    stood just before that time: a pair whose member changed their mind since
    counts with the verdict it had then (from ``InteractionHistory``), a pair first
    rated since not at all.

    ``with_history`` adds the verdicts replaced (before ``created_before``) by a
    change of mind, and ``until``: when each verdict was replaced, +inf for those
    standing at ``created_before`` (or now). A training run cuts that history at its
    own times (``InteractionArrays.before``/``between``), so an earlier window sees
    the verdict a pair had then. Without it, ``until`` is None.
    """
    if connection.vendor == "postgresql":
        return _interactions_copy(created_before, with_history=with_history)
    return _interactions_orm(created_before, with_history=with_history)


def _interactions_orm(
    created_before: dt.datetime | None, *, with_history: bool
) -> InteractionArrays:
    current = Interaction.objects.order_by().values_list(
        "actor_id", "target_id", "kind", "created_at"
    )
    replaced = InteractionHistory.objects.order_by().values_list(
        "interaction__actor_id",
        "interaction__target_id",
        "kind",
        "created_at",
        "replaced_at",
    )
    if created_before is not None:
        current = current.filter(created_at__lt=created_before)
        replaced = replaced.filter(created_at__lt=created_before)
        if not with_history:  # only the verdicts standing at the cut
            replaced = replaced.filter(replaced_at__gte=created_before)
    elif not with_history:
        replaced = replaced.none()
    rows = itertools.chain(
        ((a, t, k, c, None) for a, t, k, c in current.iterator(chunk_size=CHUNK_ROWS)),
        replaced.iterator(chunk_size=CHUNK_ROWS),
    )
    actor, target, kind, ts, until = [], [], [], [], []
    for a, t, k, c, r in rows:
        actor.append(a)
        target.append(t)
        kind.append(KIND_CODES[k])
        ts.append(c.timestamp())
        standing = r is None or (created_before is not None and r >= created_before)
        until.append(np.inf if standing else r.timestamp())
    return InteractionArrays(
        actor=np.asarray(actor, dtype=np.int64),
        target=np.asarray(target, dtype=np.int64),
        kind=np.asarray(kind, dtype=np.int8),
        ts=np.asarray(ts, dtype=np.float64),
        until=np.asarray(until, dtype=np.float64) if with_history else None,
    )


def impressions_load(
    *, created_after: dt.datetime, created_before: dt.datetime | None = None
) -> InteractionArrays:
    """The impressions (``RecommendationLog``) of a time window as interaction
    arrays: ``actor`` = the member shown, ``target`` = whom they were shown,
    ``kind`` 0 (ignored), ``ts`` the showing; one row per showing. The ranking
    model's training takes those left without a verdict as negatives."""
    rows = RecommendationLog.objects.order_by().filter(created_at__gte=created_after)
    if created_before is not None:
        rows = rows.filter(created_at__lt=created_before)
    actor, target, ts = [], [], []
    for a, t, c in rows.values_list("user_id", "shown_user_id", "created_at").iterator(
        chunk_size=CHUNK_ROWS
    ):
        actor.append(a)
        target.append(t)
        ts.append(c.timestamp())
    return InteractionArrays(
        actor=np.asarray(actor, dtype=np.int64),
        target=np.asarray(target, dtype=np.int64),
        kind=np.zeros(len(actor), dtype=np.int8),
        ts=np.asarray(ts, dtype=np.float64),
    )


# Fixed-width rows (no NULLs): int16 field count, then (int32 length, value) per field.
_INTERACTION_FIELDS = [
    ("actor_len", ">i4"),
    ("actor", ">i8"),
    ("target_len", ">i4"),
    ("target", ">i8"),
    ("kind_len", ">i4"),
    ("kind", ">i2"),
    ("ts_len", ">i4"),
    ("ts", ">f8"),
]
_INTERACTION_ROW = np.dtype([("fields", ">i2"), *_INTERACTION_FIELDS])
_INTERACTION_HISTORY_ROW = np.dtype(
    [("fields", ">i2"), *_INTERACTION_FIELDS, ("until_len", ">i4"), ("until", ">f8")]
)


def _interactions_copy(
    created_before: dt.datetime | None, *, with_history: bool
) -> InteractionArrays:
    kind_case = " ".join(
        f"WHEN '{name}' THEN {code}" for name, code in KIND_CODES.items()
    )
    table = connection.ops.quote_name(Interaction._meta.db_table)
    history = connection.ops.quote_name(InteractionHistory._meta.db_table)

    def columns(verdict: str) -> str:
        """The pair (``i``) and the kind and time of a verdict (``i`` itself, or a
        replaced one ``h``): the fields of ``_INTERACTION_ROW``."""
        return (
            "i.actor_id::int8, i.target_id::int8, "
            f"(CASE {verdict}.kind {kind_case} ELSE -1 END)::int2, "
            f"extract(epoch FROM {verdict}.created_at)::float8"
        )

    cut = created_before is not None
    current = f"SELECT {columns('i')}"
    replaced = f"SELECT {columns('h')}"
    if with_history:
        replaced_at = "extract(epoch FROM h.replaced_at)::float8"
        if cut:  # replaced since the cut: standing at it
            replaced_at = (
                f"CASE WHEN h.replaced_at < %(cut)s THEN {replaced_at} "
                "ELSE 'Infinity'::float8 END"
            )
        current += ", 'Infinity'::float8"
        replaced += f", {replaced_at}"
    current += f" FROM {table} i"
    replaced += f" FROM {history} h JOIN {table} i ON i.id = h.interaction_id"
    if cut:
        current += " WHERE i.created_at < %(cut)s"
        replaced += " WHERE h.created_at < %(cut)s"
        if not with_history:  # only the verdicts standing at the cut
            replaced += " AND h.replaced_at >= %(cut)s"
    # Then the verdicts replaced by a change of mind (InteractionHistory).
    select = f"{current} UNION ALL {replaced}" if with_history or cut else current
    query = f"COPY ({select}) TO STDOUT (FORMAT binary)"
    buffer = bytearray()
    # The primary, or the read replica inside config.db_routers.replica_reads().
    database = connections[router.db_for_read(Interaction)]
    database.ensure_connection()
    with database.connection.cursor() as cursor:
        with cursor.copy(query, {"cut": created_before} if cut else None) as copy:
            for block in copy:
                buffer += block
    if not buffer.startswith(_COPY_HEADER):
        raise RuntimeError("Unexpected PostgreSQL COPY output.")
    extension = int.from_bytes(buffer[15:19], "big")
    start = _COPY_HEADER_SIZE + extension
    body = memoryview(buffer)[start : len(buffer) - 2]  # trailer: int16 -1
    row = _INTERACTION_HISTORY_ROW if with_history else _INTERACTION_ROW
    rows = np.frombuffer(body, dtype=row)
    kind = rows["kind"].astype(np.int8)
    known = kind >= 0
    return InteractionArrays(
        actor=rows["actor"][known].astype(np.int64),
        target=rows["target"][known].astype(np.int64),
        kind=kind[known],
        ts=rows["ts"][known].astype(np.float64),
        until=rows["until"][known].astype(np.float64) if with_history else None,
    )


# --- feature store -----------------------------------------------------------------


def user_features_replace(
    *,
    feature_version: str,
    rows: Iterable[tuple[int, dict]],
    computed_at: dt.datetime,
) -> int:
    """Replace every ``UserFeatures`` row of ``feature_version`` with ``rows``.

    Call inside a transaction: readers keep seeing the previous rows until commit.
    Rows of members deleted since ``rows`` were computed are dropped. Returns the
    number of rows kept.
    """
    UserFeatures.objects.filter(feature_version=feature_version).delete()
    count = _user_features_write(
        feature_version=feature_version, rows=rows, computed_at=computed_at
    )
    return count - _rows_of_deleted_members_drop(
        UserFeatures.objects.filter(feature_version=feature_version)
    )


def _user_features_write(
    *, feature_version: str, rows: Iterable[tuple[int, dict]], computed_at
) -> int:
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(UserFeatures._meta.db_table)
        count = 0
        with connection.connection.cursor() as cursor:
            with cursor.copy(
                f"COPY {table} (user_id, feature_version, feature_set, computed_at) "
                "FROM STDIN"
            ) as copy:
                for user_id, features in rows:
                    copy.write_row(
                        (user_id, feature_version, json.dumps(features), computed_at)
                    )
                    count += 1
        return count
    count = 0
    for batch in _batched(rows, BULK_BATCH_SIZE):
        UserFeatures.objects.bulk_create(
            UserFeatures(
                user_id=user_id,
                feature_version=feature_version,
                feature_set=features,
                computed_at=computed_at,
            )
            for user_id, features in batch
        )
        count += len(batch)
    return count


# --- embeddings --------------------------------------------------------------------


def embedding_pack(taste: np.ndarray, appeal: np.ndarray) -> np.ndarray:
    """float32 [n, 2d]: each member's taste vector followed by their appeal vector."""
    return np.ascontiguousarray(np.concatenate([taste, appeal], axis=1), dtype="<f4")


def embedding_split(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`embedding_pack`: (taste, appeal), float32 [n, d] each."""
    dim = vectors.shape[1] // 2
    return (
        np.ascontiguousarray(vectors[:, :dim], dtype=np.float32),
        np.ascontiguousarray(vectors[:, dim:], dtype=np.float32),
    )


def user_embeddings_write(
    *, model_id: int, user_ids: np.ndarray, vectors: np.ndarray, created_at: dt.datetime
) -> int:
    """Insert one ``UserEmbedding`` per member of an embedding version.

    ``user_ids`` int64 [n], ``vectors`` float32 [n, D] (:func:`embedding_pack`).
    Call inside the transaction that registers the version. Rows of members deleted
    since training read them are dropped; returns the number of rows kept.
    """
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    ids = user_ids.tolist()
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(UserEmbedding._meta.db_table)
        with connection.connection.cursor() as cursor:
            with cursor.copy(
                f"COPY {table} (user_id, model_id, vector, created_at) FROM STDIN"
            ) as copy:
                for user_id, vector in zip(ids, vectors, strict=True):
                    copy.write_row((user_id, model_id, vector.tobytes(), created_at))
    else:
        for start in range(0, len(ids), BULK_BATCH_SIZE):
            stop = start + BULK_BATCH_SIZE
            UserEmbedding.objects.bulk_create(
                UserEmbedding(
                    user_id=user_id, model_id=model_id, vector=vector.tobytes()
                )
                for user_id, vector in zip(
                    ids[start:stop], vectors[start:stop], strict=True
                )
            )
    return len(ids) - _rows_of_deleted_members_drop(
        UserEmbedding.objects.filter(model_id=model_id)
    )


def _rows_of_deleted_members_drop(queryset) -> int:
    """Delete the rows just written (in the caller's transaction) for members whose
    account was deleted after training read its data: their foreign key would
    refuse the whole write at commit and fail the run. Returns how many."""
    deleted, _ = queryset.filter(
        ~Exists(User.objects.filter(pk=OuterRef("user_id")))
    ).delete()
    return deleted


def user_embeddings_load(*, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors of an embedding version: (user_ids int64 [n] ascending,
    vectors float32 [n, D])."""
    ids: list[int] = []
    blobs: list[bytes] = []
    rows = (
        UserEmbedding.objects.filter(model_id=model_id)
        .order_by("user_id")
        .values_list("user_id", "vector")
    )
    for user_id, vector in rows.iterator(chunk_size=CHUNK_ROWS):
        ids.append(user_id)
        blobs.append(bytes(vector))
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    width = len(blobs[0]) // 4
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), width)
    return np.asarray(ids, dtype=np.int64), vectors.astype(np.float32)


def members_without_embedding(*, model_id: int) -> list[int]:
    """User ids of members with no vector under ``model_id`` (joined since training)."""
    return list(
        Profile.objects.filter(~Q(user__embeddings__model_id=model_id))
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )


def _batched(rows: Iterable, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
