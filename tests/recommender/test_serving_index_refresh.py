"""The nightly run refreshes the index that serves: with auto-promotion off, members
who joined since the active embedding version was trained reach the FAISS source
the morning after, with no ``rebuild_index`` by hand and no restart."""

import os

import numpy as np
import pytest
from django.db import OperationalError

from accounts.models import User
from config.celery import app
from recommender import tasks
from recommender.artifacts import index_artifact_load
from recommender.models import TrainingRun, TrainingRunStatus, UserEmbedding
from recommender.services import indexes
from recommender.services.indexes import index_rebuild
from recommender.services.runs import training_run_start
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.selectors import index_get_serving
from tests.accounts.factories import member
from tests.recommender.serving_fixtures import open_members, years_ago

pytestmark = pytest.mark.django_db

RECOMMENDATIONS_URL = "/api/v1/recommendations/"


@pytest.fixture(autouse=True)
def eager(settings):
    """Tasks run in-process (as in the embedded mode); a task's failure is recorded
    on its result, as on a worker. Auto-promotion is off, the default."""
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": False}
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def viewer(trained) -> User:
    """A member with a learned taste (the FAISS source tags them collaborative)."""
    return open_members(limit=1)[0]


def _newcomer_for(viewer: User) -> User:
    """A member joining now whom ``viewer`` may be shown and who may be shown
    ``viewer`` (both sides' preferences met), with the viewer's interests."""
    profile, preferences = viewer.profile, viewer.preferences
    age = (preferences.min_age + preferences.max_age) // 2
    return member(
        display_name="Newcomer",
        gender=(preferences.seeking_genders or ["female"])[0],
        birth_date=years_ago(age),
        latitude=profile.latitude,
        longitude=profile.longitude,
        city=profile.city,
        interests=list(profile.interests),
        preferences={
            "seeking_genders": [profile.gender],
            "min_age": 18,
            "max_age": 99,
            "max_distance_km": None,
        },
    )


def _recommended(client_for, viewer: User) -> dict:
    response = client_for(viewer).get(RECOMMENDATIONS_URL, {"limit": 100})
    assert response.status_code == 200, response.content
    return response.json()


def _sources_of(page: dict, user: User) -> list[str] | None:
    for result in page["results"]:
        if result["user_id"] == user.pk:
            return result["sources"]
    return None


def _files(root) -> set[str]:
    return {
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    }


def test_the_nightly_run_puts_members_who_joined_since_into_the_serving_index(
    engine, trained, viewer, client_for
):
    newcomer = _newcomer_for(viewer)
    before = _recommended(client_for, viewer)
    serving_before = index_get_serving()
    assert before["model_versions"]["index"] == serving_before.pk
    # Not in the serving index yet: found by other sources at best.
    assert "collaborative" not in (_sources_of(before, newcomer) or [])

    run_id = tasks.nightly_pipeline.delay().get()

    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    # The new versions wait for a person; the serving version is the trained one.
    assert not MLModel.objects.get(pk=run.embedding_model_id).is_active
    assert not MLModel.objects.get(pk=run.ranking_model_id).is_active
    active = MLModel.objects.get(kind=ModelKind.EMBEDDING, is_active=True)
    assert active.pk == trained.embedding.pk
    refreshed = index_get_serving()
    assert refreshed.embedding_model_id == trained.embedding.pk
    assert refreshed.pk not in (serving_before.pk, run.index_artifact_id)
    assert refreshed.n_vectors == serving_before.n_vectors + 1
    assert run.summary["stages"]["serving_index"] == {
        "seconds": run.summary["stages"]["serving_index"]["seconds"],
        "version": trained.embedding.version,
        "index": refreshed.pk,
        "n": refreshed.n_vectors,
        "new_members": 1,
        "superseded": False,
    }
    stored = UserEmbedding.objects.get(model=trained.embedding, user=newcomer)
    appeal = np.frombuffer(bytes(stored.vector), dtype="<f4")[refreshed.dim :]
    assert np.array_equal(
        index_artifact_load(index=refreshed).reconstruct(newcomer.pk), appeal
    )

    after = _recommended(client_for, viewer)

    # Serving followed the registry by itself and searches the refreshed index.
    assert after["model_versions"]["index"] == refreshed.pk
    assert after["model_versions"]["embedding"] == trained.embedding.version
    assert "collaborative" in (_sources_of(after, newcomer) or [])


