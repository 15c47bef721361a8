"""A cache hit checks its token in the query that re-checks its page
(``recommender.hits``, issue 16): one query per hit, and every guarantee of the
ordinary path kept (a token revoked, expired, replaced by a password change or of
a deactivated member is refused with the ordinary 401, even while the member's
cache entry and the token's pointer are still in Redis)."""

import datetime as dt

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import User
from recommender import hits
from recommender.cache import REDIS_BACKEND, redis_client
from recommender.impressions import impression_find_recent
from tests.accounts.factories import member
from tests.recommender import fakes

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        settings.CACHES["default"]["BACKEND"] != REDIS_BACKEND
        or settings.CACHES["default"]["LOCATION"] != settings.REDIS_URL
        or settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3",
        reason="the one-query hit needs Redis and PostgreSQL",
    ),
]

engine, eager_tasks = fakes.engine, fakes.eager_tasks

URL = reverse("recommendation-list")


@pytest.fixture(autouse=True)
def _fast_path_not_paused(monkeypatch):
    """A Redis failure in another test pauses the fast path for a few seconds."""
    monkeypatch.setattr(hits, "_paused_until", 0.0)


@pytest.fixture
def viewer():
    for _ in range(12):
        member()
    return member(display_name="Viewer")


@pytest.fixture
def token(viewer) -> Token:
    return Token.objects.create(user=viewer)


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def buffered(eager_tasks):
    """Impressions go to the Redis buffer, as in production (eager_tasks restores
    the setting): no impression write among a request's queries."""
    from config.celery import app

    app.conf.task_always_eager = False


@pytest.fixture
def cached(engine, buffered, token):
    """The viewer's answer is cached and their token's pointer written: the next
    request is a hit checked in one query."""
    first = with_token(token.key).get(URL)
    assert first.status_code == 200 and first["X-Cache"] == "miss"
    return first


def get_counting_queries(key: str, **params):
    with CaptureQueriesContext(connection) as queries:
        response = with_token(key).get(URL, params)
    return response, [q["sql"] for q in queries.captured_queries]


def _shown(response) -> list[int]:
    return [result["user_id"] for result in response.json()["results"]]


def test_a_hit_is_one_query_for_the_token_and_the_page(cached, token):
    response, queries = get_counting_queries(token.key, limit=5)

    assert response.status_code == 200 and response["X-Cache"] == "hit"
    assert len(queries) == 1
    assert "authtoken_token" in queries[0] and "interactions_interaction" in queries[0]
    assert _shown(response) == _shown(cached)[:5]


def test_a_hit_answers_as_the_ordinary_path_does(cached, token, viewer):
    request_id = "same-request-id"
    fast, queries = get_counting_queries(token.key, limit=7)
    redis_client().delete(hits._pointer_key(token.key))  # the ordinary path now
    client = with_token(token.key)
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {token.key}", HTTP_X_REQUEST_ID=request_id
    )
    ordinary = client.get(URL, {"limit": 7})
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {token.key}", HTTP_X_REQUEST_ID=request_id
    )
    again = client.get(URL, {"limit": 7})  # the pointer is back: the fast path

    assert len(queries) == 1
    assert ordinary["X-Cache"] == again["X-Cache"] == "hit"
    assert again.content == ordinary.content  # byte for byte
    assert again.json()["request_id"] == request_id
    assert _shown(fast) == _shown(again)

    def headers(response):
        return {k: v for k, v in response.items() if k != "X-Process-Time"}

    assert headers(again) == headers(ordinary)


def test_a_deleted_token_is_refused_while_its_entry_and_pointer_remain(cached, token):
    Token.objects.filter(key=token.key).delete()

    response, _ = get_counting_queries(token.key)

    assert response.status_code == 401
    assert response.json()["message"] == "Invalid token."
    assert response["WWW-Authenticate"] == "Token"


def test_a_token_older_than_the_password_is_refused_on_a_hit(cached, token, viewer):
    viewer.set_password("a brand new passphrase")
    viewer.save()

    response = with_token(token.key).get(URL)

    assert response.status_code == 401
    assert "log in again" in response.json()["message"]
    assert not Token.objects.filter(key=token.key).exists()


