"""Reads of the model registry: versions, which one serves, the audit log."""

from django.db.models import QuerySet

from registry.models import IndexArtifact, MLModel, ModelActivation, ModelKind


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
