"""The per-user recommendation cache: one key per member, dropped when it goes stale."""

import logging

from django.core.cache import cache

logger = logging.getLogger(__name__)


def recommendations_cache_key(*, user_id: int) -> str:
    return f"recs:{user_id}"


def recommendations_cache_invalidate(*, user_id: int) -> None:
    """Forget the cached recommendations of ``user_id``.

    Called after commit whenever something that shapes the member's recommendations
    changes (an interaction, the profile, the preferences).
    """
    try:
        cache.delete(recommendations_cache_key(user_id=user_id))
    except Exception:  # noqa: BLE001 - the cache is optional; its TTL bounds staleness
        logger.warning(
            "recommendation cache unreachable; entry of %s left to expire",
            user_id,
            exc_info=True,
        )
