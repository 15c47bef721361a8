from django.contrib import admin

from config.admin import ReadOnlyAdmin
from interactions.models import Interaction, Match


# Interactions and matches change only through ``interaction_record``, which keeps
# the two in step: a verdict edited here would leave a stale match behind.
@admin.register(Interaction)
class InteractionAdmin(ReadOnlyAdmin):
    list_display = ["id", "actor", "kind", "target", "created_at", "updated_at"]
    list_filter = ["kind", "created_at"]
    search_fields = ["actor__username", "target__username"]
    list_select_related = ["actor", "target"]
    raw_id_fields = ["actor", "target"]
    readonly_fields = ["created_at", "updated_at"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]


class MatchStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("ended", "Ended")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(Match)
class MatchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "user_low",
        "user_high",
        "matched_at",
        "is_active",
        "ended_at",
        "end_reason",
    ]
    list_filter = [MatchStateFilter, "end_reason"]
    search_fields = ["user_low__username", "user_high__username"]
    list_select_related = ["user_low", "user_high"]
    raw_id_fields = ["user_low", "user_high"]
    readonly_fields = ["matched_at", "ended_at", "end_reason"]
    ordering = ["-matched_at"]

    @admin.display(boolean=True, description="active")
    def is_active(self, match: Match) -> bool:
        return match.is_active
