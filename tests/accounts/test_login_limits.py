"""Guessing a staff password: the admin login and the token endpoint stop trying
after a few failures for that account, from any address."""

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.accounts.factories import UserFactory, member

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
TOKEN = "/api/v1/auth/token/"


def max_failures() -> int:
    return settings.KINDRED["LOGIN_MAX_FAILURES"]


def admin_login(client, username, password, address):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def token_login(username, password, address):
    return APIClient().post(
        TOKEN,
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=address,
    )


def test_the_admin_login_stops_after_repeated_failures_for_an_account(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    for n in range(max_failures()):
        admin_login(client, staff.username, f"guess{n}", f"203.0.113.{n}")

    right = admin_login(client, staff.username, PASSWORD, "198.51.100.1")

    assert right.status_code == 200  # the form again, not a redirect
    assert "_auth_user_id" not in client.session
    assert b"Too many failed log-ins" in right.content


def test_the_admin_login_works_below_the_limit(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    for n in range(max_failures() - 1):
        admin_login(client, staff.username, f"guess{n}", "203.0.113.1")

    right = admin_login(client, staff.username, PASSWORD, "203.0.113.1")

    assert right.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_the_token_endpoint_stops_after_repeated_failures_for_a_staff_account():
    staff = UserFactory(is_staff=True)
    for n in range(max_failures()):
        assert (
            token_login(staff.username, f"guess{n}", f"203.0.113.{n}").status_code
            == 400
        )

    right = token_login(staff.username, PASSWORD, "198.51.100.1")

    assert right.status_code == 429
    assert int(right["Retry-After"]) > 0
    assert right.json()["code"] == "throttled"


def test_a_member_account_is_not_locked_by_failures_others_cause():
    # Locking members' accounts would let anyone lock any member out; members
    # are protected by the per-address throttle.
    user = member()
    for n in range(max_failures() + 2):
        token_login(user.username, f"guess{n}", f"203.0.113.{n}")

    assert token_login(user.username, PASSWORD, "198.51.100.1").status_code == 200
