"""FAISS indexes: the run's index stage (:func:`index_build`), the rebuild of the
active embedding version's index (:func:`index_rebuild`, ``manage.py rebuild_index``)
and the run's last stage, which rebuilds the serving index and finishes the run
(:func:`serving_index_refresh`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.api import ApplicationError
from recommender import data as db
from recommender.artifacts import model_artifact_load
from recommender.ml.data import InteractionArrays
from recommender.ml.embeddings import (
    content_vectors,
    embed_from_content,
    vectors_for_index,
)
from recommender.ml.features import build_feature_store
from recommender.models import TrainingRun
from recommender.services.runs import (
    SEED,
    HeartbeatThread,
    Progress,
    lock_running_run,
    record_stage,
    run_succeed,
    stage_register,
    training_run_heartbeat,
)
from registry.artifacts import StoredArtifact, artifact_delete, artifact_save
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.selectors import model_get_active
from registry.services import index_register

# --- stage 3: the run's index -----------------------------------------------------


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


def index_build(*, run_id: int) -> IndexArtifact:
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
    with HeartbeatThread(run_id):
        embedding_model = model_artifact_load(
            model=MLModel.objects.get(pk=run.embedding_model_id)
        )
        built = _build_and_store_index(
            vectors_for_index(embedding_model),
            embedding_model.user_id,
            queries=embedding_model.taste,
        )

    def register(run: TrainingRun) -> IndexArtifact:
        index = _register_index(run.embedding_model_id, built)
        run.index_artifact = index
        record_stage(
            run,
            "index",
            time.monotonic() - started,
            type=index.index_type,
            n=index.n_vectors,
            **index.metrics,
        )
        run.save()
        return index

    return stage_register(
        run_id=run_id,
        done="index_artifact",
        artifact_name=built.stored.name,
        register=register,
    )


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
            with HeartbeatThread(run_id):
                prepared = _index_rebuild_prepare(
                    active=active, report=lambda message: None
                )
    # The file is deleted unless this delivery registered it (and that committed).
    registers, registered = False, False
    try:
        with transaction.atomic():
            run = lock_running_run(run_id)
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
                record_stage(
                    run, "serving_index", time.monotonic() - started, **outcome
                )
            run_succeed(run)
        registered = registers
    finally:
        if prepared is not None and not registered:
            artifact_delete(name=prepared.built.stored.name)
    return run
