"""Serving recommendations: answer a member's request and log its impressions."""

from __future__ import annotations

import logging
from datetime import datetime

logger = logging.getLogger(__name__)


def recommendations_serve(*, user, limit: int, request_id: str | None = None):
    """Answer a member's recommendation request and log its impressions.

    The answer comes from ``recommender.selectors.recommendations_get`` (cache or
    engine); the impressions are handed to :func:`impressions_log`, which never fails
    the request.
    """
    from recommender.selectors import recommendations_get

    page = recommendations_get(user=user, limit=limit, request_id=request_id)
    impressions_log(user_id=user.pk, page=page)
    return page


def impressions_log(*, user_id: int, page) -> None:
    """Record one impression per result of ``page`` (a ``RecommendationPage``), off
    the request's path.

    With Redis (and a worker and beat), the response's impressions are one ``RPUSH``
    of one blob onto the buffer that the ``impressions_flush`` beat task drains in
    bulk (``recommender.impressions``). In embedded mode (eager Celery) the
    ``impressions_write`` task runs in-process. If Redis cannot take the blob (or
    the task cannot be queued), the rows are inserted directly; if that fails too,
    they are lost and logged: an impression is never worth a failed request.
    """
    from recommender import impressions as buffer

    if buffer.buffer_enabled():
        blob = buffer.impressions_pack(user_id=user_id, page=page)
        if blob is None:
            return
        try:
            buffer.impressions_push(blob=blob, user_id=user_id)
            return
        except Exception:  # noqa: BLE001 - Redis down or hung: write directly
            logger.warning(
                "impressions not buffered; writing %d impressions directly",
                len(page.results),
                exc_info=True,
            )
        rows = buffer.impressions_unpack(blob)
    else:
        rows = _impressions_rows(user_id=user_id, page=page)
        if not rows:
            return
        from recommender.tasks import impressions_write as impressions_write_task

        try:
            # retry=False: with the broker down, fail now instead of retrying while
            # the member waits.
            impressions_write_task.apply_async(
                kwargs={"impressions": rows}, retry=False
            )
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


def _impressions_rows(*, user_id: int, page) -> list[dict]:
    return [
        {
            "request_id": page.request_id,
            "user_id": user_id,
            "shown_user_id": result["user_id"],
            "position": result["rank"],
            "score": result["score"],
            "sources": list(result["sources"]),
            "strategy": page.strategy,
            "model_versions": page.model_versions,
            "experiment": page.experiment_label,
            "created_at": page.created_at.isoformat(),
        }
        for result in page.results
    ]


def impressions_write(*, impressions: list[dict]) -> int:
    """Insert impressions (dicts as built by :func:`impressions_log`) in one bulk
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
        RecommendationLog(
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
        for row in impressions
        if row["user_id"] in existing and row["shown_user_id"] in existing
    ]
    RecommendationLog.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
