"""Data retention: what Kindred forgets, and when (the daily ``data_retention`` beat
task runs :func:`data_retention_run`).

* Impressions (``RecommendationLog``) older than ``IMPRESSIONS_RETENTION_DAYS``.
* Member vectors (``UserEmbedding`` rows) of embedding versions that are not *kept*
  and were last used more than ``EMBEDDINGS_RETENTION_DAYS`` ago.
* Artifact files (the model file, the FAISS indexes) of versions of either kind that
  are not kept and were last used more than ``ARTIFACTS_RETENTION_DAYS`` ago; and
  index files of any version replaced by a newer index of that version more than
  that long ago (serving only ever loads a version's newest index).

A version is kept when it is active, the A/B challenger, the version ``rollback``
would re-activate, or one of the ``ROLLBACK_VERSIONS_KEPT`` versions that were
active most recently before the active one (``registry.selectors.
model_versions_kept``). It was last used at the latest of its registration, its
activation and any registry audit row naming it. 0 days turns a removal off.

A version that loses its vectors or files is marked ``pruned_at`` (and its artifact
name cleared) in the transaction that decides it, after locking every version of
its kind in the order promotions lock them: a promotion either happened first (the
version is kept) or comes after and is refused (``registry.services``). Every
removal is recorded in the run's ``RetentionRun`` row in the same transaction; rows
go in batches, each its own transaction, so a backlog never holds long locks; files
are deleted only after the commit that forgot them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recommender.models import RecommendationLog, RetentionRun, UserEmbedding
from registry.models import IndexArtifact, MLModel, ModelActivation, ModelKind
from registry.selectors import model_versions_kept

logger = logging.getLogger(__name__)

# Rows deleted per statement (and transaction).
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind of data is kept (0: for ever), and how many versions that
    served before the active one stay ready for a rollback."""

    impressions_days: int
    embeddings_days: int
    artifacts_days: int
    rollback_versions: int

    @classmethod
    def from_settings(cls) -> RetentionPolicy:
        kindred = settings.KINDRED
        return cls(
            impressions_days=kindred["IMPRESSIONS_RETENTION_DAYS"],
            embeddings_days=kindred["EMBEDDINGS_RETENTION_DAYS"],
            artifacts_days=kindred["ARTIFACTS_RETENTION_DAYS"],
            rollback_versions=kindred["ROLLBACK_VERSIONS_KEPT"],
        )


def _cutoff(now: dt.datetime, days: int) -> dt.datetime | None:
    return now - dt.timedelta(days=days) if days > 0 else None


def data_retention_run(
    *, trigger: str, policy: RetentionPolicy | None = None
) -> RetentionRun:
    """Remove what the retention policy (default: the settings) says has been kept
    long enough, and return the run's audit row (see the module docstring)."""
    policy = policy or RetentionPolicy.from_settings()
    now = timezone.now()
    impressions_before = _cutoff(now, policy.impressions_days)
    embeddings_before = _cutoff(now, policy.embeddings_days)
    artifacts_before = _cutoff(now, policy.artifacts_days)
    run = RetentionRun.objects.create(
        trigger=trigger,
        started_at=now,
        settings={
            **asdict(policy),
            "impressions_before": _iso(impressions_before),
            "embeddings_before": _iso(embeddings_before),
            "artifacts_before": _iso(artifacts_before),
        },
    )
    if impressions_before is not None:
        _impressions_prune(run_id=run.pk, before=impressions_before)
    if embeddings_before is not None:
        _embeddings_prune(
            run_id=run.pk, before=embeddings_before, previous=policy.rollback_versions
        )
    if artifacts_before is not None:
        for kind in ModelKind.values:
            _artifacts_prune(
                run_id=run.pk,
                kind=kind,
                before=artifacts_before,
                previous=policy.rollback_versions,
            )
        _superseded_indexes_prune(run_id=run.pk, before=artifacts_before)
    RetentionRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())
    run.refresh_from_db()
    logger.info(
        "data retention: %d impressions, %d embedding rows, %d versions, "
        "%d files (%d bytes) removed",
        run.impressions_deleted,
        run.embeddings_deleted,
        len(run.versions_pruned),
        run.files_deleted,
        run.bytes_freed,
    )
    return run


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- rows ----------------------------------------------------------------------------


def _rows_delete(queryset, *, run_id: int, counter: str) -> int:
    """Delete ``queryset``'s rows ``BATCH_ROWS`` at a time, adding each batch to the
    run's ``counter`` in the batch's transaction; returns the rows deleted."""
    total = 0
    while True:
        with transaction.atomic():
            batch = queryset.order_by().values("pk")[:BATCH_ROWS]
            deleted, _ = queryset.model.objects.filter(pk__in=batch).delete()
            if deleted:
                RetentionRun.objects.filter(pk=run_id).update(
                    **{counter: F(counter) + deleted}
                )
        total += deleted
        if deleted < BATCH_ROWS:
            return total


def _impressions_prune(*, run_id: int, before: dt.datetime) -> int:
    return _rows_delete(
        RecommendationLog.objects.filter(created_at__lt=before),
        run_id=run_id,
        counter="impressions_deleted",
    )


