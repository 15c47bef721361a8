"""The ML engineers' home: compare versions, promote, roll back.

Every change to which version serves — admin actions, the ``is_active`` and
``traffic_percent`` fields of the change form and of the changelist — goes through
``registry.services``, so it is locked, audited in ``ModelActivation`` and announced to
serving exactly as from the command line.

The registry knows no model family: an app that serves the models extends
:class:`MLModelAdmin` (more admin URLs, :meth:`MLModelAdmin.dashboard_context` and
the dashboard's ``dashboard_sections`` block) and registers its subclass in place of
this one, as ``recommender.admin`` does with the A/B report.
"""

import json
import re

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from config.admin import ReadOnlyAdmin
from config.api import ApplicationError
from registry.dashboard import registry_dashboard
from registry.forms import SERVING_FIELDS, MLModelAdminForm, MLModelServingForm
from registry.models import IndexArtifact, MLModel, ModelActivation, ModelKind
from registry.services import (
    activation_summary,
    model_activate,
    model_deactivate,
    model_rollback,
    model_set_traffic,
)

ADMIN_ACTOR_LABEL = "admin"
NO_VALUE = "—"


class IndexArtifactInline(admin.TabularInline):
    """The FAISS indexes built from an embedding version, newest first; read-only
    (indexes are registered by the pipeline and ``rebuild_index``)."""

    model = IndexArtifact
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("-created_at", "-id")
    fields = (
        "created_at",
        "index_type",
        "n_vectors",
        "dim",
        "recall",
        "build_seconds",
        "params",
        "size",
        "artifact",
        "artifact_sha256",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="recall")
    def recall(self, obj):
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        recalls = [
            f"{key} {value:.4f}" if isinstance(value, int | float) else f"{key} {value}"
            for key, value in sorted(metrics.items())
            if key.startswith("recall")
        ]
        return ", ".join(recalls) or NO_VALUE

    @admin.display(description="size")
    def size(self, obj):
        return filesizeformat(obj.artifact_size)


