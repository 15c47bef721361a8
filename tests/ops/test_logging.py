import io
import json
import logging
import uuid

import pytest
import structlog

from config.logging_setup import logging_config
from tests.accounts.factories import member
from tests.ops.test_metrics import succeed

pytestmark = pytest.mark.django_db


def _capture(*, debug: bool, caplog):
    """The project's structured formatter on a handler writing to a buffer."""
    formatter_config = logging_config(debug=debug)["formatters"]["structured"]
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=formatter_config["processors"],
        foreign_pre_chain=formatter_config["foreign_pre_chain"],
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    caplog.set_level(logging.INFO)
    logging.getLogger().addHandler(handler)
    return stream, handler


@pytest.fixture
def json_lines(caplog):
    stream, handler = _capture(debug=False, caplog=caplog)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def console_text(caplog):
    stream, handler = _capture(debug=True, caplog=caplog)
    yield stream.getvalue
    logging.getLogger().removeHandler(handler)


def test_every_line_of_a_request_carries_its_id_and_the_user(
    client_for, json_lines, monkeypatch
):
    user = member()
    from accounts.api import views

    original = views.ProfileMeApi.get

    def get_and_log(self, request, *args, **kwargs):
        logging.getLogger("accounts.test").info("reading profile")
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(views.ProfileMeApi, "get", get_and_log)

    response = client_for(user).get("/api/v1/profiles/me/", HTTP_X_REQUEST_ID="t-1")

    assert response.status_code == 200
    assert response["X-Request-ID"] == "t-1"
    lines = json_lines()
    inner = next(line for line in lines if line["event"] == "reading profile")
    assert inner["request_id"] == "t-1"
    assert inner["user_id"] == user.pk  # known once DRF authenticated the token
    [request_line] = [line for line in lines if line["event"] == "request"]
    assert request_line["request_id"] == "t-1"
    assert request_line["user_id"] == user.pk
    assert request_line["route"] == "profile-me"
    assert request_line["status"] == 200
    assert request_line["duration_ms"] >= 0
    assert request_line["level"] == "info"
    assert "timestamp" in request_line


def test_an_anonymous_request_gets_a_fresh_id_and_no_user(client, json_lines):
    response = client.get("/health/live", HTTP_X_REQUEST_ID="not sane; drop table")

    request_id = response["X-Request-ID"]
    assert uuid.UUID(request_id).version == 4
    [line] = [line for line in json_lines() if line["event"] == "request"]
    assert line["request_id"] == request_id
    assert "user_id" not in line


def test_a_sane_client_id_is_echoed_on_any_endpoint(client):
    response = client.get("/health/ready", HTTP_X_REQUEST_ID="lb-7.a_b")

    assert response["X-Request-ID"] == "lb-7.a_b"
    assert float(response["X-Process-Time"]) >= 0


def test_debug_logs_are_human_readable_console_lines(client, console_text):
    client.get("/health/live", HTTP_X_REQUEST_ID="dbg-1")

    text = console_text()
    line = next(line for line in text.splitlines() if "dbg-1" in line)
    assert not line.lstrip().startswith("{")
    assert "request" in line and "request_id=dbg-1" in line


def test_celery_task_log_lines_carry_the_task_id(json_lines, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True

    result = succeed.apply(args=(4,))
    logging.getLogger("after").info("after the task")

    lines = json_lines()
    task_lines = [line for line in lines if line.get("task_id") == result.id]
    assert task_lines, lines
    assert all(line["task_name"] == "tests.ops.succeed" for line in task_lines)
    after = next(line for line in lines if line["event"] == "after the task")
    assert "task_id" not in after
