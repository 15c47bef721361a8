"""The embedded default (no ``REDIS_URL``) under gunicorn with several workers: the
cache is shared by the processes, so what one worker invalidates or counts, every
worker sees (issue 13 #1).

With a local-memory cache per process, a member's narrowed age range was ignored
by the other worker's cached answer, and every worker counted its own rate limits.
"""

import pytest
from rest_framework.authtoken.models import Token

from tests.accounts.factories import member

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RECOMMENDATIONS = "/api/v1/recommendations/?limit=100"
REQUESTS = 16  # sequential connections: both workers answer some of them


@pytest.fixture
def embedded_cache_web(web, tmp_path):
    """gunicorn (2 workers) with no REDIS_URL: the embedded cache."""

    def start(**env):
        return web(CACHE_DIR=str(tmp_path / "cache"), **env)

    return start


def ages(reply) -> list[int]:
    assert reply.status == 200, reply.body
    return [result["age"] for result in reply.json()["results"]]


def test_a_block_and_a_narrowed_age_range_hold_in_every_worker(
    trained, open_member, embedded_cache_web
):
    server = embedded_cache_web()
    token = Token.objects.create(user=open_member).key
    pages = [
        server.request("GET", RECOMMENDATIONS, token=token) for _ in range(REQUESTS)
    ]  # every worker computes and caches an answer
    all_ages = sorted({age for page in pages for age in ages(page)})
    assert len(all_ages) > 2, all_ages
    low, high = all_ages[len(all_ages) // 2 - 1], all_ages[len(all_ages) // 2]
    blocked = pages[-1].json()["results"][0]["user_id"]

    reply = server.request(
        "POST",
        "/api/v1/interactions/",
        token=token,
        json_body={"target": blocked, "kind": "block"},
    )
    assert reply.status == 201, reply.body
    for _ in range(REQUESTS):
        reply = server.request("GET", RECOMMENDATIONS, token=token)
        assert reply.status == 200, reply.body
        assert blocked not in [r["user_id"] for r in reply.json()["results"]]

    edited = server.request(
        "PATCH",
        "/api/v1/profiles/me/",
        token=token,
        json_body={"preferences": {"min_age": low, "max_age": high}},
    )
    assert edited.status == 200, edited.body
    outside = []
    for _ in range(REQUESTS):
        page = ages(server.request("GET", RECOMMENDATIONS, token=token))
        outside += [age for age in page if not low <= age <= high]
    # Before: ages outside the range in about half the answers (the other
    # worker's entry, computed before the edit).
    assert outside == [], f"ages outside {low}..{high} served from a cache"


def test_rate_limits_count_across_workers(postgres, embedded_cache_web):
    server = embedded_cache_web(THROTTLE_TOKEN="10/minute")
    wrong = {"username": member().username, "password": "not the password"}
    statuses = [
        server.request("POST", "/api/v1/auth/token/", json_body=wrong).status
        for _ in range(30)
    ]
    # Exactly the rate, whichever worker answered: not 10 per worker.
    assert statuses[:10] == [400] * 10, statuses
    assert set(statuses[10:]) == {429}, statuses
