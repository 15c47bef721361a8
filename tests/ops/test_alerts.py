"""The Prometheus alert rules: valid for promtool, passing their own unit tests, and
naming only metrics (and labels) that the app's /metrics really exports."""

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from recommender.models import TrainingRun, TrainingRunStatus
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

RULES_DIR = Path(__file__).resolve().parents[2] / "config" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULES_TESTS = RULES_DIR / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
)

# PromQL words that are neither metrics nor functions (functions are followed by
# "(" and recognised by that).
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
}
ALERTS = {
    "KindredRecommendationLatencyHigh",
    "KindredRecommendationCacheHitRateLow",
    "KindredHighErrorRate",
    "KindredServingModelLoadFailed",
    "KindredDegradedRecommendations",
    "KindredTrainingFailed",
    "KindredTrainingStale",
}


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every metric an expression reads, with its label matchers
    ({label: (operator, value)})."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    found = []
    token = re.compile(
        r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\s*(?P<open>\(|\{(?P<labels>[^}]*)\})?"
    )
    for match in token.finditer(expr):
        name, opened = match.group("name"), match.group("open")
        if name in KEYWORDS or opened == "(":
            continue
        matchers = {
            label: (operator, value)
            for label, operator, value in re.findall(
                r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', match.group("labels") or ""
            )
        }
        found.append((name, matchers))
    return found


def test_the_rules_cover_every_alert_the_operations_need():
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_the_expression_parser_finds_metrics_and_labels():
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{route="x", '
        'status=~"5.."}[5m]))) > 0.05 and time() - max(b) > 36 * 3600'
    )

    assert selectors(expr) == [
        ("a_bucket", {"route": ("=", "x"), "status": ("=~", "5..")}),
        ("b", {}),
    ]


@needs_promtool
def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_the_rules_pass_their_promtool_unit_tests():
    # Series shaped like production's: 5 % errors, a 94 ms p95, training 40 h old,
    # a failed run after a success, a 10 % cache hit rate, a failed model load and
    # a quarter of fallback answers fire their alerts; healthy ones do not.
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULES_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULES_DIR,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def exported(client) -> dict[str, list[dict[str, str]]]:
    """``/metrics`` parsed: sample name -> the label sets it is exported with."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def test_every_metric_and_label_the_rules_read_is_exported_by_metrics(client, engine):
    # One miss and one hit of the recommendation path, and a training run of each
    # outcome, so every labelled series has been written at least once.
    viewer = APIClient()
    viewer.force_authenticate(member())
    for _ in range(2):
        assert viewer.get("/api/v1/recommendations/").status_code == 200
    TrainingRun.objects.create(
        status=TrainingRunStatus.SUCCEEDED,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        finished_at=timezone.now(),
    )
    samples = exported(client)

    referenced = [
        (rule["alert"], name, matchers)
        for rule in rules()
        for name, matchers in selectors(rule["expr"])
    ]
    assert {name for _, name, _ in referenced} >= {
        "http_request_duration_seconds_bucket",
        "http_responses_total",
        "recommendation_cache_total",
        "recommendations_strategy_total",
        "serving_degraded",
        "training_last_success_timestamp_seconds",
        "training_last_failure_timestamp_seconds",
    }
    for alert, name, matchers in referenced:
        assert name in samples, f"{alert} reads {name}, which /metrics does not export"
        for label, (operator, value) in matchers.items():
            assert any(label in labels for labels in samples[name]), (
                f"{alert}: {name} has no label {label}"
            )
            if operator == "=":
                assert {label: value}.items() <= {
                    item for labels in samples[name] for item in labels.items()
                }, f"{alert}: no {name} series with {label}={value!r}"


def test_training_times_are_read_from_the_runs_at_scrape_time(client):
    def gauges():
        samples = exported(client)
        return tuple(
            samples[f"training_last_{outcome}_timestamp_seconds"]
            for outcome in ("success", "failure")
        )

    assert exported(client)["training_last_success_timestamp_seconds"] == [{}]
    assert _values(client) == (0.0, 0.0)

    succeeded_at = timezone.now() - dt.timedelta(hours=30)
    failed_at = timezone.now() - dt.timedelta(hours=2)
    for status, finished_at in (
        (TrainingRunStatus.SUCCEEDED, succeeded_at - dt.timedelta(days=1)),
        (TrainingRunStatus.SUCCEEDED, succeeded_at),
        (TrainingRunStatus.FAILED, failed_at),
    ):
        TrainingRun.objects.create(
            status=status,
            started_at=finished_at - dt.timedelta(minutes=20),
            heartbeat_at=finished_at,
            finished_at=finished_at,
        )
    # A run in progress has not finished: it changes neither.
    TrainingRun.objects.create(
        status=TrainingRunStatus.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )

    assert gauges() == ([{}], [{}])
    assert _values(client) == (
        pytest.approx(succeeded_at.timestamp()),
        pytest.approx(failed_at.timestamp()),
    )


def test_metrics_still_answer_when_the_training_runs_are_unreadable(
    client, monkeypatch
):
    def unreadable(**kwargs):
        raise DatabaseError("connection lost")

    monkeypatch.setattr("recommender.selectors.training_run_last_finished", unreadable)

    samples = exported(client)

    assert "training_last_success_timestamp_seconds" not in samples
    assert "training_last_failure_timestamp_seconds" not in samples
    assert samples["serving_degraded"] == [{}]


def _values(client) -> tuple[float, float]:
    response = client.get("/metrics")
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    return (
        values["training_last_success_timestamp_seconds"],
        values["training_last_failure_timestamp_seconds"],
    )
