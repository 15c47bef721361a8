"""Impressions, their whole life: what a served page records, how it travels (the
Redis buffer, the Celery task or a direct insert), and how it lands in
``RecommendationLog``.

One row format end to end: :func:`impression_rows` turns a served page into rows
(plain dicts, JSON-ready: they are also the ``impressions_write`` task's payload), the
buffer's blob is a compact encoding of the same rows, packed straight from the page
(:func:`impressions_pack`) and read back as rows (:func:`impressions_unpack`), and
:func:`impressions_write` inserts them.

:func:`impressions_log` is the request path's entry. With Redis (and a worker and
beat), a response costs one ``RPUSH`` of one JSON blob (its page-level fields once,
then one short item per result) on the process's Redis client
(``recommender.cache.redis_client``), whose connection pool is reused by every
request of the process: no Celery message, no kombu client per
publish. In embedded mode (eager Celery) the ``recommender.tasks.impressions_write``
task runs in-process; it is looked up by name, so this module imports no task.

Until the drain has written them, a member's last few pages also sit under a
short-lived per-member key (:func:`impression_find_recent`): a like that follows its
impression within the flush interval still finds the request id, arm, source and
position to put in its context. Same round trip (one Lua script does both).

The drain (:func:`impressions_drain`, the ``impressions_flush`` beat task) runs one
drainer at a time (a Redis lock, ``SET NX PX``): it reads the head of the list
(``LRANGE``), inserts its rows in one transaction, and only after the commit trims
what it read (``LTRIM``, done only while it still holds the lock). A drainer that dies
between the commit and the trim leaves the blobs in the list; the next drain inserts
them again and the unique constraint on ``(request_id, user, position)``
(``bulk_create(ignore_conflicts=True)``) drops the rows already there, so nothing is
lost and nothing is counted twice.
"""

import json
import logging
import time
import uuid
from datetime import datetime

from django.conf import settings
from django.db import transaction

from recommender.cache import redis_client, redis_script

logger = logging.getLogger(__name__)

# Blobs read per transaction (a page holds at most 100 results).
DRAIN_BATCH = 500
# A drain stops looping after this long; the next beat tick carries on.
DRAIN_BUDGET_SECONDS = 10.0
# The drain lock outlives a drain that hangs (e.g. on the database) by this much.
LOCK_MILLISECONDS = 60_000
# Pages kept per member for the context of an interaction that follows its
# impression before the drain (every few seconds) wrote it, and for how long.
RECENT_PAGES = 5
RECENT_SECONDS = 120
# The embedded-mode write, by name (see ``recommender.tasks``).
WRITE_TASK = "recommender.tasks.impressions_write"

# Trim only while the lock is still ours: a drainer whose lock expired (and was
# taken by another) must not cut blobs it has not written.
_TRIM_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
    return 1
end
return 0
"""
# RPUSH onto the buffer and, with a second key, LPUSH onto the member's recent pages,
# kept to the last ARGV[2] for ARGV[3] seconds: one reply to parse, not four.
_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
if KEYS[2] then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return 1
"""
_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def buffer_enabled() -> bool:
    """Whether impressions go through the Redis list: only with Redis and a real
    worker and beat to drain it (eager Celery = embedded mode: written in-process)."""
    from config.celery import app

    return bool(settings.REDIS_URL) and not app.conf.task_always_eager


def _prefix() -> str:
    return settings.CACHES["default"].get("KEY_PREFIX") or "kindred"


def queue_key() -> str:
    return f"{_prefix()}:impressions:queue"


def lock_key() -> str:
    return f"{_prefix()}:impressions:drain-lock"


def recent_key(user_id: int) -> str:
    return f"{_prefix()}:impressions:recent:{user_id}"


def _recent_seconds() -> int:
    return int(
        getattr(settings, "KINDRED", {}).get(
            "IMPRESSIONS_RECENT_SECONDS", RECENT_SECONDS
        )
    )


# --- rows: what a served page records -----------------------------------------------


