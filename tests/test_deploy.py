"""The container files must point at the project's real entry points.

There is no Docker engine in CI, so these tests check what can be checked without
one: the compose file parses, every service's command names a real module, settings
file or management command, and the healthcheck hits a real URL.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack(compose):
    assert {"postgres", "redis", "web", "worker", "beat", "migrate"} <= set(
        compose["services"]
    )
    assert "healthcheck" in compose["services"]["postgres"]
    assert "pgdata" in compose["volumes"]


def test_app_services_wait_for_healthy_backends(compose):
    for name in ("web", "worker", "beat"):
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_are_real_entry_points(compose):
    services = compose["services"]
    web = services["web"]["command"]
    assert web[0] == "gunicorn" and (ROOT / web[web.index("-c") + 1]).is_file()
    assert web[-1] == "config.wsgi"
    for name in ("worker", "beat"):
        command = services[name]["command"]
        assert command[:3] == ["celery", "-A", "config"]
        assert command[3] == name
    migrate = services["migrate"]["command"]
    assert migrate[:2] == ["python", "manage.py"] and migrate[2] in get_commands()


def test_dockerfile_runs_gunicorn_as_non_root_with_a_real_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2  # multi-stage
    assert re.search(r"^USER kindred$", dockerfile, re.M)
    assert '"gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"' in dockerfile
    health_path = re.search(r"127\.0\.0\.1:8000(/[\w/]+)", dockerfile).group(1)
    assert resolve(health_path).url_name == "health-ready"


def test_env_example_documents_every_variable_settings_read():
    settings_source = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', settings_source))
    read |= set(re.findall(r'_env_list\(\s*"([A-Z_]+)"', settings_source))
    documented = set(
        re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert read, "no variables found: the pattern is stale"
    assert read <= documented, f"undocumented: {sorted(read - documented)}"


def test_env_example_documents_the_process_level_variables():
    """gunicorn's config and the Celery app read a few variables themselves."""
    documented = set(
        re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    read = set()
    for source in ("config/gunicorn.conf.py", "config/celery.py"):
        text = (ROOT / source).read_text()
        read |= set(re.findall(r'environ(?:\.get)?[\(\[]\s*"([A-Z_]+)"', text))
    read -= {"DJANGO_SETTINGS_MODULE", "OMP_NUM_THREADS"}
    assert {"PROMETHEUS_MULTIPROC_DIR", "CELERY_METRICS_PORT"} <= read
    assert read <= documented, f"undocumented: {sorted(read - documented)}"


def test_only_the_web_container_is_probed_over_http(compose):
    services = compose["services"]
    assert "healthcheck" not in services["web"]  # the image's /health/ready probe
    worker = services["worker"]["healthcheck"]["test"]
    assert "inspect ping" in " ".join(worker)
    assert services["beat"]["healthcheck"] == {"disable": True}


def test_the_worker_serves_its_task_metrics(compose):
    worker = compose["services"]["worker"]
    environment = worker["environment"]
    assert environment["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert environment["CELERY_METRICS_PORT"] in worker["expose"]
    # It shares the app's settings (the YAML merge kept them).
    assert (
        environment["DATABASE_URL"] == compose["x-app"]["environment"]["DATABASE_URL"]
    )


def test_compose_settings_come_from_the_environment(compose):
    environment = compose["x-app"]["environment"]
    assert environment["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    documented = set(
        re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    for service in ("web", "worker", "beat", "migrate"):
        names = set(compose["services"][service]["environment"])
        assert names <= documented, (service, sorted(names - documented))


def _compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run(
            [*command, "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return command
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose client")
def test_docker_compose_config_parses_the_file():
    result = subprocess.run(
        [*_compose_cli(), "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=ROOT,
        env={"DJANGO_SECRET_KEY": "compose-config-check", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
