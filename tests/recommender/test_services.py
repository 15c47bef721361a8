import datetime as dt
import os

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from config.api import ApplicationError
from recommender import data
from recommender.artifacts import model_artifact_load
from recommender.ml.features import FEATURE_VERSION
from recommender.models import (
    TrainingRun,
    TrainingRunStatus,
    UserEmbedding,
    UserFeatures,
)
from recommender.services import stages
from recommender.services.evaluation import models_evaluate
from recommender.services.indexes import index_build, serving_index_refresh
from recommender.services.runs import TrainingRunNotRunning, training_run_start
from recommender.services.stages import embeddings_train, features_compute
from registry.models import IndexArtifact, MLModel, ModelKind
from tests.registry.factories import MLModelFactory

pytestmark = pytest.mark.django_db


def _files(root) -> list[str]:
    if not os.path.exists(root):
        return []
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    )


# --- the run lock ------------------------------------------------------------------


def test_a_second_run_is_refused_while_one_is_running():
    first = training_run_start(trigger="cli")

    with pytest.raises(ApplicationError) as refused:
        training_run_start(trigger="celery")

    assert refused.value.status_code == 409
    assert f"run {first.pk} is already running" in refused.value.message
    assert TrainingRun.objects.count() == 1


def test_a_run_with_a_stale_heartbeat_is_taken_over(settings):
    settings.KINDRED = {**settings.KINDRED, "TRAINING_STALE_SECONDS": 600}
    dead = training_run_start(trigger="celery")
    TrainingRun.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=601)
    )

    new = training_run_start(trigger="cli")

    dead.refresh_from_db()
    assert dead.status == TrainingRunStatus.FAILED
    assert "taken over" in dead.error
    assert new.status == TrainingRunStatus.RUNNING
    # The dead run's stages, redelivered later, must not go on.
    with pytest.raises(TrainingRunNotRunning):
        features_compute(run_id=dead.pk)


def test_a_finished_run_does_not_block_the_next():
    run = training_run_start(trigger="cli")
    models_evaluate(run_id=run.pk)
    serving_index_refresh(run_id=run.pk)

    assert training_run_start(trigger="cli").pk != run.pk


# --- stages --------------------------------------------------------------------------


def test_features_are_written_once_per_run(seeded, media):
    run = training_run_start(trigger="cli")

    assert features_compute(run_id=run.pk) == 300
    first_times = set(UserFeatures.objects.values_list("computed_at", flat=True))
    assert features_compute(run_id=run.pk) == 0

    assert UserFeatures.objects.filter(feature_version=FEATURE_VERSION).count() == 300
    assert (
        set(UserFeatures.objects.values_list("computed_at", flat=True)) == first_times
    )
    row = UserFeatures.objects.first().feature_set
    assert {"like_rate_given", "like_rate_received", "age"} <= set(row)


def test_embeddings_register_one_inactive_version_with_a_vector_per_member(
    seeded, media
):
    run = training_run_start(trigger="cli")

    model = embeddings_train(run_id=run.pk)
    again = embeddings_train(run_id=run.pk)

    assert again.pk == model.pk
    assert MLModel.objects.filter(kind=ModelKind.EMBEDDING).count() == 1
    assert not model.is_active and model.version == 1
    assert UserEmbedding.objects.filter(model=model).count() == 300
    assert model.data_counts["members"] == 300
    assert model.artifact_sha256 and model.artifact_size > 0
    loaded = model_artifact_load(model=model)
    assert loaded.user_id.shape == (300,)
    stored = UserEmbedding.objects.get(model=model, user_id=int(loaded.user_id[0]))
    vector = np.frombuffer(bytes(stored.vector), dtype="<f4")
    assert np.array_equal(vector[: loaded.dim], loaded.taste[0])
    assert np.array_equal(vector[loaded.dim :], loaded.appeal[0])
    run.refresh_from_db()
    assert run.embedding_model_id == model.pk
    assert _files(media) == [model.artifact.name]


def test_a_failure_while_registering_leaves_no_model_and_no_file(
    seeded, media, monkeypatch
):
    run = training_run_start(trigger="cli")

    def crash(**kwargs):
        raise RuntimeError("worker died while writing vectors")

    monkeypatch.setattr(data, "user_embeddings_write", crash)

    with pytest.raises(RuntimeError):
        embeddings_train(run_id=run.pk)

    assert not MLModel.objects.exists()
    assert not UserEmbedding.objects.exists()
    assert _files(media) == []
    run.refresh_from_db()
    assert run.embedding_model_id is None


def test_a_version_registered_meanwhile_by_a_redelivery_wins_and_the_new_file_goes(
    seeded, media, monkeypatch
):
    run = training_run_start(trigger="cli")
    earlier = MLModelFactory(kind=ModelKind.EMBEDDING)
    save = stages.artifact_save

    def save_then_lose_the_race(**kwargs):
        stored = save(**kwargs)
        # The other delivery registers after this one's check, before its lock.
        TrainingRun.objects.filter(pk=run.pk).update(embedding_model=earlier)
        return stored

    monkeypatch.setattr(stages, "artifact_save", save_then_lose_the_race)

    assert embeddings_train(run_id=run.pk) == earlier
    assert list(MLModel.objects.all()) == [earlier]
    assert not UserEmbedding.objects.exists()
    assert _files(media) == []


def test_index_is_registered_for_the_embedding_version_with_recall(seeded, media):
    run = training_run_start(trigger="cli")
    model = embeddings_train(run_id=run.pk)

    index = index_build(run_id=run.pk)

    assert index_build(run_id=run.pk).pk == index.pk
    assert IndexArtifact.objects.count() == 1
    assert index.embedding_model_id == model.pk
    assert index.index_type == "flat"  # 300 members: exact
    assert index.n_vectors == 300
    assert index.metrics["recall@100"] == 1.0
    model.refresh_from_db()
    assert model.metrics["recall@100"] == 1.0
    assert model.metrics["index"]["id"] == index.pk
    assert default_storage.exists(index.artifact.name)
