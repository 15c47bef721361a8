"""Serving recommendations: the per-process model bundle and the two-stage pipeline.

- ``arms``: which versions serve (a registry snapshot) and each member's A/B arm;
- ``bundle``: the :class:`~recommender.serving.bundle.Bundle` a process serves with
  (models, indexes, every member in memory), built from the registry's artifacts;
- ``holder``: the process's ``BundleHolder`` — lazy first load, hot reload keyed by
  the serving generation, failure and degraded state;
- ``pipeline``: a request (:func:`recommendations_compute`) and its degradation
  strategies; ``reasons``: each result as the member sees it;
- ``health``: :func:`serving_health`, what this process serves.

Nothing happens at import time.

**Read replica** (``DATABASE_REPLICA_URL``, ``config.db_routers``): the member
store's loads (every member and interaction) read from the replica (the primary if
it fails). Everything a request reads comes from the primary: the viewer's own
rows, the registry, and the shortlist re-check and random fallback, which have the
last word on what is shown (a member who hid their profile, blocked the viewer or
deleted their account a moment ago is never shown, replica lag or not).
"""

from recommender.serving.arms import Arm, experiment_name
from recommender.serving.health import serving_health
from recommender.serving.holder import (
    serving_generation,
    serving_refresh,
    serving_reset,
    serving_wait_idle,
)
from recommender.serving.pipeline import (
    STAGES,
    STRATEGIES,
    arm_for,
    recommendations_compute,
)
from recommender.serving.results import Recommendation, RecommendationResult

__all__ = [
    "STAGES",
    "STRATEGIES",
    "Arm",
    "Recommendation",
    "RecommendationResult",
    "arm_for",
    "experiment_name",
    "recommendations_compute",
    "serving_generation",
    "serving_health",
    "serving_refresh",
    "serving_reset",
    "serving_wait_idle",
]
