import pytest
from django.db import OperationalError

from config.celery import app
from recommender import tasks
from recommender.models import TrainingRun, TrainingRunStatus
from recommender.services import stages
from recommender.services.pipeline import STAGES
from recommender.services.runs import training_run_fail, training_run_start
from registry.models import MLModel, ModelKind

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def eager():
    """Run tasks in-process, as the embedded mode does, even with Redis configured;
    failures are recorded on the result (as on a worker), not raised at the caller."""
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def test_nightly_pipeline_chains_every_stage(seeded, media):
    run_id = tasks.nightly_pipeline.delay().get()

    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    assert run.trigger == "celery"
    assert set(run.summary["stages"]) == set(STAGES)
    assert MLModel.objects.filter(kind=ModelKind.EMBEDDING).count() == 1
    assert MLModel.objects.filter(kind=ModelKind.RANKING).count() == 1
    assert not MLModel.objects.filter(is_active=True).exists()


def test_nightly_pipeline_does_not_start_while_a_run_is_in_progress():
    running = training_run_start(trigger="cli")

    assert tasks.nightly_pipeline.delay().get() is None
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [running.pk]


def test_a_stage_of_a_run_that_is_no_longer_running_does_nothing(seeded, media):
    run = training_run_start(trigger="cli")
    training_run_fail(run_id=run.pk, error="taken over")

    assert tasks.embeddings_train.delay(run_id=run.pk).get() is None
    assert not MLModel.objects.exists()


def test_a_redelivered_stage_does_not_register_twice(seeded, media):
    run = training_run_start(trigger="cli")

    first = tasks.embeddings_train.delay(run_id=run.pk).get()
    second = tasks.embeddings_train.delay(run_id=run.pk).get()

    assert first == second
    assert MLModel.objects.filter(kind=ModelKind.EMBEDDING).count() == 1


def test_transient_database_errors_are_retried(monkeypatch):
    run = training_run_start(trigger="cli")
    calls = []

    def flaky(*, run_id):
        calls.append(run_id)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return 7

    monkeypatch.setattr(stages, "features_compute", flaky)

    assert tasks.features_compute.delay(run_id=run.pk).get() == 7
    assert calls == [run.pk, run.pk]


def test_a_stage_that_fails_for_good_marks_its_run_failed(monkeypatch):
    run = training_run_start(trigger="cli")

    def broken(*, run_id):
        raise ValueError("no interactions to learn from")

    monkeypatch.setattr(stages, "features_compute", broken)

    result = tasks.features_compute.delay(run_id=run.pk)

    assert result.failed()
    run.refresh_from_db()
    assert run.status == TrainingRunStatus.FAILED
    assert "no interactions to learn from" in run.error
    assert training_run_start(trigger="cli").status == TrainingRunStatus.RUNNING


def test_training_tasks_go_to_the_training_queue_and_ack_late(settings):
    routes = settings.CELERY_TASK_ROUTES
    for task in (*tasks.STAGE_TASKS, tasks.models_evaluate, tasks.nightly_pipeline):
        assert routes[task.name] == {"queue": "training"}
        assert task.acks_late
    schedule = settings.CELERY_BEAT_SCHEDULE["nightly-training"]
    assert schedule["task"] == tasks.nightly_pipeline.name
