"""Artifacts in S3-compatible object storage (ARTIFACT_STORAGE=s3), against a real
S3 server: moto's, started by these tests on a free local port and spoken to over
HTTP by django-storages and boto3 exactly as a bucket on AWS or MinIO would be.

Several machines share one bucket: training writes the artifacts there, and every
serving process downloads what it needs into its local cache, verified against the
registry's sha256 before anything is deserialised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import boto3
import numpy as np
import pytest
from django.core.management import call_command
from moto.server import ThreadedMotoServer
from threadpoolctl import threadpool_limits

from accounts.demo import demo_seed
from recommender import serving
from recommender.artifacts import model_artifact_load
from recommender.ml.artifacts import dumps
from registry.artifacts import (
    CACHE_KEEP_SECONDS,
    ArtifactIntegrityError,
    ArtifactStorageError,
)
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.services import model_register
from tests.recommender.serving_fixtures import engine, open_members  # noqa: F401

pytestmark = pytest.mark.django_db

REGION = "us-east-1"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible server (moto) on a free port of this machine."""
    access_log = logging.getLogger("werkzeug")  # one line per S3 request
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    access_log.setLevel(level)


@dataclass
class Bucket:
    name: str
    client: object  # boto3 S3 client
    cache: Path  # ARTIFACT_CACHE_DIR
    media: Path  # MEDIA_ROOT: must stay empty

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def cached(self) -> list[str]:
        return (
            sorted(p.name for p in self.cache.iterdir()) if self.cache.exists() else []
        )


def s3_storages(settings, *, bucket: str, endpoint: str) -> dict:
    """STORAGES as config/settings.py builds them for ARTIFACT_STORAGE=s3."""
    return {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": endpoint,
                "region_name": REGION,
                "addressing_style": None,
                "location": "",
                "file_overwrite": False,
                "default_acl": None,
                "max_memory_size": 64 * 1024 * 1024,
            },
        },
    }


