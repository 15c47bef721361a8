"""A recommendation cache hit in three round trips instead of four (issue 16).

A hit used to ask PostgreSQL for the token (authentication), Redis for the member's
entry, PostgreSQL again to re-check the page (``selectors._still_showable``, issue
13) and Redis for the impressions. On ``GET /api/v1/recommendations/`` with a
token (``recommender.api.authentication``) it now asks:

1. Redis, one script: the member the token belongs to, from a pointer written the
   last time the token authenticated there, and that member's cache entry;
2. PostgreSQL, one query: the token with its member, read as authentication reads
   them (``accounts.selectors.auth_token_get_with``), and which members of the
   page the pointer's member may still be shown (``recommendable_ids_query``);
3. Redis: the impressions, as before.

The pointer is a hint, never a credential: the page is served only when the query
found the token, the token belongs to the pointer's member and authentication
accepts it (member active, token within its lifetime and newer than the password).
In every other case (no pointer or a stale one, no current entry, a token refused,
Redis failing) the request is authenticated and answered the ordinary way, with
the ordinary answers, 401s included. Pointers are keyed by a hash of the token:
Redis never holds a usable token.
"""

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from accounts.selectors import auth_token_accepted, auth_token_get_with
from recommender.cache import (
    REDIS_BACKEND,
    JSONSerializer,
    recommendations_cache,
    recommendations_cache_key,
    redis_client,
    redis_script,
)
from recommender.impressions import impressions_log
from recommender.selectors import (
    RecommendationPage,
    recommendable_ids_query,
    recommendations_cached_page,
    recommendations_entry_is_current,
    recommendations_page_ids,
)

# A pointer lives this long after the token last authenticated the ordinary way.
POINTER_SECONDS = 24 * 3600
# After Redis failed here, the process leaves the fast path alone this long: a hung
# Redis then costs one timeout more than the ordinary path's every few seconds per
# process, not on every request.
PAUSE_SECONDS = 5.0

# The pointer, then the entry of the member it names: the entry's key is the
# member's cache key with the id put in place of _MEMBER (ARGV: the text around it).
_READ = """
local member = redis.call('GET', KEYS[1])
if not member then
    return false
end
return {member, redis.call('GET', ARGV[1] .. member .. ARGV[2])}
"""
_MEMBER = "{member}"
_serializer = JSONSerializer()
_paused_until = 0.0


@dataclass(frozen=True)
class CheckedHit:
    """A cache hit whose token was checked by the query that re-checked its page
    (for the request's ``?limit=``, parsed as the view parses it)."""

    token: Token
    page: RecommendationPage


def recommendations_hit_get(
    *, key: str, limit: int, request_id: str
) -> CheckedHit | None:
    """The first ``limit`` recommendations of the member whose token is ``key``,
    from their cache entry, with the token checked in the query that re-checks the
    page; None when that cannot be done (the caller then authenticates and answers
    the ordinary way). Impressions are not logged here
    (:func:`recommendations_hit_serve`)."""
    found = _pointer_and_entry(key)
    if found is None:
        return None
    user_id, entry = found
    from recommender import serving

    generation = str(serving.serving_generation())
    if not recommendations_entry_is_current(entry, generation=generation):
        return None
    page_ids = recommendations_page_ids(entry=entry, limit=limit)
    if not page_ids:
        return None
    sql, params = recommendable_ids_query(viewer_id=user_id, user_ids=page_ids)
    checked = auth_token_get_with(key=key, column=f"ARRAY({sql})", params=params)
    if checked is None:
        return None
    token, allowed = checked
    if token.user_id != user_id or not auth_token_accepted(token=token):
        return None
    page = recommendations_cached_page(
        viewer_id=user_id,
        entry=entry,
        limit=limit,
        request_id=request_id,
        page_allowed=set(allowed),  # the ARRAY(...) column: a list
    )
    return CheckedHit(token=token, page=page)


def recommendations_hit_serve(*, hit: CheckedHit) -> RecommendationPage:
    """Serve a checked hit: log its impressions (``impressions_log``, which never
    fails the request) and return its page."""
    impressions_log(user_id=hit.token.user_id, page=hit.page)
    return hit.page


def token_pointer_set(*, key: str, user_id: int) -> None:
    """Point the token ``key``, which has just authenticated, at its member for
    :func:`recommendations_hit_get`. Lost if Redis fails: the next request then
    takes the ordinary path again."""
    if not _enabled():
        return
    try:
        redis_client().set(_pointer_key(key), user_id, ex=POINTER_SECONDS)
    except Exception:  # noqa: BLE001 - the pointer is only a shortcut
        _pause()


def _pointer_and_entry(key: str) -> tuple[int, object] | None:
    """(the pointer's member, their cache entry or None), or None."""
    if not _enabled():
        return None
    before, mark, after = _entry_key(_MEMBER).partition(_MEMBER)
    if not mark:
        return None  # a KEY_FUNCTION that does not keep the key as it is
    try:
        found = redis_script(_READ)(keys=[_pointer_key(key)], args=[before, after])
    except Exception:  # noqa: BLE001 - Redis away: the ordinary path logs it
        _pause()
        return None
    if not found:
        return None
    try:
        user_id = int(found[0])
    except ValueError:
        return None
    raw_entry = found[1] if len(found) > 1 else None  # GET's nil: None or left off
    return user_id, None if raw_entry is None else _serializer.loads(raw_entry)


def _enabled() -> bool:
    cache = settings.CACHES["default"]
    return (
        cache.get("BACKEND") == REDIS_BACKEND
        # The process's client (REDIS_URL) reads the cache's own server.
        and cache.get("LOCATION") == settings.REDIS_URL
        and connection.vendor == "postgresql"
        and time.monotonic() >= _paused_until
    )


def _pause() -> None:
    global _paused_until
    _paused_until = time.monotonic() + PAUSE_SECONDS


def _pointer_key(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return recommendations_cache().make_key(f"auth:token-member:{digest}")


def _entry_key(user_id) -> str:
    return recommendations_cache().make_key(recommendations_cache_key(user_id=user_id))
