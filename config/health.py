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
"""

from __future__ import annotations

import time
import uuid
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
        try:
            components.update(_serving_checks())
        except Exception as error:  # noqa: BLE001 - report, never raise
            failure = {"status": DOWN, "error": f"{type(error).__name__}: {error}"}
            components.update(models=failure, index=dict(failure))
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


def _serving_checks() -> dict:
    """The registry's active models and index, and what this process has loaded
    (``recommender.serving.serving_health``; a process loads its models on its
    first recommendation, so ``loaded: false`` on a fresh process is normal)."""
    from recommender.serving import serving_health
    from registry.models import MLModel, ModelKind
    from registry.selectors import index_get_serving

    serving = serving_health()
    loaded = {
        (model["kind"], model["version"], model["role"]): model["loaded"]
        for model in serving.get("models", [])
    }
    active = {
        kind: version
        for kind, version in MLModel.objects.filter(is_active=True).values_list(
            "kind", "version"
        )
    }
    missing = [kind for kind in ModelKind.values if kind not in active]
    models = {
        "status": DEGRADED if missing or serving["degraded"] else OK,
        "active": active,
        "loaded_in_this_process": {
            kind: version
            for (kind, version, role), is_loaded in sorted(loaded.items())
            if role == "active" and is_loaded
        },
        "challengers": {
            kind: version
            for (kind, version, role) in sorted(loaded)
            if role == "challenger"
        },
        "serving": serving["status"],
        "generation": serving.get("generation"),
        "loaded_at": serving.get("loaded_at"),
    }
    if missing:
        models["error"] = f"no active version of: {', '.join(missing)}"
    elif serving["degraded"]:
        models["error"] = f"last model load failed: {serving['last_error']}"

    index = index_get_serving()
    index_state = {
        "status": OK if index is not None else DEGRADED,
        "registry": None
        if index is None
        else {
            "id": index.pk,
            "type": index.index_type,
            "vectors": index.n_vectors,
            "embedding_version": index.embedding_model.version,
        },
        "loaded_in_this_process": serving.get("index", {"id": None, "vectors": 0}),
    }
    if index is None:
        index_state["error"] = "no index for the active embedding version"
    return {"models": models, "index": index_state}