def impression_rows(*, user_id: int, page) -> list[dict]:
    """One row per result of ``page`` (a ``RecommendationPage``) shown to
    ``user_id``: the one format every path carries (task payload, buffer blob,
    recent pages) and :func:`impressions_write` inserts."""
    # The request path: the page's fields are read once, not once per result.
    request_id, strategy = page.request_id, page.strategy
    model_versions, experiment = page.model_versions, page.experiment_label
    created_at = page.created_at.isoformat()
    return [
        {
            "request_id": request_id,
            "user_id": user_id,
            "shown_user_id": result["user_id"],
            "position": result["rank"],
            "score": result["score"],
            "sources": list(result["sources"]),
            "strategy": strategy,
            "model_versions": model_versions,
            "experiment": experiment,
            "created_at": created_at,
        }
        for result in page.results
    ]


def impression_from_row(row: dict):
    """The (unsaved) ``RecommendationLog`` of a row."""
    from recommender.models import RecommendationLog

    return RecommendationLog(
        request_id=row["request_id"],
        user_id=row["user_id"],
        shown_user_id=row["shown_user_id"],
        position=row["position"],
        score=row["score"],
        sources=row["sources"],
        strategy=row["strategy"],
        model_versions=row["model_versions"],
        experiment=row["experiment"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )


# --- the request path ---------------------------------------------------------------


def impressions_log(*, user_id: int, page) -> None:
    """Record one impression per result of ``page`` (a ``RecommendationPage``), off
    the request's path.

    With Redis (and a worker and beat), the response's rows are one ``RPUSH`` of one
    blob onto the buffer that the ``impressions_flush`` beat task drains in bulk. In
    embedded mode (eager Celery) the ``impressions_write`` task runs in-process. If
    Redis cannot take the blob (or the task cannot be queued), the rows are inserted
    directly; if that fails too, they are lost and logged: an impression is never
    worth a failed request.
    """
    if not page.results:
        return
    if buffer_enabled():
        try:
            # The hot path packs straight from the page: no row dicts to build and
            # throw away (they are built below only when Redis is away).
            blob = impressions_pack(user_id=user_id, page=page)
            impressions_push(blob=blob, user_id=user_id)
            return
        except Exception:  # noqa: BLE001 - Redis down or hung: write directly
            logger.warning(
                "impressions not buffered; writing %d impressions directly",
                len(page.results),
                exc_info=True,
            )
        rows = impression_rows(user_id=user_id, page=page)
    else:
        rows = impression_rows(user_id=user_id, page=page)
        try:
            # retry=False: with the broker down, fail now instead of retrying while
            # the member waits.
            _write_task().apply_async(kwargs={"impressions": rows}, retry=False)
            return
        except Exception:  # noqa: BLE001 - any broker failure: write directly instead
            logger.warning(
                "impressions task not queued; writing %d impressions directly",
                len(rows),
                exc_info=True,
            )
    try:
        impressions_write(impressions=rows)
    except Exception:  # noqa: BLE001
        logger.exception("%d impressions of %s lost", len(rows), page.request_id)


def _write_task():
    """The ``impressions_write`` task, by name from the Celery app's registry (a web
    process may not have imported the apps' task modules yet: autodiscovery then)."""
    from config.celery import app

    if WRITE_TASK not in app.tasks:
        app.autodiscover_tasks(force=True)
    return app.tasks[WRITE_TASK]


def impressions_write(*, impressions: list[dict]) -> int:
    """Insert impressions (rows as built by :func:`impression_rows`) in one bulk
    statement; returns how many were offered (rows already there are not counted
    apart).

    Impressions of members deleted in the meantime are skipped, so one deleted
    account cannot make a whole batch fail for ever. Rows already there (same
    request id, member and position: a buffer drained again after a crash, or a
    client that reused its X-Request-ID) are ignored, never duplicated.
    """
    from accounts.models import User
    from recommender.models import RecommendationLog

    user_ids = {row["user_id"] for row in impressions} | {
        row["shown_user_id"] for row in impressions
    }
    existing = set(User.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    rows = [
        impression_from_row(row)
        for row in impressions
        if row["user_id"] in existing and row["shown_user_id"] in existing
    ]
    RecommendationLog.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# --- the Redis buffer ---------------------------------------------------------------


def impressions_pack(*, user_id: int, page) -> bytes:
    """The impressions of ``page`` (a ``RecommendationPage`` with results) shown to
    ``user_id`` as one compact JSON blob: the page-level fields once, then one short
    item per result. :func:`impressions_unpack` reads it back as exactly the rows
    :func:`impression_rows` builds."""
    return json.dumps(
        {
            "r": page.request_id,
            "u": user_id,
            "s": page.strategy,
            "m": page.model_versions,
            "e": page.experiment_label,
            "t": page.created_at.isoformat(),
            "i": [
                [
                    result["user_id"],
                    result["rank"],
                    result["score"],
                    list(result["sources"]),
                ]
                for result in page.results
            ],
        },
        separators=(",", ":"),
    ).encode()


def impressions_unpack(blob: bytes) -> list[dict]:
    """The rows of a blob, as :func:`impression_rows` built them."""
    data = json.loads(blob)
    return [_unpacked_row(data, item) for item in data["i"]]


def _unpacked_row(data: dict, item: list) -> dict:
    shown_user_id, position, score, sources = item
    return {
        "request_id": data["r"],
        "user_id": data["u"],
        "shown_user_id": shown_user_id,
        "position": position,
        "score": score,
        "sources": sources,
        "strategy": data["s"],
        "model_versions": data["m"],
        "experiment": data["e"],
        "created_at": data["t"],
    }


def impressions_push(*, blob: bytes, user_id: int | None = None) -> None:
    """Append a blob to the buffer and, with ``user_id``, to that member's recent
    pages (one round trip, one script); raises if Redis is unreachable."""
    keys = [queue_key()] if user_id is None else [queue_key(), recent_key(user_id)]
    redis_script(_PUSH)(keys=keys, args=[blob, RECENT_PAGES, _recent_seconds()])


def impression_find_recent(
    *, user_id: int, shown_user_id: int, request_id: str | None = None
) -> dict | None:
    """The latest of ``user_id``'s recent pages (pushed, maybe not drained yet) that
    showed ``shown_user_id`` (the page ``request_id`` when given), as a row, or
    ``None``. Raises if Redis is unreachable."""
    for blob in redis_client().lrange(recent_key(user_id), 0, -1):  # newest first
        try:
            data = json.loads(blob)
            if request_id is not None and data["r"] != request_id:
                continue
            for item in data["i"]:
                if item[0] == shown_user_id:
                    return _unpacked_row(data, item)
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable recent impressions blob skipped: %r", blob[:64])
    return None


def impressions_forget_recent(*, user_id: int) -> None:
    """Drop ``user_id``'s recent pages (a deleted account). Best effort: the key
    expires by itself within ``IMPRESSIONS_RECENT_SECONDS``, and pages still in
    the buffer are skipped by the drain once the member is gone."""
    if not buffer_enabled():
        return
    try:
        redis_client().delete(recent_key(user_id))
    except Exception:  # noqa: BLE001 - Redis away: the key expires on its own
        logger.warning("recent impressions of %s left to expire", user_id)


def _after_commit_before_trim() -> None:
    """A seam for the tests: a drainer killed between its commit and its trim."""


def impressions_drain(
    *, batch: int = DRAIN_BATCH, budget_seconds: float = DRAIN_BUDGET_SECONDS
) -> int:
    """Move buffered impressions into ``RecommendationLog``; returns the rows written
    (0 when another drainer holds the lock)."""
    client = redis_client()
    trim = client.register_script(_TRIM_IF_OWNER)
    release = client.register_script(_RELEASE_IF_OWNER)
    token = uuid.uuid4().hex
    if not client.set(lock_key(), token, nx=True, px=LOCK_MILLISECONDS):
        logger.info("impressions drain skipped: another drainer holds the lock")
        return 0
    written = 0
    deadline = time.monotonic() + budget_seconds
    try:
        while True:
            blobs = client.lrange(queue_key(), 0, batch - 1)
            if not blobs:
                break
            rows = []
            for blob in blobs:
                try:
                    rows.extend(impressions_unpack(blob))
                except (ValueError, KeyError, TypeError):
                    # One bad blob must not block the queue for ever.
                    logger.exception("unreadable impressions blob dropped: %r", blob)
            with transaction.atomic():
                written += impressions_write(impressions=rows)
            _after_commit_before_trim()
            if not trim(keys=[lock_key(), queue_key()], args=[token, len(blobs)]):
                logger.warning("impressions drain lost its lock; not trimming")
                break
            if len(blobs) < batch or time.monotonic() >= deadline:
                break
    finally:
        release(keys=[lock_key()], args=[token])
    return written