def test_a_deactivated_members_token_is_refused_on_a_hit(cached, token, viewer):
    User.objects.filter(pk=viewer.pk).update(is_active=False)

    response = with_token(token.key).get(URL)

    assert response.status_code == 401
    assert response.json()["message"] == "User inactive or deleted."


def test_an_expired_token_is_refused_on_a_hit(cached, token):
    lifetime = dt.timedelta(hours=settings.KINDRED["AUTH_TOKEN_TTL_HOURS"])
    Token.objects.filter(key=token.key).update(
        created=timezone.now() - lifetime - dt.timedelta(seconds=1)
    )

    response = with_token(token.key).get(URL)

    assert response.status_code == 401
    assert "expired" in response.json()["message"]
    assert not Token.objects.filter(key=token.key).exists()


def test_a_refused_token_on_a_hit_records_no_impression(cached, token, viewer):
    Token.objects.filter(key=token.key).delete()
    request_id = "refused-request"
    client = with_token(token.key)
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {token.key}", HTTP_X_REQUEST_ID=request_id
    )

    assert client.get(URL).status_code == 401
    shown = _shown(cached)[0]
    assert (
        impression_find_recent(
            user_id=viewer.pk, shown_user_id=shown, request_id=request_id
        )
        is None
    )


def test_a_bad_limit_with_a_refused_token_is_a_401_not_a_400(cached, token):
    Token.objects.filter(key=token.key).delete()

    assert with_token(token.key).get(URL, {"limit": "0"}).status_code == 401


def test_a_pointer_to_another_member_serves_nobody_elses_answer(
    engine, buffered, viewer
):
    other = member(display_name="Other")
    mine, theirs = Token.objects.create(user=viewer), Token.objects.create(user=other)
    assert with_token(theirs.key).get(URL).status_code == 200  # their entry cached
    # Someone able to write to Redis points the viewer's token at the other member.
    redis_client().set(hits._pointer_key(mine.key), other.pk)

    response = with_token(mine.key).get(URL)

    assert response.status_code == 200
    assert response["X-Cache"] == "miss"  # the viewer's own answer, computed
    assert viewer.pk not in _shown(response) and other.pk in _shown(response)
    assert int(redis_client().get(hits._pointer_key(mine.key))) == viewer.pk


def test_pointers_hold_no_usable_token(cached, token, viewer):
    keys = [k.decode() for k in redis_client().scan_iter(match="*token-member*")]

    # One pointer, named by a digest of the token and holding the member's id:
    # neither its key nor its value is the token.
    assert keys == [hits._pointer_key(token.key)]
    assert token.key not in keys[0]
    value = redis_client().get(keys[0])
    assert int(value) == viewer.pk and token.key.encode() not in value


def test_a_hit_still_leaves_out_whom_the_viewer_blocked_meanwhile(
    cached, token, viewer
):
    from interactions.models import Interaction, InteractionKind

    blocked = _shown(cached)[1]
    # Written straight to the database: no invalidation reaches the cache.
    Interaction.objects.create(
        actor=viewer, target_id=blocked, kind=InteractionKind.BLOCK
    )

    response, queries = get_counting_queries(token.key, limit=5)

    # The fast path's query, then the rest of the entry to fill the page up.
    assert len(queries) == 2 and "authtoken_token" in queries[0]
    assert blocked not in _shown(response)
    assert _shown(response) == [pk for pk in _shown(cached) if pk != blocked][:5]
    ranks = [result["rank"] for result in response.json()["results"]]
    assert ranks == [1, 2, 3, 4, 5]


def test_a_hit_records_its_impressions(cached, token, viewer):
    request_id = "fast-hit"
    client = with_token(token.key)
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {token.key}", HTTP_X_REQUEST_ID=request_id
    )
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL, {"limit": 3})

    assert len(queries.captured_queries) == 1
    for result in response.json()["results"]:
        found = impression_find_recent(
            user_id=viewer.pk, shown_user_id=result["user_id"], request_id=request_id
        )
        assert found is not None and found["position"] == result["rank"]


def test_redis_failing_on_a_hit_falls_back_to_the_ordinary_path(
    cached, token, monkeypatch
):
    def hung(*args, **kwargs):
        raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(hits, "redis_script", lambda source: hung)

    response, queries = get_counting_queries(token.key)

    assert response.status_code == 200
    assert len(queries) == 2  # the token, then the page's re-check
    assert hits._paused_until > 0
