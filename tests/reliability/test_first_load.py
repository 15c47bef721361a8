"""A fresh worker's first recommendation requests, all at once (issue 13 #6): they
share the one model load and wait for it, instead of answering ``random`` with
``X-Model-Versions: none``; and an answer without models given only because the
load is still running is never cached."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.authtoken.models import Token

from tests.recommender.serving_fixtures import open_members
from tests.reliability.harness import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RECOMMENDATIONS = "/api/v1/recommendations/?limit=10"
AT_ONCE = 8  # both workers' 4 threads


def all_at_once(server, tokens):
    with ThreadPoolExecutor(len(tokens)) as pool:
        replies = list(
            pool.map(
                lambda token: server.request("GET", RECOMMENDATIONS, token=token),
                tokens,
            )
        )
    assert all(reply.status == 200 for reply in replies), replies
    return replies


def served_by(reply) -> tuple[str, str]:
    return (
        reply.headers["x-recommendation-strategy"],
        reply.headers["x-model-versions"],
    )


def test_first_requests_share_the_load_and_a_provisional_answer_is_not_cached(
    trained, web
):
    members = open_members(AT_ONCE)
    assert len(members) == AT_ONCE
    tokens = [Token.objects.create(user=user).key for user in members]

    # Every first request waits for its worker's load: full answers only.
    server = web()
    replies = all_at_once(server, tokens)
    assert [served_by(r)[0] for r in replies] == ["full"] * AT_ONCE, [
        served_by(r) for r in replies
    ]
    assert all(served_by(r)[1] != "none" for r in replies)
    server.stop()

    # Told not to wait, they answer without models meanwhile, and that answer is
    # not kept: once loaded, the same members get the full answer, computed.
    server = web(SERVING_FIRST_LOAD_WAIT_SECONDS="0")
    first = all_at_once(server, tokens)
    provisional = [
        t for t, r in zip(tokens, first, strict=True) if served_by(r)[0] == "random"
    ]
    assert provisional, [served_by(r) for r in first]

    # Asked again, each of them gets the full answer once the worker answering
    # has loaded. Probing with the members themselves (not a member whose full
    # answer is already cached, which any worker can serve) means a worker still
    # loading cannot pass for a loaded one; a provisional answer that had been
    # cached would keep coming back for the cache's 300 s and fail this.
    def all_full():
        return all(
            served_by(server.request("GET", RECOMMENDATIONS, token=token))[0] == "full"
            for token in provisional
        )

    wait_for(all_full, "the provisional members served in full", seconds=30)
