"""Smoke test of a running Kindred: `python -m tests.smoke http://127.0.0.1:8000`.

Used by .ci/run against the embedded default served by gunicorn: it waits for
readiness, logs in as a seeded demo member, reads its profile and records a like.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def call(base: str, method: str, path: str, body=None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _json(response)
    except urllib.error.HTTPError as error:
        return error.code, _json(error)


def _json(response):
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    return json.loads(response.read() or b"null")


def wait_ready(base: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, _ = call(base, "GET", "/health/ready")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server never became ready")
        time.sleep(0.3)


def main(base: str) -> None:
    from accounts.demo import DEMO_PASSWORD
    from accounts.models import User

    target = User.objects.get(username="demo_00002").pk

    wait_ready(base)
    status, body = call(
        base,
        "POST",
        "/api/v1/auth/token/",
        {"username": "demo_00001", "password": DEMO_PASSWORD},
    )
    assert status == 200, (status, body)
    token = body["token"]
    status, me = call(base, "GET", "/api/v1/profiles/me/", token=token)
    assert status == 200 and me["display_name"], (status, me)
    status, body = call(
        base, "POST", "/api/v1/interactions/", {"target": target, "kind": "like"}, token
    )
    assert status in (200, 201) and "matched" in body, (status, body)
    status, body = call(base, "GET", "/api/v1/interactions/?kind=like", token=token)
    assert status == 200 and body["count"] >= 1, (status, body)
    status, body = call(base, "GET", "/api/v1/nowhere/", token=token)
    assert status == 404, status
    status, body = call(base, "GET", "/api/v1/recommendations/?limit=5", token=token)
    assert status == 200 and set(body["model_versions"]) >= {"embedding", "ranking"}, (
        status,
        body,
    )
    status, health = call(base, "GET", "/health")
    assert status == 200 and health["status"] == "healthy", (status, health)
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        exposition = response.read().decode()
    routes = {
        sample.labels.get("route")
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_count"
    }
    assert {"token-create", "interaction-list", "health"} <= routes, routes
    print(f"smoke: OK against {base}")


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    main(sys.argv[1])
