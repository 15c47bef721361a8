import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from celery import shared_task
from prometheus_client.parser import text_string_to_metric_families

from tests.recommender.serving_fixtures import open_members

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def samples(client) -> dict[tuple, float]:
    """``/metrics`` parsed: (name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


@shared_task(name="tests.ops.succeed")
def succeed(x):
    return x * 2


@shared_task(name="tests.ops.fail")
def fail():
    raise ValueError("boom")


def test_request_latency_is_labelled_by_route_name_not_path(client, django_user_model):
    user = django_user_model.objects.create_user(username="a", password="pw-12345!")
    before = samples(client)

    client.get(f"/api/v1/profiles/{user.pk}/")
    client.get(f"/api/v1/profiles/{user.pk + 1}/")
    client.get("/no/such/page/")
    after = samples(client)

    count = "http_request_duration_seconds_count"
    route = {"route": "profile-detail", "method": "GET"}
    assert value(after, count, **route) - value(before, count, **route) == 2
    assert (
        value(after, "http_responses_total", status="401", **route)
        - value(before, "http_responses_total", status="401", **route)
        == 2
    )
    unmatched = {"route": "unmatched", "method": "GET"}
    assert value(after, count, **unmatched) - value(before, count, **unmatched) == 1
    assert not any("profiles/" in str(labels) for _, labels in after)


def test_recommendations_export_stages_strategy_cache_versions_and_index(
    client, client_for, engine, trained
):
    viewer = client_for(open_members(1)[0])
    before = samples(client)

    viewer.get("/api/v1/recommendations/")
    viewer.get("/api/v1/recommendations/")
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("recommendations_strategy_total", strategy="full") == 1
    assert delta("recommendation_cache_total", result="miss") == 1
    assert delta("recommendation_cache_total", result="hit") == 1
    for stage in ("filters", "candidates", "ranking", "postprocess"):
        assert delta("recommendation_stage_seconds_count", stage=stage) == 1
    assert (
        delta(
            "http_request_duration_seconds_count",
            route="recommendation-list",
            method="GET",
        )
        == 2
    )
    for kind, model in (("embedding", trained.embedding), ("ranking", trained.ranking)):
        assert value(after, "active_model_version", kind=kind) == model.version
        assert (
            value(
                after,
                "model_version_info",
                kind=kind,
                version=str(model.version),
                role="active",
            )
            == 1
        )
    index = trained.embedding.indexes.order_by("-id").first()
    assert value(after, "serving_index_vectors") == index.n_vectors > 0


def test_celery_task_outcomes_and_durations_are_counted(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    before = samples(client)

    succeed.apply(args=(2,))
    succeed.apply(args=(3,))
    fail.apply(throw=False)
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"task": "tests.ops.succeed", "outcome": "SUCCESS"}
    assert delta("celery_tasks_total", **ok) == 2
    assert delta("celery_tasks_total", task="tests.ops.fail", outcome="FAILURE") == 1
    assert delta("celery_task_duration_seconds_count", task="tests.ops.succeed") == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _live_served(families: dict) -> float:
    """/health/live responses counted over every worker (one summed series)."""
    served = [
        sample.value
        for sample in families["http_responses"].samples
        if sample.labels.get("route") == "health-live"
        and sample.name == "http_responses_total"
    ]
    assert len(served) == 1, served
    return served[0]


@pytest.mark.slow
def test_metrics_sum_every_gunicorn_worker(tmp_path):
    """Two real gunicorn workers: /metrics counts the requests both served, and a
    per-process gauge has one series per live worker."""
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DJANGO_SECRET_KEY="tests-only",
        DJANGO_SETTINGS_MODULE="config.settings",
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="1",
        LOG_REQUESTS="false",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py"]
        + ["config.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/health/live")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        # On a loaded machine the second worker may still be importing Django
        # while the first answers everything: give both up to a minute to serve.
        while len(_gauge_pids(_families(_get(f"{base}/metrics")))) < 2:
            if time.monotonic() > deadline + 60:
                break
            for _ in range(5):
                _get(f"{base}/health/live")
            time.sleep(0.2)
        # Counted from a scrape taken once the server answers: a readiness probe
        # that timed out on a loaded machine may still have been served.
        before = _families(_get(f"{base}/metrics"))
        for _ in range(40):
            _get(f"{base}/health/live")
        families = _families(_get(f"{base}/metrics"))
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=30)

    assert _live_served(families) - _live_served(before) == 40
    assert len(_gauge_pids(families)) == 2, errors.decode()[-2000:]


def _gauge_pids(families) -> set:
    """The worker pids with a series of the per-process ``serving_index_vectors``."""
    gauge = families.get("serving_index_vectors")
    return {sample.labels["pid"] for sample in gauge.samples} if gauge else set()


def test_a_process_started_with_a_missing_metrics_dir_creates_it(tmp_path):
    """The worker's PROMETHEUS_MULTIPROC_DIR need not exist (a fresh container's
    /tmp): prometheus_client would fail on the first metric otherwise."""
    directory = tmp_path / "not" / "yet"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL")
        },
        "DJANGO_SECRET_KEY": "tests-only",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); import config.metrics"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert any(directory.glob("*.db"))
