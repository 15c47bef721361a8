"""The training pipeline as services: one function per stage, plus the run lock.

A ``TrainingRun`` row is the pipeline's lock and log. :func:`training_run_start`
refuses to start while another run is ``running`` with a fresh heartbeat, and takes a
stale one over (its worker died). Every stage:

1. checks that its run is still running and beats the heartbeat (a daemon thread
   keeps beating while the stage computes, so only a dead process goes stale);
2. returns what it produced earlier if it already ran for this run (tasks are
   retried and redelivered: a stage must be idempotent);
3. computes with ``recommender.ml`` (no transaction open), writes artifact files
   atomically (``registry.artifacts.artifact_save``);
4. registers everything in ONE transaction as its last step, after locking the run
   row and re-checking that it is still running and the stage still undone. A crash
   before or during that transaction registers nothing; at worst an unreferenced
   file is left behind, deleted right away when the failure is an exception.

The stages load their data as of the run's start (``started_at``), so the stages of
one run, run by different workers at different times, see the same data. The last
one, ``serving_index``, is the exception: it rebuilds the index of the embedding
version serving at the end of the run from the members as they are then, as
``rebuild_index`` does, and finishes the run.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.api import ApplicationError
from recommender import data as db
from recommender.impressions import impressions_log
from recommender.ml.artifacts import dumps
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.embeddings import (
    content_vectors,
    embed_from_content,
    train_embeddings,
    vectors_for_index,
)
from recommender.ml.features import (
    FEATURE_VERSION,
    build_feature_store,
    user_feature_rows,
)
from recommender.models import TrainingRun, TrainingRunStatus
from registry.artifacts import (
    StoredArtifact,
    artifact_delete,
    artifact_save,
    model_artifact_load,
)
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.selectors import model_get_active
from registry.services import (
    index_register,
    model_activate,
    model_discard_unindexed,
    model_register,
)

logger = logging.getLogger(__name__)

AUTO_PROMOTION_ACTOR = "auto-promotion"
STAGES = ("features", "embeddings", "index", "ranking", "evaluate", "serving_index")
SEED = 0

Progress = Callable[[str], None]


class TrainingRunNotRunning(Exception):
    """The run finished, failed or was taken over: its stages must not go on."""


@dataclass
class RunData:
    """What a run trains on, loaded once per process (as of the run's start)."""

    members: MemberArrays
    interactions: InteractionArrays
    now_ts: float
    load_seconds: float


# --- the run lock ------------------------------------------------------------------


@transaction.atomic
def training_run_start(*, trigger: str, now: datetime | None = None) -> TrainingRun:
    """Start a training run, or refuse (``ApplicationError``, 409) while another
    one is running with a fresh heartbeat.

    A running run whose heartbeat is older than ``KINDRED["TRAINING_STALE_SECONDS"]``
    belongs to a dead worker: it is marked failed and this run takes over.
    """
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.KINDRED["TRAINING_STALE_SECONDS"])
    running = list(
        TrainingRun.objects.select_for_update().filter(status=TrainingRunStatus.RUNNING)
    )
    for other in running:
        if now - other.heartbeat_at < stale_after:
            raise ApplicationError(
                f"Training run {other.pk} is already running (stage "
                f"{other.stage or 'starting'}, last heartbeat "
                f"{other.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC).",
                field="training_run",
                status_code=409,
            )
        other.status = TrainingRunStatus.FAILED
        other.finished_at = now
        other.error = "\n".join(
            [
                f"No heartbeat since {other.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC "
                "(worker presumed dead); taken over by a new run.",
                *_run_discard_incomplete(other),
            ]
        )
        other.save(update_fields=["status", "finished_at", "error"])
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                trigger=trigger, started_at=now, heartbeat_at=now, summary={}
            )
    except IntegrityError as error:
        # Another run started between our check and our insert (one-running
        # constraint).
        raise ApplicationError(
            "Another training run started at the same time.",
            field="training_run",
            status_code=409,
        ) from error


def training_run_heartbeat(*, run_id: int, stage: str | None = None) -> None:
    """Record that the run is alive (and at ``stage``); raises
    ``TrainingRunNotRunning`` if it is no longer running (e.g. taken over)."""
    fields = {"heartbeat_at": timezone.now()}
    if stage is not None:
        fields["stage"] = stage
    updated = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRunStatus.RUNNING
    ).update(**fields)
    if not updated:
        raise TrainingRunNotRunning(f"Training run {run_id} is not running.")


