"""The database connection's health check (``config/postgresql``): a connection
that a request used a moment ago is trusted without a ``SELECT 1``; one that sat
idle is checked, and replaced when the server dropped it meanwhile."""

import pytest
from django.db import close_old_connections, connection, connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.postgresql import base
from tests.accounts.factories import member

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ME = "/api/v1/profiles/me/"


@pytest.fixture
def member_client():
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend's health check")
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=member())}"
    )
    return client


def serve(client):
    """GET ``ME`` with what a real server does around each request: Django's
    request_started/finished handlers (the test client leaves them out)."""
    close_old_connections()
    response = client.get(ME)
    close_old_connections()
    return response


@pytest.fixture
def pings(monkeypatch):
    """How many times the health check asked the server (``SELECT 1``)."""
    calls = []
    usable = base.DatabaseWrapper.is_usable

    def counting(self):
        calls.append(self.alias)
        return usable(self)

    monkeypatch.setattr(base.DatabaseWrapper, "is_usable", counting)
    return calls


def test_a_request_right_after_another_skips_the_health_check(member_client, pings):
    assert serve(member_client).status_code == 200
    pings.clear()

    assert serve(member_client).status_code == 200
    assert serve(member_client).status_code == 200

    assert pings == []


def test_an_idle_connection_is_checked_and_replaced_when_the_server_dropped_it(
    member_client, pings, monkeypatch
):
    assert serve(member_client).status_code == 200
    old_pid = connection.connection.info.backend_pid
    # The server ends the connection while it sits idle (a restart, an idle
    # timeout), and the trust window is over: the next request checks it.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    finally:
        other.close()
    monkeypatch.setattr(base, "TRUSTED_SECONDS", 0.0)
    pings.clear()

    response = serve(member_client)

    assert response.status_code == 200, response.content
    assert pings == ["default"]
    assert connection.connection.info.backend_pid != old_pid


def test_the_request_after_one_that_met_a_database_error_is_checked(
    member_client, pings
):
    assert serve(member_client).status_code == 200

    def failing(execute, sql, params, many, context):
        # A statement the server refuses (not a DataError/IntegrityError, which
        # Django does not count against the connection).
        return execute("SELECT * FROM no_such_table", None, many, context)

    member_client.raise_request_exception = False  # a 500, as a server answers
    with connection.execute_wrapper(failing):
        assert serve(member_client).status_code >= 500
    pings.clear()

    assert serve(member_client).status_code == 200
    assert pings == ["default"]