@admin.register(MLModel)
class MLModelAdmin(admin.ModelAdmin):
    form = MLModelAdminForm
    list_display = (
        "kind",
        "version_label",
        "is_active",
        "traffic_percent",
        "auc",
        "ndcg_at_10",
        "recall_at_100",
        "log_loss",
        "feature_version",
        "artifact_size_display",
        "created_at",
        "activated_at",
    )
    list_editable = SERVING_FIELDS
    list_filter = ("kind", "is_active")
    search_fields = ("version__exact", "notes", "feature_version")
    search_help_text = "Version (e.g. 4 or v4), notes or feature version."
    actions = ("promote_selected_version", "rollback_selected_kinds")
    readonly_fields = (
        "kind",
        "version",
        "created_at",
        "activated_at",
        "activated_by",
        "metrics_pretty",
        "hyperparameters_pretty",
        "feature_version",
        "training_window_start",
        "training_window_end",
        "data_counts_pretty",
        "artifact",
        "artifact_sha256",
        "artifact_size_display",
        "pruned_at",
    )

    dashboard_template = "admin/registry/mlmodel/dashboard.html"

    # --- the dashboard ------------------------------------------------------------

    def get_urls(self):
        admin_view = self.admin_site.admin_view  # staff only, CSRF-protected
        own = [
            path(
                "dashboard/",
                admin_view(self.dashboard_view),
                name="registry_mlmodel_dashboard",
            ),
            path(
                "dashboard/promote/<int:pk>/",
                admin_view(require_POST(self.dashboard_promote_view)),
                name="registry_mlmodel_dashboard_promote",
            ),
            path(
                "dashboard/rollback/<str:kind>/",
                admin_view(require_POST(self.dashboard_rollback_view)),
                name="registry_mlmodel_dashboard_rollback",
            ),
        ]
        return [*own, *super().get_urls()]

    def dashboard_view(self, request):
        """Per kind: active version, history, metrics side by side, charts; the
        activation log and the A/B report; promote/rollback buttons."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Model registry dashboard",
            "opts": self.model._meta,
            "sections": registry_dashboard(),
            **self.dashboard_context(request),
            "can_promote": self.has_promote_permission(request),
        }
        return TemplateResponse(request, self.dashboard_template, context)

    def dashboard_context(self, request) -> dict:
        """More context for the dashboard, drawn by an app's own dashboard template
        (``dashboard_template`` extending this one); none here."""
        return {}

    def dashboard_promote_view(self, request, pk: int):
        return self._dashboard_change(request, "Promoted", model_activate, model=pk)

    def dashboard_rollback_view(self, request, kind: str):
        return self._dashboard_change(request, "Rolled back", model_rollback, kind=kind)

    def _dashboard_change(self, request, done: str, service, **target):
        """Run a registry service for the dashboard's POST form, report, go back."""
        if not self.has_promote_permission(request):
            raise PermissionDenied
        try:
            activation = service(
                **target,
                actor=request.user,
                actor_label=ADMIN_ACTOR_LABEL,
                reason=request.POST.get("reason", "")[:1000],
            )
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(
                request, f"{done} {activation_summary(activation)}.", messages.SUCCESS
            )
        return redirect("admin:registry_mlmodel_dashboard")

    # --- permissions --------------------------------------------------------------

    def has_promote_permission(self, request) -> bool:
        return request.user.has_perm("registry.promote_mlmodel")

    def get_inlines(self, request, obj):
        if obj is not None and obj.kind == ModelKind.EMBEDDING:
            return [IndexArtifactInline]
        return []

    def has_add_permission(self, request) -> bool:
        # Versions are registered by the training pipeline (model_register), which
        # numbers them and records the artifact's checksum.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and (obj.is_active or obj.traffic_percent):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        # A bulk delete would bypass the per-object check that protects serving
        # versions.
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not self.has_promote_permission(request):
            readonly[:0] = SERVING_FIELDS
        return readonly

    def get_fieldsets(self, request, obj=None):
        serving = [*SERVING_FIELDS, "activated_at", "activated_by"]
        if self.has_promote_permission(request):
            serving.append("reason")
        return (
            (None, {"fields": ("kind", "version", "created_at", "notes")}),
            ("Serving", {"fields": serving}),
            (
                "Evaluation and training",
                {
                    "fields": (
                        "metrics_pretty",
                        "hyperparameters_pretty",
                        "feature_version",
                        "training_window_start",
                        "training_window_end",
                        "data_counts_pretty",
                    )
                },
            ),
            (
                "Artifact",
                {
                    "fields": (
                        "artifact",
                        "artifact_sha256",
                        "artifact_size_display",
                        "pruned_at",
                    )
                },
            ),
        )

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        if not self.has_promote_permission(request):
            changelist.list_editable = ()
        return changelist

    def get_changelist_form(self, request, **kwargs):
        kwargs.setdefault("form", MLModelServingForm)
        return super().get_changelist_form(request, **kwargs)

    def get_search_results(self, request, queryset, search_term):
        # Versions are shown as "v4"; searching for what is shown should work.
        search_term = re.sub(r"\bv(\d+)\b", r"\1", search_term, flags=re.IGNORECASE)
        return super().get_search_results(request, queryset, search_term)

    # --- saving: serving changes go through the services --------------------------

    def save_model(self, request, obj, form, change):
        model_fields = {field.name for field in MLModel._meta.concrete_fields}
        plain_changes = [
            name
            for name in form.changed_data
            if name in model_fields and name not in SERVING_FIELDS
        ]
        if plain_changes:
            obj.save(update_fields=plain_changes)
        changed = set(SERVING_FIELDS) & set(form.changed_data)
        if changed:
            self._apply_serving_change(
                request,
                obj,
                changed=changed,
                reason=form.cleaned_data.get("reason", ""),
            )

    def _apply_serving_change(self, request, obj, *, changed, reason: str) -> None:
        """Carry out the serving changes the user made, through the services.

        A change already true in the database (e.g. the old version unticked in the
        same changelist submit as the new one is ticked) is skipped.
        """
        audit = {"actor": request.user, "actor_label": ADMIN_ACTOR_LABEL}
        activations = []
        try:
            stored = MLModel.objects.get(pk=obj.pk)
            if "is_active" in changed and obj.is_active != stored.is_active:
                change = model_activate if obj.is_active else model_deactivate
                activations.append(change(model=obj.pk, reason=reason, **audit))
                stored.refresh_from_db()
            if (
                "traffic_percent" in changed
                and obj.traffic_percent != stored.traffic_percent
            ):
                activations.append(
                    model_set_traffic(
                        model=obj.pk,
                        traffic_percent=obj.traffic_percent,
                        reason=reason,
                        **audit,
                    )
                )
        except ApplicationError as error:
            request._registry_change_failed = True
            self.message_user(request, error.message, messages.ERROR)
        for activation in activations:
            self.message_user(
                request,
                f"{activation.get_action_display()}: {activation_summary(activation)}.",
                messages.SUCCESS,
            )

    def response_change(self, request, obj):
        if getattr(request, "_registry_change_failed", False):
            # Stay on the form with the error instead of "changed successfully".
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    # --- actions ------------------------------------------------------------------

    @admin.action(
        permissions=["promote"],
        description="Promote the selected version (make it the active one)",
    )
    def promote_selected_version(self, request, queryset):
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(
                request, "Select exactly one version to promote.", messages.ERROR
            )
            return
        try:
            activation = model_activate(
                model=selected[0], actor=request.user, actor_label=ADMIN_ACTOR_LABEL
            )
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(
            request, f"Promoted {activation_summary(activation)}.", messages.SUCCESS
        )

    @admin.action(
        permissions=["promote"],
        description="Roll back the kind(s) of the selected versions",
    )
    def rollback_selected_kinds(self, request, queryset):
        kinds = sorted(set(queryset.values_list("kind", flat=True)))
        for kind in kinds:
            try:
                activation = model_rollback(
                    kind=kind, actor=request.user, actor_label=ADMIN_ACTOR_LABEL
                )
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Rolled back {activation_summary(activation)}.",
                    messages.SUCCESS,
                )

    # --- columns ------------------------------------------------------------------

    @admin.display(description="version", ordering="version")
    def version_label(self, obj):
        return f"v{obj.version}"

    @admin.display(description="AUC")
    def auc(self, obj):
        return _metric(obj, "auc")

    @admin.display(description="NDCG@10")
    def ndcg_at_10(self, obj):
        return _metric(obj, "ndcg@10", "ndcg_at_10")

    @admin.display(description="recall@100")
    def recall_at_100(self, obj):
        return _metric(obj, "recall@100", "recall_at_100")

    @admin.display(description="log loss")
    def log_loss(self, obj):
        return _metric(obj, "log_loss", "logloss")

    @admin.display(description="artifact size", ordering="artifact_size")
    def artifact_size_display(self, obj):
        return filesizeformat(obj.artifact_size) if obj.artifact else NO_VALUE

    @admin.display(description="metrics")
    def metrics_pretty(self, obj):
        return _pretty_json(obj.metrics)

    @admin.display(description="hyperparameters")
    def hyperparameters_pretty(self, obj):
        return _pretty_json(obj.hyperparameters)

    @admin.display(description="data counts")
    def data_counts_pretty(self, obj):
        return _pretty_json(obj.data_counts)


