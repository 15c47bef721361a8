"""Hot reload: serving follows the registry admin within a poll, without restarts,
and a broken artifact never replaces a working model."""

import os
import threading

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from recommender import serving
from recommender.services.indexes import index_rebuild
from recommender.serving import holder as serving_holder
from recommender.serving.holder import RETRY_SECONDS, bundle_holder
from registry.models import IndexArtifact, MLModel, ModelKind
from tests.accounts.factories import UserFactory
from tests.recommender.serving_fixtures import register_copy

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:registry_mlmodel_changelist")


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def member_user(trained):
    from accounts.demo import demo_members

    return (
        demo_members()
        .filter(interactions_given__kind="like", preferences__max_distance_km=None)
        .order_by("pk")
        .first()
    )


def _promote_in_admin(admin_client, model: MLModel):
    response = admin_client.post(
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [model.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert MLModel.objects.get(pk=model.pk).is_active


def _versions(user):
    return serving.recommendations_compute(user=user, limit=10).model_versions


def test_a_promotion_in_the_admin_serves_at_the_next_poll(
    engine, trained, admin_client, member_user, settings
):
    settings.KINDRED = {**settings.KINDRED, "REGISTRY_POLL_SECONDS": 3600}
    assert _versions(member_user)["ranking"] == trained.ranking.version
    new = register_copy(trained.ranking)

    _promote_in_admin(admin_client, new)
    before_poll = _versions(member_user)
    bundle_holder().checked_at -= 3600  # the poll interval passes
    after_poll = serving.recommendations_compute(user=member_user, limit=10)

    assert before_poll["ranking"] == trained.ranking.version  # not yet polled
    assert after_poll.model_versions["ranking"] == new.version
    assert after_poll.strategy == "full"
    assert after_poll.generation == serving.serving_generation()
    assert serving.serving_health()["generation"] == after_poll.generation


def test_ticking_is_active_on_the_change_form_serves_the_version(
    engine, trained, admin_client, member_user
):
    _versions(member_user)
    new = register_copy(trained.ranking)

    response = admin_client.post(
        reverse("admin:registry_mlmodel_change", args=[new.pk]),
        {
            "initial-is_active": "False",
            "initial-traffic_percent": "0",
            "is_active": "on",
            "traffic_percent": "0",
            "notes": "",
            "reason": "better holdout",
            "_save": "Save",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert _versions(member_user)["ranking"] == new.version


def test_a_rollback_in_the_admin_serves_the_previous_version(
    engine, trained, admin_client, member_user
):
    new = register_copy(trained.ranking)
    _promote_in_admin(admin_client, new)
    assert _versions(member_user)["ranking"] == new.version

    admin_client.post(
        CHANGELIST,
        {"action": "rollback_selected_kinds", "_selected_action": [new.pk]},
    )

    assert _versions(member_user)["ranking"] == trained.ranking.version


def test_an_index_rebuild_is_picked_up(engine, trained, member_user):
    before = _versions(member_user)["index"]

    rebuilt = index_rebuild().index

    assert rebuilt.pk != before
    assert _versions(member_user)["index"] == rebuilt.pk


def test_a_corrupted_artifact_keeps_the_old_model_and_flags_health(
    engine, trained, admin_client, member_user
):
    assert serving.serving_health()["degraded"] is False
    _versions(member_user)
    broken = register_copy(trained.ranking)
    with default_storage.open(broken.artifact.name, "wb") as stored:
        stored.write(b"not the registered bytes")

    _promote_in_admin(admin_client, broken)
    result = serving.recommendations_compute(user=member_user, limit=10)

    assert result.strategy == "full"
    assert result.model_versions["ranking"] == trained.ranking.version
    health = serving.serving_health()
    assert health["degraded"] is True
    assert health["status"] == "degraded"
    assert "checksum" in health["last_error"]
    assert str(broken.pk) in health["last_error"]

    # Rolling back to the working version clears the alarm.
    admin_client.post(
        CHANGELIST,
        {"action": "rollback_selected_kinds", "_selected_action": [broken.pk]},
    )
    assert _versions(member_user)["ranking"] == trained.ranking.version
    assert serving.serving_health()["degraded"] is False


def test_a_missing_index_file_degrades_then_recovers_on_retry(
    engine, trained, member_user
):
    name = IndexArtifact.objects.get().artifact.name
    path = default_storage.path(name)
    os.rename(path, path + ".aside")

    degraded = serving.recommendations_compute(user=member_user, limit=10)
    health = serving.serving_health()
    os.rename(path + ".aside", path)
    bundle_holder().attempted_at -= RETRY_SECONDS  # the retry is due
    recovered = serving.recommendations_compute(user=member_user, limit=10)

    assert degraded.results  # still answers, without the index
    assert degraded.strategy == "content_popularity"
    assert health["degraded"] is True and "cannot be read" in health["last_error"]
    assert recovered.strategy == "full"
    assert serving.serving_health()["degraded"] is False


@pytest.mark.django_db(transaction=True)
def test_requests_keep_the_old_models_while_the_new_ones_load_in_the_background(
    settings, seeded, media, monkeypatch
):
    from tests.recommender.serving_fixtures import train_and_activate

    settings.KINDRED = {
        **settings.KINDRED,
        "REGISTRY_POLL_SECONDS": 0,
        "SERVING_RELOAD_IN_BACKGROUND": True,
    }
    serving.serving_reset()
    trained = train_and_activate()
    from accounts.demo import demo_members

    user = demo_members().filter(preferences__max_distance_km=None).first()
    assert _versions(user)["ranking"] == trained.ranking.version  # first load
    new = register_copy(trained.ranking)
    from registry.services import model_activate

    release = threading.Event()
    original = serving_holder.bundle_build

    def slow_build(*args, **kwargs):
        assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(serving_holder, "bundle_build", slow_build)
    model_activate(model=new, actor=None, actor_label="test")
    try:
        during = serving.recommendations_compute(user=user, limit=10)
        assert serving.serving_health()["loading"] is True
    finally:
        release.set()
    serving.serving_wait_idle()
    after = serving.recommendations_compute(user=user, limit=10)

    assert during.model_versions["ranking"] == trained.ranking.version
    assert during.strategy == "full"
    assert after.model_versions["ranking"] == new.version
    serving.serving_reset()


def test_nothing_loads_at_import_or_before_the_first_request(engine):
    assert bundle_holder().bundle is None
    assert serving.serving_health() == {
        **serving.serving_health(),
        "loaded": False,
        "status": "not_loaded",
    }


def test_the_active_version_gauges_follow_the_loaded_bundle(
    engine, trained, member_user
):
    from prometheus_client import REGISTRY

    _versions(member_user)

    assert (
        REGISTRY.get_sample_value("active_model_version", {"kind": ModelKind.RANKING})
        == trained.ranking.version
    )
    assert REGISTRY.get_sample_value("serving_index_vectors") > 0


def test_a_ranking_promotion_reloads_only_the_ranking_model(
    engine, trained, admin_client, member_user
):
    """Parts whose version did not change are reused, not loaded again: the
    member store, the embedding's vectors and its FAISS index stay the same
    objects."""
    _versions(member_user)
    before = bundle_holder().bundle
    new = register_copy(trained.ranking)

    _promote_in_admin(admin_client, new)
    assert _versions(member_user)["ranking"] == new.version

    after = bundle_holder().bundle
    assert after is not before
    assert set(after.rankings) == {new.pk}
    assert after.population is before.population
    kept, was = (
        after.embeddings[trained.embedding.pk],
        before.embeddings[trained.embedding.pk],
    )
    assert kept.model is was.model
    assert kept.taste is was.taste
    assert kept.index is was.index
