"""A stand-in for the serving engine, for the API, cache and impression tests.

The API depends on ``recommender.serving`` only through ``serving_generation()`` and
``recommendations_compute(user=, limit=)``; :class:`FakeEngine` replaces both (via
monkeypatch) and counts the computations, so the tests can tell a cache hit from a
miss. It recommends real members (impressions reference them), best first.
"""

from dataclasses import dataclass, field

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Profile


@dataclass(frozen=True)
class FakeArm:
    experiment: str = ""
    arm: str = ""
    model_ids: dict = field(default_factory=dict)


@dataclass
class FakeRecommendation:
    user_id: int
    display_name: str
    age: int
    city: str
    interests: list[str]
    score: float
    rank: int
    sources: list[str]
    reason: str


@dataclass
class FakeResult:
    results: list[FakeRecommendation]
    strategy: str
    model_versions: dict[str, int]
    experiment: FakeArm
    generation: str
    stage_seconds: dict[str, float] = field(default_factory=dict)


class FakeEngine:
    def __init__(self):
        self.generation = "g1"
        self.strategy = "full"
        self.model_versions = {"embedding": 3, "ranking": 5, "index": 12}
        self.arm = FakeArm("ranking-v5-vs-v4", "challenger", {"ranking": 5})
        self.calls: list[dict] = []
        # Called with the user during a computation (to simulate what happens
        # meanwhile).
        self.during_compute = None

    def serving_generation(self) -> str:
        return self.generation

    def recommendations_compute(self, *, user, limit: int) -> FakeResult:
        self.calls.append({"user_id": user.pk, "limit": limit})
        if self.during_compute is not None:
            self.during_compute(user)
        profiles = Profile.objects.exclude(pk=user.pk).order_by("pk")[:limit]
        results = [
            FakeRecommendation(
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
        return FakeResult(
            results=results,
            strategy=self.strategy,
            model_versions=dict(self.model_versions),
            experiment=self.arm,
            generation=self.generation,
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


@pytest.fixture
def client_for():
    """An API client authenticated with the user's token."""

    def make(user) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make