@admin.register(ModelActivation)
class ModelActivationAdmin(ReadOnlyAdmin):
    """The audit log: readable by staff, written only by the registry services."""

    list_display = (
        "created_at",
        "kind",
        "action",
        "from_version",
        "to_version",
        "traffic_percent",
        "actor_display",
        "reason",
    )
    list_filter = ("kind", "action")
    list_select_related = ("from_model", "to_model", "actor")
    date_hierarchy = "created_at"

    @admin.display(description="from", ordering="from_model__version")
    def from_version(self, obj):
        return f"v{obj.from_model.version}" if obj.from_model else NO_VALUE

    @admin.display(description="to", ordering="to_model__version")
    def to_version(self, obj):
        return f"v{obj.to_model.version}" if obj.to_model else NO_VALUE

    @admin.display(description="actor")
    def actor_display(self, obj):
        names = [name for name in (str(obj.actor or ""), obj.actor_label) if name]
        return " / ".join(names) or NO_VALUE


def _metric(obj: MLModel, *keys: str) -> str:
    metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
    value = next((metrics[key] for key in keys if metrics.get(key) is not None), None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return NO_VALUE if value is None else str(value)


def _pretty_json(value) -> str:
    if not value:
        return NO_VALUE
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="margin: 0">{}</pre>', text)