def test_a_second_night_with_nobody_new_keeps_the_serving_index(
    engine, trained, viewer
):
    _newcomer_for(viewer)
    first = TrainingRun.objects.get(pk=tasks.nightly_pipeline.delay().get())
    refreshed = index_get_serving()

    second = TrainingRun.objects.get(pk=tasks.nightly_pipeline.delay().get())

    assert first.summary["stages"]["serving_index"]["index"] == refreshed.pk
    assert second.status == TrainingRunStatus.SUCCEEDED, second.error
    assert second.summary["stages"]["serving_index"]["skipped"] == (
        f"index {refreshed.pk} is current"
    )
    assert index_get_serving().pk == refreshed.pk


def test_a_member_who_left_is_dropped_at_the_next_night(trained, viewer):
    leaving = _newcomer_for(viewer)
    index_rebuild()
    with_them = index_get_serving()

    leaving_id = leaving.pk
    assert index_artifact_load(index=with_them).reconstruct(leaving_id).size

    leaving.delete()
    run = TrainingRun.objects.get(pk=tasks.nightly_pipeline.delay().get())

    refreshed = index_get_serving()
    assert run.summary["stages"]["serving_index"]["index"] == refreshed.pk
    assert refreshed.n_vectors == with_them.n_vectors - 1
    with pytest.raises(RuntimeError):
        index_artifact_load(index=refreshed).reconstruct(leaving_id)


def test_without_an_active_embedding_version_the_run_skips_the_refresh(seeded, media):
    run = TrainingRun.objects.get(pk=tasks.nightly_pipeline.delay().get())

    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    assert run.summary["stages"]["serving_index"]["skipped"] == (
        "no active embedding version"
    )
    assert list(IndexArtifact.objects.values_list("pk", flat=True)) == [
        run.index_artifact_id
    ]


def test_a_refresh_that_loses_its_database_mid_registration_is_retried_cleanly(
    trained, viewer, media, monkeypatch
):
    newcomer = _newcomer_for(viewer)
    run = training_run_start(trigger="celery")
    before = set(IndexArtifact.objects.values_list("pk", flat=True))
    register = indexes._index_rebuild_register
    calls = []

    def connection_lost_once(prepared):
        calls.append(prepared.built.stored.name)
        result = register(prepared)  # rows written, then the connection drops
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(indexes, "_index_rebuild_register", connection_lost_once)

    assert tasks.serving_index_refresh.delay(run_id=run.pk).get() == "succeeded"

    assert len(calls) == 2
    [new] = IndexArtifact.objects.exclude(pk__in=before)
    assert index_get_serving().pk == new.pk
    assert UserEmbedding.objects.filter(model=trained.embedding, user=newcomer).exists()
    # The first attempt's file went with its rolled-back registration.
    assert calls[0] not in _files(media) and new.artifact.name in _files(media)
    # Redelivered after success: the run is finished, nothing is built again.
    assert tasks.serving_index_refresh.delay(run_id=run.pk).get() is None
    assert IndexArtifact.objects.exclude(pk__in=before).count() == 1


def test_a_rebuild_from_older_data_never_replaces_a_fresher_serving_index(
    trained, viewer, media, monkeypatch
):
    """The nightly refresh and an operator's ``rebuild_index`` overlap: the one that
    read the members later serves, whichever registers last."""
    _newcomer_for(viewer)
    run = training_run_start(trigger="celery")
    prepare = indexes._index_rebuild_prepare
    operator = {}

    def operator_rebuilds_meanwhile(*, active, report):
        prepared = prepare(active=active, report=report)
        if not operator:  # the nightly's read; the operator's goes straight through
            operator["late"] = _newcomer_for(viewer)  # joins after that read
            operator["result"] = index_rebuild()
        return prepared

    monkeypatch.setattr(indexes, "_index_rebuild_prepare", operator_rebuilds_meanwhile)

    assert tasks.serving_index_refresh.delay(run_id=run.pk).get() == "succeeded"

    fresher = operator["result"].index
    assert index_get_serving().pk == fresher.pk
    late_appeal = np.frombuffer(
        bytes(
            UserEmbedding.objects.get(
                model=trained.embedding, user=operator["late"]
            ).vector
        ),
        dtype="<f4",
    )[fresher.dim :]
    assert np.array_equal(
        index_artifact_load(index=fresher).reconstruct(operator["late"].pk),
        late_appeal,
    )
    outcome = TrainingRun.objects.get(pk=run.pk).summary["stages"]["serving_index"]
    assert outcome["superseded"] is True and outcome["index"] == fresher.pk
    # The superseded build left no file behind.
    referenced = {i.artifact.name for i in IndexArtifact.objects.all()}
    assert {f for f in _files(media) if f.startswith("indexes/")} == referenced
