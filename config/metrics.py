"""Prometheus metrics of the web and Celery processes, and the ``/metrics`` view.

The recommendation path's own metrics (stages, cache, strategies, model versions,
index size) live in ``recommender/metrics.py``; this module adds HTTP request
latency per route (recorded by ``config.middleware``) and Celery task outcomes
and durations (recorded from Celery's signals, ``config.celery``).

**Several processes.** gunicorn runs several worker processes; each counts on its
own. ``config/gunicorn.conf.py`` gives them a fresh ``PROMETHEUS_MULTIPROC_DIR``
before they start, prometheus_client then keeps every value in a file there, and
this view sums them up (gauges as each declares with ``multiprocess_mode``). A
Celery worker does the same with its own directory and serves its figures on
``CELERY_METRICS_PORT`` (see ``config.celery``). Without the variable (tests,
``runserver``, the embedded default's in-process tasks) the process's own
registry is exposed. Figures an app reads from the database at scrape time (the
recommender's training times) are added by this view from collectors the app
registers with :func:`database_collector_register` in its ``AppConfig.ready``: this
module names no app.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
)
UNMATCHED_ROUTE = "unmatched"

REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# Labelled by the resolved URL name ("recommendation-list", "admin:index"…), never
# by the raw path: ids in paths would make a new series per member.
HTTP_REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Seconds from the first middleware to the response, per route and method.",
    ["route", "method"],
    buckets=REQUEST_BUCKETS,
)
HTTP_RESPONSES = Counter(
    "http_responses",
    "Responses per route, method and status code.",
    ["route", "method", "status"],
)
CELERY_TASKS = Counter(
    "celery_tasks",
    "Celery tasks finished, per task and outcome (SUCCESS, FAILURE, RETRY…).",
    ["task", "outcome"],
)
CELERY_TASK_SECONDS = Histogram(
    "celery_task_duration_seconds",
    "Seconds a Celery task ran, per task.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600),
)


def http_request_observe(
    *, route: str, method: str, status: int, seconds: float
) -> None:
    """Record one answered request."""
    method = method if method in KNOWN_METHODS else "OTHER"
    HTTP_REQUEST_SECONDS.labels(route=route, method=method).observe(seconds)
    HTTP_RESPONSES.labels(route=route, method=method, status=str(status)).inc()


def celery_task_observe(*, task: str, outcome: str, seconds: float | None) -> None:
    """Record one finished task run."""
    CELERY_TASKS.labels(task=task, outcome=outcome).inc()
    if seconds is not None:
        CELERY_TASK_SECONDS.labels(task=task).observe(seconds)


def metrics_registry():
    """The registry to expose: every process's figures when running several
    (``PROMETHEUS_MULTIPROC_DIR`` set), else this process's own."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


# Figures read from the database at scrape time, the same in every process: exposed
# by the web's /metrics only (a Celery worker's metrics server would open a database
# connection per scrape thread for them).
DATABASE_REGISTRY = CollectorRegistry()
_database_collectors: list[Collector] = []


def database_collector_register(collector: Collector) -> None:
    """Expose ``collector`` (read at scrape time, e.g. from the database) on the
    web's ``/metrics``. Registering the same collector again is a no-op."""
    if all(collector is not known for known in _database_collectors):
        DATABASE_REGISTRY.register(collector)
        _database_collectors.append(collector)


def multiproc_dir_reset(path: str) -> None:
    """Create ``path`` or empty it of a previous run's value files (stale
    counters would otherwise be summed into the new run's)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


@never_cache
@require_GET
def metrics_view(request):
    """Prometheus text exposition of every metric of this service."""
    return HttpResponse(
        generate_latest(metrics_registry()) + generate_latest(DATABASE_REGISTRY),
        content_type=CONTENT_TYPE_LATEST,
    )
