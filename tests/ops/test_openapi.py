import re

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"


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
