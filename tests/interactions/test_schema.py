import pytest

pytestmark = pytest.mark.django_db


def test_schema_describes_member_endpoints(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in (
        "/api/v1/accounts/",
        "/api/v1/auth/token/",
        "/api/v1/profiles/me/",
        "/api/v1/profiles/{user_id}/",
        "/api/v1/interactions/",
        "/api/v1/matches/",
    ):
        assert path in paths, path
    record = paths["/api/v1/interactions/"]["post"]
    assert {"200", "201"} <= set(record["responses"])
    recorded = record["responses"]["201"]["content"]["application/json"]["schema"]
    name = recorded["$ref"].rsplit("/", 1)[-1]
    assert "matched" in schema["components"]["schemas"][name]["properties"]
    listing = paths["/api/v1/interactions/"]["get"]
    assert "kind" in {parameter["name"] for parameter in listing["parameters"]}
    signup = paths["/api/v1/accounts/"]["post"]
    assert "201" in signup["responses"]
    assert "patch" in paths["/api/v1/profiles/me/"]
