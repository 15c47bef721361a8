"""Health endpoints for load balancers, container healthchecks and operators.

* ``/health/live``: the process is up (never touches a dependency).
* ``/health/ready``: the database answers (503 otherwise): take this process out of
  the load balancer, it cannot serve anything.
* ``/health``: each component, for people and dashboards. HTTP 503 only when the
  database is down (the one failure nothing can work around); every other problem
  answers 200 with ``"status": "degraded"`` and says which component and why,
  because Kindred still serves then (without cache, with in-process fallbacks, or
  with lesser recommendations). A load balancer should probe ``/health/ready``,
  not this.

The database, replica, cache and broker are checked here; an app adds its own
components with :func:`health_components_register` (from its ``AppConfig.ready``),
so that this module names no app.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.db.utils import DatabaseError
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.db_routers import REPLICA, replica_configured, replica_state

OK, DEGRADED, DOWN = "ok", "degraded", "down"
BROKER_TIMEOUT_SECONDS = 0.5

# (check, the component names it reports), in registration order.
_component_checks: list[tuple[Callable[[], dict], tuple[str, ...]]] = []


def health_components_register(
    check: Callable[[], dict], *, components: tuple[str, ...]
) -> None:
    """Add an app's components to ``/health``.

    ``check()`` returns ``{component: state}`` for the names in ``components``, each
    state a dict with at least ``"status"`` (``OK``, ``DEGRADED`` or ``DOWN``). It
    runs only while the database answers; if it raises, each of its components is
    reported down with the error. Registering the same check again is a no-op.
    """
    if all(check is not registered for registered, _ in _component_checks):
        _component_checks.append((check, tuple(components)))


@never_cache
@require_GET
def health_live(request):
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request):
    """Ready to serve: the database answers a query (503 otherwise)."""
    database = _database_check()
    if database["status"] != OK:
        return JsonResponse(
            {"status": "unavailable", "database": database["error"]}, status=503
        )
    return JsonResponse({"status": "ok", "database": "ok"})


@never_cache
@require_GET
def health_status(request):
    """Every component's state and the overall ``healthy`` / ``degraded`` /
    ``unhealthy`` (see the module docstring)."""
    components = {
        "database": _database_check(),
        "cache": _cache_check(),
        "broker": _broker_check(),
    }
    if replica_configured():
        components["database_replica"] = _replica_check()
    if components["database"]["status"] == OK:
        for check, names in _component_checks:
            try:
                components.update(check())
            except Exception as error:  # noqa: BLE001 - report, never raise
                failure = {"status": DOWN, "error": f"{type(error).__name__}: {error}"}
                components.update({name: dict(failure) for name in names})
    problems = sorted(
        name for name, state in components.items() if state["status"] != OK
    )
    if components["database"]["status"] != OK:
        overall, http_status = "unhealthy", 503
    else:
        overall, http_status = ("degraded" if problems else "healthy"), 200
    return JsonResponse(
        {"status": overall, "problems": problems, "components": components},
        status=http_status,
    )


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        state = check()
    except Exception as error:  # noqa: BLE001 - a health check reports, never raises
        state = {"status": DOWN, "error": f"{type(error).__name__}: {error}"[:200]}
    state["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return state


def _database_check() -> dict:
    def check():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as error:
            return {"status": DOWN, "error": f"unreachable: {type(error).__name__}"}
        return {"status": OK, "vendor": connection.vendor}

    return _timed(check)


def _replica_check() -> dict:
    """The read replica (``DATABASE_REPLICA_URL``): degraded, never down, when it
    fails, since the primary then serves its reads (``config.db_routers``).
    ``replay_age_seconds``: time since the standby last replayed a transaction
    (its lag while the primary is busy; it also grows while the primary is idle)."""

    def check():
        replica = connections[REPLICA]
        try:
            with replica.cursor() as cursor:
                cursor.execute(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN EXTRACT(EPOCH FROM "
                    "now() - pg_last_xact_replay_timestamp()) END"
                )
                (age,) = cursor.fetchone()
        except DatabaseError as error:
            replica.close()
            return {
                "status": DEGRADED,
                "error": f"unreachable: {type(error).__name__}; reads go to the "
                "primary",
            }
        state = replica_state()
        return {
            "status": OK if state["reads"] == "replica" else DEGRADED,
            "replay_age_seconds": None if age is None else round(float(age), 3),
            **state,
        }

    return _timed(check)


def _cache_check() -> dict:
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]

    def check():
        # A round trip through the real cache: set, read back, delete.
        key, token = f"health:{uuid.uuid4().hex}", uuid.uuid4().hex
        cache.set(key, token, timeout=10)
        found = cache.get(key)
        cache.delete(key)
        if found != token:
            return {"status": DOWN, "backend": backend, "error": "value not kept"}
        return {"status": OK, "backend": backend}

    return {**_timed(check), "backend": backend}


def _broker_check() -> dict:
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        return {"status": OK, "mode": "eager/in-process", "latency_ms": 0.0}
    url = settings.CELERY_BROKER_URL
    scheme = urlparse(url).scheme

    def check():
        if not scheme.startswith("redis"):
            return {"status": OK, "mode": scheme, "note": "not probed"}
        import redis

        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
        return {"status": OK, "mode": "redis"}

    return {**_timed(check), "mode": scheme if scheme else "unknown"}