@pytest.fixture
def bucket(s3_endpoint, settings, monkeypatch, tmp_path) -> Bucket:
    """A fresh bucket as the artifact storage, an empty local artifact cache."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "kindred-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "kindred-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    name = f"kindred-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    client.create_bucket(Bucket=name)
    settings.STORAGES = s3_storages(settings, bucket=name, endpoint=s3_endpoint)
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.ARTIFACT_CACHE_DIR = str(tmp_path / "cache")
    return Bucket(
        name=name, client=client, cache=tmp_path / "cache", media=tmp_path / "media"
    )


def _on_another_machine(bucket: Bucket, settings, name: str) -> None:
    """Serve from a machine of its own: a new, empty local artifact cache."""
    bucket.cache = bucket.cache.parent / name
    settings.ARTIFACT_CACHE_DIR = str(bucket.cache)
    serving.serving_reset()
    assert bucket.cached() == []


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.usefixtures("engine")  # polls the registry, loads inline
def test_training_writes_to_the_bucket_and_a_fresh_machine_serves_from_it(
    bucket, settings, client_for
):
    demo_seed(users=300, seed=7)
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}
    with threadpool_limits(limits=1):
        call_command("train_models", stdout=StringIO())

    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING, is_active=True)
    ranking = MLModel.objects.get(kind=ModelKind.RANKING, is_active=True)
    index = IndexArtifact.objects.get(embedding_model=embedding)
    records = (embedding, ranking, index)
    # Every artifact is an object of the bucket, complete, under its final key.
    assert bucket.keys() == sorted(record.artifact.name for record in records)
    for record in records:
        assert _sha256(bucket.read(record.artifact.name)) == record.artifact_sha256
    assert not any(".tmp-" in key for key in bucket.keys())
    assert not bucket.media.exists()  # nothing went to the local disk

    # A web process on another machine: nothing loaded, the local cache empty.
    member = open_members(1)[0]
    _on_another_machine(bucket, settings, "web-1")
    body = client_for(member).get("/api/v1/recommendations/?limit=10").json()

    assert body["strategy"] == "full"
    assert body["model_versions"]["embedding"] == embedding.version
    assert body["model_versions"]["ranking"] == ranking.version
    assert body["model_versions"]["index"] == index.pk
    expected = sorted(record.artifact_sha256 for record in records)
    assert bucket.cached() == expected
    for name in bucket.cached():
        assert _sha256((bucket.cache / name).read_bytes()) == name

    # The machine restarts with the bucket out of reach: its verified local copies
    # serve without a single download.
    settings.STORAGES = s3_storages(
        settings, bucket=bucket.name, endpoint=f"http://127.0.0.1:{_closed_port()}"
    )
    serving.serving_reset()
    body = client_for(member).get("/api/v1/recommendations/?limit=10").json()

    assert body["strategy"] == "full"


@pytest.mark.usefixtures("engine")  # polls the registry, loads inline
def test_a_tampered_object_is_refused_and_never_cached(bucket, settings, client_for):
    demo_seed(users=300, seed=7)
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}
    with threadpool_limits(limits=1):
        call_command("train_models", stdout=StringIO())
    ranking = MLModel.objects.get(kind=ModelKind.RANKING, is_active=True)
    tampered = bytearray(bucket.read(ranking.artifact.name))
    tampered[len(tampered) // 2] ^= 0xFF
    bucket.write(ranking.artifact.name, bytes(tampered))

    member = open_members(1)[0]
    _on_another_machine(bucket, settings, "web-1")
    client = client_for(member)
    body = client.get("/api/v1/recommendations/?limit=10").json()
    health = client.get("/health").json()

    # The ranking model is refused: the rest serves, unranked, and health says why.
    assert body["strategy"] == "unranked"
    assert "ranking" not in body["model_versions"]
    models = health["components"]["models"]
    assert models["status"] == "degraded"
    assert "fails its checksum" in models["error"]
    assert ranking.artifact_sha256 not in bucket.cached()
    assert _sha256(bytes(tampered)) not in bucket.cached()
    assert not [name for name in bucket.cached() if name.startswith(".tmp-")]


def test_a_corrupt_cached_copy_is_downloaded_again(bucket):
    weights = np.arange(16, dtype=np.float32)
    model = model_register(
        kind=ModelKind.RANKING, artifact=dumps({"w": weights}), artifact_name="m.joblib"
    )
    assert np.array_equal(model_artifact_load(model=model)["w"], weights)
    cached = bucket.cache / model.artifact_sha256
    cached.write_bytes(b"\x00" * model.artifact_size)  # bit rot on this machine

    loaded = model_artifact_load(model=MLModel.objects.get(pk=model.pk))

    assert np.array_equal(loaded["w"], weights)
    assert _sha256(cached.read_bytes()) == model.artifact_sha256


def test_a_tampered_object_is_never_unpickled(bucket, monkeypatch):
    model = model_register(
        kind=ModelKind.RANKING, artifact=dumps({"a": 1}), artifact_name="m.joblib"
    )
    bucket.write(model.artifact.name, dumps({"evil": 1}))
    unpickled = []
    monkeypatch.setattr(
        "recommender.ml.artifacts.loads", lambda *a, **k: unpickled.append(1)
    )

    with pytest.raises(ArtifactIntegrityError, match="fails its checksum"):
        model_artifact_load(model=model)
    assert unpickled == []
    assert bucket.cached() == []


def test_an_unreachable_bucket_registers_nothing_and_says_so(bucket, settings):
    settings.STORAGES = s3_storages(
        settings,
        bucket=f"{bucket.name}-missing",
        endpoint=settings.STORAGES["default"]["OPTIONS"]["endpoint_url"],
    )

    with pytest.raises(ArtifactStorageError) as raised:
        model_register(kind=ModelKind.RANKING, artifact=b"y" * 4096)

    assert "4,096-byte artifact to models/" in raised.value.message
    assert "NoSuchBucket" in raised.value.message
    assert not MLModel.objects.exists()


def test_cached_copies_unused_for_a_week_go_at_the_next_download(bucket):
    first = model_register(kind=ModelKind.RANKING, artifact=dumps({"v": 1}))
    model_artifact_load(model=first)
    stale = bucket.cache / first.artifact_sha256
    week_ago = time.time() - CACHE_KEEP_SECONDS - 60
    os.utime(stale, (week_ago, week_ago))
    second = model_register(kind=ModelKind.RANKING, artifact=dumps({"v": 2}))

    assert model_artifact_load(model=second) == {"v": 2}

    assert bucket.cached() == [second.artifact_sha256]
    # Gone from this machine only: the next load downloads it again.
    assert model_artifact_load(model=first) == {"v": 1}
