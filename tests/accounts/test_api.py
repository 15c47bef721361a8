import datetime as dt

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from accounts.models import Preferences, Profile, User
from interactions.models import Interaction, InteractionKind
from tests.accounts.factories import UserFactory, member

pytestmark = pytest.mark.django_db

SIGNUP_URL = "/api/v1/accounts/"
TOKEN_URL = "/api/v1/auth/token/"
ME_URL = "/api/v1/profiles/me/"


def profile_url(user_id) -> str:
    return f"/api/v1/profiles/{user_id}/"


def years_ago(years: int, days: int = 0) -> dt.date:
    today = dt.date.today()
    try:
        date = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        date = today.replace(year=today.year - years, day=28)
    return date + dt.timedelta(days=days)


def signup_payload(**overrides) -> dict:
    payload = {
        "username": "alice",
        "password": "a-long-unusual-passphrase",
        "display_name": "Alice",
        "birth_date": "1994-03-02",
        "gender": "female",
        "city": "Lyon",
        "latitude": 45.76,
        "longitude": 4.84,
        "bio": "Climbing and coffee.",
        "interests": ["Climbing", " coffee ", "climbing", "", "Jazz  Music"],
    }
    payload.update(overrides)
    return payload


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def assert_error_names(response, field: str, key: str | None = None) -> None:
    """A 400 whose message names ``field``, listed under ``key`` (the enclosing
    object of a nested field) in ``fields``."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert (key or field) in body["fields"], body
    assert field in body["message"], body


# --- Sign-up ----------------------------------------------------------------------
def test_signup_creates_user_profile_and_preferences(api_client):
    response = api_client.post(SIGNUP_URL, signup_payload(), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    user = User.objects.get(pk=body["id"])
    assert body["username"] == "alice"
    assert user.check_password("a-long-unusual-passphrase")
    assert "password" not in body
    profile = body["profile"]
    assert profile["user_id"] == user.pk
    assert profile["display_name"] == "Alice"
    assert profile["interests"] == ["climbing", "coffee", "jazz music"]
    assert profile["age"] == Profile.objects.get(user=user).age
    assert Profile.objects.get(user=user).last_active_at is not None
    preferences = Preferences.objects.get(user=user)
    assert sorted(preferences.seeking_genders) == ["female", "male", "nonbinary"]
    assert profile["preferences"]["min_age"] == 18


def test_signup_with_nested_preferences(api_client):
    payload = signup_payload(
        preferences={
            "seeking_genders": ["male", "male", "nonbinary"],
            "min_age": 25,
            "max_age": 40,
            "max_distance_km": 50,
        }
    )

    response = api_client.post(SIGNUP_URL, payload, format="json")

    assert response.status_code == 201, response.content
    preferences = Preferences.objects.get(user_id=response.json()["id"])
    assert preferences.seeking_genders == ["male", "nonbinary"]
    assert (preferences.min_age, preferences.max_age) == (25, 40)
    assert preferences.max_distance_km == 50


def test_signup_then_token_then_own_profile(api_client):
    api_client.post(SIGNUP_URL, signup_payload(), format="json")

    response = api_client.post(
        TOKEN_URL,
        {"username": "alice", "password": "a-long-unusual-passphrase"},
        format="json",
    )
    assert response.status_code == 200, response.content
    token = response.json()["token"]

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api_client.get(ME_URL)
    assert me.status_code == 200
    assert me.json()["username"] == "alice"


def test_signup_duplicate_username_names_username(api_client):
    UserFactory(username="alice")

    response = api_client.post(SIGNUP_URL, signup_payload(), format="json")

    assert_error_names(response, "username")
    assert User.objects.filter(username="alice").count() == 1


def test_signup_username_differing_only_in_case_is_taken(api_client):
    UserFactory(username="alice")

    response = api_client.post(
        SIGNUP_URL, signup_payload(username="ALICE"), format="json"
    )

    assert_error_names(response, "username")


@pytest.mark.parametrize("password", ["short", "password123", "12345678901"])
def test_signup_rejects_weak_password(api_client, password):
    response = api_client.post(
        SIGNUP_URL, signup_payload(password=password), format="json"
    )

    assert_error_names(response, "password")
    assert not User.objects.exists()


def test_signup_rejects_minor(api_client):
    too_young = years_ago(18, days=1).isoformat()

    response = api_client.post(
        SIGNUP_URL, signup_payload(birth_date=too_young), format="json"
    )

    assert_error_names(response, "birth_date")
    assert not User.objects.exists()


def test_signup_accepts_eighteenth_birthday_today(api_client):
    response = api_client.post(
        SIGNUP_URL,
        signup_payload(birth_date=years_ago(18).isoformat()),
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["profile"]["age"] == 18


def test_signup_rejects_future_birth_date(api_client):
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()

    response = api_client.post(
        SIGNUP_URL, signup_payload(birth_date=tomorrow), format="json"
    )

    assert_error_names(response, "birth_date")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gender": "robot"}, "gender"),
        ({"birth_date": "02/03/1994"}, "birth_date"),
        ({"latitude": 91}, "latitude"),
        ({"longitude": -181}, "longitude"),
        ({"latitude": "north"}, "latitude"),
        ({"longitude": None}, "longitude"),
        ({"interests": "hiking"}, "interests"),
        ({"interests": [["nested"]]}, "interests"),
        ({"interests": ["x" * 41]}, "interests"),
        ({"interests": [f"topic {n}" for n in range(31)]}, "interests"),
        ({"display_name": ""}, "display_name"),
        ({"username": "bad name!"}, "username"),
        ({"preferences": {"min_age": 30, "max_age": 25}}, "max_age"),
        ({"preferences": {"min_age": 17}}, "min_age"),
        ({"preferences": {"seeking_genders": []}}, "seeking_genders"),
        ({"preferences": {"seeking_genders": ["robot"]}}, "seeking_genders"),
        ({"preferences": {"max_distance_km": 0}}, "max_distance_km"),
        ({"preferences": "everyone"}, "preferences"),
    ],
)
def test_signup_rejects_invalid_field(api_client, overrides, field):
    response = api_client.post(SIGNUP_URL, signup_payload(**overrides), format="json")

    key = "preferences" if "preferences" in overrides else field
    assert_error_names(response, field, key=key)
    assert not User.objects.exists()


@pytest.mark.parametrize(
    "missing", ["username", "password", "display_name", "birth_date", "gender"]
)
def test_signup_requires_field(api_client, missing):
    payload = signup_payload()
    del payload[missing]

    response = api_client.post(SIGNUP_URL, payload, format="json")

    assert_error_names(response, missing)


def test_signup_location_is_optional(api_client):
    payload = signup_payload()
    del payload["latitude"], payload["longitude"], payload["city"]

    response = api_client.post(SIGNUP_URL, payload, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["profile"]["latitude"] is None


def test_signup_malformed_json_is_400(api_client):
    response = api_client.post(
        SIGNUP_URL, '{"username": "alice",', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["message"]


def test_signup_json_array_body_is_400(api_client):
    response = api_client.post(SIGNUP_URL, [1, 2], format="json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()["fields"]


def test_signup_ignores_a_session_or_token_of_someone_else(api_client):
    other = member()
    client = client_for(other)

    response = client.post(SIGNUP_URL, signup_payload(), format="json")

    assert response.status_code == 201
    assert response.json()["id"] != other.pk


def test_signup_is_throttled_per_client(api_client, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"signup": "2/hour"})

    codes = [
        api_client.post(
            SIGNUP_URL, signup_payload(username=f"user{n}"), format="json"
        ).status_code
        for n in range(3)
    ]

    assert codes == [201, 201, 429]


# --- Token ------------------------------------------------------------------------
def test_token_is_stable_across_logins(api_client):
    user = member()
    credentials = {"username": user.username, "password": "correct-horse-battery"}

    first = api_client.post(TOKEN_URL, credentials, format="json").json()["token"]
    second = api_client.post(TOKEN_URL, credentials, format="json").json()["token"]

    assert first == second == Token.objects.get(user=user).key


def test_token_login_marks_member_active(api_client):
    user = member(last_active_at=None)

    api_client.post(
        TOKEN_URL,
        {"username": user.username, "password": "correct-horse-battery"},
        format="json",
    )

    assert Profile.objects.get(user=user).last_active_at is not None


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "nobody", "password": "correct-horse-battery"},
        {"username": "USER", "password": "wrong"},
    ],
)
def test_token_bad_credentials_is_400_json(api_client, credentials):
    user = member()
    if credentials["username"] == "USER":
        credentials["username"] = user.username

    response = api_client.post(TOKEN_URL, credentials, format="json")

    assert response.status_code == 400
    assert "Unable to log in" in response.json()["message"]
    assert not Token.objects.exists()


def test_token_refused_for_inactive_user(api_client):
    user = member()
    user.is_active = False
    user.save()

    response = api_client.post(
        TOKEN_URL,
        {"username": user.username, "password": "correct-horse-battery"},
        format="json",
    )

    assert response.status_code == 400


def test_token_missing_password_names_password(api_client):
    response = api_client.post(TOKEN_URL, {"username": "alice"}, format="json")

    assert_error_names(response, "password")


# --- Own profile ------------------------------------------------------------------
def test_anonymous_gets_401_everywhere(api_client):
    user = member()
    for method, url in [
        ("get", ME_URL),
        ("patch", ME_URL),
        ("get", profile_url(user.pk)),
        ("get", "/api/v1/interactions/"),
        ("post", "/api/v1/interactions/"),
        ("get", "/api/v1/matches/"),
    ]:
        response = getattr(api_client, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        assert response.json()["message"]


def test_invalid_token_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert api_client.get(ME_URL).status_code == 401


def test_get_own_profile_includes_private_fields_and_preferences():
    user = member(display_name="Zoe", preferences={"min_age": 30, "max_age": 45})

    response = client_for(user).get(ME_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user.pk
    assert body["display_name"] == "Zoe"
    assert body["birth_date"] == "1995-06-15"
    assert body["latitude"] == 52.52
    assert body["preferences"]["min_age"] == 30
    assert body["preferences"]["max_age"] == 45


def test_get_own_profile_without_profile_is_404():
    staff = UserFactory(is_staff=True)

    response = client_for(staff).get(ME_URL)

    assert response.status_code == 404


def test_patch_updates_profile_and_preferences_partially():
    user = member(display_name="Zoe", city="Berlin")
    client = client_for(user)

    response = client.patch(
        ME_URL,
        {
            "bio": "New bio",
            "interests": ["Chess", "chess", "Go"],
            "preferences": {"max_age": 50},
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    profile = Profile.objects.get(user=user)
    assert profile.bio == "New bio"
    assert profile.interests == ["chess", "go"]
    assert profile.display_name == "Zoe"
    assert profile.city == "Berlin"
    preferences = Preferences.objects.get(user=user)
    assert (preferences.min_age, preferences.max_age) == (18, 50)
    assert response.json()["preferences"]["max_age"] == 50
    assert response.json()["interests"] == ["chess", "go"]


def test_patch_sets_last_active_at():
    user = member(last_active_at=None)

    client_for(user).patch(ME_URL, {"city": "Paris"}, format="json")

    assert Profile.objects.get(user=user).last_active_at is not None


def test_patch_can_hide_profile():
    user = member()

    client_for(user).patch(ME_URL, {"is_visible": False}, format="json")

    assert Profile.objects.get(user=user).is_visible is False


def test_patch_can_clear_location_with_both_coordinates():
    user = member()

    response = client_for(user).patch(
        ME_URL, {"latitude": None, "longitude": None}, format="json"
    )

    assert response.status_code == 200
    assert Profile.objects.get(user=user).latitude is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"preferences": {"min_age": 60}}, "max_age"),
        ({"preferences": {"max_age": 17}}, "max_age"),
        ({"preferences": {"seeking_genders": "female"}}, "seeking_genders"),
        ({"latitude": None}, "latitude"),
        ({"gender": "other"}, "gender"),
        ({"birth_date": "2100-01-01"}, "birth_date"),
        ({"display_name": None}, "display_name"),
        ({"bio": "x" * 2001}, "bio"),
        ({"is_visible": "perhaps"}, "is_visible"),
    ],
)
def test_patch_rejects_invalid_input_and_changes_nothing(payload, field):
    user = member(bio="Old", preferences={"max_age": 55})

    response = client_for(user).patch(ME_URL, payload, format="json")

    key = "preferences" if "preferences" in payload else field
    assert_error_names(response, field, key=key)
    profile = Profile.objects.get(user=user)
    assert profile.bio == "Old"
    assert profile.latitude == 52.52
    assert Preferences.objects.get(user=user).max_age == 55


def test_patch_cross_field_check_uses_stored_values():
    user = member(preferences={"min_age": 30, "max_age": 40})

    response = client_for(user).patch(
        ME_URL, {"preferences": {"max_age": 29}}, format="json"
    )

    assert_error_names(response, "max_age", key="preferences")


def test_patch_malformed_json_is_400():
    user = member()

    response = client_for(user).patch(
        ME_URL, "{not json", content_type="application/json"
    )

    assert response.status_code == 400


def test_patch_ignores_attempt_to_change_identity():
    user = member()
    other = member(display_name="Other")

    response = client_for(user).patch(
        ME_URL,
        {"user_id": other.pk, "username": "hijack", "display_name": "Me"},
        format="json",
    )

    assert response.status_code == 200
    assert Profile.objects.get(user=other).display_name == "Other"
    assert Profile.objects.get(user=user).display_name == "Me"
    assert User.objects.get(pk=user.pk).username == user.username


def test_no_endpoint_edits_another_members_profile():
    user = member()
    other = member(display_name="Other")
    client = client_for(user)

    for method in ("patch", "put", "delete", "post"):
        response = getattr(client, method)(
            profile_url(other.pk), {"display_name": "Hacked"}, format="json"
        )
        assert response.status_code == 405, method
    assert Profile.objects.get(user=other).display_name == "Other"


def test_profile_update_invalidates_recommendation_cache(
    django_capture_on_commit_callbacks,
):
    user = member()
    cache.set(f"recs:{user.pk}", ["stale"])

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(user).patch(ME_URL, {"city": "Rome"}, format="json")

    assert response.status_code == 200
    assert cache.get(f"recs:{user.pk}") is None


# --- Public profiles --------------------------------------------------------------
def test_public_profile_hides_private_fields():
    viewer = member()
    other = member(display_name="Sam", city="Oslo", bio="Hi", interests=["ski"])

    response = client_for(viewer).get(profile_url(other.pk))

    assert response.status_code == 200
    assert response.json() == {
        "user_id": other.pk,
        "display_name": "Sam",
        "age": Profile.objects.get(user=other).age,
        "gender": "female",
        "city": "Oslo",
        "bio": "Hi",
        "interests": ["ski"],
    }


def test_own_public_profile_is_visible_even_when_hidden():
    user = member(is_visible=False)

    response = client_for(user).get(profile_url(user.pk))

    assert response.status_code == 200
    assert response.json()["user_id"] == user.pk


@pytest.mark.parametrize("case", ["missing", "hidden", "inactive", "no_profile"])
def test_public_profile_404_when_not_visible(case):
    viewer = member()
    if case == "missing":
        target_id = 10**9
    elif case == "hidden":
        target_id = member(is_visible=False).pk
    elif case == "inactive":
        target = member()
        User.objects.filter(pk=target.pk).update(is_active=False)
        target_id = target.pk
    else:
        target_id = UserFactory().pk

    response = client_for(viewer).get(profile_url(target_id))

    assert response.status_code == 404
    assert response.json()["message"]


def test_public_profile_404_for_id_beyond_integer_range():
    viewer = member()

    response = client_for(viewer).get(profile_url(10**30))

    assert response.status_code == 404


@pytest.mark.parametrize("blocker", ["viewer", "target"])
def test_block_hides_profiles_both_ways(blocker):
    viewer = member()
    target = member()
    actor, blocked = (viewer, target) if blocker == "viewer" else (target, viewer)
    Interaction.objects.create(actor=actor, target=blocked, kind=InteractionKind.BLOCK)

    assert client_for(viewer).get(profile_url(target.pk)).status_code == 404
    assert client_for(target).get(profile_url(viewer.pk)).status_code == 404


def test_dislike_does_not_hide_profile():
    viewer = member()
    target = member()
    Interaction.objects.create(
        actor=target, target=viewer, kind=InteractionKind.DISLIKE
    )

    assert client_for(viewer).get(profile_url(target.pk)).status_code == 200
