"""Property-based fuzzing of every operation of the project's own OpenAPI schema
(schemathesis + Hypothesis), authenticated with a real member's token.

Each example goes through the whole WSGI stack in-process (middleware, DRF, the
services, the database). Every response must be a non-5xx that matches the schema:
documented status code, content type, headers and body. Examples are bounded
(``EXAMPLES`` per operation, derandomized) so CI time stays fixed.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.accounts.factories import member

EXAMPLES = 30
CASES_RUN = []  # (method, path, status) of every example, for the figures


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """The raw WSGI handler closes "old" connections around each request, which in
    a test transaction is the test's own connection; Django's test Client
    disconnects the same signal handlers."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_token(db, monkeypatch, wsgi_keeps_the_test_connection):
    # Throttling is tested on its own (test_security); here it would only turn
    # most of the generated sign-ups into 429s.
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"signup": "100000/hour", "token": "100000/hour", "interactions": None},
    )
    viewer = member()
    member()  # someone to like, match and recommend
    return Token.objects.create(user=viewer).key


# Loaded at collection through the WSGI app (the schema view needs no database).
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json", get_wsgi_application()
)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_fuzzed_input_without_5xx_and_per_schema(
    case, fuzz_token
):
    response = case.call_and_validate(
        headers={"Authorization": f"Token {fuzz_token}"},
        # "Schema-valid data must be accepted" cannot hold here: valid-looking
        # credentials that are wrong, an unknown target id or a birth date under 18
        # are refused with 400 by design (DESIGN.md), beyond what a schema says.
        excluded_checks=[positive_data_acceptance],
    )
    CASES_RUN.append((case.method, case.path, response.status_code))
