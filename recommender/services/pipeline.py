"""Every stage of a training run, synchronously in this process
(``manage.py train_models``). The Celery pipeline (``recommender.tasks``) chains the
same stages as tasks.
"""

from __future__ import annotations

import time
import traceback

from recommender.models import TrainingRun, TrainingRunStatus
from recommender.services.evaluation import models_evaluate
from recommender.services.indexes import index_build, serving_index_refresh
from recommender.services.runs import (
    Progress,
    run_data_load,
    training_run_fail,
    training_run_start,
)
from recommender.services.stages import (
    embeddings_train,
    features_compute,
    ranking_train,
)

STAGES = ("features", "embeddings", "index", "ranking", "evaluate", "serving_index")


def pipeline_run(
    *, trigger: str = "cli", progress: Progress | None = None
) -> TrainingRun:
    """Run every stage in this process (``manage.py train_models``), loading the
    data once. Refuses like :func:`training_run_start`; marks the run failed and
    re-raises if a stage fails."""
    report = progress or (lambda message: None)
    run = training_run_start(trigger=trigger)
    report(f"training run {run.pk} started")
    try:
        data = run_data_load(run=run)
        report(
            f"loaded {data.members.n:,} members and "
            f"{data.interactions.current().m:,} "
            f"interactions in {data.load_seconds:.1f}s"
        )
        steps = (
            ("features", lambda: features_compute(run_id=run.pk, data=data)),
            ("embeddings", lambda: embeddings_train(run_id=run.pk, data=data)),
            ("index", lambda: index_build(run_id=run.pk)),
            (
                "ranking",
                lambda: ranking_train(
                    run_id=run.pk, data=data, progress=lambda m: report(f"  {m}")
                ),
            ),
            ("evaluate", lambda: models_evaluate(run_id=run.pk, data=data)),
            ("serving_index", lambda: serving_index_refresh(run_id=run.pk)),
        )
        expected = _last_stage_seconds()
        for number, (name, step) in enumerate(steps, start=1):
            remaining = [expected.get(later) for later, _ in steps[number - 1 :]]
            estimate = (
                f" (ETA {sum(remaining):,.0f}s by the last run)"
                if all(seconds is not None for seconds in remaining)
                else ""
            )
            report(f"stage {number}/{len(steps)} {name}…{estimate}")
            started = time.monotonic()
            outcome = step()
            report(f"stage {name} done in {time.monotonic() - started:.1f}s: {outcome}")
    except BaseException as error:
        for note in training_run_fail(
            run_id=run.pk, error="".join(traceback.format_exception(error))
        ):
            report(note)
        raise
    run.refresh_from_db()
    return run


def _last_stage_seconds() -> dict[str, float]:
    """Stage durations of the last successful run (for the ETA of this one)."""
    last = (
        TrainingRun.objects.filter(status=TrainingRunStatus.SUCCEEDED)
        .order_by("-pk")
        .values_list("summary", flat=True)
        .first()
    )
    stages = (last or {}).get("stages") or {}
    return {
        name: float(stage["seconds"])
        for name, stage in stages.items()
        if isinstance(stage, dict) and isinstance(stage.get("seconds"), int | float)
    }
