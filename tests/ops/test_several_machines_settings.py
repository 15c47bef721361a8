"""Several machines from the environment: the read replica (DATABASE_REPLICA_URL)
and the artifact storage (ARTIFACT_STORAGE / AWS_STORAGE_BUCKET_NAME), as a fresh
process reads its settings. Nothing here connects anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRIMARY = "postgres://kindred@127.0.0.1:5432/kindred"
VARIABLES = (
    "DATABASE_URL",
    "DATABASE_REPLICA_URL",
    "ARTIFACT_STORAGE",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "AWS_LOCATION",
    "ARTIFACT_CACHE_DIR",
)
SHOW = """
import json
import config.settings as s
print(json.dumps({
    "databases": {
        alias: {
            k: db.get(k)
            for k in ("ENGINE", "NAME", "HOST", "OPTIONS", "CONN_HEALTH_CHECKS")
        }
        for alias, db in s.DATABASES.items()
    },
    "routers": s.DATABASE_ROUTERS,
    "storage": s.STORAGES["default"],
    "cache_dir": s.ARTIFACT_CACHE_DIR,
}))
"""


def _settings(**variables: str) -> subprocess.CompletedProcess:
    """config.settings read by a new process with ``variables`` (the others of
    VARIABLES set empty, so neither this shell nor a local .env can leak in)."""
    env = {**os.environ, **dict.fromkeys(VARIABLES, ""), **variables}
    env["DJANGO_SECRET_KEY"] = "settings-test-only"
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _loaded(**variables: str) -> dict:
    process = _settings(**variables)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


def test_by_default_one_database_and_artifacts_on_the_local_disk():
    settings = _loaded(DATABASE_URL=PRIMARY)

    assert list(settings["databases"]) == ["default"]
    # Django's PostgreSQL backend minus the health check's round trip on a
    # connection used a moment ago (config/postgresql).
    assert settings["databases"]["default"]["ENGINE"] == "config.postgresql"
    assert settings["routers"] == []
    assert settings["storage"] == {
        "BACKEND": "django.core.files.storage.FileSystemStorage"
    }


def test_a_replica_url_adds_the_replica_alias_and_its_router():
    settings = _loaded(
        DATABASE_URL=PRIMARY,
        DATABASE_REPLICA_URL="postgres://reader@replica.example:5432/kindred",
    )

    replica = settings["databases"]["replica"]
    assert replica["HOST"] == "replica.example"
    assert replica["NAME"] == "kindred"
    # The primary's connection options (connect timeout) apply to the replica too.
    assert replica["OPTIONS"]["connect_timeout"] == 3
    # So do the backend and its health check of a connection that sat idle.
    assert replica["ENGINE"] == "config.postgresql"
    assert replica["CONN_HEALTH_CHECKS"] is True
    assert settings["routers"] == ["config.db_routers.ReplicaRouter"]


def test_a_bucket_name_puts_artifacts_in_s3_compatible_storage(tmp_path):
    settings = _loaded(
        DATABASE_URL=PRIMARY,
        AWS_STORAGE_BUCKET_NAME="kindred-artifacts",
        AWS_S3_ENDPOINT_URL="http://minio.example:9000",
        AWS_S3_REGION_NAME="eu-central-1",
        AWS_LOCATION="prod",
        ARTIFACT_CACHE_DIR=str(tmp_path / "cache"),
    )

    storage = settings["storage"]
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    options = storage["OPTIONS"]
    assert options["bucket_name"] == "kindred-artifacts"
    assert options["endpoint_url"] == "http://minio.example:9000"
    assert options["region_name"] == "eu-central-1"
    assert options["location"] == "prod"
    assert options["file_overwrite"] is False
    assert "access_key" not in options and "secret_key" not in options
    assert settings["cache_dir"] == str(tmp_path / "cache")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"DATABASE_REPLICA_URL": "postgres://reader@replica.example:5432/k"},
            "DATABASE_REPLICA_URL needs DATABASE_URL",
        ),
        ({"ARTIFACT_STORAGE": "s3"}, "ARTIFACT_STORAGE=s3 needs AWS_STORAGE_BUCKET"),
        ({"ARTIFACT_STORAGE": "gcs"}, "expected 'local' or 's3'"),
    ],
)
def test_an_incomplete_setup_refuses_to_start(variables, message):
    process = _settings(**variables)

    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    assert message in process.stderr
