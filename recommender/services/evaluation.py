"""The evaluation stage of a run: the offline strategy comparison and the
auto-promotion decision (``promotion``).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from recommender.artifacts import model_artifact_load
from recommender.models import TrainingRun
from recommender.services.promotion import auto_promote
from recommender.services.runs import (
    SEED,
    HeartbeatThread,
    RunData,
    lock_running_run,
    record_stage,
    run_data_load,
    training_run_heartbeat,
)

logger = logging.getLogger(__name__)


def models_evaluate(*, run_id: int, data: RunData | None = None) -> TrainingRun:
    """Compare the strategies offline and decide auto-promotion (the run then
    refreshes the serving index and finishes: :func:`serving_index_refresh`).

    The strategy comparison (``recommender.evaluation.evaluation_run``, the same
    function as ``manage.py evaluate``) scores the ranking version this run
    registered, on the time split it was trained on, against random, popularity,
    content-only and collaborative-only; the report goes to the run's
    ``summary["evaluation"]``. It is informative only: it never fails the run and
    is skipped above :data:`NIGHTLY_EVALUATION_MAX_MEMBERS` members.

    Only with ``KINDRED["AUTO_PROMOTE"]``: the new ranking version is promoted when
    it beat the active one on the same holdout (or none is active); the new
    embedding version is promoted with it (the ranking model was trained with the
    same embedding recipe), or alone when no embedding version is active. Otherwise
    the new versions stay inactive for an ML engineer to promote in the admin.
    """
    training_run_heartbeat(run_id=run_id, stage="evaluate")
    run = TrainingRun.objects.select_related("ranking_model").get(pk=run_id)
    evaluation = None
    started = time.monotonic()
    if run.evaluated_at is None:
        with HeartbeatThread(run_id):
            evaluation = _strategies_compare(run, data)
    with transaction.atomic():
        run = lock_running_run(run_id)
        decisions = []
        if run.evaluated_at is None:
            decisions = auto_promote(run)
            record_stage(run, "evaluate", time.monotonic() - started)
            run.evaluated_at = timezone.now()
            run.summary["promotions"] = decisions
            run.summary["evaluation"] = evaluation
        run.save()
    return run


NIGHTLY_EVALUATION_MAX_MEMBERS = 200_000
NIGHTLY_EVALUATION_VIEWERS = 200


def _strategies_compare(run: TrainingRun, data: RunData | None) -> dict:
    """The offline strategy comparison of the run's ranking version (a report
    dict, or ``{"skipped": reason}``)."""
    from recommender.evaluation import evaluation_run
    from recommender.ml.evaluation import EvaluationConfig

    if run.ranking_model_id is None:
        return {"skipped": "no ranking version in this run"}
    started = time.monotonic()
    try:
        data = data or run_data_load(run=run)
        if data.members.n > NIGHTLY_EVALUATION_MAX_MEMBERS:
            return {
                "skipped": f"{data.members.n:,} members (more than "
                f"{NIGHTLY_EVALUATION_MAX_MEMBERS:,}): run manage.py evaluate"
            }
        output = evaluation_run(
            members=data.members,
            # The history as the ranking stage split it: the same split.
            interactions=data.interactions.as_of(data.now_ts),
            ranking_model=model_artifact_load(model=run.ranking_model),
            config=EvaluationConfig(
                seed=SEED,
                max_viewers=NIGHTLY_EVALUATION_VIEWERS,
                embedding_kwargs={"dim": settings.KINDRED["EMBEDDING_DIM"]},
                # Bounded: the baselines only; the peers' tuning (ALS, EASE, kNN
                # on two feedback kinds) is for manage.py evaluate.
                peers=(),
            ),
            title=f"training run {run.pk}",
        )
    except Exception as error:  # noqa: BLE001 - informative only: never fails a run
        logger.warning("strategy comparison of run %s failed: %s", run.pk, error)
        return {"skipped": f"evaluation failed: {error}"}
    return {**output.report, "seconds": round(time.monotonic() - started, 3)}
