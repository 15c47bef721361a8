from django.conf import settings
from django.db import models
from django.db.models import Q


class UserEmbedding(models.Model):
    """A member's vector under one embedding model version (float32 bytes)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="embeddings"
    )
    model = models.ForeignKey(
        "registry.MLModel", on_delete=models.CASCADE, related_name="embeddings"
    )
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model", "user"], name="embedding_one_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"embedding of {self.user_id} ({self.model_id})"


class UserFeatures(models.Model):
    """The feature store: one row per member and feature version."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="features"
    )
    feature_version = models.CharField(max_length=32)
    feature_set = models.JSONField(default=dict)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "user features"
        constraints = [
            models.UniqueConstraint(
                fields=["feature_version", "user"], name="features_one_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"features {self.feature_version} of {self.user_id}"


class RecommendationLog(models.Model):
    """An impression: who was shown whom, where, by which models and arm."""

    # The response's X-Request-ID: a uuid4, or the client's own id when it sent a
    # sane one (at most 64 characters of [A-Za-z0-9._-]), so text rather than uuid.
    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    shown_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveSmallIntegerField()
    score = models.FloatField(null=True)
    sources = models.JSONField(default=list)
    strategy = models.CharField(max_length=32)
    model_versions = models.JSONField(default=dict)
    experiment = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "created_at"], name="impression_user_time"),
            models.Index(
                fields=["experiment", "created_at"], name="impression_arm_time"
            ),
            # The latest impression of a pair (interaction context, A/B attribution).
            models.Index(
                fields=["user", "shown_user", "created_at"], name="impression_pair_time"
            ),
        ]
        constraints = [
            # One row per shown position of a response: the impressions buffer can
            # be drained again after a crash without counting anything twice. A
            # client reusing its X-Request-ID keeps the first showing's rows only.
            models.UniqueConstraint(
                fields=["request_id", "user", "position"], name="impression_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.shown_user_id} at {self.position}"


class TrainingRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class TrainingRun(models.Model):
    """One run of the training pipeline, and the lock that keeps runs from overlapping.

    At most one run is ``running`` (enforced by the database). A running run whose
    ``heartbeat_at`` is older than the stale limit belongs to a dead worker and is
    taken over by the next run. Each stage records what it produced here, in the same
    transaction as the registration, so re-running a stage never registers twice.
    """

    status = models.CharField(
        max_length=16, choices=TrainingRunStatus.choices, default="running"
    )
    stage = models.CharField(max_length=32, blank=True)
    # "celery", "cli" … who started the run.
    trigger = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    feature_version = models.CharField(max_length=32, blank=True)
    features_computed_at = models.DateTimeField(null=True, blank=True)
    embedding_model = models.ForeignKey(
        "registry.MLModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    index_artifact = models.ForeignKey(
        "registry.IndexArtifact",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    ranking_model = models.ForeignKey(
        "registry.MLModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # Per-stage seconds, headline metrics and promotion decisions.
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status="running"),
                name="trainingrun_one_running",
            )
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.status})"


class RetentionRun(models.Model):
    """One run of data retention (``recommender.retention``) and what it removed:
    its audit row, updated in the same transaction as each removal, so it says
    what went even when the run stops half-way."""

    trigger = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # The periods and rollback depth this run applied, and the cut-off times.
    settings = models.JSONField(default=dict, blank=True)
    impressions_deleted = models.BigIntegerField(default=0)
    embeddings_deleted = models.BigIntegerField(default=0)
    # [{"kind", "version", "embeddings", "files": [names], "bytes"}, …]
    versions_pruned = models.JSONField(default=list, blank=True)
    # Older index files of versions still kept (a newer index replaced them).
    indexes_deleted = models.PositiveIntegerField(default=0)
    files_deleted = models.PositiveIntegerField(default=0)
    bytes_freed = models.BigIntegerField(default=0)
    # Files the storage refused to delete (left in place; named here).
    errors = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"retention run {self.pk} ({self.started_at:%Y-%m-%d %H:%M})"
