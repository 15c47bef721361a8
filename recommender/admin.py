"""Read-only views of what the training pipeline writes: runs, features, embeddings."""

import json

from django.contrib import admin
from django.utils.html import format_html

from config.admin import ReadOnlyAdmin
from recommender.models import (
    RetentionRun,
    TrainingRun,
    UserEmbedding,
    UserFeatures,
)

NO_VALUE = "—"


def _pretty_json(value) -> str:
    if not value:
        return NO_VALUE
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="margin: 0">{}</pre>', text)


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "stage",
        "trigger",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "embedding_model",
        "index_artifact",
        "ranking_model",
    )
    list_filter = ("status", "trigger")
    list_select_related = ("embedding_model", "ranking_model", "index_artifact")
    date_hierarchy = "started_at"
    fields = (
        "status",
        "stage",
        "trigger",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "feature_version",
        "features_computed_at",
        "embedding_model",
        "index_artifact",
        "ranking_model",
        "evaluated_at",
        "summary_pretty",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="summary")
    def summary_pretty(self, obj):
        return _pretty_json(obj.summary)


@admin.register(UserFeatures)
class UserFeaturesAdmin(ReadOnlyAdmin):
    list_display = ("user", "feature_version", "computed_at")
    list_filter = ("feature_version",)
    list_select_related = ("user",)
    search_fields = ("user__username", "=user__id")
    show_full_result_count = False
    fields = ("user", "feature_version", "computed_at", "features_pretty")
    readonly_fields = fields

    @admin.display(description="feature set")
    def features_pretty(self, obj):
        return _pretty_json(obj.feature_set)


@admin.register(UserEmbedding)
class UserEmbeddingAdmin(ReadOnlyAdmin):
    list_display = ("user", "model", "dims", "created_at")
    list_filter = ("model",)
    list_select_related = ("user", "model")
    search_fields = ("user__username", "=user__id")
    show_full_result_count = False
    fields = ("user", "model", "dims", "created_at", "vector_preview")
    readonly_fields = fields

    @admin.display(description="float32 values")
    def dims(self, obj):
        return len(bytes(obj.vector)) // 4

    @admin.display(description="vector (taste then appeal, first 8 values)")
    def vector_preview(self, obj):
        import numpy as np

        values = np.frombuffer(bytes(obj.vector), dtype="<f4")[:8]
        return ", ".join(f"{value:.4f}" for value in values.tolist()) + ", …"


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdmin):
    """What data retention removed, run by run (``recommender.retention``)."""

    list_display = (
        "started_at",
        "finished_at",
        "trigger",
        "impressions_deleted",
        "embeddings_deleted",
        "versions_count",
        "indexes_deleted",
        "files_deleted",
        "bytes_freed",
    )
    date_hierarchy = "started_at"
    fields = (
        "trigger",
        "started_at",
        "finished_at",
        "settings_pretty",
        "impressions_deleted",
        "embeddings_deleted",
        "versions_pruned_pretty",
        "indexes_deleted",
        "files_deleted",
        "bytes_freed",
        "errors_pretty",
    )
    readonly_fields = fields

    @admin.display(description="versions pruned")
    def versions_count(self, obj):
        return len(obj.versions_pruned)

    @admin.display(description="settings")
    def settings_pretty(self, obj):
        return _pretty_json(obj.settings)

    @admin.display(description="versions pruned")
    def versions_pruned_pretty(self, obj):
        return _pretty_json(obj.versions_pruned)

    @admin.display(description="errors")
    def errors_pretty(self, obj):
        return _pretty_json(obj.errors)
