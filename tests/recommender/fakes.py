"""A stand-in for the serving engine, for the API, cache and impression tests.

The API depends on ``recommender.serving`` only through ``serving_generation()`` and
``recommendations_compute(user=, limit=)``; :class:`FakeEngine` replaces both (via
monkeypatch), answers with the engine's own result types and counts the
computations, so the tests can tell a cache hit from a miss. It recommends real
members (impressions reference them), best first.
"""

import pytest

from accounts.models import Profile
from recommender.serving import Arm, Recommendation, RecommendationResult


class FakeEngine:
    def __init__(self):
        self.generation = "g1"
        self.strategy = "full"
        self.model_versions = {"embedding": 3, "ranking": 5, "index": 12}
        self.arm = Arm("ranking-v5-vs-v4", "challenger", {"ranking": 5})
        self.calls: list[dict] = []
        # Called with the user during a computation (to simulate what happens
        # meanwhile).
        self.during_compute = None

    def serving_generation(self) -> str:
        return self.generation

    def recommendations_compute(self, *, user, limit: int) -> RecommendationResult:
        self.calls.append({"user_id": user.pk, "limit": limit})
        if self.during_compute is not None:
            self.during_compute(user)
        profiles = Profile.objects.exclude(pk=user.pk).order_by("pk")[:limit]
        results = [
            Recommendation(
                user_id=profile.pk,
                display_name=profile.display_name,
                age=profile.age,
                city=profile.city,
                interests=list(profile.interests),
                score=round(1.0 - rank / 1000, 6),
                rank=rank,
                sources=["content", "popular"] if rank % 2 else ["collaborative"],
                reason="likes hiking and travel like you",
            )
            for rank, profile in enumerate(profiles, start=1)
        ]
        return RecommendationResult(
            results=results,
            strategy=self.strategy,
            model_versions=dict(self.model_versions),
            experiment=self.arm,
            generation=self.generation,
            stage_seconds={},
        )


@pytest.fixture
def eager_tasks():
    """Celery tasks run in-process (with PostgreSQL/Redis settings they would be
    queued for a worker the tests do not run)."""
    from config.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def engine(monkeypatch, eager_tasks) -> FakeEngine:
    from recommender import serving

    fake = FakeEngine()
    monkeypatch.setattr(serving, "serving_generation", fake.serving_generation)
    monkeypatch.setattr(
        serving, "recommendations_compute", fake.recommendations_compute
    )
    return fake
