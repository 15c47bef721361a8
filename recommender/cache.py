"""The per-user recommendation cache: one key per member, dropped when it goes stale."""

from django.core.cache import cache


def recommendations_cache_key(*, user_id: int) -> str:
    return f"recs:{user_id}"


def recommendations_cache_invalidate(*, user_id: int) -> None:
    """Forget the cached recommendations of ``user_id``.

    Called after commit whenever something that shapes the member's recommendations
    changes (an interaction, the profile, the preferences).
    """
    cache.delete(recommendations_cache_key(user_id=user_id))
