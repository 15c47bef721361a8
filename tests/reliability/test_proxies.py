"""What a client may claim about itself through forwarded headers: nothing, unless
a reverse proxy is configured (``NUM_PROXIES``) to set those headers."""

import http.client
import json

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

WRONG_LOGIN = {"username": "nobody", "password": "guess"}


def allowed(scope: str) -> int:
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")[0])


def signup(n):
    return {
        "username": f"spoofer{n}",
        "password": "a long enough passphrase",
        "display_name": "S",
        "birth_date": "1990-01-01",
        "gender": "female",
    }


@pytest.fixture
def proxies(settings):
    """Run with ``NUM_PROXIES`` set to the given count (DRF re-reads its settings)."""

    def configure(count: int) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    return configure


def test_no_proxy_is_trusted_by_default():
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0
    assert settings.SECURE_PROXY_SSL_HEADER is None


def test_a_random_x_forwarded_for_per_attempt_does_not_escape_the_token_throttle(
    api_client,
):
    codes = [
        api_client.post(
            "/api/v1/auth/token/",
            WRONG_LOGIN,
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n % 250}, 10.0.0.{n % 250}",
        ).status_code
        for n in range(allowed("token") + 1)
    ]

    assert codes == [400] * allowed("token") + [429]


def test_a_random_x_forwarded_for_per_sign_up_does_not_escape_the_signup_throttle(
    api_client,
):
    codes = [
        api_client.post(
            "/api/v1/accounts/",
            signup(n),
            format="json",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        ).status_code
        for n in range(allowed("signup") + 1)
    ]

    assert codes == [201] * allowed("signup") + [429]


def test_behind_one_proxy_the_address_it_appended_is_the_one_throttled(
    api_client, proxies
):
    proxies(1)
    # What the client prepends is its own claim; the proxy appends the real peer.
    for n in range(allowed("token")):
        api_client.post(
            "/api/v1/auth/token/",
            WRONG_LOGIN,
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 192.0.2.10",
        )

    same_client = api_client.post(
        "/api/v1/auth/token/",
        WRONG_LOGIN,
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.250, 192.0.2.10",
    )
    another_client = api_client.post(
        "/api/v1/auth/token/",
        WRONG_LOGIN,
        format="json",
        HTTP_X_FORWARDED_FOR="192.0.2.11",
    )

    assert same_client.status_code == 429
    assert another_client.status_code == 400


# --- through gunicorn -----------------------------------------------------------
def raw_request(server, method, path, *, headers=None, chunks=None):
    """One request over a raw connection (``chunks``: a chunked body), answered as
    (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        if chunks is None:
            connection.request(method, path, headers=headers or {})
        else:
            connection.request(
                method,
                path,
                body=iter(chunks),
                headers={"Content-Type": "application/json", **(headers or {})},
                encode_chunked=True,
            )
        response = connection.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


@pytest.mark.slow
def test_a_client_cannot_claim_https_with_x_forwarded_proto_without_a_proxy(web):
    server = web(DJANGO_SECURE_SSL_REDIRECT="true")

    status, headers, _ = raw_request(
        server, "GET", "/api/v1/profiles/me/", headers={"X-Forwarded-Proto": "https"}
    )

    # Not believed: a plain-http request is sent to https.
    assert status == 301
    assert headers["location"].startswith("https://")


@pytest.mark.slow
def test_behind_a_configured_proxy_its_x_forwarded_proto_is_believed(web):
    server = web(
        DJANGO_SECURE_SSL_REDIRECT="true",
        NUM_PROXIES="1",
        FORWARDED_ALLOW_IPS="127.0.0.1",
    )

    status, _, _ = raw_request(
        server, "GET", "/api/v1/profiles/me/", headers={"X-Forwarded-Proto": "https"}
    )

    assert status == 401  # served (as https), not redirected


@pytest.mark.slow
def test_gunicorns_own_414_for_a_too_long_url_is_json(web):
    server = web()

    status, headers, body = raw_request(
        server, "GET", "/api/v1/recommendations/?limit=" + "1" * 10_000
    )

    assert status == 414
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["code"] == "uri_too_long"
    assert error["message"]


@pytest.mark.slow
def test_a_chunked_request_body_is_read(web):
    server = web()
    body = json.dumps(signup("chunked")).encode()

    status, _, answer = raw_request(
        server,
        "POST",
        "/api/v1/accounts/",
        chunks=[body[i : i + 16] for i in range(0, len(body), 16)],
    )

    assert status == 201, answer
    assert json.loads(answer)["username"] == "spooferchunked"


@pytest.mark.slow
def test_a_chunked_body_over_the_size_limit_is_a_413_json(web):
    server = web(DATA_UPLOAD_MAX_MEMORY_SIZE="1000")
    padding = json.dumps({"username": "x", "password": "y" * 5000}).encode()

    status, headers, body = raw_request(
        server,
        "POST",
        "/api/v1/auth/token/",
        chunks=[padding[i : i + 512] for i in range(0, len(padding), 512)],
    )

    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "too_large"


# --- caching of private answers ----------------------------------------------------
def test_own_profile_and_token_answers_are_never_stored_by_caches(client_for):
    user = member()
    client = client_for(user)

    answers = [
        client.get("/api/v1/profiles/me/"),
        client.patch("/api/v1/profiles/me/", {"bio": "x"}, format="json"),
        client.get("/api/v1/matches/"),
        APIClient().post(
            "/api/v1/auth/token/",
            {"username": user.username, "password": "correct-horse-battery"},
            format="json",
        ),
    ]

    for answer in answers:
        assert answer.status_code == 200
        assert "no-store" in answer["Cache-Control"]
        assert "private" in answer["Cache-Control"]
