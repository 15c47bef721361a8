import socket

import pytest
from django.db.utils import OperationalError

from registry.models import MLModel
from registry.services import model_activate
from tests.recommender.serving_fixtures import open_members, register_copy

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def database_down(monkeypatch):
    """Every new cursor fails as if the database were unreachable."""

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("config.health.connection.cursor", refuse)


def test_live_answers_without_touching_anything(client, database_down):
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_is_ok_with_a_database(client):
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_ready_is_503_without_a_database(client, database_down):
    response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "OperationalError" in response.json()["database"]


def test_health_is_unhealthy_and_503_without_a_database(client, database_down):
    response = client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["components"]["database"]["status"] == "down"
    assert "database" in body["problems"]


def test_health_reports_every_component_healthy_with_models_loaded(
    client, client_for, engine, trained
):
    # A recommendation makes this process load its bundle.
    assert client_for(open_members(1)[0]).get("/api/v1/recommendations/").status_code
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy", body
    assert body["problems"] == []
    components = body["components"]
    assert set(components) == {"database", "cache", "broker", "models", "index"}
    assert components["database"]["status"] == "ok"
    assert components["cache"]["status"] == "ok"
    assert components["broker"]["status"] == "ok"
    versions = {
        "embedding": trained.embedding.version,
        "ranking": trained.ranking.version,
    }
    assert components["models"]["active"] == versions
    assert components["models"]["loaded_in_this_process"] == versions
    assert components["models"]["serving"] == "ok"
    index = components["index"]
    assert index["status"] == "ok"
    assert index["registry"]["vectors"] == index["loaded_in_this_process"]["vectors"]
    assert index["registry"]["vectors"] > 0
    assert index["registry"]["embedding_version"] == trained.embedding.version


def test_health_is_degraded_but_200_without_models(client, engine):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["index", "models"]
    assert "embedding, ranking" in body["components"]["models"]["error"]
    assert not MLModel.objects.exists()


def test_health_is_degraded_when_the_cache_fails(client, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("redis gone")

    monkeypatch.setattr("config.health.cache.set", broken)

    body = client.get("/health").json()

    assert body["status"] == "degraded"
    assert body["components"]["cache"]["status"] == "down"
    assert "redis gone" in body["components"]["cache"]["error"]


def test_health_reports_every_component_of_a_failing_app_check_down(
    client, monkeypatch
):
    # The recommender's check (registered in RecommenderConfig.ready) raises: both
    # of its components are down with the error; /health still answers.
    def broken():
        raise RuntimeError("serving state unreadable")

    monkeypatch.setattr("recommender.serving.serving_health", broken)

    response = client.get("/health")
    body = response.json()

    assert response.status_code == 200
    assert body["status"] == "degraded"
    for name in ("models", "index"):
        assert body["components"][name] == {
            "status": "down",
            "error": "RuntimeError: serving state unreadable",
        }
        assert name in body["problems"]


def test_health_probes_a_redis_broker_with_a_short_timeout(client, engine, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"

    body = client.get("/health").json()

    broker = body["components"]["broker"]
    assert broker["status"] == "down"
    assert broker["mode"] == "redis"
    assert "broker" in body["problems"]
    assert body["status"] == "degraded"


def test_health_says_tasks_run_in_process_in_the_embedded_default(
    client, engine, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True

    broker = client.get("/health").json()["components"]["broker"]

    assert broker == {"status": "ok", "mode": "eager/in-process", "latency_ms": 0.0}


def test_health_reports_a_failed_model_load_as_degraded(
    client, client_for, engine, trained
):
    viewer = open_members(1)[0]
    client_for(viewer).get("/api/v1/recommendations/")
    # A promoted version whose artifact fails its checksum: the reload fails and
    # the process keeps serving the previous models.
    broken = register_copy(trained.embedding)
    MLModel.objects.filter(pk=broken.pk).update(artifact_sha256="0" * 64)
    model_activate(model=broken, actor=None, actor_label="test")
    client_for(viewer).get("/api/v1/recommendations/")

    body = client.get("/health").json()

    assert body["status"] == "degraded"
    models = body["components"]["models"]
    assert models["status"] == "degraded"
    assert "last model load failed" in models["error"]
    assert models["loaded_in_this_process"]["embedding"] == trained.embedding.version
