"""Targeted bad input: each answer is a clean 4xx in the API's JSON error shape,
never a 500 (run on PostgreSQL too: NUL characters and lone surrogates are what
PostgreSQL refuses and SQLite does not)."""

import json

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

PROFILE_ME = "/api/v1/profiles/me/"
INTERACTIONS = "/api/v1/interactions/"


@pytest.fixture
def viewer():
    return member()


@pytest.fixture
def client(viewer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer)}")
    return client


def assert_json_error(response, *statuses):
    assert response.status_code in statuses, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["message"] and body["code"]
    return body


def raw(client, method, path, body: bytes | str, content_type="application/json"):
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return client.generic(method, path, body, content_type=content_type)


@pytest.mark.parametrize(
    "limit",
    [
        "0",
        "-1",
        "101",
        str(10**30),
        "-" + str(10**30),
        "1e3",
        "1.5",
        "abc",
        "%00",
        "1,2",
        "",  # issue 13 #15: present but empty was the default (200)
        "+5",
        "%205",
    ],
)
def test_out_of_range_or_garbage_limits_are_400_naming_limit(client, limit, engine):
    response = client.get(f"/api/v1/recommendations/?limit={limit}")

    body = assert_json_error(response, 400)
    assert "limit" in body["fields"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/profiles/-1/",
        "/api/v1/profiles/0/",
        f"/api/v1/profiles/{2**63}/",
        f"/api/v1/profiles/{10**40}/",
        "/api/v1/profiles/abc/",
        "/api/v1/profiles/%F0%9F%92%94/",
        "/api/v1/no-such-endpoint/",
        f"{INTERACTIONS}?page={10**30}",
    ],
)
def test_unknown_ids_pages_and_urls_are_json_404s(client, path):
    assert_json_error(client.get(path), 404)


@pytest.mark.parametrize(
    "target",
    [-1, 0, 2**63, 2**64, 10**400, 1.5, "1e3", "one", True, None, [], {}, "", "١"],
)
def test_bad_targets_are_400_naming_target(client, target):
    response = raw(
        client, "POST", INTERACTIONS, json.dumps({"target": target, "kind": "like"})
    )

    body = assert_json_error(response, 400)
    assert "target" in body["fields"]


@pytest.mark.parametrize(
    "page_size", ["0", "-5", "101", "abc", str(10**30), "1.5", "", " 5", "1_0"]
)
def test_bad_page_sizes_are_400_naming_page_size(client, page_size):
    body = assert_json_error(client.get(f"{INTERACTIONS}?page_size={page_size}"), 400)
    assert "page_size" in body["fields"]


# Not an integer >= 1 (the schema's page) is bad input; a page past the end is a 404.
@pytest.mark.parametrize("page", ["0", "-1", "abc", "", "1.5", "+1", "١", "last"])
def test_bad_pages_are_400_naming_page(client, page):
    body = assert_json_error(client.get(f"{INTERACTIONS}?page={page}"), 400)
    assert "page" in body["fields"]


@pytest.mark.parametrize(
    "body",
    [
        '{"target": 1, "kind": "like"',  # truncated
        '{"target": 1, "kind": "like"} trailing',
        "",
        "null",
        "[]",
        '"a string"',
        "123",
        '{"target": NaN, "kind": "like"}',
        '{"target": Infinity, "kind": "like"}',
        "[" * 100_000 + "]" * 100_000,  # deeper than any parser's recursion
        '{"a":' * 20_000 + "1" + "}" * 20_000,
        "\xff\xfe not utf-8",
    ],
)
def test_malformed_json_is_a_400(client, body):
    data = body.encode("latin-1") if body.startswith("\xff") else body
    assert_json_error(raw(client, "POST", INTERACTIONS, data), 400)


@pytest.mark.parametrize(
    "bio",
    [
        "héllo wörld ✨ 你好 مرحبا",  # accepted as is
        "\u202eRTL override\u200b zero width",
        "a\x00b",  # PostgreSQL text cannot hold NUL
        "\ud800 lone surrogate",
    ],
)
def test_unicode_in_text_fields_is_stored_or_refused_cleanly(client, bio):
    response = raw(client, "PATCH", PROFILE_ME, json.dumps({"bio": bio}))

    if response.status_code == 200:
        assert response.json()["bio"] == bio
    else:
        body = assert_json_error(response, 400)
        assert "bio" in body["fields"]


@pytest.mark.parametrize(
    "context",
    [
        {"note": "a\u0000b"},
        {"a\u0000": 1},
        {"note": "\ud800"},
        {"emoji": "💘", "rtl": "\u202e"},
    ],
)
def test_unicode_in_interaction_context_is_stored_or_refused_cleanly(client, context):
    target = member()
    body = json.dumps({"target": target.pk, "kind": "like", "context": context})

    response = raw(client, "POST", INTERACTIONS, body)

    if response.status_code == 201:
        assert response.json()["context"] == context
    else:
        body = assert_json_error(response, 400)
        assert "context" in body["fields"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json-patch+json",
        "",
    ],
)
def test_wrong_content_types_are_415(client, content_type):
    response = raw(
        client, "POST", INTERACTIONS, '{"target": 1, "kind": "like"}', content_type
    )

    assert_json_error(response, 415)


@pytest.mark.parametrize(
    "method,path",
    [("POST", INTERACTIONS), ("PATCH", PROFILE_ME), ("POST", "/api/v1/accounts/")],
)
def test_an_oversized_body_is_a_clean_413(client, method, path):
    size = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    body = json.dumps({"bio": "x" * size, "target": 1, "kind": "like"})

    response = raw(client, method, path, body)

    assert_json_error(response, 413)


def test_a_body_just_under_the_limit_is_judged_on_its_content(client):
    filler = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 200)
    body = json.dumps({"target": member().pk, "kind": "like", "context": {"f": filler}})

    response = raw(client, "POST", INTERACTIONS, body)

    assert "context" in assert_json_error(response, 400)["fields"]  # over 4 KB


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("path", [PROFILE_ME, INTERACTIONS, "/api/v1/matches/"])
def test_unsupported_methods_are_405_json(client, method, path):
    assert_json_error(raw(client, method, path, "{}"), 405)


def test_a_deeply_nested_context_is_judged_without_crashing(client):
    context = {"a": 1}
    for _ in range(900):
        context = {"n": context}
    body = json.dumps({"target": member().pk, "kind": "like", "context": context})

    response = raw(client, "POST", INTERACTIONS, body)

    assert response.status_code in (201, 400), response.content