def training_run_fail(*, run_id: int, error: str) -> list[str]:
    """Mark a running run failed with ``error`` (no-op if it is not running) and
    discard what it registered that cannot serve: an embedding version left without
    an index (e.g. the disk filled up while the index was written). Returns what was
    discarded, in words (also appended to the run's error)."""
    failed = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRunStatus.RUNNING
    ).update(
        status=TrainingRunStatus.FAILED,
        finished_at=timezone.now(),
        error=error[-10_000:],
    )
    if not failed:
        return []
    try:
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().get(pk=run_id)
            discarded = _run_discard_incomplete(run)
            if discarded:
                run.error = (run.error + "\n" + "\n".join(discarded))[-10_000:]
                run.save(update_fields=["error"])
    except Exception:  # noqa: BLE001 - the run is failed; the rest is tidying
        logger.exception("could not discard what failed run %s registered", run_id)
        return []
    return discarded


def _run_discard_incomplete(run: TrainingRun) -> list[str]:
    """Inside a transaction: delete the run's embedding version if it has no index
    and never served (``registry.services.model_discard_unindexed``)."""
    if run.embedding_model_id is None or run.index_artifact_id is not None:
        return []
    version = model_discard_unindexed(model_id=run.embedding_model_id)
    if version is None:
        return []
    return [
        f"Discarded embedding v{version}: registered by this run, but its index "
        "was never built."
    ]


