from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import Preferences, Profile, User


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    readonly_fields = ["created_at", "updated_at", "last_active_at"]


class PreferencesInline(admin.StackedInline):
    model = Preferences
    can_delete = False
    verbose_name_plural = "preferences"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = [ProfileInline, PreferencesInline]
    list_display = ["id", "username", "email", "is_active", "is_staff", "date_joined"]
    search_fields = ["username", "email", "profile__display_name"]


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = [
        "user_id",
        "display_name",
        "gender",
        "age",
        "city",
        "is_visible",
        "last_active_at",
    ]
    list_filter = ["gender", "is_visible"]
    search_fields = ["user__username", "display_name", "city"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at", "updated_at", "last_active_at"]
    ordering = ["-user_id"]

    @admin.display(description="age", ordering="-birth_date")
    def age(self, profile: Profile) -> int:
        return profile.age
