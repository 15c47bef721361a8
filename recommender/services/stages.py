"""The model-training stages of a run: features, embeddings, ranking.

The index stages are in ``indexes`` and the evaluation stage in ``evaluation``;
``pipeline`` runs them all in order.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from recommender import data as db
from recommender.ml.artifacts import dumps
from recommender.ml.embeddings import content_vectors, train_embeddings
from recommender.ml.features import (
    FEATURE_VERSION,
    build_feature_store,
    user_feature_rows,
)
from recommender.models import TrainingRun
from recommender.services.promotion import compare_with_active
from recommender.services.runs import (
    SEED,
    HeartbeatThread,
    Progress,
    RunData,
    lock_running_run,
    record_stage,
    run_data_load,
    stage_register,
    training_run_heartbeat,
)
from registry.artifacts import artifact_save
from registry.models import MLModel, ModelKind
from registry.services import model_register


def _data_counts(data: RunData) -> dict:
    current = data.interactions.current()
    return {
        "members": data.members.n,
        "interactions": current.m,
        "positive_interactions": int(current.is_positive.sum()),
    }


def _window(data: RunData) -> tuple[datetime | None, datetime | None]:
    if data.interactions.m == 0:
        return None, None
    return (
        datetime.fromtimestamp(float(data.interactions.ts.min()), tz=UTC),
        datetime.fromtimestamp(data.now_ts, tz=UTC),
    )


# --- stage 1: features -------------------------------------------------------------


def features_compute(*, run_id: int, data: RunData | None = None) -> int:
    """Compute every member's features (``FEATURE_VERSION``) as of the run's start
    and replace that version's ``UserFeatures`` rows in one transaction. Returns the
    number of rows (0 if this run already computed them)."""
    training_run_heartbeat(run_id=run_id, stage="features")
    run = TrainingRun.objects.get(pk=run_id)
    if run.features_computed_at is not None:
        return 0
    started = time.monotonic()
    with HeartbeatThread(run_id):
        data = data or run_data_load(run=run)
        store = build_feature_store(data.members, data.interactions, now_ts=data.now_ts)
        rows = list(user_feature_rows(store))
    computed_at = timezone.now()
    with transaction.atomic():
        run = lock_running_run(run_id)
        if run.features_computed_at is not None:
            return 0
        count = db.user_features_replace(
            feature_version=FEATURE_VERSION, rows=rows, computed_at=computed_at
        )
        run.feature_version = FEATURE_VERSION
        run.features_computed_at = computed_at
        record_stage(run, "features", time.monotonic() - started, rows=count)
        run.save()
    return count


# --- stage 2: embeddings -----------------------------------------------------------


def embeddings_train(*, run_id: int, data: RunData | None = None) -> MLModel:
    """Train member embeddings (taste/appeal, content fallback for members with no
    history) and register them as a new inactive embedding version, with one
    ``UserEmbedding`` per member, in one transaction."""
    training_run_heartbeat(run_id=run_id, stage="embeddings")
    run = TrainingRun.objects.select_related("embedding_model").get(pk=run_id)
    if run.embedding_model_id is not None:
        return run.embedding_model
    started = time.monotonic()
    with HeartbeatThread(run_id):
        data = data or run_data_load(run=run)
        store = build_feature_store(data.members, data.interactions, now_ts=data.now_ts)
        model = train_embeddings(
            data.members.user_id,
            data.interactions,
            content_vectors(store),
            dim=settings.KINDRED["EMBEDDING_DIM"],
            seed=SEED,
            vocabulary=store.vocabulary,
        )
        stored = artifact_save(
            content=dumps(model), folder="models/embedding", suffix=".joblib"
        )
    seconds = time.monotonic() - started
    window_start, window_end = _window(data)

    def register(run: TrainingRun) -> MLModel:
        registered = model_register(
            kind=ModelKind.EMBEDDING,
            stored_artifact=stored,
            metrics={
                **model.metrics,
                "learned_taste_share": float(np.mean(model.has_taste))
                if data.members.n
                else 0.0,
                "learned_appeal_share": float(np.mean(model.has_appeal))
                if data.members.n
                else 0.0,
                "training_seconds": round(seconds, 3),
            },
            hyperparameters=model.hyperparameters,
            feature_version=FEATURE_VERSION,
            training_window_start=window_start,
            training_window_end=window_end,
            data_counts=_data_counts(data),
            notes=f"training run {run_id}",
        )
        db.user_embeddings_write(
            model_id=registered.pk,
            user_ids=model.user_id,
            vectors=db.embedding_pack(model.taste, model.appeal),
            created_at=timezone.now(),
        )
        run.embedding_model = registered
        record_stage(
            run,
            "embeddings",
            time.monotonic() - started,
            version=registered.version,
        )
        run.save()
        return registered

    return stage_register(
        run_id=run_id,
        done="embedding_model",
        artifact_name=stored.name,
        register=register,
    )


# --- stage 4: ranking --------------------------------------------------------------


# Impressions of the last days are read for the ranking model's training rows
# (shown, then no verdict: a negative); older label windows go without.
IMPRESSIONS_TRAINING_DAYS = 30


def ranking_train(
    *, run_id: int, data: RunData | None = None, progress: Progress | None = None
) -> MLModel:
    """Train the ranking model on a time split of the run's data, evaluate it on the
    holdout (with popularity and random baselines, and against the active ranking
    version on the same holdout) and register it as a new inactive version."""
    from recommender.ml.pipeline import train_ranking_stage

    training_run_heartbeat(run_id=run_id, stage="ranking")
    run = TrainingRun.objects.select_related("ranking_model").get(pk=run_id)
    if run.ranking_model_id is not None:
        return run.ranking_model
    started = time.monotonic()
    with HeartbeatThread(run_id):
        data = data or run_data_load(run=run)
        impressions = db.impressions_load(
            created_after=run.started_at - timedelta(days=IMPRESSIONS_TRAINING_DAYS),
            created_before=run.started_at,
        )
        result = train_ranking_stage(
            data.members,
            data.interactions,
            {"dim": settings.KINDRED["EMBEDDING_DIM"], "seed": SEED},
            data.now_ts,
            SEED,
            impressions=impressions,
            progress=progress,
        )
        gate = compare_with_active(result)
        stored = artifact_save(
            content=dumps(result.model), folder="models/ranking", suffix=".joblib"
        )
    seconds = time.monotonic() - started
    metrics = {**result.metrics, "training_seconds": round(seconds, 3)}
    window_start, window_end = _window(data)

    def register(run: TrainingRun) -> MLModel:
        registered = model_register(
            kind=ModelKind.RANKING,
            stored_artifact=stored,
            metrics=metrics,
            hyperparameters={
                "model_type": result.model.model_type,
                "feature_names": list(result.model.feature_names),
                **result.model.hyperparameters,
                "embedding": {"dim": settings.KINDRED["EMBEDDING_DIM"]},
                "seed": SEED,
            },
            feature_version=result.model.feature_version,
            training_window_start=window_start,
            training_window_end=window_end,
            data_counts={
                **_data_counts(data),
                **{
                    key: metrics[key]
                    for key in ("train_rows", "holdout_rows")
                    if key in metrics
                },
            },
            notes=f"training run {run_id}",
        )
        run.ranking_model = registered
        run.summary["ranking_gate"] = gate
        record_stage(
            run,
            "ranking",
            seconds,
            version=registered.version,
            **{
                key: metrics.get(key)
                for key in ("auc", "ndcg@10", "log_loss")
                if key in metrics
            },
        )
        run.save()
        return registered

    return stage_register(
        run_id=run_id,
        done="ranking_model",
        artifact_name=stored.name,
        register=register,
    )
