"""Prometheus metrics of the recommendation path.

Defined once at import (cheap: no I/O) in the default registry and exposed by
``/metrics`` (``config.metrics``). Under gunicorn every worker writes its values to
``PROMETHEUS_MULTIPROC_DIR``; each gauge says how the workers' values combine
(``multiprocess_mode``): per live process (``liveall``: the version each worker
serves, so a promotion shows worker by worker) or the largest (``livemax``).
"""

import logging
from collections.abc import Callable
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class _ZeroingGauge(Gauge):
    """A labelled gauge whose ``clear()`` first sets its series to 0: in
    multiprocess mode the values live in files that ``clear()`` alone leaves
    behind, so a version no longer served would still read 1."""

    def clear(self) -> None:
        with self._lock:
            children = list(self._metrics.values())
        for child in children:
            child.set(0)
        super().clear()


STAGE_BUCKETS = (
    0.0005,
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
)

# Exposed as recommendations_strategy_total{strategy="full"|…}.
RECOMMENDATIONS_STRATEGY = Counter(
    "recommendations_strategy",
    "Recommendation computations by the strategy actually used.",
    ["strategy"],
)
RECOMMENDATION_STAGE_SECONDS = Histogram(
    "recommendation_stage_seconds",
    "Seconds spent in each stage of a recommendation computation.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
# Exposed as recommendation_cache_total{result="hit"|"miss"}; the API counts it.
RECOMMENDATION_CACHE = Counter(
    "recommendation_cache",
    "Per-member recommendation cache lookups.",
    ["result"],
)
MODEL_VERSION_INFO = _ZeroingGauge(
    "model_version_info",
    "1 for each model version a live process serves (role: active or challenger).",
    ["kind", "version", "role"],
    multiprocess_mode="livemax",
)
ACTIVE_MODEL_VERSION = Gauge(
    "active_model_version",
    "Version of the active model of each kind loaded in this process (0 = none).",
    ["kind"],
    multiprocess_mode="liveall",
)
SERVING_INDEX_SIZE = Gauge(
    "serving_index_vectors",
    "Vectors in the FAISS index this process searches (0 = none loaded).",
    multiprocess_mode="liveall",
)
SERVING_DEGRADED = Gauge(
    "serving_degraded",
    "1 when the last model load of a live process failed (older models kept).",
    multiprocess_mode="livemax",
)
SERVING_LOAD_SECONDS = Histogram(
    "serving_bundle_load_seconds",
    "Seconds to load the serving bundle (models, index, member store).",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SERVING_LOAD_FAILURES = Counter(
    "serving_bundle_load_failures",
    "Serving bundle loads that failed and kept the previous bundle.",
)


class TrainingCollector(Collector):
    """When training last succeeded and last failed, read from ``TrainingRun`` at
    scrape time: the database knows, whichever process (a Celery worker,
    ``manage.py train_models``) ran the training, and a restart forgets nothing.

    ``training_last_success_timestamp_seconds`` and
    ``training_last_failure_timestamp_seconds`` are Unix times, 0 when it never
    happened (so "stale" and "failed" alerts need no special case for a fresh
    install). Nothing is exported when the database cannot be read: ``/metrics``
    keeps answering with the other figures.

    ``last_finished(status=...)`` gives the time the latest run of that status
    finished, or None (``recommender.selectors.training_run_last_finished``, handed
    in by ``RecommenderConfig.ready``: the selectors import this module).
    """

    FAMILIES = {
        "training_last_success_timestamp_seconds": (
            "succeeded",
            "Unix time the latest successful training run finished (0 = never).",
        ),
        "training_last_failure_timestamp_seconds": (
            "failed",
            "Unix time the latest failed training run ended (0 = never).",
        ),
    }

    def __init__(self, last_finished: Callable[..., datetime | None]):
        self._last_finished = last_finished

    def describe(self):
        # Names only, no I/O: registering must not touch the database.
        return [
            GaugeMetricFamily(name, documentation)
            for name, (_, documentation) in self.FAMILIES.items()
        ]

    def collect(self):
        from django.db import DatabaseError

        try:
            finished = {
                name: self._last_finished(status=status)
                for name, (status, _) in self.FAMILIES.items()
            }
        except DatabaseError:
            logger.warning("training run times unreadable for /metrics", exc_info=True)
            return
        for name, (_, documentation) in self.FAMILIES.items():
            at = finished[name]
            yield GaugeMetricFamily(
                name, documentation, value=at.timestamp() if at is not None else 0.0
            )
