"""Reads of the model registry: versions, which one serves, the audit log."""

from django.db.models import QuerySet

from registry.models import (
    ActivationAction,
    IndexArtifact,
    MLModel,
    ModelActivation,
    ModelKind,
)


def model_list(*, kind: str | None = None) -> QuerySet[MLModel]:
    """Registered model versions, newest first within each kind."""
    models = MLModel.objects.order_by("kind", "-version")
    if kind is not None:
        models = models.filter(kind=kind)
    return models


def model_get_active(*, kind: str) -> MLModel | None:
    """The version of ``kind`` that serves by default, or ``None`` if none does."""
    return MLModel.objects.filter(kind=kind, is_active=True).first()


def model_get_challenger(*, kind: str) -> MLModel | None:
    """The inactive version of ``kind`` serving an A/B share of traffic, if any."""
    return MLModel.objects.filter(
        kind=kind, is_active=False, traffic_percent__gt=0
    ).first()


def model_rollback_target(
    *, kind: str, versions: list[MLModel] | None = None
) -> MLModel | None:
    """The version ``rollback`` would re-activate now, or ``None``.

    That is the version the active one was last *promoted* from (rollbacks are
    skipped, so rolling back twice walks v3 → v2 → v1 instead of flip-flopping); if
    the log does not say, the highest version below the active one. With no active
    version, the one the latest deactivation took out of service. ``versions``: all
    versions of ``kind`` as the caller read (and locked) them.
    """
    if versions is None:
        versions = list(MLModel.objects.filter(kind=kind))
    by_pk = {version.pk: version for version in versions}
    current = next((version for version in versions if version.is_active), None)
    log = ModelActivation.objects.filter(kind=kind).order_by("-id")
    if current is None:
        deactivation = log.filter(action=ActivationAction.DEACTIVATE).first()
        return by_pk.get(deactivation.from_model_id) if deactivation else None
    promotion = log.filter(action=ActivationAction.PROMOTE, to_model=current).first()
    if promotion is not None and promotion.from_model_id not in (None, current.pk):
        return by_pk.get(promotion.from_model_id)
    earlier = [version for version in versions if version.version < current.version]
    return max(earlier, key=lambda version: version.version, default=None)


def model_versions_kept(
    *, kind: str, previous: int, versions: list[MLModel] | None = None
) -> set[int]:
    """Ids of the versions of ``kind`` that serve or may serve again soon: the
    active one, the A/B challenger, the one ``rollback`` would re-activate, and the
    ``previous`` versions that were active most recently before the active one.
    Data retention never prunes these. ``versions``: all versions of ``kind`` as
    the caller read (and locked) them."""
    if versions is None:
        versions = list(MLModel.objects.filter(kind=kind))
    kept = {v.pk for v in versions if v.is_active or v.traffic_percent > 0}
    target = model_rollback_target(kind=kind, versions=versions)
    if target is not None:
        kept.add(target.pk)
    served_before = sorted(
        (v for v in versions if not v.is_active and v.activated_at is not None),
        key=lambda v: v.activated_at,
        reverse=True,
    )
    kept.update(v.pk for v in served_before[: max(previous, 0)])
    return kept


def activation_list(*, kind: str | None = None) -> QuerySet[ModelActivation]:
    """The activation audit log, most recent first."""
    activations = ModelActivation.objects.select_related(
        "from_model", "to_model", "actor"
    ).order_by("-created_at", "-id")
    if kind is not None:
        activations = activations.filter(kind=kind)
    return activations


def registry_generation() -> int:
    """A number that grows with every change to which versions serve.

    It is the id of the latest ``ModelActivation`` (0 before the first): every serving
    change writes exactly one such row, so serving processes poll this one indexed
    lookup and reload their models when it moves.
    """
    latest = ModelActivation.objects.order_by("-id").values_list("id", flat=True)
    return latest.first() or 0


def index_get_latest(*, embedding_model: MLModel | int) -> IndexArtifact | None:
    """The newest FAISS index built for an embedding version, if any."""
    pk = embedding_model.pk if isinstance(embedding_model, MLModel) else embedding_model
    return (
        IndexArtifact.objects.filter(embedding_model_id=pk)
        .order_by("-created_at", "-id")
        .first()
    )


def index_get_serving() -> IndexArtifact | None:
    """The index serving searches: the newest one of the active embedding version."""
    return (
        IndexArtifact.objects.filter(
            embedding_model__kind=ModelKind.EMBEDDING,
            embedding_model__is_active=True,
        )
        .select_related("embedding_model")
        .order_by("-created_at", "-id")
        .first()
    )
