from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelKind(models.TextChoices):
    EMBEDDING = "embedding", "Embedding"
    RANKING = "ranking", "Ranking"


class MLModel(models.Model):
    """A trained model version. At most one active per kind, enforced by the database.

    An inactive version with ``traffic_percent`` > 0 is the kind's challenger in an
    A/B test: it serves that share of members (a stable hash bucket).
    """

    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    version = models.PositiveIntegerField()
    artifact = models.FileField(upload_to="models/", max_length=255, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    artifact_size = models.BigIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    feature_version = models.CharField(max_length=32, blank=True)
    training_window_start = models.DateTimeField(null=True, blank=True)
    training_window_end = models.DateTimeField(null=True, blank=True)
    data_counts = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=False)
    traffic_percent = models.PositiveSmallIntegerField(default=0)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # When data retention removed the version's member vectors or artifact files
    # (recommender.retention): it can never serve again, and the registry refuses
    # to promote it or give it A/B traffic.
    pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ML model"
        ordering = ["kind", "-version"]
        permissions = [
            ("promote_mlmodel", "Can promote, roll back and A/B-test model versions"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "version"], name="mlmodel_kind_version"
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(is_active=True),
                name="mlmodel_one_active_per_kind",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(is_active=False, traffic_percent__gt=0),
                name="mlmodel_one_challenger_per_kind",
            ),
            models.CheckConstraint(
                condition=Q(traffic_percent__lte=100),
                name="mlmodel_traffic_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version}{' (active)' if self.is_active else ''}"


class ActivationAction(models.TextChoices):
    PROMOTE = "promote", "Promote"
    ROLLBACK = "rollback", "Roll back"
    DEACTIVATE = "deactivate", "Deactivate"
    CHALLENGER = "challenger", "Set challenger traffic"


class ModelActivation(models.Model):
    """Append-only audit log of every change to which model version serves."""

    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    action = models.CharField(max_length=16, choices=ActivationAction.choices)
    from_model = models.ForeignKey(
        MLModel, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    to_model = models.ForeignKey(
        MLModel, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Who acted when there is no user row: "cli", "auto-promotion", "celery".
    actor_label = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    # The challenger's share of traffic after a "challenger" action (0 = test stopped);
    # without it the log could not say which split an A/B test ran at.
    traffic_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "-created_at"], name="activation_kind_time")
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.kind}: {self.from_model_id} → {self.to_model_id}"


class IndexArtifact(models.Model):
    """A FAISS index built over the vectors of one embedding version.

    Serving searches the newest index of the active embedding version. The artifact
    is FAISS's own serialisation (never a pickle); its sha256 is checked before it is
    deserialised.
    """

    embedding_model = models.ForeignKey(
        MLModel,
        on_delete=models.CASCADE,
        related_name="indexes",
        limit_choices_to={"kind": ModelKind.EMBEDDING},
    )
    artifact = models.FileField(upload_to="indexes/", max_length=255)
    artifact_sha256 = models.CharField(max_length=64)
    artifact_size = models.BigIntegerField(default=0)
    # "flat" (exact), "hnsw" or "ivf"; params holds what the build used (M, efSearch…).
    index_type = models.CharField(max_length=16)
    params = models.JSONField(default=dict, blank=True)
    n_vectors = models.PositiveIntegerField(default=0)
    dim = models.PositiveIntegerField(default=0)
    # recall@k against exact search on a sample of queries, e.g. {"recall@100": 0.97}.
    metrics = models.JSONField(default=dict, blank=True)
    build_seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["embedding_model", "-created_at"], name="index_model_time"
            )
        ]

    def __str__(self) -> str:
        return f"{self.index_type} index of embedding {self.embedding_model_id}"
