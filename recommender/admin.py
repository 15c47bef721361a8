"""Read-only views of what the training pipeline writes (runs, features,
embeddings), and the A/B experiments added to the registry's model admin."""

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from config.admin import ReadOnlyAdmin
from recommender.guardrail import GUARDRAIL_ACTOR_LABEL, guardrail_thresholds
from recommender.models import (
    RetentionRun,
    TrainingRun,
    UserEmbedding,
    UserFeatures,
)
from recommender.selectors import ab_report, ab_report_since
from registry.admin import MLModelAdmin
from registry.models import MLModel, ModelKind
from registry.selectors import activation_list

NO_VALUE = "—"
GUARDRAIL_STOPS_SHOWN = 20


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


class ABReportForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[("", "all kinds"), *ModelKind.choices], required=False
    )
    since = forms.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        label="last N days",
        help_text="Empty: all time.",
    )


class ExperimentMLModelAdmin(MLModelAdmin):
    """The registry's model admin plus the A/B experiments the recommender runs
    between its versions: the A/B report page and the dashboard's A/B section."""

    change_list_template = "admin/recommender/mlmodel/change_list.html"
    dashboard_template = "admin/recommender/mlmodel/dashboard.html"

    def get_urls(self):
        admin_view = self.admin_site.admin_view  # staff only, CSRF-protected
        own = [
            path(
                "ab-report/",
                admin_view(self.ab_report_view),
                name="registry_mlmodel_ab_report",
            ),
        ]
        return [*own, *super().get_urls()]

    def dashboard_context(self, request) -> dict:
        return {**super().dashboard_context(request), "rows": ab_report()}

    def ab_report_view(self, request):
        """Impressions, likes and matches per experiment arm with intervals and
        tests (``ab_report``), and the challengers the guardrail stopped."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ABReportForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        rows = ab_report(
            kind=filters.get("kind") or None,
            since=ab_report_since(days=filters.get("since")),
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "A/B report: like and match rate per impression",
            "opts": self.model._meta,
            "form": form,
            "rows": rows,
            "guardrail": guardrail_thresholds(),
            "guardrail_stops": activation_list().filter(
                actor_label=GUARDRAIL_ACTOR_LABEL
            )[:GUARDRAIL_STOPS_SHOWN],
        }
        return TemplateResponse(request, "admin/recommender/ab_report.html", context)


# The registry registers its generic admin; the recommender's replaces it.
admin.site.unregister(MLModel)
admin.site.register(MLModel, ExperimentMLModelAdmin)
