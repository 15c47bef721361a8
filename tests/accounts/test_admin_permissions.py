"""Who may hand out power in the admin: only superusers edit permissions, groups
and the staff/superuser flags, and only they may change staff accounts (whose
password would otherwise be a way into more permissions)."""

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from accounts.models import User
from tests.accounts.factories import UserFactory, member

pytestmark = pytest.mark.django_db


class _FormFields(HTMLParser):
    """The values a browser would submit for the admin's change form."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.data.setdefault(name, []).append(attrs.get("value") or "")
            if attrs.get("type") == "checkbox" and attrs.get("value") is None:
                self.data[name][-1] = "on"
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select].append(attrs.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][0] += data


def form_data(client, url) -> dict[str, list[str]]:
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields()
    parser.feed(response.content.decode())
    parser.data.pop("csrfmiddlewaretoken", None)
    return parser.data


def change_url(user) -> str:
    return reverse("admin:accounts_user_change", args=[user.pk])


def promote_permission() -> Permission:
    return Permission.objects.get(
        content_type__app_label="registry", codename="promote_mlmodel"
    )


@pytest.fixture
def support_staff(client):
    """Staff allowed to view and change users, nothing else."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="accounts",
            codename__in=["view_user", "change_user"],
        )
    )
    client.force_login(user)
    return user


def test_staff_with_change_user_cannot_grant_themselves_permissions_or_flags(
    client, support_staff
):
    group = Group.objects.create(name="ml-engineers")
    group.permissions.add(promote_permission())
    data = form_data(client, change_url(support_staff))
    data.update(
        is_superuser=["on"],
        is_staff=["on"],
        groups=[str(group.pk)],
        user_permissions=[str(promote_permission().pk)],
    )

    client.post(change_url(support_staff), data)

    support_staff.refresh_from_db()
    assert not support_staff.is_superuser
    assert not support_staff.groups.exists()
    assert not support_staff.has_perm("registry.promote_mlmodel")


def test_staff_with_change_user_cannot_make_a_member_staff_or_superuser(
    client, support_staff
):
    someone = member()
    data = form_data(client, change_url(someone))
    data.update(is_superuser=["on"], is_staff=["on"], email=["new@example.com"])

    response = client.post(change_url(someone), data)

    assert response.status_code == 302, response.content[:2000]
    someone.refresh_from_db()
    assert someone.email == "new@example.com"  # what they may change, changed
    assert not someone.is_staff and not someone.is_superuser


@pytest.mark.parametrize("is_superuser", [True, False])
def test_staff_with_change_user_cannot_change_other_staff_accounts(
    client, support_staff, is_superuser
):
    other = UserFactory(is_staff=True, is_superuser=is_superuser)
    password_url = reverse("admin:auth_user_password_change", args=[other.pk])

    taken_over = client.post(
        password_url,
        {"password1": "a new long passphrase", "password2": "a new long passphrase"},
    )
    deactivated = client.post(
        change_url(other), {**form_data_or_empty(client, other), "is_active": []}
    )

    assert taken_over.status_code == 403
    assert deactivated.status_code == 403
    other.refresh_from_db()
    assert other.check_password("correct-horse-battery")
    assert other.is_active


def form_data_or_empty(client, user) -> dict:
    response = client.get(change_url(user))
    if response.status_code != 200:
        return {"username": user.username}
    parser = _FormFields()
    parser.feed(response.content.decode())
    return parser.data


def test_staff_with_change_group_cannot_edit_groups(client):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="auth",
            codename__in=["view_group", "change_group", "add_group"],
        )
    )
    group = Group.objects.create(name="support")
    user.groups.add(group)
    client.force_login(user)

    client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "support", "permissions": [str(promote_permission().pk)]},
    )
    client.post(
        reverse("admin:auth_group_add"),
        {"name": "mine", "permissions": [str(promote_permission().pk)]},
    )

    assert not group.permissions.exists()
    assert not Group.objects.filter(name="mine").exists()
    assert not User.objects.get(pk=user.pk).has_perm("registry.promote_mlmodel")


def test_a_superuser_can_grant_permissions_groups_and_flags(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    someone = UserFactory()
    group = Group.objects.create(name="ml-engineers")
    data = form_data(client, change_url(someone))
    data.update(
        is_staff=["on"],
        groups=[str(group.pk)],
        user_permissions=[str(promote_permission().pk)],
    )

    response = client.post(change_url(someone), data)

    assert response.status_code == 302
    someone.refresh_from_db()
    assert someone.is_staff
    assert list(someone.groups.all()) == [group]
    assert someone.has_perm("registry.promote_mlmodel")
