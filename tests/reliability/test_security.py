"""Security boundaries of every endpoint: who may call what, blocked members never
seeing each other, throttles at their configured rates, deploy checks and secrets."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.api.views import AccountCreateApi, TokenCreateApi
from interactions.api.views import InteractionListCreateApi
from interactions.models import Match
from registry.models import MLModel, ModelActivation
from registry.services import model_activate
from tests.accounts.factories import UserFactory, member
from tests.registry.factories import versions
from tests.reliability.harness import ROOT

pytestmark = pytest.mark.django_db

MEMBER_ENDPOINTS = [
    ("get", "/api/v1/profiles/me/", None),
    ("patch", "/api/v1/profiles/me/", {"bio": "x"}),
    ("get", "/api/v1/profiles/{other}/", None),
    ("get", "/api/v1/interactions/", None),
    ("post", "/api/v1/interactions/", {"target": "{other}", "kind": "like"}),
    ("get", "/api/v1/matches/", None),
    ("get", "/api/v1/recommendations/", None),
]
BAD_AUTHORIZATION = [
    "Token",
    "Token ",
    "Token not-a-real-key",
    "Token " + "f" * 40,
    "Token a b",
    "Token " + "x" * 5000,
    # UTF-8 on the wire; WSGI hands headers over decoded as latin-1.
    "Token 🔑🔑🔑".encode().decode("latin-1"),
    "Bearer abcdef",
    "Basic Zm9vOmJhcg==",
    "token%00null",
]


def client_for(user) -> APIClient:
    client = APIClient()
    client.default_format = "json"
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user)}")
    return client


def call(client, method, path, body, other):
    path = path.format(other=other.pk)
    if body is not None:
        body = {k: other.pk if v == "{other}" else v for k, v in body.items()}
    return getattr(client, method)(path, body, format="json")


@pytest.mark.parametrize("method,path,body", MEMBER_ENDPOINTS)
def test_anonymous_is_a_401_json_on_every_member_endpoint(method, path, body):
    response = call(APIClient(), method, path, body, member())

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("header", BAD_AUTHORIZATION)
@pytest.mark.parametrize("method,path,body", MEMBER_ENDPOINTS)
def test_a_malformed_or_unknown_token_is_a_401_json(method, path, body, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = call(client, method, path, body, member())

    assert response.status_code == 401, response.content
    assert response.json()["message"]


def test_an_inactive_members_token_stops_working():
    user = member()
    client = client_for(user)
    user.is_active = False
    user.save()

    assert client.get("/api/v1/profiles/me/").status_code == 401


def test_another_member_sees_none_of_my_interactions_or_matches():
    alice, bob, carol = member(), member(), member()
    client_for(alice).post("/api/v1/interactions/", {"target": bob.pk, "kind": "like"})
    client_for(bob).post("/api/v1/interactions/", {"target": alice.pk, "kind": "like"})
    assert Match.objects.count() == 1

    carol_client = client_for(carol)
    assert carol_client.get("/api/v1/interactions/").json()["results"] == []
    assert carol_client.get("/api/v1/matches/").json()["results"] == []
    # No endpoint takes someone else's id to read or change their data.
    assert (
        carol_client.get(f"/api/v1/interactions/?actor={alice.pk}").json()["results"]
        == []
    )


def ids(results) -> set[int]:
    return {row["user_id"] for row in results}


def recommended(client) -> set[int]:
    response = client.get("/api/v1/recommendations/?limit=100")
    assert response.status_code == 200
    return ids(response.json()["results"])


# Transactional: the cache invalidation of a block runs on commit, as in production.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("blocker_is_first", [True, False])
def test_blocked_members_never_appear_to_each_other_anywhere(engine, blocker_is_first):
    alice, bob = member(), member()
    for _ in range(3):
        member()  # others, so the recommendation lists are not empty
    blocker, blocked = (alice, bob) if blocker_is_first else (bob, alice)
    blocker_client, blocked_client = client_for(blocker), client_for(blocked)
    blocked_client.post("/api/v1/interactions/", {"target": blocker.pk, "kind": "like"})
    blocker_client.post("/api/v1/interactions/", {"target": blocked.pk, "kind": "like"})
    assert Match.objects.filter(ended_at__isnull=True).count() == 1
    assert blocked_client.get(f"/api/v1/profiles/{blocker.pk}/").status_code == 200

    response = blocker_client.post(
        "/api/v1/interactions/", {"target": blocked.pk, "kind": "block"}
    )
    assert response.status_code == 200

    for viewer, other in ((blocker_client, blocked), (blocked_client, blocker)):
        assert viewer.get(f"/api/v1/profiles/{other.pk}/").status_code == 404
        assert other.pk not in ids(viewer.get("/api/v1/matches/").json()["results"])
        assert other.pk not in recommended(viewer)
    # The blocked member cannot reach the blocker, and cannot tell a block from a
    # member who does not exist.
    refused = blocked_client.post(
        "/api/v1/interactions/", {"target": blocker.pk, "kind": "like"}
    )
    unknown = blocked_client.post(
        "/api/v1/interactions/", {"target": 10**12, "kind": "like"}
    )
    assert refused.status_code == unknown.status_code == 400
    assert refused.json() == unknown.json()
    # Nor see that the blocker acted on them.
    assert blocker.pk not in {
        row["target"]
        for row in blocked_client.get("/api/v1/interactions/?kind=block").json()[
            "results"
        ]
    }


@pytest.mark.django_db(transaction=True)
def test_a_block_hides_members_from_each_others_recommendations(engine):
    alice, bob = member(), member()
    member()
    alice_client, bob_client = client_for(alice), client_for(bob)
    # Open preferences: each is a candidate for the other before the block.
    assert bob.pk in recommended(alice_client)
    assert alice.pk in recommended(bob_client)

    alice_client.post("/api/v1/interactions/", {"target": bob.pk, "kind": "block"})

    assert bob.pk not in recommended(alice_client)
    assert alice.pk not in recommended(bob_client)


# --- registry admin: staff and the registry's own permission ----------------------
CHANGELIST = reverse("admin:registry_mlmodel_changelist")


def staff_with(*codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry", codename__in=codenames
        )
    )
    return user


PROMOTE_ATTEMPTS = [
    lambda target: (
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [target.pk]},
    ),
    lambda target: (
        reverse("admin:registry_mlmodel_dashboard_promote", args=[target.pk]),
        {"reason": "try"},
    ),
    lambda target: (
        reverse("admin:registry_mlmodel_dashboard_rollback", args=[target.kind]),
        {},
    ),
]


@pytest.mark.parametrize("attempt", PROMOTE_ATTEMPTS)
@pytest.mark.parametrize(
    "who",
    ["anonymous", "member", "staff_without_permissions", "staff_view_change_only"],
)
def test_only_the_promote_permission_changes_what_serves(client, who, attempt):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)
    if who == "member":
        client.force_login(member())
    elif who == "staff_without_permissions":
        client.force_login(staff_with())
    elif who == "staff_view_change_only":
        client.force_login(staff_with("view_mlmodel", "change_mlmodel"))
    url, data = attempt(v2)

    response = client.post(url, data)

    # 200: the changelist re-rendered, the action not offered to this user.
    assert response.status_code in (200, 302, 403)
    if who in ("anonymous", "member"):
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert list(MLModel.objects.filter(is_active=True)) == [v1]
    assert ModelActivation.objects.count() == 1


@pytest.mark.parametrize("attempt", PROMOTE_ATTEMPTS[:2])
def test_staff_with_the_promote_permission_can_promote(client, attempt):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)
    client.force_login(staff_with("view_mlmodel", "change_mlmodel", "promote_mlmodel"))
    url, data = attempt(v2)

    client.post(url, data)

    assert list(MLModel.objects.filter(is_active=True)) == [v2]


def test_members_cannot_open_the_admin(client):
    client.force_login(member())

    response = client.get(CHANGELIST)

    assert response.status_code == 302 and "/login/" in response["Location"]


# --- throttling at the configured rates ------------------------------------------
def test_the_configured_rates_are_the_ones_the_views_apply():
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    post = type("Request", (), {"method": "POST"})

    view = InteractionListCreateApi()
    view.request = post
    throttles = [
        (AccountCreateApi, AccountCreateApi.throttle_classes[0]()),
        (TokenCreateApi, TokenCreateApi.throttle_classes[0]()),
        (InteractionListCreateApi, view.get_throttles()[0]),
    ]
    for view_class, throttle in throttles:
        scope = view_class.throttle_scope
        assert throttle.THROTTLE_RATES[scope] == rates[scope]
    assert rates == {
        "signup": os.environ.get("THROTTLE_SIGNUP", "20/hour"),
        "token": os.environ.get("THROTTLE_TOKEN", "30/minute"),
        "interactions": os.environ.get("THROTTLE_INTERACTIONS", "120/minute"),
    }


def allowed(scope: str) -> int:
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")[0])


def signup(n):
    return {
        "username": f"throttled{n}",
        "password": "a long enough passphrase",
        "display_name": "T",
        "birth_date": "1990-01-01",
        "gender": "female",
    }


def assert_throttled(response):
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["code"] == "throttled"


def test_signup_is_throttled_at_its_rate_with_retry_after(api_client):
    codes = [
        api_client.post("/api/v1/accounts/", signup(n), format="json").status_code
        for n in range(allowed("signup"))
    ]
    assert codes == [201] * allowed("signup")

    assert_throttled(api_client.post("/api/v1/accounts/", signup("x"), format="json"))


def test_token_is_throttled_at_its_rate_with_retry_after(api_client):
    wrong = {"username": "nobody", "password": "guess"}
    codes = {
        api_client.post("/api/v1/auth/token/", wrong, format="json").status_code
        for _ in range(allowed("token"))
    }
    assert codes == {400}

    assert_throttled(api_client.post("/api/v1/auth/token/", wrong, format="json"))


def test_interactions_are_throttled_per_member_with_retry_after():
    actor, target, other = member(), member(), member()
    client = client_for(actor)
    for _ in range(allowed("interactions")):
        client.post("/api/v1/interactions/", {"target": target.pk, "kind": "like"})

    assert_throttled(
        client.post("/api/v1/interactions/", {"target": target.pk, "kind": "like"})
    )
    # Reading one's own history is not throttled, nor is another member.
    assert client.get("/api/v1/interactions/").status_code == 200
    assert (
        client_for(other)
        .post("/api/v1/interactions/", {"target": target.pk, "kind": "like"})
        .status_code
        == 201
    )


# --- deploy checks and secrets -----------------------------------------------------
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_SECRET_KEY": "a-production-like-secret-" + "k7Qx9Zp2Lm" * 5,
    "DJANGO_DEBUG": "false",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
    "DJANGO_ALLOWED_HOSTS": "kindred.example.com",
}


def manage(*args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_documented_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_there_is_no_default_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    # Set but empty, so a developer's own .env cannot fill it in.
    result = manage("check", env={**env, "DJANGO_SECRET_KEY": ""})

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_settings_read_every_secret_from_the_environment():
    source = (ROOT / "config" / "settings.py").read_text()

    assert 'SECRET_KEY = env("DJANGO_SECRET_KEY")' in source
    assert settings.DEBUG is False
