import json
import logging
import os
import pickle

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from accounts.models import User
from recommender.cache import (
    REDIS_BACKEND,
    JSONSerializer,
    recommendations_cache,
    recommendations_cache_invalidate,
    recommendations_cache_key,
)
from recommender.selectors import (
    CACHE_SECONDS,
    DEGRADED_CACHE_SECONDS,
    recommendations_get,
)
from tests.accounts.factories import member
from tests.recommender import fakes

pytestmark = pytest.mark.django_db

# The fake engine, as fixtures of this module (client_for is in tests/conftest.py).
engine, eager_tasks = fakes.engine, fakes.eager_tasks

URL = reverse("recommendation-list")


@pytest.fixture
def viewer():
    for _ in range(12):
        member()
    return member(display_name="Viewer")


def test_the_second_call_is_served_from_the_cache(engine, client_for, viewer):
    client = client_for(viewer)
    first = client.get(URL, {"limit": 10})
    second = client.get(URL, {"limit": 10})

    assert len(engine.calls) == 1
    assert first["X-Cache"] == "miss"
    assert second["X-Cache"] == "hit"
    assert second.json()["results"] == first.json()["results"]
    assert second.json()["strategy"] == "full"
    assert second.json()["experiment"] == first.json()["experiment"]
    # Each response is its own request.
    assert second["X-Request-ID"] != first["X-Request-ID"]


def test_a_smaller_or_larger_limit_is_a_slice_of_the_cached_answer(
    engine, client_for, viewer
):
    client = client_for(viewer)
    ten = client.get(URL, {"limit": 10}).json()["results"]
    three = client.get(URL, {"limit": 3}).json()["results"]
    all_of_them = client.get(URL, {"limit": 100}).json()["results"]

    assert len(engine.calls) == 1
    assert three == ten[:3]
    assert all_of_them[:10] == ten
    assert len(all_of_them) == 12


def test_members_do_not_share_entries(engine, client_for, viewer):
    other = member()
    client_for(viewer).get(URL)
    client_for(other).get(URL)

    assert [call["user_id"] for call in engine.calls] == [viewer.pk, other.pk]


