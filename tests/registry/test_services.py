import hashlib
import os

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from config.api import ApplicationError
from registry.models import (
    ActivationAction,
    IndexArtifact,
    MLModel,
    ModelActivation,
    ModelKind,
)
from registry.services import (
    REGISTRY_GENERATION_CACHE_KEY,
    activation_summary,
    model_activate,
    model_deactivate,
    model_discard_unindexed,
    model_register,
    model_rollback,
    model_set_traffic,
)
from tests.accounts.factories import UserFactory
from tests.registry.factories import MLModelFactory, versions

pytestmark = pytest.mark.django_db


def active_versions(kind=ModelKind.RANKING) -> list[int]:
    return list(
        MLModel.objects.filter(kind=kind, is_active=True).values_list(
            "version", flat=True
        )
    )


def test_activate_deactivates_the_previous_active_version():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    model_activate(model=v2, actor=None)

    assert active_versions() == [2]


def test_activate_writes_an_audit_row_with_from_to_actor_and_reason():
    admin_user = UserFactory()
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None, actor_label="cli")

    activation = model_activate(
        model=v2.pk, actor=admin_user, actor_label="admin", reason="better NDCG"
    )

    stored = ModelActivation.objects.get(pk=activation.pk)
    assert stored.action == ActivationAction.PROMOTE
    assert stored.kind == ModelKind.RANKING
    assert (stored.from_model, stored.to_model) == (v1, v2)
    assert stored.actor == admin_user
    assert stored.actor_label == "admin"
    assert stored.reason == "better NDCG"
    assert activation_summary(stored) == "ranking: v1 → v2"
    v2.refresh_from_db()
    assert v2.activated_by == admin_user
    assert v2.activated_at is not None


def test_first_activation_comes_from_no_model():
    (v1,) = versions(count=1)

    activation = model_activate(model=v1, actor=None)

    assert activation.from_model is None
    assert activation_summary(activation) == "ranking: none → v1"


def test_activate_leaves_other_kinds_alone():
    (ranking,) = versions(ModelKind.RANKING, count=1)
    (embedding,) = versions(ModelKind.EMBEDDING, count=1)
    model_activate(model=embedding, actor=None)

    model_activate(model=ranking, actor=None)

    assert active_versions(ModelKind.EMBEDDING) == [1]
    assert active_versions(ModelKind.RANKING) == [1]


def test_activating_the_active_version_is_refused_and_not_logged():
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    with pytest.raises(ApplicationError, match="already active"):
        model_activate(model=v1, actor=None)

    assert ModelActivation.objects.count() == 1


def test_activating_an_unknown_model_is_refused():
    with pytest.raises(ApplicationError) as error:
        model_activate(model=999_999, actor=None)

    assert error.value.status_code == 404
    assert error.value.field == "model"


def test_activating_the_challenger_clears_its_traffic():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)
    model_set_traffic(model=v2, traffic_percent=20, actor=None)

    model_activate(model=v2, actor=None)

    v2.refresh_from_db()
    assert v2.is_active
    assert v2.traffic_percent == 0


def test_rollback_returns_to_the_version_promoted_from_per_the_log():
    v1, v2, v3 = versions()
    model_activate(model=v3, actor=None)
    model_activate(model=v1, actor=None)  # v1 was promoted from v3, not from v0

    activation = model_rollback(
        kind=ModelKind.RANKING, actor=None, actor_label="cli", reason="v1 regressed"
    )

    assert active_versions() == [3]
    assert activation.action == ActivationAction.ROLLBACK
    assert (activation.from_model, activation.to_model) == (v1, v3)
    assert activation.reason == "v1 regressed"


def test_repeated_rollbacks_walk_back_instead_of_flip_flopping():
    v1, v2, v3 = versions()
    for version in (v1, v2, v3):
        model_activate(model=version, actor=None)

    model_rollback(kind=ModelKind.RANKING, actor=None)
    assert active_versions() == [2]
    model_rollback(kind=ModelKind.RANKING, actor=None)
    assert active_versions() == [1]


