"""Writes to the model registry.

Every change to which version serves goes through one function here: it locks all
versions of the kind (so two admins acting at once serialize), changes them, and
appends the ``ModelActivation`` audit row in the same transaction. Caches learn about
the change only after commit.
"""

from datetime import datetime
from pathlib import PurePath

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.core.files.base import File
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from config.api import ApplicationError
from registry.artifacts import StoredArtifact, artifact_delete, artifact_save
from registry.models import (
    ActivationAction,
    IndexArtifact,
    MLModel,
    ModelActivation,
    ModelKind,
)
from registry.selectors import model_rollback_target

REGISTRY_GENERATION_CACHE_KEY = "registry:generation"
# The id of the newest index of the active embedding version, set when one is added.
INDEX_GENERATION_CACHE_KEY = "registry:index-generation"
_REGISTER_ATTEMPTS = 5


def model_label(model: MLModel | None) -> str:
    """``"v3"`` for a version, ``"none"`` for no model."""
    return f"v{model.version}" if model is not None else "none"


def activation_summary(activation: ModelActivation) -> str:
    """One line saying what an activation changed, e.g. ``"ranking: v3 → v4"``."""
    summary = (
        f"{activation.kind}: {model_label(activation.from_model)} → "
        f"{model_label(activation.to_model)}"
    )
    if activation.action == ActivationAction.CHALLENGER:
        summary += f" (challenger at {activation.traffic_percent}% of traffic)"
    return summary


@transaction.atomic
def model_activate(
    *,
    model: MLModel | int,
    actor: AbstractBaseUser | None,
    actor_label: str = "",
    reason: str = "",
) -> ModelActivation:
    """Make ``model`` the active version of its kind (a promotion).

    The previously active version is deactivated in the same transaction; if
    ``model`` was the kind's A/B challenger its traffic share is cleared, since it
    now serves everyone. Raises ``ApplicationError`` if it is already active.
    """
    target, versions = _lock_versions_of(model)
    if target.is_active:
        raise ApplicationError(
            f"{target.kind} {model_label(target)} is already active.",
            field="model",
            status_code=409,
        )
    return _switch_active(
        versions=versions,
        target=target,
        action=ActivationAction.PROMOTE,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
    )


@transaction.atomic
def model_rollback(
    *,
    kind: str,
    actor: AbstractBaseUser | None,
    actor_label: str = "",
    reason: str = "",
) -> ModelActivation:
    """Re-activate the version that served before the current one.

    That is the version the current one was last *promoted* from (rollbacks are
    skipped, so rolling back twice walks v3 → v2 → v1 instead of flip-flopping); if
    the log does not say, the highest version below the current one. With no active
    version, it undoes the latest deactivation. Raises ``ApplicationError`` when
    there is nothing to roll back to.
    """
    _check_kind(kind)
    versions = _lock_kind(kind)
    current = next((version for version in versions if version.is_active), None)
    target = model_rollback_target(kind=kind, versions=versions)
    if target is None:
        detail = (
            f"{kind} has no version before {model_label(current)}"
            if current is not None
            else f"{kind} has no active version and no deactivation to undo"
        )
        raise ApplicationError(
            f"Nothing to roll back to: {detail}.", field="kind", status_code=409
        )
    return _switch_active(
        versions=versions,
        target=target,
        action=ActivationAction.ROLLBACK,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
    )


@transaction.atomic
def model_deactivate(
    *,
    model: MLModel | int,
    actor: AbstractBaseUser | None,
    actor_label: str = "",
    reason: str = "",
) -> ModelActivation:
    """Leave the kind of ``model`` with no active version.

    Serving then degrades (e.g. recommendations without ranking) until a version is
    promoted or the deactivation is rolled back.
    """
    target, versions = _lock_versions_of(model)
    if not target.is_active:
        raise ApplicationError(
            f"{target.kind} {model_label(target)} is not active.",
            field="model",
            status_code=409,
        )
    return _switch_active(
        versions=versions,
        target=None,
        action=ActivationAction.DEACTIVATE,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
    )


@transaction.atomic
def model_set_traffic(
    *,
    model: MLModel | int,
    traffic_percent: int,
    actor: AbstractBaseUser | None,
    actor_label: str = "",
    reason: str = "",
) -> ModelActivation:
    """Make an inactive ``model`` its kind's A/B challenger at ``traffic_percent``.

    0 stops the test. A kind has at most one challenger: setting a new one stops the
    previous one in the same transaction. The log row goes from the previous
    challenger to the new one (``to_model`` is empty when the test stops).
    """
    if (
        not isinstance(traffic_percent, int)
        or isinstance(traffic_percent, bool)
        or not 0 <= traffic_percent <= 100
    ):
        raise ApplicationError(
            "Must be a whole number from 0 to 100.", field="traffic_percent"
        )
    target, versions = _lock_versions_of(model)
    label = f"{target.kind} {model_label(target)}"
    if target.is_active:
        raise ApplicationError(
            f"{label} is active; only an inactive version can be the challenger.",
            field="traffic_percent",
        )
    if target.traffic_percent == traffic_percent:
        message = (
            f"{label} is not the challenger."
            if traffic_percent == 0
            else f"{label} already serves {traffic_percent}% of traffic."
        )
        raise ApplicationError(message, field="traffic_percent", status_code=409)

    if traffic_percent > 0:
        _check_not_pruned(target)
    previous = next(
        (v for v in versions if not v.is_active and v.traffic_percent > 0), None
    )
    # The one-challenger constraint is not deferrable: stop the old one first.
    if previous is not None and previous.pk != target.pk:
        previous.traffic_percent = 0
        previous.save(update_fields=["traffic_percent"])
    target.traffic_percent = traffic_percent
    target.save(update_fields=["traffic_percent"])
    return _log_activation(
        kind=target.kind,
        action=ActivationAction.CHALLENGER,
        from_model=previous,
        to_model=target if traffic_percent > 0 else None,
        traffic_percent=traffic_percent,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
    )


