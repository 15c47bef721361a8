from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from rest_framework.exceptions import Throttled

from accounts.models import AccountDeletion, Preferences, Profile, User
from accounts.services import (
    account_delete_by_staff,
    login_failure_record,
    login_failures_clear,
    login_lockout_check,
)
from config.admin import ReadOnlyAdmin


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

    def delete_model(self, request, obj):
        # Through the service, like a member's own deletion: audited, and their
        # cached recommendations dropped.
        account_delete_by_staff(user=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            account_delete_by_staff(user=user, actor=request.user)

    def get_deleted_objects(self, objs, request):
        # What goes with an account (impressions, embeddings… read-only in the
        # admin) goes by the permission to delete the account, as through the API.
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

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


@admin.register(AccountDeletion)
class AccountDeletionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user_id", "requested_by", "actor"]
    list_filter = ["requested_by"]
    search_fields = ["=user_id"]
    date_hierarchy = "created_at"


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