class _HeartbeatThread:
    """Beats the run's heartbeat every few seconds while a stage computes.

    Only when no transaction is open on this thread's connection: a caller holding
    a transaction (e.g. a test) keeps the run row invisible to other connections.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        stale = settings.KINDRED["TRAINING_STALE_SECONDS"]
        self.interval = max(1.0, min(30.0, stale / 6))
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        from django.db import connection as thread_connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    training_run_heartbeat(run_id=self.run_id)
                except TrainingRunNotRunning:
                    return
                except Exception:  # noqa: BLE001 - a missed beat is not fatal
                    logger.warning("heartbeat of run %s failed", self.run_id)
        finally:
            thread_connection.close()


def _lock_running_run(run_id: int) -> TrainingRun:
    """Inside a transaction: the locked run, if it is still running."""
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status != TrainingRunStatus.RUNNING:
        raise TrainingRunNotRunning(f"Training run {run_id} is {run.status}.")
    return run


def _record_stage(run: TrainingRun, stage: str, seconds: float, **details) -> None:
    stages = run.summary.setdefault("stages", {})
    stages[stage] = {"seconds": round(seconds, 3), **details}
    run.heartbeat_at = timezone.now()


# --- data --------------------------------------------------------------------------


def run_data_load(*, run: TrainingRun) -> RunData:
    """Members who joined and interactions created before the run started: each
    pair's verdicts given by then, those replaced by a change of mind included
    (``until``), so the ranking stage's time split sees each pair's verdict as it
    stood at each of its cuts. Stages wanting the run's state use
    ``before(now_ts)`` (``recommender.ml`` functions cut with it)."""
    started = time.monotonic()
    members = db.members_load(joined_before=run.started_at)
    interactions = db.interactions_load(
        created_before=run.started_at, with_history=True
    )
    return RunData(
        members=members,
        interactions=interactions,
        now_ts=run.started_at.timestamp(),
        load_seconds=time.monotonic() - started,
    )


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
    with _HeartbeatThread(run_id):
        data = data or run_data_load(run=run)
        store = build_feature_store(data.members, data.interactions, now_ts=data.now_ts)
        rows = list(user_feature_rows(store))
    computed_at = timezone.now()
    with transaction.atomic():
        run = _lock_running_run(run_id)
        if run.features_computed_at is not None:
            return 0
        count = db.user_features_replace(
            feature_version=FEATURE_VERSION, rows=rows, computed_at=computed_at
        )
        run.feature_version = FEATURE_VERSION
        run.features_computed_at = computed_at
        _record_stage(run, "features", time.monotonic() - started, rows=count)
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
    with _HeartbeatThread(run_id):
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
    try:
        with transaction.atomic():
            run = _lock_running_run(run_id)
            if run.embedding_model_id is not None:
                artifact_delete(name=stored.name)
                return run.embedding_model
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
            _record_stage(
                run,
                "embeddings",
                time.monotonic() - started,
                version=registered.version,
            )
            run.save()
            return registered
    except BaseException:
        artifact_delete(name=stored.name)
        raise


# --- stage 3: the FAISS index ------------------------------------------------------


@dataclass
class BuiltIndex:
    stored: StoredArtifact
    info: object  # recommender.ml.index.IndexInfo


def _build_and_store_index(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray
) -> BuiltIndex:
    """Index the appeal ``vectors``; recall is measured with taste ``queries``, the
    vectors serving searches with."""
    from recommender.ml.index import build_index, index_to_bytes

    index, info = build_index(
        np.ascontiguousarray(vectors, dtype=np.float32),
        np.asarray(ids, dtype=np.int64),
        exact_threshold=settings.KINDRED["INDEX_EXACT_THRESHOLD"],
        seed=SEED,
        queries=np.ascontiguousarray(queries, dtype=np.float32),
    )
    stored = artifact_save(
        content=index_to_bytes(index), folder="indexes", suffix=".faiss"
    )
    return BuiltIndex(stored=stored, info=info)


def _register_index(embedding_model_id: int, built: BuiltIndex) -> IndexArtifact:
    info = built.info
    return index_register(
        embedding_model=embedding_model_id,
        stored_artifact=built.stored,
        index_type=info.index_type,
        params=info.params,
        n_vectors=info.n,
        dim=info.dim,
        metrics={
            f"recall@{info.k}": round(float(info.recall_at_k), 4),
            "recall_sample": info.sample,
            "recall_seconds": round(float(info.recall_seconds), 3),
        },
        build_seconds=float(info.build_seconds),
    )


def index_build(*, run_id: int, embedding_model=None) -> IndexArtifact:
    """Build the FAISS index over the run's embedding version and register it
    (recall against exact search measured and stored on the index and copied into
    the embedding version's metrics)."""
    training_run_heartbeat(run_id=run_id, stage="index")
    run = TrainingRun.objects.select_related("index_artifact").get(pk=run_id)
    if run.index_artifact_id is not None:
        return run.index_artifact
    if run.embedding_model_id is None:
        raise RuntimeError(f"Training run {run_id} has no embedding model to index.")
    started = time.monotonic()
    with _HeartbeatThread(run_id):
        if embedding_model is None:
            embedding_model = model_artifact_load(
                model=MLModel.objects.get(pk=run.embedding_model_id)
            )
        built = _build_and_store_index(
            vectors_for_index(embedding_model),
            embedding_model.user_id,
            queries=embedding_model.taste,
        )
    try:
        with transaction.atomic():
            run = _lock_running_run(run_id)
            if run.index_artifact_id is not None:
                artifact_delete(name=built.stored.name)
                return run.index_artifact
            index = _register_index(run.embedding_model_id, built)
            run.index_artifact = index
            _record_stage(
                run,
                "index",
                time.monotonic() - started,
                type=index.index_type,
                n=index.n_vectors,
                **index.metrics,
            )
            run.save()
            return index
    except BaseException:
        artifact_delete(name=built.stored.name)
        raise


@dataclass
class IndexRebuild:
    index: IndexArtifact
    embedding_version: int
    stored_vectors: int
    new_members: int
    seconds: float
    # A concurrent rebuild from later data registered first: this one's index was
    # discarded and ``index`` is that fresher one.
    superseded: bool = False


@dataclass
class _PreparedRebuild:
    """An index of the active embedding version, built and stored, not registered."""

    model_id: int
    version: int
    as_of: datetime  # members and vectors read at or after this time
    stored_vectors: int
    new_ids: np.ndarray  # int64 [k]: members embedded from their profile
    new_vectors: np.ndarray  # float32 [k, 2 * dim]: their packed vectors
    built: BuiltIndex
    started: float


# IndexArtifact.params key: when the members and vectors an index was built from
# were read (rebuilds only; a training run's index is older than any rebuild).
INDEX_AS_OF = "vectors_as_of"


def _index_rebuild_prepare(*, active: MLModel, report: Progress) -> _PreparedRebuild:
    """Read the active version's stored vectors, embed the members who have none
    (content fallback), build the index over all of them and store its file
    atomically. No transaction is held: the caller registers the result."""
    started = time.monotonic()
    as_of = timezone.now()
    report(f"embedding v{active.version}: loading stored vectors")
    user_ids, vectors = db.user_embeddings_load(model_id=active.pk)
    report(f"  {len(user_ids):,} stored vectors")
    # Everyone without a vector read here, in one snapshot of the members after the
    # vectors: a member whose vector another rebuild stored meanwhile is embedded
    # again (same recipe) rather than missed or indexed twice.
    from accounts.models import Profile

    stored = set(user_ids.tolist())
    newcomer_ids = [
        user_id
        for user_id in Profile.objects.order_by("user_id").values_list(
            "user_id", flat=True
        )
        if user_id not in stored
    ]
    new_ids = np.empty(0, dtype=np.int64)
    new_vectors = np.empty((0, vectors.shape[1] if vectors.size else 0), np.float32)
    if newcomer_ids:
        report(f"  {len(newcomer_ids):,} members joined since training: embedding")
        model = model_artifact_load(model=active)
        newcomers = db.members_load(user_ids=newcomer_ids)
        store = build_feature_store(
            newcomers,
            InteractionArrays.empty(),
            now_ts=timezone.now().timestamp(),
            vocabulary=model.vocabulary,
        )
        taste, appeal = embed_from_content(model, content_vectors(store))
        new_ids = newcomers.user_id
        new_vectors = db.embedding_pack(taste, appeal)
        if not vectors.size:
            vectors = np.empty((0, new_vectors.shape[1]), np.float32)
    all_ids = np.concatenate([user_ids, new_ids])
    all_vectors = np.concatenate([vectors, new_vectors])
    if not len(all_ids):
        raise ApplicationError(
            f"Embedding v{active.version} has no vectors to index.", field="kind"
        )
    report(f"building the index over {len(all_ids):,} vectors")
    taste_all, appeal_all = db.embedding_split(all_vectors)
    built = _build_and_store_index(appeal_all, all_ids, queries=taste_all)
    built.info.params[INDEX_AS_OF] = as_of.isoformat()
    return _PreparedRebuild(
        model_id=active.pk,
        version=active.version,
        as_of=as_of,
        stored_vectors=len(user_ids),
        new_ids=new_ids,
        new_vectors=new_vectors,
        built=built,
        started=started,
    )


def _index_as_of(index: IndexArtifact) -> datetime | None:
    value = (index.params or {}).get(INDEX_AS_OF)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _index_rebuild_register(prepared: _PreparedRebuild) -> IndexRebuild:
    """Inside a transaction: store the newcomers' vectors and register the index,
    unless a rebuild from later data registered one first.

    Rebuilds of one version (``rebuild_index``, the nightly refresh) may overlap;
    the version's row lock serializes their registrations, and the index read from
    the newest data stays the serving one whatever order they finish in. A
    superseded rebuild registers nothing; its file is the caller's to delete.
    """
    from accounts.models import User
    from recommender.models import UserEmbedding

    locked = MLModel.objects.select_for_update().get(pk=prepared.model_id)
    fresher = [
        index
        for index in locked.indexes.all()
        if (_index_as_of(index) or prepared.as_of) > prepared.as_of
    ]
    if fresher:
        return IndexRebuild(
            index=max(fresher, key=_index_as_of),
            embedding_version=prepared.version,
            stored_vectors=prepared.stored_vectors,
            new_members=0,
            seconds=time.monotonic() - prepared.started,
            superseded=True,
        )
    if len(prepared.new_ids):
        # Members deleted since they were read have no row to point at.
        existing = set(
            User.objects.filter(pk__in=prepared.new_ids.tolist()).values_list(
                "pk", flat=True
            )
        )
        # Another rebuild may have stored some of them meanwhile.
        UserEmbedding.objects.bulk_create(
            (
                UserEmbedding(user_id=user_id, model_id=locked.pk, vector=row.tobytes())
                for user_id, row in zip(
                    prepared.new_ids.tolist(),
                    prepared.new_vectors.astype("<f4"),
                    strict=True,
                )
                if user_id in existing
            ),
            batch_size=db.BULK_BATCH_SIZE,
            ignore_conflicts=True,
        )
    return IndexRebuild(
        index=_register_index(locked.pk, prepared.built),
        embedding_version=prepared.version,
        stored_vectors=prepared.stored_vectors,
        new_members=len(prepared.new_ids),
        seconds=time.monotonic() - prepared.started,
    )


def _active_embedding_or_refuse() -> MLModel:
    active = model_get_active(kind=ModelKind.EMBEDDING)
    if active is None:
        raise ApplicationError(
            "No active embedding model: train one (manage.py train_models) and "
            "promote it first.",
            field="kind",
            status_code=409,
        )
    return active


def index_rebuild(*, progress: Progress | None = None) -> IndexRebuild:
    """Rebuild the index of the active embedding version from its stored
    ``UserEmbedding`` rows, first giving members who joined since training a vector
    from their profile (the model's content fallback; stored too, so serving can
    query with it). Raises ``ApplicationError`` when no embedding version is active.

    Safe beside another rebuild of the same version (see
    :func:`_index_rebuild_register`): when one from later data registered first,
    this one is discarded and the result says so (``superseded``).
    """
    report = progress or (lambda message: None)
    prepared = _index_rebuild_prepare(
        active=_active_embedding_or_refuse(), report=report
    )
    try:
        with transaction.atomic():
            result = _index_rebuild_register(prepared)
    except BaseException:
        artifact_delete(name=prepared.built.stored.name)
        raise
    if result.superseded:
        artifact_delete(name=prepared.built.stored.name)
    return result


def _active_index_is_current(active: MLModel) -> IndexArtifact | None:
    """The newest index of ``active`` when it already holds every member's vector
    and nothing else (no member joined or left since it was built), else ``None``.

    Vectors of a version are only added by a build that registers an index over
    them, in the same transaction, so equal counts and no member without a vector
    mean the same set.
    """
    from recommender.models import UserEmbedding
    from registry.selectors import index_get_latest

    newest = index_get_latest(embedding_model=active)
    if newest is None or db.members_without_embedding(model_id=active.pk):
        return None
    stored = UserEmbedding.objects.filter(model_id=active.pk).count()
    return newest if newest.n_vectors == stored else None


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
    with _HeartbeatThread(run_id):
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
        gate = _compare_with_active(result)
        stored = artifact_save(
            content=dumps(result.model), folder="models/ranking", suffix=".joblib"
        )
    seconds = time.monotonic() - started
    metrics = {**result.metrics, "training_seconds": round(seconds, 3)}
    window_start, window_end = _window(data)
    try:
        with transaction.atomic():
            run = _lock_running_run(run_id)
            if run.ranking_model_id is not None:
                artifact_delete(name=stored.name)
                return run.ranking_model
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
            _record_stage(
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
    except BaseException:
        artifact_delete(name=stored.name)
        raise


def _compare_with_active(result) -> dict:
    """Score the new model and the active ranking version on the same holdout (same
    pairs, feature store and embeddings).

    The new version "beats" the active one when its holdout NDCG@10 is higher, or
    equal with a higher AUC. With no active version there is nothing to beat; an
    active version that cannot be scored (other feature version, unreadable
    artifact) is not beaten automatically: a person decides.
    """
    from recommender.ml import pipeline

    def holdout_scores(model) -> dict:
        scores = pipeline.evaluate_ranking(
            model, result.holdout, result.holdout_pairs, rows=result.holdout_rows
        )
        return {key: scores.get(key) for key in ("auc", "ndcg@10")}

    new = holdout_scores(result.model)
    active = model_get_active(kind=ModelKind.RANKING)
    if active is None:
        return {"active_version": None, "new": new, "beats_active": True}
    try:
        active_model = model_artifact_load(model=active)
        if getattr(active_model, "feature_version", None) != FEATURE_VERSION:
            raise ValueError(
                f"it uses features {getattr(active_model, 'feature_version', '?')}, "
                f"not {FEATURE_VERSION}"
            )
        old = holdout_scores(active_model)
    except Exception as error:  # noqa: BLE001 - an unreadable rival is not a win
        logger.warning("could not score active ranking v%s: %s", active.version, error)
        return {
            "active_version": active.version,
            "new": new,
            "active": None,
            "beats_active": False,
            "reason": f"active version not comparable: {error}",
        }
    beats = (new["ndcg@10"], new["auc"]) > (old["ndcg@10"], old["auc"])
    return {
        "active_version": active.version,
        "new": new,
        "active": old,
        "beats_active": bool(beats),
    }


# --- stage 5: evaluation and promotion ---------------------------------------------


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
        with _HeartbeatThread(run_id):
            evaluation = _strategies_compare(run, data)
    with transaction.atomic():
        run = _lock_running_run(run_id)
        decisions = []
        if run.evaluated_at is None:
            decisions = _auto_promote(run)
            _record_stage(run, "evaluate", time.monotonic() - started)
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


def _auto_promote(run: TrainingRun) -> list[dict]:
    if not settings.KINDRED["AUTO_PROMOTE"]:
        return [{"promoted": False, "reason": "AUTO_PROMOTE is off"}]
    gate = run.summary.get("ranking_gate") or {}
    decisions = []
    ranking_wins = bool(gate.get("beats_active")) and run.ranking_model_id is not None
    if run.ranking_model_id is not None:
        decisions.append(
            _promote_if(
                run.ranking_model_id,
                ranking_wins,
                _gate_reason(gate),
            )
        )
    if run.embedding_model_id is not None:
        no_active = model_get_active(kind=ModelKind.EMBEDDING) is None
        decisions.append(
            _promote_if(
                run.embedding_model_id,
                ranking_wins or no_active,
                "no active embedding version"
                if no_active
                else "promoted with its ranking model: " + _gate_reason(gate),
            )
        )
    return decisions


def _gate_reason(gate: dict) -> str:
    if gate.get("active_version") is None:
        return "no active ranking version"
    return (
        f"holdout NDCG@10/AUC new {gate.get('new')} vs active "
        f"v{gate.get('active_version')} {gate.get('active')}"
        + (f" ({gate['reason']})" if gate.get("reason") else "")
    )


def _promote_if(model_id: int, condition: bool, reason: str) -> dict:
    model = MLModel.objects.get(pk=model_id)
    decision = {"kind": model.kind, "version": model.version, "reason": reason}
    if not condition or model.is_active:
        return {**decision, "promoted": False}
    model_activate(
        model=model, actor=None, actor_label=AUTO_PROMOTION_ACTOR, reason=reason
    )
    return {**decision, "promoted": True}


# --- stage 6: the serving index ----------------------------------------------------


def serving_index_refresh(*, run_id: int) -> TrainingRun:
    """Rebuild the index of the embedding version serving now (after this run's
    promotions), as ``rebuild_index`` does, and finish the run.

    Without auto-promotion a run only indexes its own, inactive version: this keeps
    the serving index up to date every night with the members who joined since
    (embedded by the content fallback) and without those who left. Skipped when no
    embedding version is active or its newest index is already current. Serving
    picks the new index up at its next registry poll (the index id is part of the
    serving generation). A redelivered stage does not rebuild twice: the outcome
    is recorded on the run in the transaction that registers the index.
    """
    training_run_heartbeat(run_id=run_id, stage="serving_index")
    run = TrainingRun.objects.get(pk=run_id)
    started = time.monotonic()
    prepared = None
    outcome: dict = {}
    if "serving_index" not in (run.summary.get("stages") or {}):
        active = model_get_active(kind=ModelKind.EMBEDDING)
        current = _active_index_is_current(active) if active is not None else None
        if active is None:
            outcome = {"skipped": "no active embedding version"}
        elif current is not None:
            outcome = {
                "skipped": f"index {current.pk} is current",
                "version": active.version,
                "index": current.pk,
            }
        else:
            with _HeartbeatThread(run_id):
                prepared = _index_rebuild_prepare(
                    active=active, report=lambda message: None
                )
    # The file is deleted unless this delivery registered it (and that committed).
    registers, registered = False, False
    try:
        with transaction.atomic():
            run = _lock_running_run(run_id)
            if "serving_index" not in (run.summary.get("stages") or {}):
                if prepared is not None:
                    result = _index_rebuild_register(prepared)
                    registers = not result.superseded
                    outcome = {
                        "version": result.embedding_version,
                        "index": result.index.pk,
                        "n": result.index.n_vectors,
                        "new_members": result.new_members,
                        "superseded": result.superseded,
                    }
                _record_stage(
                    run, "serving_index", time.monotonic() - started, **outcome
                )
            _run_succeed(run)
        registered = registers
    finally:
        if prepared is not None and not registered:
            artifact_delete(name=prepared.built.stored.name)
    return run


def _run_succeed(run: TrainingRun) -> None:
    """Inside the transaction holding the run's lock: mark it succeeded."""
    run.status = TrainingRunStatus.SUCCEEDED
    run.stage = ""
    run.finished_at = timezone.now()
    run.heartbeat_at = run.finished_at
    total = (run.finished_at - run.started_at).total_seconds()
    run.summary["total_seconds"] = round(total, 3)
    run.save()


# --- everything, synchronously -----------------------------------------------------


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


# --- serving: recommendations and their impressions ---------------------------------


def recommendations_serve(*, user, limit: int, request_id: str | None = None):
    """Answer a member's recommendation request and log its impressions.

    The answer comes from ``recommender.selectors.recommendations_get`` (cache or
    engine); the impressions are handed to :func:`impressions_log`, which never fails
    the request.
    """
    from recommender.selectors import recommendations_get

    page = recommendations_get(user=user, limit=limit, request_id=request_id)
    impressions_log(user_id=user.pk, page=page)
    return page