def _embeddings_prune(*, run_id: int, before: dt.datetime, previous: int) -> int:
    with transaction.atomic():
        stale = [
            version
            for version in _versions_to_prune(
                kind=ModelKind.EMBEDDING, before=before, previous=previous
            )
            if UserEmbedding.objects.filter(model_id=version.pk).exists()
        ]
        now = timezone.now()
        for version in stale:
            version.pruned_at = version.pruned_at or now
            version.save(update_fields=["pruned_at"])
        _audit_versions(
            run_id=run_id,
            entries=[
                {"kind": v.kind, "version": v.version, "removed": "vectors"}
                for v in stale
            ],
        )
    return sum(
        _rows_delete(
            UserEmbedding.objects.filter(model_id=version.pk),
            run_id=run_id,
            counter="embeddings_deleted",
        )
        for version in stale
    )


# --- versions and files ------------------------------------------------------------


def _versions_to_prune(
    *, kind: str, before: dt.datetime, previous: int
) -> list[MLModel]:
    """The versions of ``kind`` neither kept nor used since ``before``, locked
    (every version of the kind, in primary key order, as promotions lock them).
    Call inside a transaction."""
    versions = list(
        MLModel.objects.select_for_update().filter(kind=kind).order_by("pk")
    )
    kept = model_versions_kept(kind=kind, previous=previous, versions=versions)
    last_used = {
        v.pk: max(v.created_at, v.activated_at or v.created_at) for v in versions
    }
    log = ModelActivation.objects.filter(kind=kind).values_list(
        "from_model_id", "to_model_id", "created_at"
    )
    for from_id, to_id, at in log:
        for pk in (from_id, to_id):
            if pk in last_used and at > last_used[pk]:
                last_used[pk] = at
    return [v for v in versions if v.pk not in kept and last_used[v.pk] < before]


def _artifacts_prune(
    *, run_id: int, kind: str, before: dt.datetime, previous: int
) -> None:
    files: list[tuple[str, int]] = []
    with transaction.atomic():
        entries = []
        now = timezone.now()
        for version in _versions_to_prune(kind=kind, before=before, previous=previous):
            indexes = list(IndexArtifact.objects.filter(embedding_model=version))
            stored = [version, *indexes]
            own = [(r.artifact.name, r.artifact_size) for r in stored if r.artifact]
            if not own:
                continue  # nothing stored (or pruned already)
            IndexArtifact.objects.filter(
                pk__in=[index.pk for index in indexes]
            ).delete()
            version.artifact = ""
            version.pruned_at = version.pruned_at or now
            version.save(update_fields=["artifact", "pruned_at"])
            entries.append(
                {
                    "kind": version.kind,
                    "version": version.version,
                    "removed": "artifacts",
                    "files": [name for name, _ in own],
                    "bytes": sum(size for _, size in own),
                }
            )
            files += own
        _audit_versions(run_id=run_id, entries=entries)
    _files_delete(run_id=run_id, files=files)


def _superseded_indexes_prune(*, run_id: int, before: dt.datetime) -> None:
    """Index files of a version replaced by its next index before ``before``."""
    rows = IndexArtifact.objects.order_by("embedding_model_id", "created_at", "pk")
    replaced: list[int] = []
    previous = None
    for row in rows.values("pk", "embedding_model_id", "created_at"):
        if (
            previous is not None
            and previous["embedding_model_id"] == row["embedding_model_id"]
            and row["created_at"] < before
        ):
            replaced.append(previous["pk"])
        previous = row
    if not replaced:
        return
    with transaction.atomic():
        doomed = list(IndexArtifact.objects.select_for_update().filter(pk__in=replaced))
        files = [(index.artifact.name, index.artifact_size) for index in doomed]
        IndexArtifact.objects.filter(pk__in=[index.pk for index in doomed]).delete()
        RetentionRun.objects.filter(pk=run_id).update(
            indexes_deleted=F("indexes_deleted") + len(doomed)
        )
    _files_delete(run_id=run_id, files=files)


def _audit_versions(*, run_id: int, entries: list[dict]) -> None:
    if not entries:
        return
    run = RetentionRun.objects.select_for_update().get(pk=run_id)
    run.versions_pruned = [*run.versions_pruned, *entries]
    run.save(update_fields=["versions_pruned"])


def _files_delete(*, run_id: int, files: list[tuple[str, int]]) -> None:
    """Delete files the registry no longer names (after that commit), and record
    them; a file the storage refuses stays, named in the run's ``errors``."""
    deleted, freed, errors = 0, 0, []
    for name, size in files:
        try:
            default_storage.delete(name)
        except Exception as error:  # noqa: BLE001 - any storage error: report, go on
            logger.warning("artifact %s not deleted: %s", name, error)
            errors.append({"file": name, "error": str(error)})
            continue
        deleted += 1
        freed += size
    if not files:
        return
    with transaction.atomic():
        run = RetentionRun.objects.select_for_update().get(pk=run_id)
        run.files_deleted += deleted
        run.bytes_freed += freed
        run.errors = [*run.errors, *errors]
        run.save(update_fields=["files_deleted", "bytes_freed", "errors"])
