import re

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.openapi import LINKS
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
STATEFUL_EXAMPLES = 25


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _api_routes(patterns=None, prefix: str = "") -> set[str]:
    """Every URL of the urlconf under api/v1/, as OpenAPI paths."""
    routes = set()
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes |= _api_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith(API_PREFIX):
            routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return routes


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # raises on an invalid document


def test_spectacular_validates_without_warnings(tmp_path):
    # --fail-on-warn turns any warning (an unresolvable serializer, a missing
    # type hint) into an error.
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3")


def test_every_api_url_is_in_the_schema(schema):
    routes = _api_routes()

    assert len(routes) >= 7
    assert routes == {path for path in schema["paths"] if path.startswith("/api/v1/")}


def test_errors_share_one_component_on_every_operation(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"message", "code", "fields"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            codes = {code for code in responses if code.startswith(("4", "5"))}
            assert codes, f"{method} {path} documents no error"
            for code in codes:
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, code)


def test_authenticated_operations_document_401_403_and_token_auth(schema):
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Token-based authentication with required prefix "Token"',
    }
    recommendations = schema["paths"]["/api/v1/recommendations/"]["get"]
    assert {"tokenAuth": []} in recommendations["security"]
    assert {"200", "400", "401", "403", "404"} <= set(recommendations["responses"])
    signup = schema["paths"]["/api/v1/accounts/"]["post"]
    assert "security" not in signup
    assert {"201", "400", "429"} <= set(signup["responses"])
    assert "401" not in signup["responses"]


def test_every_api_operation_documents_the_database_down_503(schema):
    for path, operations in schema["paths"].items():
        if path.startswith("/api/v1/"):
            for method, operation in operations.items():
                assert "503" in operation["responses"], (method, path)
    signup = schema["paths"]["/api/v1/accounts/"]["post"]
    assert {"413", "415"} <= set(signup["responses"])  # it takes a body
    assert "413" not in schema["paths"]["/api/v1/matches/"]["get"]["responses"]


def test_the_recommendations_response_and_headers_are_described(schema):
    operation = schema["paths"]["/api/v1/recommendations/"]["get"]
    ok = operation["responses"]["200"]
    assert set(ok["headers"]) == {
        "X-Request-ID",
        "X-Process-Time",
        "X-Model-Versions",
        "X-Experiment",
        "X-Recommendation-Strategy",
        "X-Cache",
    }
    assert "X-Request-ID" in operation["responses"]["401"]["headers"]
    body = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][body]["properties"]
    assert {"results", "strategy", "model_versions", "experiment", "request_id"} <= set(
        properties
    )
    assert {"limit", "X-Request-ID"} <= {p["name"] for p in operation["parameters"]}


def test_the_docs_page_serves_swagger_ui_from_our_own_static_files(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()


def test_responses_carrying_a_member_id_link_to_that_members_profile(schema):
    operations = {
        operation["operationId"]: (path, operation)
        for path, methods in schema["paths"].items()
        for operation in methods.values()
    }
    found = 0
    for (path, method, status), links in LINKS.items():
        response = schema["paths"][path][method]["responses"][status]
        assert set(response["links"]) == set(links), (method, path, status)
        for link in response["links"].values():
            target_path, target = operations[link["operationId"]]
            path_parameters = {
                p["name"] for p in target["parameters"] if p["in"] == "path"
            }
            assert set(link["parameters"]) == path_parameters, link
            for value in link["parameters"].values():
                assert value.startswith("$response.body#/"), link
                # The pointer's first step is a property of the response body.
                body = response["content"]["application/json"]["schema"]["$ref"]
                properties = schema["components"]["schemas"][body.rsplit("/", 1)[-1]]
                first = value.removeprefix("$response.body#/").split("/")[0]
                assert first in properties["properties"], link
            found += 1
    assert found >= 8
    signup = schema["paths"]["/api/v1/accounts/"]["post"]["responses"]["201"]
    assert signup["links"]["GetSignedUpProfile"] == {
        "operationId": "v1_profiles_retrieve",
        "parameters": {"user_id": "$response.body#/id"},
        "description": signup["links"]["GetSignedUpProfile"]["description"],
    }


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """As in tests/reliability/test_fuzz.py: the raw WSGI handler would close the
    test transaction's own connection around each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_schemathesis_stateful_phase_follows_the_links_without_5xx(
    monkeypatch, wsgi_keeps_the_test_connection
):
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"signup": "100000/hour", "token": "100000/hour", "interactions": None},
    )
    viewer = member()
    member()  # someone to like, match and recommend
    token = Token.objects.create(user=viewer).key
    api = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", get_wsgi_application()
    )
    calls = []

    class Machine(api.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Token {token}"}}

        def after_call(self, response, case):
            calls.append((case.method, case.path, response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kw):
            # As in test_fuzz: schema-valid input may be refused by design
            # (an unknown target id, a birth date under 18…).
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=[positive_data_acceptance],
                headers={"Authorization": f"Token {token}"},
                transport_kwargs=kw or None,
            )

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )

    assert calls
    assert not [call for call in calls if call[2] >= 500]
    followed = [c for c in calls if c[1] == "/api/v1/profiles/{user_id}/"]
    assert any(status == 200 for _, _, status in followed), calls
