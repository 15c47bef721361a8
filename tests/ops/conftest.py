import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

# The serving engine's fixtures (seeded demo members, trained and promoted models).
from tests.recommender.conftest import media, seeded  # noqa: F401
from tests.recommender.serving_fixtures import engine, trained  # noqa: F401


@pytest.fixture
def client_for():
    """An API client authenticated with the user's token."""

    def make(user) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make
