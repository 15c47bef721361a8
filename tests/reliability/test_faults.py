"""Faults injected for real into a running Kindred (gunicorn, production settings),
then restored: Redis killed (cache and broker at once), the database cut off, an
artifact corrupted on disk.

The shared services are never touched: Redis is our own ``redis-server`` process
and the database sits behind our own TCP proxy. (A Celery worker SIGKILLed in the
middle of the pipeline is in ``tests/recommender/test_worker.py``.)
"""

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from rest_framework.authtoken.models import Token

from recommender.models import RecommendationLog
from registry.models import MLModel
from registry.services import model_activate
from tests.accounts.factories import member
from tests.reliability.harness import TcpProxy, database_url, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RECOMMENDATIONS = "/api/v1/recommendations/?limit=10"
# Generous: a healthy answer takes tens of milliseconds here. Only a request that
# hangs on a dead dependency (e.g. kombu's reconnect loop: 6 s) runs into it.
HANG_SECONDS = 5
SIGNUP = {
    "password": "a long enough passphrase",
    "display_name": "Fault",
    "birth_date": "1990-01-01",
    "gender": "female",
}


def full_answer(server, token):
    """Wait until the server's background load is done and it serves ``full``."""

    def full():
        reply = server.request("GET", RECOMMENDATIONS, token=token)
        assert reply.status == 200, reply.body
        return reply if reply.headers["x-recommendation-strategy"] == "full" else None

    return wait_for(full, "the full pipeline", log=server.log_tail)


def assert_clean_json(reply, status):
    assert reply.status == status, reply.body
    assert reply.content_type.startswith("application/json")
    assert b"Traceback" not in reply.body and b"<html" not in reply.body.lower()
    return reply.json()


def test_redis_killed_serves_from_the_database_degraded_then_recovers(
    trained, open_member, own_redis, web
):
    redis = own_redis()
    server = web(REDIS_URL=redis.url)
    token = Token.objects.create(user=open_member).key
    target = member()
    full_answer(server, token)
    cached = server.request("GET", RECOMMENDATIONS, token=token)
    assert cached.headers["x-cache"] == "hit"
    assert server.request("GET", "/health").json()["status"] == "healthy"

    redis.kill()  # the cache and the Celery broker at once

    for _ in range(4):  # both workers, and past any first-failure special case
        reply = server.request(
            "GET", RECOMMENDATIONS, token=token, timeout=HANG_SECONDS
        )
        assert reply.status == 200, reply.body
        assert reply.headers["x-cache"] == "miss"  # computed from the database
        assert reply.headers["x-recommendation-strategy"] == "full"
        shown = len(reply.json()["results"])
        assert shown > 0
    # With the broker gone, impressions are written directly, not lost.
    request_id = reply.headers["x-request-id"]
    assert RecommendationLog.objects.filter(request_id=request_id).count() == shown
    # Rate-limited writes stay up: the throttle's cache is down, so it lets them in.
    recorded = server.request(
        "POST",
        "/api/v1/interactions/",
        token=token,
        json_body={"target": target.pk, "kind": "like"},
        timeout=HANG_SECONDS,
    )
    assert_clean_json(recorded, 201)
    signup = server.request(
        "POST", "/api/v1/accounts/", json_body={"username": "fault1", **SIGNUP}
    )
    assert_clean_json(signup, 201)
    login = server.request(
        "POST",
        "/api/v1/auth/token/",
        json_body={"username": "fault1", "password": SIGNUP["password"]},
    )
    assert "token" in assert_clean_json(login, 200)
    health = server.request("GET", "/health", timeout=HANG_SECONDS)
    body = assert_clean_json(health, 200)
    assert body["status"] == "degraded"
    assert {"cache", "broker"} <= set(body["problems"])
    assert server.request("GET", "/health/ready").status == 200

    redis.start()  # the same port: the cache comes back by itself

    wait_for(
        lambda: server.request("GET", "/health").json()["status"] == "healthy",
        "health to recover",
    )
    full_answer(server, token)
    wait_for(
        lambda: (
            server.request("GET", RECOMMENDATIONS, token=token).headers["x-cache"]
            == "hit"
        ),
        "cache hits again",
    )


