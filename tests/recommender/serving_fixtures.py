"""Fixtures and builders for the serving engine's tests (registered in conftest)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from django.db.models import F
from django.utils import timezone
from threadpoolctl import threadpool_limits

from accounts.demo import demo_members
from accounts.models import Gender, User
from interactions.models import Interaction
from recommender import serving
from registry.artifacts import artifact_read_verified
from registry.models import MLModel
from registry.services import model_activate, model_deactivate, model_register
from tests.accounts.factories import member


def open_members(limit: int = 10) -> list[User]:
    """Demo members who liked someone (they have a learned taste), with open
    enough preferences to have dozens of candidates among ~300 members."""
    return list(
        demo_members()
        .filter(
            interactions_given__kind="like",
            preferences__max_age__gte=F("preferences__min_age") + 15,
            preferences__max_distance_km__isnull=True,
        )
        .distinct()
        .order_by("pk")[:limit]
    )


@pytest.fixture
def engine(settings):
    """A fresh serving engine per test: the registry is polled on every request and
    a reload runs inline (no background thread: the test's transaction stays
    visible)."""
    settings.KINDRED = {
        **settings.KINDRED,
        "REGISTRY_POLL_SECONDS": 0,
        "SERVING_RELOAD_IN_BACKGROUND": False,
    }
    serving.serving_reset()
    yield serving
    serving.serving_reset()


@dataclass
class Trained:
    embedding: MLModel
    ranking: MLModel


def train_and_activate() -> Trained:
    """Run the training pipeline on the current members and promote what it
    registered."""
    from recommender.services.pipeline import pipeline_run

    # One thread: OpenMP pools spin-wait, many times slower on a busy shared box.
    with threadpool_limits(limits=1):
        run = pipeline_run(trigger="test")
    for model in (run.embedding_model, run.ranking_model):
        if not MLModel.objects.get(pk=model.pk).is_active:
            model_activate(model=model, actor=None, actor_label="test")
    return Trained(
        embedding=MLModel.objects.get(pk=run.embedding_model_id),
        ranking=MLModel.objects.get(pk=run.ranking_model_id),
    )


@pytest.fixture
def trained(seeded, media) -> Trained:
    """The ~300 seeded demo members with trained, active embedding + index and
    ranking models."""
    return train_and_activate()


def register_copy(model: MLModel) -> MLModel:
    """A new inactive version of ``model``'s kind with the same artifact bytes."""
    return model_register(
        kind=model.kind,
        artifact=artifact_read_verified(record=model),
        artifact_name="copy.joblib",
        feature_version=model.feature_version,
        notes=f"copy of v{model.version}",
    )


# --- a small hand-built scene for the hard filters ---------------------------------

BERLIN = (52.52, 13.405)
MUNICH = (48.137, 11.575)  # ~500 km from Berlin
SHARED = ["hiking", "travel", "jazz", "photography"]


def years_ago(years: int, *, days: int = 30) -> dt.date:
    """A birth date making someone ``years`` old today (birthday ``days`` ago)."""
    today = timezone.localdate()
    birthday = today - dt.timedelta(days=days)
    return birthday.replace(year=birthday.year - years)


@dataclass
class Scene:
    viewer: User
    tempting: User
    others: list[User]


def scene_build(*, fillers: int = 6) -> Scene:
    """A viewer (woman, 30, Berlin, seeks men 25-35) and a tempting candidate (man,
    30, Berlin, exactly her interests, the most liked member of the last days):
    every source would put him first. ``fillers`` other allowed men share none of
    her interests and like him (his popularity)."""
    viewer = member(
        display_name="Vera",
        gender=Gender.FEMALE,
        birth_date=years_ago(30),
        latitude=BERLIN[0],
        longitude=BERLIN[1],
        interests=list(SHARED),
        preferences={"seeking_genders": ["male"], "min_age": 25, "max_age": 35},
    )
    tempting = member(
        display_name="Tom",
        gender=Gender.MALE,
        birth_date=years_ago(30),
        latitude=BERLIN[0],
        longitude=BERLIN[1],
        interests=list(SHARED),
        preferences={"seeking_genders": ["female"], "min_age": 25, "max_age": 35},
    )
    others = [
        member(
            display_name=f"Filler {i}",
            gender=Gender.MALE,
            birth_date=years_ago(28 + i % 5),
            latitude=BERLIN[0],
            longitude=BERLIN[1],
            interests=["chess", f"hobby-{i}"],
            preferences={"seeking_genders": ["female", "male"]},
        )
        for i in range(fillers)
    ]
    for other in others:
        Interaction.objects.create(actor=other, target=tempting, kind="like")
    return Scene(viewer=viewer, tempting=tempting, others=others)


def shown_ids(result) -> list[int]:
    return [r.user_id for r in result.results]


def deactivate(kind: str) -> None:
    """Take the active model of ``kind`` out of service (through the registry)."""
    active = MLModel.objects.get(kind=kind, is_active=True)
    model_deactivate(model=active, actor=None, actor_label="test")