def model_register(
    *,
    kind: str,
    artifact: bytes | File | None = None,
    artifact_name: str = "",
    stored_artifact: StoredArtifact | None = None,
    metrics: dict | None = None,
    hyperparameters: dict | None = None,
    feature_version: str = "",
    training_window_start: datetime | None = None,
    training_window_end: datetime | None = None,
    data_counts: dict | None = None,
    notes: str = "",
) -> MLModel:
    """Register a new, inactive version of ``kind`` (the next version number).

    The artifact (bytes or a Django ``File``) is written to default storage first,
    atomically (``registry.artifacts.artifact_save``: temp name, then final name),
    with its sha256 and size recorded; the row is created only once the file is
    complete, so a crash never leaves a registered model without its artifact. The
    extension of ``artifact_name`` (or of the file's name) is kept.

    A caller that must register inside its own transaction (together with other
    rows) saves the file beforehand and passes ``stored_artifact`` instead: no file
    I/O then happens here, and deleting the file if that transaction fails is the
    caller's job.
    """
    _check_kind(kind)
    if artifact is not None and stored_artifact is not None:
        raise ValueError("Pass either artifact or stored_artifact, not both.")
    saved_here = None
    if artifact is not None:
        suffix = PurePath(artifact_name or getattr(artifact, "name", None) or "").suffix
        saved_here = stored_artifact = artifact_save(
            content=artifact, folder=f"models/{kind}", suffix=suffix
        )
    try:
        return _create_next_version(
            kind=kind,
            artifact=stored_artifact.name if stored_artifact else "",
            artifact_sha256=stored_artifact.sha256 if stored_artifact else "",
            artifact_size=stored_artifact.size if stored_artifact else 0,
            metrics=metrics or {},
            hyperparameters=hyperparameters or {},
            feature_version=feature_version,
            training_window_start=training_window_start,
            training_window_end=training_window_end,
            data_counts=data_counts or {},
            notes=notes,
        )
    except BaseException:
        if saved_here is not None:
            artifact_delete(name=saved_here.name)
        raise


@transaction.atomic
def index_register(
    *,
    embedding_model: MLModel | int,
    stored_artifact: StoredArtifact,
    index_type: str,
    params: dict,
    n_vectors: int,
    dim: int,
    metrics: dict,
    build_seconds: float,
) -> IndexArtifact:
    """Register a complete FAISS index file (see ``artifact_save``) for an embedding
    version, and copy its recall metrics into that version's ``metrics``.

    The embedding version is locked while its metrics change. When the version is
    active, serving is told after commit (the newest index of the active embedding
    version is the one it searches).
    """
    pk = embedding_model.pk if isinstance(embedding_model, MLModel) else embedding_model
    model = MLModel.objects.select_for_update().filter(pk=pk).first()
    if model is None or model.kind != ModelKind.EMBEDDING:
        raise ApplicationError(
            f"No registered embedding model with id {pk}.",
            field="embedding_model",
            status_code=404,
        )
    index = IndexArtifact.objects.create(
        embedding_model=model,
        artifact=stored_artifact.name,
        artifact_sha256=stored_artifact.sha256,
        artifact_size=stored_artifact.size,
        index_type=index_type,
        params=params,
        n_vectors=n_vectors,
        dim=dim,
        metrics=metrics,
        build_seconds=build_seconds,
    )
    model.metrics = {
        **(model.metrics or {}),
        **{key: value for key, value in metrics.items() if key.startswith("recall@")},
        "index": {
            "id": index.pk,
            "type": index_type,
            "n_vectors": n_vectors,
            "build_seconds": round(build_seconds, 3),
        },
    }
    model.save(update_fields=["metrics"])
    if model.is_active:
        transaction.on_commit(
            lambda: cache.set(INDEX_GENERATION_CACHE_KEY, index.pk, timeout=None),
            robust=True,
        )
    return index


