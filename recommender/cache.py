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
import threading

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
_client = None
_client_lock = threading.Lock()
# Lua source -> (the client it was registered on, the script)
_scripts: dict = {}


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


class MemberCache:
    """The member's cache entry; a cache outage makes every call a quiet miss.

    After the first failure the remaining calls of the request skip the cache, so an
    unreachable Redis costs one timeout and one log line per request, not three.
    """

    def __init__(self, user_id: int):
        self.user_id = user_id
        self.key = recommendations_cache_key(user_id=user_id)
        self.cache = recommendations_cache()
        self.available = True

    def get(self):
        if not self.available:
            return None
        try:
            return self.cache.get(self.key)
        except Exception:  # noqa: BLE001 - the cache is optional; compute instead
            self._unavailable()
            return None

    def set(self, value, timeout: int) -> None:
        if not self.available:
            return
        try:
            self.cache.set(self.key, value, timeout)
        except Exception:  # noqa: BLE001
            self._unavailable()

    def _unavailable(self) -> None:
        self.available = False
        logger.warning(
            "recommendation cache unreachable; computing for member %s",
            self.user_id,
            exc_info=True,
        )


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


def redis_client():
    """The process's Redis client for what goes around Django's cache API (the
    impressions buffer, a cache hit's read in ``recommender.hits``): created on
    first use, one connection pool for every thread (redis-py's pool is
    thread-safe and reopens its connections after a fork). Django's
    ``RedisCacheClient`` builds a new ``redis.Redis`` object on every call
    instead, ~170 response callbacks registered each time."""
    global _client
    if _client is None:
        import redis

        with _client_lock:
            if _client is None:
                # The cache's short timeouts (REDIS_TIMEOUT_SECONDS): a hung Redis
                # costs a request that long, then the fallback takes over.
                options = settings.CACHES["default"].get("OPTIONS", {})
                timeout = options.get("socket_timeout", 0.5)
                _client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                )
    return _client


def redis_script(source: str):
    """The Lua ``source`` as a script of :func:`redis_client` (``EVALSHA``, loaded
    again by redis-py if the server forgot it), registered once per client."""
    client = redis_client()
    memo = _scripts.get(source)
    if memo is None or memo[0] is not client:
        memo = _scripts[source] = (client, client.register_script(source))
    return memo[1]