def test_rollback_without_a_log_falls_back_to_the_highest_lower_version():
    v1, v2, v3 = versions()
    # Activated outside the services (e.g. a data fix): the log says nothing.
    MLModel.objects.filter(pk=v3.pk).update(is_active=True)

    activation = model_rollback(kind=ModelKind.RANKING, actor=None)

    assert active_versions() == [2]
    assert (activation.from_model, activation.to_model) == (v3, v2)


def test_rollback_with_nothing_earlier_is_an_error():
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    with pytest.raises(ApplicationError, match="Nothing to roll back to"):
        model_rollback(kind=ModelKind.RANKING, actor=None)

    assert active_versions() == [1]
    assert ModelActivation.objects.count() == 1


def test_rollback_of_a_kind_never_activated_is_an_error():
    versions(count=2)

    with pytest.raises(ApplicationError, match="no active version"):
        model_rollback(kind=ModelKind.RANKING, actor=None)


def test_rollback_of_an_unknown_kind_is_an_error_naming_the_field():
    with pytest.raises(ApplicationError) as error:
        model_rollback(kind="telepathy", actor=None)

    assert error.value.field == "kind"


def test_deactivate_leaves_no_active_version_and_rollback_undoes_it():
    v1, v2, _ = versions()
    model_activate(model=v2, actor=None)

    deactivation = model_deactivate(model=v2, actor=None, reason="bad outputs")

    assert active_versions() == []
    assert deactivation.action == ActivationAction.DEACTIVATE
    assert (deactivation.from_model, deactivation.to_model) == (v2, None)

    rollback = model_rollback(kind=ModelKind.RANKING, actor=None)

    assert active_versions() == [2]
    assert (rollback.from_model, rollback.to_model) == (None, v2)


def test_deactivating_an_inactive_version_is_refused():
    (v1,) = versions(count=1)

    with pytest.raises(ApplicationError, match="not active"):
        model_deactivate(model=v1, actor=None)


def test_set_traffic_makes_the_challenger_and_logs_it():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    activation = model_set_traffic(
        model=v2, traffic_percent=10, actor=None, reason="A/B v2"
    )

    v2.refresh_from_db()
    assert v2.traffic_percent == 10
    assert activation.action == ActivationAction.CHALLENGER
    assert (activation.from_model, activation.to_model) == (None, v2)
    assert activation.traffic_percent == 10
    assert "challenger at 10%" in activation_summary(activation)


def test_a_new_challenger_replaces_the_previous_one():
    v1, v2, v3 = versions()
    model_activate(model=v1, actor=None)
    model_set_traffic(model=v2, traffic_percent=10, actor=None)

    activation = model_set_traffic(model=v3, traffic_percent=25, actor=None)

    challengers = MLModel.objects.filter(traffic_percent__gt=0)
    assert [(m.version, m.traffic_percent) for m in challengers] == [(3, 25)]
    assert (activation.from_model, activation.to_model) == (v2, v3)


def test_zero_traffic_stops_the_test():
    v1, v2, _ = versions()
    model_set_traffic(model=v2, traffic_percent=10, actor=None)

    activation = model_set_traffic(model=v2, traffic_percent=0, actor=None)

    v2.refresh_from_db()
    assert v2.traffic_percent == 0
    assert (activation.from_model, activation.to_model) == (v2, None)


@pytest.mark.parametrize("traffic_percent", [-1, 101, "10", True])
def test_traffic_outside_0_to_100_is_refused(traffic_percent):
    (v1,) = versions(count=1)

    with pytest.raises(ApplicationError) as error:
        model_set_traffic(model=v1, traffic_percent=traffic_percent, actor=None)

    assert error.value.field == "traffic_percent"
    assert ModelActivation.objects.count() == 0


def test_the_active_version_cannot_be_the_challenger():
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    with pytest.raises(ApplicationError, match="only an inactive version"):
        model_set_traffic(model=v1, traffic_percent=10, actor=None)


