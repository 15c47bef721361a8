"""Input the schema calls invalid is refused, and input it calls valid is not refused
for a reason the schema could have stated."""

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

SIGNUP = {
    "username": "strict",
    "password": "a long enough passphrase",
    "display_name": "S",
    "birth_date": "1990-01-01",
    "gender": "female",
}


@pytest.fixture
def schema(api_client):
    return api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()


def _json_schema(node):
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``null`` type."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def validates(schema, name, instance) -> bool:
    """Whether ``instance`` is valid against the component ``name``."""
    root = _json_schema(schema)
    registry = Registry().with_resource(
        "urn:kindred", Resource.from_contents(root, default_specification=DRAFT4)
    )
    validator = jsonschema.Draft4Validator(
        {"$ref": f"urn:kindred#/components/schemas/{name}"}, registry=registry
    )
    return validator.is_valid(instance)


# --- JSON booleans are not numbers (#17) -----------------------------------------
@pytest.mark.parametrize("field", ["latitude", "longitude"])
@pytest.mark.parametrize("value", [True, False])
def test_a_json_boolean_is_not_a_coordinate_on_sign_up(api_client, field, value):
    location = {"latitude": 10.0, "longitude": 20.0, field: value}

    response = api_client.post(
        "/api/v1/accounts/", {**SIGNUP, **location}, format="json"
    )

    assert response.status_code == 400
    assert field in response.json()["fields"]


@pytest.mark.parametrize("field", ["latitude", "longitude"])
def test_a_json_boolean_is_not_a_coordinate_on_profile_update(client_for, field):
    client = client_for(member())

    response = client.patch(
        "/api/v1/profiles/me/",
        {"latitude": 1.0, "longitude": 2.0, field: True},
        format="json",
    )

    assert response.status_code == 400
    assert field in response.json()["fields"]


def test_numbers_remain_valid_coordinates(client_for):
    client = client_for(member())

    response = client.patch(
        "/api/v1/profiles/me/", {"latitude": 1, "longitude": -2.5}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["latitude"], response.json()["longitude"]) == (1.0, -2.5)


# --- empty query parameters (#15) ----------------------------------------------
@pytest.mark.parametrize("parameter", ["page", "page_size"])
@pytest.mark.parametrize("path", ["/api/v1/interactions/", "/api/v1/matches/"])
def test_an_empty_page_parameter_is_a_400_naming_it(client_for, path, parameter):
    response = client_for(member()).get(path, {parameter: ""})

    assert response.status_code == 400
    assert parameter in response.json()["fields"]


@pytest.mark.parametrize("parameter", ["page", "page_size"])
def test_a_non_numeric_or_zero_page_parameter_is_a_400(client_for, parameter):
    client = client_for(member())

    for value in ("abc", "0", "-1", "1.5"):
        response = client.get("/api/v1/interactions/", {parameter: value})
        assert response.status_code in (400, 404), value
        if response.status_code == 400:
            assert parameter in response.json()["fields"]


def test_page_parameters_still_page(client_for):
    response = client_for(member()).get(
        "/api/v1/interactions/", {"page": "1", "page_size": "5"}
    )

    assert response.status_code == 200


# --- schema and behaviour agree (#15) --------------------------------------------
def test_the_schema_refuses_an_empty_seeking_genders_as_the_api_does(
    schema, client_for
):
    response = client_for(member()).patch(
        "/api/v1/profiles/me/", {"preferences": {"seeking_genders": []}}, format="json"
    )

    assert response.status_code == 400
    assert not validates(
        schema,
        "PatchedProfileUpdateInputRequest",
        {"preferences": {"seeking_genders": []}},
    )
    assert validates(
        schema,
        "PatchedProfileUpdateInputRequest",
        {"preferences": {"seeking_genders": ["male"]}},
    )


@pytest.mark.parametrize("context", [[None], [], "x", 3, True])
def test_the_schema_refuses_a_non_object_context_as_the_api_does(
    schema, client_for, context
):
    target = member()
    body = {"target": target.pk, "kind": "like", "context": context}

    response = client_for(member()).post("/api/v1/interactions/", body, format="json")

    assert response.status_code == 400
    assert not validates(schema, "InteractionCreateInputRequest", body)


@pytest.mark.parametrize("context", [None, {}, {"source": "feed", "position": 3}])
def test_the_schema_and_the_api_accept_an_object_or_null_context(
    schema, client_for, context
):
    target = member()
    body = {"target": target.pk, "kind": "like", "context": context}

    response = client_for(member()).post("/api/v1/interactions/", body, format="json")

    assert response.status_code == 201
    assert validates(schema, "InteractionCreateInputRequest", body)


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_only_a_json_boolean_sets_visibility(client_for, value):
    response = client_for(member()).patch(
        "/api/v1/profiles/me/", {"is_visible": value}, format="json"
    )

    assert response.status_code == 400
    assert "is_visible" in response.json()["fields"]


def test_a_json_boolean_sets_visibility(client_for):
    response = client_for(member()).patch(
        "/api/v1/profiles/me/", {"is_visible": False}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["is_visible"] is False


@pytest.mark.parametrize(
    "body,field",
    [
        ({"display_name": 0}, "display_name"),
        ({"bio": 1.5}, "bio"),
        ({"interests": [0]}, "interests"),
        ({"latitude": "1", "longitude": "2"}, "latitude"),
        ({"preferences": {"min_age": "20"}}, "preferences"),
        ({"preferences": {"max_distance_km": 5.5}}, "preferences"),
    ],
)
def test_each_field_takes_only_the_json_type_its_schema_states(client_for, body, field):
    response = client_for(member()).patch("/api/v1/profiles/me/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["fields"]


@pytest.mark.parametrize("target", ["{pk}", True])
def test_an_interaction_target_must_be_a_json_integer(client_for, target):
    other = member()
    target = str(other.pk) if target == "{pk}" else target

    response = client_for(member()).post(
        "/api/v1/interactions/", {"target": target, "kind": "like"}, format="json"
    )

    assert response.status_code == 400
    assert "target" in response.json()["fields"]