@transaction.atomic
def model_discard_unindexed(*, model_id: int) -> int | None:
    """Delete an embedding version that has no index and never served: inactive, no
    A/B traffic, absent from the activation log. What a training run that failed
    before (or while) building its index leaves behind: serving could do nothing
    with it but degrade. Its ``UserEmbedding`` rows go with it (cascade), its
    artifact file after commit. Returns the deleted version number, or ``None``
    when the version is kept (not such a version, or gone already).
    """
    model = (
        MLModel.objects.select_for_update()
        .filter(pk=model_id, kind=ModelKind.EMBEDDING)
        .first()
    )
    if (
        model is None
        or model.is_active
        or model.traffic_percent
        or model.indexes.exists()
        or ModelActivation.objects.filter(from_model=model).exists()
        or ModelActivation.objects.filter(to_model=model).exists()
    ):
        return None
    version, name = model.version, model.artifact.name
    model.delete()
    transaction.on_commit(lambda: artifact_delete(name=name))
    return version


def _check_reason(reason: str) -> None:
    """PostgreSQL text cannot hold NUL, nor UTF-8 an unpaired surrogate: refuse them
    as input (the caller's transaction, the whole change, is rolled back)."""
    if "\x00" in reason or any("\ud800" <= char <= "\udfff" for char in reason):
        raise ApplicationError(
            "The reason must not contain NUL characters or unpaired surrogates.",
            field="reason",
        )


def _check_not_pruned(model: MLModel) -> None:
    """A version whose vectors or files data retention removed cannot serve."""
    if model.pruned_at is not None:
        raise ApplicationError(
            f"{model.kind} {model_label(model)} can no longer serve: data retention "
            f"removed its vectors or files on {model.pruned_at:%Y-%m-%d}. Train a "
            "new version instead.",
            field="model",
            status_code=409,
        )


def _check_kind(kind: str) -> None:
    if kind not in ModelKind.values:
        raise ApplicationError(
            f"Unknown model kind {kind!r}; expected one of: "
            f"{', '.join(ModelKind.values)}.",
            field="kind",
        )


def _lock_kind(kind: str) -> list[MLModel]:
    # Every change to a kind locks all its versions, in one order, so concurrent
    # promotions queue up and each one sees the outcome of the one before it.
    return list(MLModel.objects.select_for_update().filter(kind=kind).order_by("pk"))


def _lock_versions_of(model: MLModel | int) -> tuple[MLModel, list[MLModel]]:
    """The locked, freshly read ``model`` and all locked versions of its kind."""
    pk = model.pk if isinstance(model, MLModel) else model
    kind = MLModel.objects.filter(pk=pk).values_list("kind", flat=True).first()
    versions = _lock_kind(kind) if kind is not None else []
    target = next((version for version in versions if version.pk == pk), None)
    if target is None:
        raise ApplicationError(
            f"No registered model with id {pk}.", field="model", status_code=404
        )
    return target, versions


def _switch_active(
    *,
    versions: list[MLModel],
    target: MLModel | None,
    action: str,
    actor: AbstractBaseUser | None,
    actor_label: str,
    reason: str,
) -> ModelActivation:
    current = next((version for version in versions if version.is_active), None)
    if target is not None:
        _check_not_pruned(target)
    # The one-active constraint is not deferrable: deactivate before activating.
    if current is not None:
        current.is_active = False
        current.traffic_percent = 0
        current.save(update_fields=["is_active", "traffic_percent"])
    if target is not None:
        target.is_active = True
        target.traffic_percent = 0
        target.activated_at = timezone.now()
        target.activated_by = actor
        target.save(
            update_fields=[
                "is_active",
                "traffic_percent",
                "activated_at",
                "activated_by",
            ]
        )
    kind = (target or current).kind
    return _log_activation(
        kind=kind,
        action=action,
        from_model=current,
        to_model=target,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
    )


def _log_activation(
    *,
    kind: str,
    action: str,
    from_model: MLModel | None,
    to_model: MLModel | None,
    actor: AbstractBaseUser | None,
    actor_label: str,
    reason: str,
    traffic_percent: int | None = None,
) -> ModelActivation:
    _check_reason(reason)
    activation = ModelActivation.objects.create(
        kind=kind,
        action=action,
        from_model=from_model,
        to_model=to_model,
        actor=actor,
        actor_label=actor_label,
        reason=reason,
        traffic_percent=traffic_percent,
    )
    generation = activation.pk
    # robust: the change is committed; a cache outage must not turn it into an error.
    transaction.on_commit(
        lambda: registry_changed_after_commit(generation=generation), robust=True
    )
    return activation


def registry_changed_after_commit(*, generation: int) -> None:
    """Tell serving processes and caches that the serving versions changed.

    Serving compares this generation with the one its models were loaded at.
    """
    cache.set(REGISTRY_GENERATION_CACHE_KEY, generation, timeout=None)


def _create_next_version(*, kind: str, **fields) -> MLModel:
    # Two registrations at once may compute the same next version; the unique
    # (kind, version) constraint rejects the second, which retries with a fresh max.
    for attempt in range(_REGISTER_ATTEMPTS):
        try:
            with transaction.atomic():
                latest = MLModel.objects.filter(kind=kind).aggregate(v=Max("version"))
                return MLModel.objects.create(
                    kind=kind, version=(latest["v"] or 0) + 1, **fields
                )
        except IntegrityError:
            if attempt == _REGISTER_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
