"""Celery tasks of the training pipeline: thin wrappers around ``recommender.services``
(``runs``, ``stages``, ``indexes``, ``evaluation``).

``nightly_pipeline`` (Celery beat) starts a ``TrainingRun`` (the overlap lock) and
chains one task per stage, passing the run's id. Stages are idempotent (a redelivered
or retried stage returns what it produced), so the tasks are ``acks_late``: a worker
killed mid-stage leaves the message to be redelivered, and transient database or
broker errors are retried with exponential backoff. A stage that fails for good marks
its run failed (``on_failure``); a stage whose run is no longer running (finished,
failed, taken over after a dead worker) does nothing.
"""

import logging
from types import ModuleType

from celery import Task, chain, shared_task
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
)


class TrainingTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 5
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 5

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        run_id = kwargs.get("run_id")
        if run_id is None:
            return
        from recommender.services.runs import training_run_fail

        try:
            training_run_fail(
                run_id=run_id, error=f"{self.name} failed: {exc!r}\n{einfo}"
            )
        except Exception:  # noqa: BLE001 - the heartbeat will go stale instead
            logger.exception("could not mark training run %s failed", run_id)


def _stage(module: ModuleType, function_name: str, run_id: int):
    from recommender.services.runs import TrainingRunNotRunning

    try:
        return getattr(module, function_name)(run_id=run_id)
    except TrainingRunNotRunning as error:
        logger.info("%s skipped: %s", function_name, error)
        return None


@shared_task(base=TrainingTask, name="recommender.tasks.features_compute")
def features_compute(*, run_id: int) -> int | None:
    """Stage 1: member features of the run, written to ``UserFeatures``."""
    from recommender.services import stages

    return _stage(stages, "features_compute", run_id)


@shared_task(base=TrainingTask, name="recommender.tasks.embeddings_train")
def embeddings_train(*, run_id: int) -> int | None:
    """Stage 2: train and register an embedding version; returns its id."""
    from recommender.services import stages

    model = _stage(stages, "embeddings_train", run_id)
    return model.pk if model is not None else None


@shared_task(base=TrainingTask, name="recommender.tasks.index_build")
def index_build(*, run_id: int) -> int | None:
    """Stage 3: build and register the FAISS index of the run's embedding version."""
    from recommender.services import indexes

    index = _stage(indexes, "index_build", run_id)
    return index.pk if index is not None else None


@shared_task(base=TrainingTask, name="recommender.tasks.ranking_train")
def ranking_train(*, run_id: int) -> int | None:
    """Stage 4: train, evaluate and register a ranking version; returns its id."""
    from recommender.services import stages

    model = _stage(stages, "ranking_train", run_id)
    return model.pk if model is not None else None


@shared_task(base=TrainingTask, name="recommender.tasks.models_evaluate")
def models_evaluate(*, run_id: int) -> str | None:
    """Stage 5: the offline comparison and auto-promotion (if enabled and earned)."""
    from recommender.services import evaluation

    run = _stage(evaluation, "models_evaluate", run_id)
    return run.status if run is not None else None


@shared_task(base=TrainingTask, name="recommender.tasks.serving_index_refresh")
def serving_index_refresh(*, run_id: int) -> str | None:
    """Stage 6: rebuild the serving (active) embedding version's index with the
    members who joined since, then the run's success."""
    from recommender.services import indexes

    run = _stage(indexes, "serving_index_refresh", run_id)
    return run.status if run is not None else None


STAGE_TASKS = (features_compute, embeddings_train, index_build, ranking_train)


@shared_task(base=TrainingTask, name="recommender.tasks.nightly_pipeline")
def nightly_pipeline(*, trigger: str = "celery") -> int | None:
    """Start a training run and chain its stages; returns the run id, or ``None``
    when another run is in progress (the lock refused)."""
    from config.api import ApplicationError
    from recommender.services.runs import training_run_fail, training_run_start

    try:
        run = training_run_start(trigger=trigger)
    except ApplicationError as error:
        logger.warning("nightly pipeline not started: %s", error.message)
        return None
    stages = [
        task.si(run_id=run.pk)
        for task in (*STAGE_TASKS, models_evaluate, serving_index_refresh)
    ]
    try:
        chain(*stages).apply_async()
    except BaseException as error:
        # Not left "running" until its heartbeat goes stale: the retry can start anew.
        training_run_fail(run_id=run.pk, error=f"could not queue the stages: {error!r}")
        raise
    return run.pk


@shared_task(
    name="recommender.tasks.impressions_write",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    max_retries=5,
)
def impressions_write(*, impressions: list[dict]) -> int:
    """Bulk-insert a response's impressions (embedded mode, see
    ``recommender.impressions.impressions_log``)."""
    from recommender.impressions import impressions_write

    return impressions_write(impressions=impressions)


@shared_task(
    name="recommender.tasks.impressions_flush",
    ignore_result=True,
)
def impressions_flush() -> int:
    """Drain the impressions buffer into ``RecommendationLog`` (Celery beat, every
    ``IMPRESSIONS_FLUSH_SECONDS``); returns the rows written. Nothing to do in
    embedded mode, where impressions are written in-process."""
    from recommender.impressions import buffer_enabled, impressions_drain

    if not buffer_enabled():
        return 0
    return impressions_drain()


@shared_task(name="recommender.tasks.ab_guardrail_check", ignore_result=True)
def ab_guardrail_check() -> list[int]:
    """Stop the A/B challenger when it is significantly worse than control on a
    guardrail metric (Celery beat, every ``AB_GUARDRAIL_SECONDS``; see
    ``recommender.guardrail``); returns the ids of the versions it stopped."""
    from recommender.guardrail import experiment_guardrail_check

    result = experiment_guardrail_check()
    if result is None:
        return []
    logger.info("A/B guardrail: %s", result.summary)
    return [activation.from_model_id for activation in result.activations]


@shared_task(name="recommender.tasks.data_retention", ignore_result=True)
def data_retention() -> int:
    """Remove old impressions, old embedding rows and the artifact files of versions
    that can no longer serve (Celery beat, daily; see ``recommender.retention``);
    returns the id of the run's ``RetentionRun`` audit row."""
    from recommender.retention import data_retention_run

    return data_retention_run(trigger="celery").pk
