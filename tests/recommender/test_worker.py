"""The nightly pipeline on a REAL Celery worker process (Redis broker, PostgreSQL).

Skipped without PostgreSQL and Redis (the embedded mode runs tasks in-process, which
``test_commands`` / ``test_tasks`` cover).
"""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.demo import demo_seed
from recommender.models import TrainingRun, TrainingRunStatus, UserEmbedding
from recommender.services.pipeline import STAGES
from registry.models import IndexArtifact, MLModel, ModelKind

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 240

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _needs_services():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("a real worker needs PostgreSQL and Redis")


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}"


def _purge_training_queues() -> None:
    """Messages left by an earlier run (e.g. a killed worker's) must not leak in."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for pattern in ("training*", "celery", "celery\x06\x16*", "unacked*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


class Worker:
    def __init__(self, *, app: str, media: Path, log: Path, extra_env=None):
        self.app, self.media, self.log = app, media, log
        self.extra_env = extra_env or {}
        self.process = None

    def start(self) -> "Worker":
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.test_settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(self.media),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.pop("CELERY_BROKER_URL", None)
        name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "--pool=solo",
                "-Q",
                "training,celery",
                "-n",
                name,
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_for(lambda: b"ready." in self.log.read_bytes(), "worker ready")
        return self

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited:\n{self.log.read_text()[-5000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}:\n{self.log.read_text()[-5000:]}"
                )
            time.sleep(0.2)


@pytest.fixture
def worker_env(transactional_db, settings, tmp_path):
    _needs_services()
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = str(media)
    _purge_training_queues()
    demo_seed(users=300, seed=5)
    workers = []

    def start(app: str = "config", **extra_env) -> Worker:
        worker = Worker(
            app=app, media=media, log=tmp_path / "worker.log", extra_env=extra_env
        )
        workers.append(worker)
        return worker.start()

    yield start, tmp_path
    for worker in workers:
        worker.stop()
    _purge_training_queues()


def _wait_for_run(worker: Worker, *, exclude=()) -> TrainingRun:
    def finished():
        return (
            TrainingRun.objects.exclude(pk__in=exclude)
            .exclude(status=TrainingRunStatus.RUNNING)
            .exists()
        )

    worker._wait_for(finished, "the training run to finish")
    return TrainingRun.objects.exclude(pk__in=exclude).get()


def test_nightly_pipeline_runs_on_a_real_worker(worker_env):
    from recommender.tasks import nightly_pipeline

    start, _ = worker_env
    worker = start()

    nightly_pipeline.delay()

    run = _wait_for_run(worker)
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    assert set(run.summary["stages"]) == set(STAGES)
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    ranking = MLModel.objects.get(kind=ModelKind.RANKING)
    assert (run.embedding_model_id, run.ranking_model_id) == (embedding.pk, ranking.pk)
    assert not embedding.is_active and not ranking.is_active
    assert 0.0 < ranking.metrics["auc"] <= 1.0
    assert "baseline_popularity" in ranking.metrics
    assert UserEmbedding.objects.filter(model=embedding).count() == 300
    index = IndexArtifact.objects.get()
    assert index.embedding_model_id == embedding.pk
    assert embedding.metrics["recall@100"] == index.metrics["recall@100"]


def test_a_worker_killed_mid_registration_leaves_nothing_and_the_next_run_succeeds(
    worker_env,
):
    from recommender.tasks import nightly_pipeline

    start, tmp_path = worker_env
    marker = tmp_path / "hang-marker"
    hanging = start(
        app="tests.recommender.slow_worker",
        KINDRED_TEST_HANG_AFTER="recommender.data:user_embeddings_write",
        KINDRED_TEST_HANG_MARKER=str(marker),
    )

    nightly_pipeline.delay()
    hanging._wait_for(marker.exists, "the embeddings registration")
    hanging.kill()

    dead = TrainingRun.objects.get()
    assert dead.status == TrainingRunStatus.RUNNING
    assert not MLModel.objects.exists()  # the open transaction died with the worker
    assert not UserEmbedding.objects.exists()
    assert not IndexArtifact.objects.exists()

    # Time passes: the dead run's heartbeat goes stale.
    TrainingRun.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(hours=2)
    )
    worker = start()
    nightly_pipeline.delay()

    run = _wait_for_run(worker, exclude=[dead.pk])
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    dead.refresh_from_db()
    assert dead.status == TrainingRunStatus.FAILED and "taken over" in dead.error
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    assert embedding.version == 1 and run.embedding_model_id == embedding.pk
    assert MLModel.objects.filter(kind=ModelKind.RANKING).count() == 1
    assert UserEmbedding.objects.count() == 300


def test_a_worker_killed_while_registering_the_serving_index_leaves_it_serving(
    worker_env,
):
    """The nightly refresh of the active version's index dies inside its
    registration: the previous index keeps serving, nothing half-built is
    registered, and the redelivered stage builds it once."""
    from recommender.artifacts import index_artifact_load
    from recommender.services.runs import training_run_start
    from recommender.tasks import serving_index_refresh
    from registry.selectors import index_get_serving
    from tests.accounts.factories import member
    from tests.recommender.serving_fixtures import train_and_activate

    start, tmp_path = worker_env
    trained = train_and_activate()
    serving = index_get_serving()
    newcomer = member(interests=["hiking", "jazz"])
    run = training_run_start(trigger="celery")
    marker = tmp_path / "hang-marker"
    hanging = start(
        app="tests.recommender.slow_worker",
        KINDRED_TEST_HANG_AFTER="recommender.services.indexes:index_register",
        KINDRED_TEST_HANG_MARKER=str(marker),
    )

    serving_index_refresh.delay(run_id=run.pk)
    hanging._wait_for(marker.exists, "the serving index registration")
    hanging.kill()

    assert index_get_serving().pk == serving.pk  # rolled back with the worker
    assert IndexArtifact.objects.count() == 1
    assert not UserEmbedding.objects.filter(user=newcomer).exists()
    assert index_artifact_load(index=serving).ntotal == 300

    # The broker redelivers the unacknowledged stage (sent again here: Redis
    # would wait for its visibility timeout).
    worker = start()
    serving_index_refresh.delay(run_id=run.pk)
    worker._wait_for(
        lambda: TrainingRun.objects.get(pk=run.pk).status != TrainingRunStatus.RUNNING,
        "the redelivered refresh",
    )

    run.refresh_from_db()
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    refreshed = index_get_serving()
    assert run.summary["stages"]["serving_index"]["index"] == refreshed.pk
    assert refreshed.embedding_model_id == trained.embedding.pk
    assert IndexArtifact.objects.count() == 2
    assert index_artifact_load(index=refreshed).ntotal == 301
    assert UserEmbedding.objects.filter(user=newcomer).count() == 1