def test_an_interaction_invalidates_the_members_entry(
    engine, client_for, viewer, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    shown = client.get(URL).json()["results"][0]["user_id"]

    with django_capture_on_commit_callbacks(execute=True):
        liked = client.post(
            reverse("interaction-list"),
            {"target": shown, "kind": "like"},
            format="json",
        )
    assert liked.status_code == 201
    again = client.get(URL)

    assert len(engine.calls) == 2
    assert again["X-Cache"] == "miss"


def test_a_profile_change_invalidates_the_members_entry(
    engine, client_for, viewer, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    client.get(URL)

    with django_capture_on_commit_callbacks(execute=True):
        changed = client.patch(
            reverse("profile-me"), {"city": "Hamburg"}, format="json"
        )
    assert changed.status_code == 200
    client.get(URL)

    assert len(engine.calls) == 2


def test_a_preferences_change_invalidates_the_members_entry(
    engine, client_for, viewer, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    client.get(URL)

    with django_capture_on_commit_callbacks(execute=True):
        changed = client.patch(
            reverse("profile-me"),
            {"preferences": {"min_age": 25, "max_age": 40}},
            format="json",
        )
    assert changed.status_code == 200
    client.get(URL)

    assert len(engine.calls) == 2


def test_a_new_serving_generation_retires_every_entry(engine, client_for, viewer):
    client = client_for(viewer)
    client.get(URL)
    client.get(URL)
    assert len(engine.calls) == 1

    # A promotion, a rollback or an index rebuild moves the generation.
    engine.generation = "g2"
    response = client.get(URL)

    assert len(engine.calls) == 2
    assert response["X-Cache"] == "miss"
    assert client.get(URL)["X-Cache"] == "hit"


def test_an_invalidation_during_the_computation_is_not_undone(
    engine, client_for, viewer
):
    # The member likes someone while their recommendations are being computed: the
    # answer computed from the older state must not be cached.
    engine.during_compute = lambda user: recommendations_cache_invalidate(
        user_id=user.pk
    )
    client = client_for(viewer)
    client.get(URL)
    engine.during_compute = None
    client.get(URL)
    client.get(URL)

    assert len(engine.calls) == 2


def test_a_full_answer_is_cached_longer_than_a_degraded_one(
    engine, viewer, monkeypatch
):
    timeouts = []
    real_set = recommendations_cache().set

    def spy(key, value, timeout=None, **kwargs):
        if "results" in value:
            timeouts.append(timeout)
        return real_set(key, value, timeout, **kwargs)

    monkeypatch.setattr(recommendations_cache(), "set", spy)
    recommendations_get(user=viewer, limit=5)
    engine.strategy = "unranked"
    engine.generation = "g2"
    recommendations_get(user=viewer, limit=5)

    assert timeouts == [CACHE_SECONDS, DEGRADED_CACHE_SECONDS]


def test_an_unreachable_cache_is_logged_and_the_answer_computed(
    engine, client_for, viewer, monkeypatch, caplog
):
    calls = []

    def down(*args, **kwargs):
        calls.append(args)
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(recommendations_cache(), "get", down)
    monkeypatch.setattr(recommendations_cache(), "set", down)
    client = client_for(viewer)

    with caplog.at_level(logging.WARNING, logger="recommender.selectors"):
        first = client.get(URL, {"limit": 5})
        second = client.get(URL, {"limit": 5})

    assert first.status_code == second.status_code == 200
    assert len(first.json()["results"]) == 5
    assert len(engine.calls) == 2
    # One attempt and one log line per request, not one per cache call.
    assert len(calls) == 2
    warnings = [r for r in caplog.records if "cache unreachable" in r.getMessage()]
    assert len(warnings) == 2


def test_an_entry_left_by_another_release_is_a_miss(engine, client_for, viewer):
    cache.set(recommendations_cache_key(user_id=viewer.pk), ["something", "else"])

    response = client_for(viewer).get(URL)

    assert response.status_code == 200
    assert len(engine.calls) == 1


def test_a_redis_that_refuses_connections_does_not_fail_the_request(
    engine, client_for, viewer, settings
):
    # Nothing listens on port 1: every cache call fails to connect.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    client = client_for(viewer)

    first = client.get(URL, {"limit": 4})
    second = client.get(URL, {"limit": 4})

    assert first.status_code == second.status_code == 200
    assert len(second.json()["results"]) == 4
    assert len(engine.calls) == 2


# --- a hit never shows whom the database says not to (issue 13 #4, #5) -------------


@pytest.fixture
def hung_cache_deletes():
    """Every cache deletion times out, as with a Redis that accepts and never
    answers: the invalidation of an interaction is lost (and logged). ``undo()``:
    Redis answers again."""

    def hung(*args, **kwargs):
        raise RedisTimeoutError("Timeout reading from socket")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recommendations_cache(), "delete", hung)
        yield patch


def _shown(response) -> list[int]:
    return [result["user_id"] for result in response.json()["results"]]


def _assert_ranks_are_positions(response) -> None:
    ranks = [result["rank"] for result in response.json()["results"]]
    assert ranks == list(range(1, len(ranks) + 1))


def test_a_block_whose_invalidation_was_lost_is_not_served_from_the_cache(
    engine, client_for, viewer, hung_cache_deletes, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    first = _shown(client.get(URL))
    blocker, blocked = first[2], first[5]

    with django_capture_on_commit_callbacks(execute=True):
        # Someone the viewer was shown blocks them, and the viewer blocks someone.
        assert (
            client_for(User.objects.get(pk=blocker))
            .post(
                reverse("interaction-list"),
                {"target": viewer.pk, "kind": "block"},
                format="json",
            )
            .status_code
            == 201
        )
        assert (
            client.post(
                reverse("interaction-list"),
                {"target": blocked, "kind": "block"},
                format="json",
            ).status_code
            == 201
        )
    hung_cache_deletes.undo()  # Redis answers again; the entry is still there.
    again = client.get(URL)

    assert again["X-Cache"] == "hit"
    assert _shown(again) == [pk for pk in first if pk not in (blocker, blocked)]
    _assert_ranks_are_positions(again)


def test_a_like_whose_invalidation_was_lost_is_not_shown_again(
    engine, client_for, viewer, hung_cache_deletes, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    liked = _shown(client.get(URL))[0]

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("interaction-list"),
            {"target": liked, "kind": "like"},
            format="json",
        )
    hung_cache_deletes.undo()

    assert liked not in _shown(client.get(URL))


def test_a_member_who_hides_their_profile_leaves_others_cached_answers(
    engine, client_for, viewer, django_capture_on_commit_callbacks
):
    client = client_for(viewer)
    first = _shown(client.get(URL))
    hider = User.objects.get(pk=first[0])

    with django_capture_on_commit_callbacks(execute=True):
        hidden = client_for(hider).patch(
            reverse("profile-me"), {"is_visible": False}, format="json"
        )
    assert hidden.status_code == 200
    again = client.get(URL, {"limit": 5})

    assert again["X-Cache"] == "hit"
    assert _shown(again) == first[1:6]
    # By id: display names are drawn at random and may repeat among the others.
    assert hider.pk not in _shown(again)
    _assert_ranks_are_positions(again)


def test_deactivated_and_deleted_members_leave_others_cached_answers(
    engine, client_for, viewer
):
    client = client_for(viewer)
    first = _shown(client.get(URL))
    User.objects.filter(pk=first[1]).update(is_active=False)
    User.objects.get(pk=first[3]).delete()

    again = client.get(URL)

    assert again["X-Cache"] == "hit"
    assert _shown(again) == [pk for pk in first if pk not in (first[1], first[3])]
    _assert_ranks_are_positions(again)


def test_the_check_of_a_hit_is_one_query(engine, client_for, viewer):
    client = client_for(viewer)
    client.get(URL)
    with CaptureQueriesContext(connection) as hit:
        assert client.get(URL)["X-Cache"] == "hit"

    sql = [query["sql"] for query in hit.captured_queries]
    assert len([q for q in sql if "interactions_interaction" in q]) == 1


# --- entries are JSON, never pickles (issue 13 #7) ----------------------------------

redis_only = pytest.mark.skipif(
    settings.CACHES["default"]["BACKEND"] != REDIS_BACKEND,
    reason="the planted entry needs the Redis cache (REDIS_URL)",
)


class PlantedPickle:
    """What an attacker with write access to Redis plants: unpickling it calls
    ``os.mkdir(path)`` (it could as well start a shell)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _redis_key(user_id: int) -> str:
    return cache.make_and_validate_key(recommendations_cache_key(user_id=user_id))


@redis_only
def test_a_pickle_planted_in_redis_is_not_executed(
    engine, client_for, viewer, tmp_path
):
    marker = tmp_path / "code-ran"
    raw = get_redis_connection()
    raw.set(_redis_key(viewer.pk), pickle.dumps(PlantedPickle(marker)))

    response = client_for(viewer).get(URL)

    assert response.status_code == 200
    assert response["X-Cache"] == "miss"
    assert not marker.exists()


@redis_only
def test_entries_are_stored_as_json(engine, client_for, viewer):
    client = client_for(viewer)
    first = client.get(URL, {"limit": 5})

    stored = json.loads(get_redis_connection().get(_redis_key(viewer.pk)))

    assert stored["generation"] == "g1"
    assert [r["user_id"] for r in stored["results"][:5]] == _shown(first)
    assert client.get(URL, {"limit": 5}).json()["results"] == first.json()["results"]


def get_redis_connection():
    import redis

    return redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])


def test_the_json_serializer_reads_data_only():
    serializer = JSONSerializer()

    assert serializer.dumps(7) == 7  # raw, so Redis INCR works on it
    assert serializer.loads(b"7") == 7
    value = {"results": [{"score": 0.25, "sources": ["content"]}], "n": None}
    assert serializer.loads(serializer.dumps(value)) == value
    assert serializer.loads(serializer.dumps([1.5, 2.5])) == [1.5, 2.5]
    assert serializer.loads(pickle.dumps(PlantedPickle("/nonexistent/x"))) is None
