from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from rest_framework.exceptions import Throttled

from accounts.models import Preferences, Profile, User
from accounts.services import (
    login_failure_record,
    login_failures_clear,
    login_lockout_check,
)


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    readonly_fields = ["created_at", "updated_at", "last_active_at"]


class PreferencesInline(admin.StackedInline):
    model = Preferences
    can_delete = False
    verbose_name_plural = "preferences"


# What grants power: only superusers may set these, on anyone (themselves included).
POWER_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


def _is_staff_account(user: User) -> bool:
    return user.is_staff or user.is_superuser


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Support staff with ``change_user`` edit members; only superusers hand out
    power (permissions, groups, the staff and superuser flags) or change another
    staff account, whose new password would be a way into its permissions."""

    inlines = [ProfileInline, PreferencesInline]
    list_display = ["id", "username", "email", "is_active", "is_staff", "date_joined"]
    search_fields = ["username", "email", "profile__display_name"]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += [field for field in POWER_FIELDS if field not in readonly]
        return readonly

    def has_change_permission(self, request, obj=None) -> bool:
        if not self._may_touch(request, obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if not self._may_touch(request, obj):
            return False
        return super().has_delete_permission(request, obj)

    @staticmethod
    def _may_touch(request, obj) -> bool:
        return (
            obj is None
            or request.user.is_superuser
            or obj.pk == request.user.pk
            or not _is_staff_account(obj)
        )


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    """A group is a bundle of permissions: only superusers create or edit one (a
    member of a group with ``change_group`` could otherwise grant it anything)."""

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


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


class LockoutAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login, refused for an account after ``LOGIN_MAX_FAILURES`` failed
    attempts within ``LOGIN_LOCKOUT_SECONDS`` (from any address): the admin is
    staff-only, so every account tried here is worth guessing."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        try:
            login_lockout_check(username=username)
        except Throttled:
            raise forms.ValidationError(
                "Too many failed log-ins for this account; try again later.",
                code="locked",
            ) from None
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_failure_record(username=username)
            raise
        login_failures_clear(username=username)
        return cleaned


admin.site.login_form = LockoutAdminAuthenticationForm
