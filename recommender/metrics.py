"""Prometheus metrics of the recommendation path.

Defined once at import (cheap: no I/O) in the default registry; the ``/metrics``
endpoint that exposes them comes later. Under gunicorn with several workers each
process counts on its own until that endpoint sets up multiprocess collection.
"""

from prometheus_client import Counter, Gauge, Histogram

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
MODEL_VERSION_INFO = Gauge(
    "model_version_info",
    "1 for each model version this process serves (role: active or challenger).",
    ["kind", "version", "role"],
)
ACTIVE_MODEL_VERSION = Gauge(
    "active_model_version",
    "Version of the active model of each kind loaded in this process (0 = none).",
    ["kind"],
)
SERVING_INDEX_SIZE = Gauge(
    "serving_index_vectors",
    "Vectors in the FAISS index this process searches (0 = none loaded).",
)
SERVING_DEGRADED = Gauge(
    "serving_degraded",
    "1 when the last model load of this process failed (older models kept).",
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
