"""API tokens end: on log-out, on a password change and after their lifetime."""

import datetime as dt

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.accounts.factories import UserFactory, member

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"
ME = "/api/v1/profiles/me/"
PASSWORD = "correct-horse-battery"


def log_in(user, password=PASSWORD) -> str:
    response = APIClient().post(
        TOKEN, {"username": user.username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["token"]


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_log_out_revokes_the_token():
    user = member()
    key = log_in(user)

    logged_out = with_token(key).delete(TOKEN)

    assert logged_out.status_code == 204
    afterwards = with_token(key).get(ME)
    assert afterwards.status_code == 401
    assert afterwards.json()["code"] in ("authentication_failed", "not_authenticated")
    assert log_in(user) != key


def test_log_out_needs_a_valid_token():
    response = APIClient().delete(TOKEN)

    assert response.status_code == 401
    assert with_token("f" * 40).delete(TOKEN).status_code == 401


def test_a_password_change_ends_the_old_token_and_log_in_gives_a_new_one():
    user = member()
    old = log_in(user)

    user.set_password("a brand new passphrase")
    user.save()

    assert with_token(old).get(ME).status_code == 401
    new = log_in(user, "a brand new passphrase")
    assert new != old
    assert with_token(new).get(ME).status_code == 200


def test_a_password_set_in_the_admin_ends_the_old_token(client):
    user = member()
    old = log_in(user)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    response = client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {
            "password1": "an admin-set passphrase",
            "password2": "an admin-set passphrase",
        },
    )

    assert response.status_code == 302
    assert with_token(old).get(ME).status_code == 401


def test_a_token_expires_after_its_lifetime():
    user = member()
    key = log_in(user)
    lifetime = dt.timedelta(hours=settings.KINDRED["AUTH_TOKEN_TTL_HOURS"])
    Token.objects.filter(key=key).update(
        created=timezone.now() - lifetime - dt.timedelta(seconds=1)
    )

    expired = with_token(key).get(ME)

    assert expired.status_code == 401
    assert "expired" in expired.json()["message"]
    assert log_in(user) != key


def test_a_token_within_its_lifetime_works_and_log_in_returns_it_again():
    user = member()
    key = log_in(user)

    assert with_token(key).get(ME).status_code == 200
    assert log_in(user) == key


def test_the_token_lifetime_is_a_documented_setting():
    assert settings.KINDRED["AUTH_TOKEN_TTL_HOURS"] > 0
    assert "AUTH_TOKEN_TTL_HOURS=" in (settings.BASE_DIR / ".env.example").read_text()


def test_a_token_and_its_whole_member_are_read_in_one_query(
    django_assert_num_queries,
):
    from django.contrib.auth import get_user_model

    from accounts.selectors import auth_token_get

    user = member()
    key = log_in(user)
    stored = Token.objects.select_related("user").get(key=key)

    def values(instance):
        return [getattr(instance, f.attname) for f in type(instance)._meta.fields]

    with django_assert_num_queries(1):
        token = auth_token_get(key=key)
        # Every column of both rows, in the right fields: nothing read lazily.
        assert values(token) == values(stored)
        assert values(token.user) == values(stored.user)
    assert isinstance(token.user, get_user_model())
    with django_assert_num_queries(0):  # keys no token can have: no round trip
        assert auth_token_get(key="") is None
        assert auth_token_get(key="f" * 41) is None
        assert auth_token_get(key="f\x00" * 5) is None
    assert auth_token_get(key="f" * 40) is None


def test_a_token_is_read_with_one_more_column_in_the_same_query(
    django_assert_num_queries,
):
    from django.db import connection

    from accounts.selectors import auth_token_get, auth_token_get_with

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (the recommendation hit's query)")
    user = member()
    key = log_in(user)

    with django_assert_num_queries(1):
        token, extra = auth_token_get_with(
            key=key, column="ARRAY(SELECT %s + u.id)", params=[1_000]
        )
    assert (token.pk, token.user.pk, token.user.username) == (
        key,
        user.pk,
        user.username,
    )
    assert token.created == auth_token_get(key=key).created
    assert extra == [1_000 + user.pk]
    with django_assert_num_queries(1):
        assert auth_token_get_with(key="f" * 40, column="1") is None
    with django_assert_num_queries(0):
        assert auth_token_get_with(key="f" * 41, column="1") is None