def test_register_numbers_versions_per_kind():
    first = model_register(kind=ModelKind.RANKING, metrics={"auc": 0.7})
    second = model_register(kind=ModelKind.RANKING)
    embedding = model_register(kind=ModelKind.EMBEDDING)

    assert (first.version, second.version, embedding.version) == (1, 2, 1)
    assert not first.is_active
    assert first.metrics == {"auc": 0.7}


def test_register_follows_the_highest_existing_version():
    MLModelFactory(kind=ModelKind.RANKING, version=7)

    assert model_register(kind=ModelKind.RANKING).version == 8


def test_register_stores_the_artifact_with_checksum_and_size(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    payload = b"\x00model-bytes" * 100

    model = model_register(
        kind=ModelKind.EMBEDDING, artifact=payload, artifact_name="index.faiss"
    )

    assert model.artifact.name.startswith("models/embedding/")
    assert model.artifact.name.endswith(".faiss")
    assert model.artifact_sha256 == hashlib.sha256(payload).hexdigest()
    assert model.artifact_size == len(payload)
    with default_storage.open(model.artifact.name) as stored:
        assert stored.read() == payload


def test_register_accepts_a_django_file(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    model = model_register(
        kind=ModelKind.RANKING, artifact=ContentFile(b"abc", name="ranker.joblib")
    )

    assert model.artifact.name.endswith(".joblib")
    assert model.artifact_sha256 == hashlib.sha256(b"abc").hexdigest()


def test_register_with_an_unknown_kind_is_refused():
    with pytest.raises(ApplicationError) as error:
        model_register(kind="telepathy")

    assert error.value.field == "kind"


def test_the_database_refuses_two_active_versions_of_a_kind():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    with pytest.raises(IntegrityError), transaction.atomic():
        MLModel.objects.filter(pk=v2.pk).update(is_active=True)


def test_the_database_refuses_two_challengers_of_a_kind():
    v1, v2, _ = versions()
    model_set_traffic(model=v1, traffic_percent=10, actor=None)

    with pytest.raises(IntegrityError), transaction.atomic():
        MLModel.objects.filter(pk=v2.pk).update(traffic_percent=5)


def test_generation_is_announced_in_the_cache_after_commit(
    django_capture_on_commit_callbacks,
):
    (v1,) = versions(count=1)

    with django_capture_on_commit_callbacks(execute=True):
        activation = model_activate(model=v1, actor=None)

    assert cache.get(REGISTRY_GENERATION_CACHE_KEY) == activation.pk


def test_nothing_is_announced_when_the_change_fails(
    django_capture_on_commit_callbacks,
):
    (v1,) = versions(count=1)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ApplicationError):
            model_deactivate(model=v1, actor=None)

    assert callbacks == []
    assert cache.get(REGISTRY_GENERATION_CACHE_KEY) is None


# --- discarding an embedding version left without an index (issue 13 #14) -----------


def test_an_unindexed_embedding_version_that_never_served_is_discarded(
    django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    model = model_register(kind=ModelKind.EMBEDDING, artifact=b"vectors")
    path = default_storage.path(model.artifact.name)

    with django_capture_on_commit_callbacks(execute=True):
        assert model_discard_unindexed(model_id=model.pk) == model.version

    assert not MLModel.objects.filter(pk=model.pk).exists()
    assert not os.path.exists(path)


def test_versions_that_served_or_have_an_index_are_kept():
    active, once_active, indexed, challenger = versions(ModelKind.EMBEDDING, 4)
    model_activate(model=once_active, actor=None, actor_label="test")
    model_activate(model=active, actor=None, actor_label="test")
    IndexArtifact.objects.create(
        embedding_model=indexed, artifact="indexes/x.faiss", artifact_sha256="0" * 64
    )
    MLModel.objects.filter(pk=challenger.pk).update(traffic_percent=10)
    ranking = MLModelFactory(kind=ModelKind.RANKING)

    for model in (active, once_active, indexed, challenger, ranking):
        assert model_discard_unindexed(model_id=model.pk) is None
    assert MLModel.objects.count() == 5
