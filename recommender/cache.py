"""The per-user recommendation cache: one key per member, dropped when it goes stale.

Entries are JSON, never pickles. Django's Redis backend pickles by default, and
unpickling runs whatever code the bytes name: anyone able to write to Redis (a
shared instance, an exposed port) could run code in every web worker by planting an
entry. :class:`JSONSerializer` reads only data; on Redis the recommendation entries
go through it whatever the default cache is configured with, and configuring it as
the default cache's ``OPTIONS["serializer"]`` extends that to every key (throttles,
log-in counters, registry generations).
"""

import json
import logging

import orjson
from django.conf import settings
from django.core.cache import BaseCache, cache

logger = logging.getLogger(__name__)

REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


class JSONSerializer:
    """A serializer for Django's ``RedisCache`` that stores JSON instead of pickles.

    Integers are stored as plain numbers, as Django's own serializer does, so
    ``incr``/``decr`` stay atomic in Redis. Anything that is not JSON (a pickle
    planted in Redis, an entry of an older release) reads as a miss (``None``) and
    is logged; it is never executed.

    orjson reads and writes the same JSON as the standard library about five
    times faster: decoding a member's 100 cached results was 8.5 % of a cache hit
    with ``json`` (py-spy, issue 16). What orjson refuses to write (an integer
    beyond 64 bits) falls back to ``json``; orjson reads such an integer back as
    an inexact float, which is harmless only because nothing cached holds one
    (ids are 64-bit).
    """

    def dumps(self, obj) -> bytes | int:
        if type(obj) is int:
            return obj
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes):
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError, invalid UTF-8 included
            logger.warning(
                "cache value that is not JSON ignored (%d bytes, starts %r)",
                len(data),
                bytes(data[:16]),
            )
            return None


_JSON_PATH = f"{JSONSerializer.__module__}.{JSONSerializer.__qualname__}"
# (the settings dict it was built from, the cache): rebuilt when settings change.
_json_cache: tuple[dict, BaseCache] | None = None


def recommendations_cache() -> BaseCache:
    """The cache holding recommendation entries: the default cache, except that on
    Redis its values are JSON (:class:`JSONSerializer`) even while the default cache
    still pickles. Same server, key prefix and version, so the keys are the same.

    One instance per process (redis-py's pools are thread-safe), built again only
    when ``settings.CACHES`` is replaced (tests).
    """
    global _json_cache
    config = settings.CACHES["default"]
    if config.get("BACKEND") != REDIS_BACKEND:
        return cache  # in-process memory: nothing outside the process writes it
    options = config.get("OPTIONS") or {}
    if options.get("serializer") in (JSONSerializer, _JSON_PATH):
        return cache
    memo = _json_cache
    if memo is None or memo[0] is not config:
        from django.core.cache.backends.redis import RedisCache

        params = {**config, "OPTIONS": {**options, "serializer": JSONSerializer}}
        memo = _json_cache = (config, RedisCache(config["LOCATION"], params))
    return memo[1]


def recommendations_cache_key(*, user_id: int) -> str:
    return f"recs:{user_id}"


def recommendations_cache_invalidate(*, user_id: int) -> None:
    """Forget the cached recommendations of ``user_id``.

    Called after commit whenever something that shapes the member's recommendations
    changes (an interaction, the profile, the preferences). If the cache cannot be
    reached the deletion is lost, which is safe: every hit is re-checked against
    the database (``recommender.selectors.recommendable_ids``).
    """
    try:
        recommendations_cache().delete(recommendations_cache_key(user_id=user_id))
    except Exception:  # noqa: BLE001 - the cache is optional; its TTL bounds staleness
        logger.warning(
            "recommendation cache unreachable; entry of %s left to expire",
            user_id,
            exc_info=True,
        )