def test_database_cut_off_is_a_clean_503_then_recovers(
    trained, open_member, own_redis, web
):
    settings = connection.settings_dict
    proxy = TcpProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)))
    proxy.start()
    redis = own_redis()
    server = web(
        database=database_url(settings, host="127.0.0.1", port=proxy.port),
        REDIS_URL=redis.url,
    )
    token = Token.objects.create(user=open_member).key
    full_answer(server, token)
    assert server.request("GET", "/health/ready").status == 200

    connected_before = proxy.connections
    proxy.cut()  # every connection dropped, new ones refused
    try:
        ready = assert_clean_json(server.request("GET", "/health/ready"), 503)
        assert ready["status"] == "unavailable"
        health = assert_clean_json(server.request("GET", "/health"), 503)
        assert health["status"] == "unhealthy"
        assert server.request("GET", "/health/live").status == 200
        calls = [
            ("GET", RECOMMENDATIONS, token, None),
            ("GET", "/api/v1/profiles/me/", token, None),
            ("GET", "/api/v1/matches/", token, None),
            ("POST", "/api/v1/interactions/", token, {"target": 1, "kind": "like"}),
            ("POST", "/api/v1/accounts/", None, {"username": "fault2", **SIGNUP}),
            ("POST", "/api/v1/auth/token/", None, {"username": "a", "password": "b"}),
        ]
        for _ in range(2):  # both workers' connections are gone
            for method, path, auth, body in calls:
                reply = server.request(
                    method, path, token=auth, json_body=body, timeout=HANG_SECONDS
                )
                error = assert_clean_json(reply, 503)
                assert error["code"] == "unavailable", (path, error)
                assert int(reply.headers["retry-after"]) > 0
    finally:
        proxy.restore()

    wait_for(
        lambda: server.request("GET", "/health/ready").status == 200,
        "readiness to recover",
    )
    assert server.request("GET", RECOMMENDATIONS, token=token).status == 200
    # The workers reconnected through the proxy (how many had connected before
    # depends on which worker took which request).
    assert proxy.connections > connected_before


def test_a_corrupted_artifact_keeps_the_old_model_and_health_says_degraded(
    trained, open_member, web
):
    from tests.recommender.serving_fixtures import register_copy

    # One worker: the process that failed the load is the one /health describes.
    server = web(WEB_CONCURRENCY="1")
    token = Token.objects.create(user=open_member).key
    versions = full_answer(server, token).headers["x-model-versions"]
    assert f"ranking={trained.ranking.version}" in versions
    broken = register_copy(trained.ranking)
    with default_storage.open(broken.artifact.name, "wb") as stored:
        stored.write(b"flipped bits on disk")

    model_activate(model=broken, actor=None, actor_label="reliability test")

    def load_refused():
        server.request("GET", RECOMMENDATIONS, token=token)  # triggers the load
        body = server.request("GET", "/health").json()
        return body if "models" in body["problems"] else None

    health = wait_for(load_refused, "the refused load", log=server.log_tail)
    assert health["status"] == "degraded"
    assert "checksum" in health["components"]["models"]["error"]
    reply = server.request("GET", RECOMMENDATIONS, token=token)
    assert reply.status == 200
    assert reply.headers["x-recommendation-strategy"] == "full"
    assert f"ranking={trained.ranking.version}" in reply.headers["x-model-versions"]

    # Deleted outright: still refused, still the old model.
    default_storage.delete(broken.artifact.name)
    model_activate(model=trained.ranking, actor=None, actor_label="back")
    model_activate(model=broken, actor=None, actor_label="again")
    assert MLModel.objects.get(pk=broken.pk).is_active
    wait_for(load_refused, "the refused load of a missing file", log=server.log_tail)
    reply = server.request("GET", RECOMMENDATIONS, token=token)
    assert reply.status == 200
    assert f"ranking={trained.ranking.version}" in reply.headers["x-model-versions"]
