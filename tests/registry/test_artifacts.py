import hashlib
import os

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from recommender.artifacts import model_artifact_load
from recommender.ml.artifacts import dumps
from registry import artifacts
from registry.artifacts import (
    ArtifactIntegrityError,
    ArtifactStorageError,
    artifact_read_verified,
    artifact_save,
)
from registry.models import MLModel, ModelKind
from registry.services import model_register
from tests.registry.disk_full import fill_disk

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    )


def test_save_writes_the_final_file_with_checksum_and_size_and_no_temp(tmp_path):
    payload = b"faiss" * 1000

    stored = artifact_save(content=payload, folder="indexes", suffix=".faiss")

    assert stored.name.startswith("indexes/") and stored.name.endswith(".faiss")
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert stored.size == len(payload)
    with default_storage.open(stored.name, "rb") as handle:
        assert handle.read() == payload
    assert _files(tmp_path) == [stored.name]


def test_a_failed_move_leaves_no_final_file_and_no_temp(tmp_path, monkeypatch):
    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", broken_replace)

    with pytest.raises(ArtifactStorageError, match="disk full"):
        artifact_save(content=b"x" * 100, folder="models/ranking", suffix=".joblib")

    assert _files(tmp_path) == []


def test_a_failing_source_leaves_no_final_file(tmp_path):
    class Exploding(ContentFile):
        def chunks(self, chunk_size=None):
            yield b"partial"
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        artifact_save(content=Exploding(b"whatever"), folder="models/embedding")

    assert _files(tmp_path) == []


def test_registered_artifact_loads_after_checksum_verification():
    obj = {"weights": np.arange(5, dtype=np.float32)}
    model = model_register(
        kind=ModelKind.RANKING, artifact=dumps(obj), artifact_name="m.joblib"
    )

    loaded = model_artifact_load(model=MLModel.objects.get(pk=model.pk))

    assert np.array_equal(loaded["weights"], obj["weights"])


def test_corrupted_artifact_is_refused_before_deserialising(monkeypatch):
    model = model_register(
        kind=ModelKind.RANKING, artifact=dumps({"a": 1}), artifact_name="m.joblib"
    )
    path = default_storage.path(model.artifact.name)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(data)
    unpickled = []
    monkeypatch.setattr(
        "recommender.ml.artifacts.loads", lambda *a, **k: unpickled.append(1)
    )

    with pytest.raises(ArtifactIntegrityError, match="checksum"):
        model_artifact_load(model=model)
    assert unpickled == []


def test_a_file_the_registry_does_not_reference_is_refused():
    model = model_register(
        kind=ModelKind.RANKING, artifact=dumps({"a": 1}), artifact_name="m.joblib"
    )
    other = artifact_save(content=dumps({"evil": 1}), folder="models/ranking")
    # A hand-edited instance pointing at an unregistered file, even with its hash.
    model.artifact.name = other.name
    model.artifact_sha256 = other.sha256
    model.artifact_size = other.size

    with pytest.raises(ArtifactIntegrityError, match="not the artifact"):
        artifact_read_verified(record=model)
    with pytest.raises(ArtifactIntegrityError, match="no registered artifact"):
        artifact_read_verified(record=MLModel(kind=ModelKind.RANKING, version=99))


def test_a_missing_file_is_refused():
    model = model_register(kind=ModelKind.RANKING, artifact=b"abc")
    default_storage.delete(model.artifact.name)

    with pytest.raises(ArtifactIntegrityError, match="cannot be read"):
        artifact_read_verified(record=model)


def test_a_full_disk_leaves_no_partial_temp_file_and_says_so(tmp_path, monkeypatch):
    disk = fill_disk(monkeypatch, room=1000)

    with pytest.raises(ArtifactStorageError) as raised:
        artifact_save(content=b"x" * 5000, folder="indexes", suffix=".faiss")

    assert disk.failed and ".tmp-" in disk.failed[0]
    assert "No space left on device" in raised.value.message
    assert "5,000-byte artifact to indexes/" in raised.value.message
    assert _files(tmp_path) == []


def test_a_full_disk_registers_no_model(tmp_path, monkeypatch):
    fill_disk(monkeypatch)

    with pytest.raises(ArtifactStorageError):
        model_register(kind=ModelKind.RANKING, artifact=b"y" * 4096)

    assert not MLModel.objects.exists()
    assert _files(tmp_path) == []
