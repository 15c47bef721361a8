"""Model artifacts in Django storage: written atomically, read only when verified.

Saving streams the content to a temporary name while hashing it, then moves it to
its final name (a rename on local disk; a copy then delete on object storage, where
each upload is itself all-or-nothing). A crash leaves at worst a ``.tmp-*`` orphan,
never a truncated file under a name the registry could point at, and the registry row
is written only after :func:`artifact_save` has returned. A write that fails (a full
disk) deletes its partial temporary file and raises :class:`ArtifactStorageError`,
which says so in words an operator can act on.

Loading goes through a registry row, never a bare path: the row is re-read from the
database, the file's sha256 is compared with the recorded one, and only then are the
bytes handed to a deserialiser (joblib/pickle can run code; FAISS trusts its input).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.utils import timezone

from config.api import ApplicationError
from recommender.ml.artifacts import ArtifactChecksumError
from registry.models import IndexArtifact, MLModel

_READ_CHUNK = 4 * 1024 * 1024
TEMP_PREFIX = ".tmp-"


class ArtifactIntegrityError(ArtifactChecksumError):
    """The stored file is missing, not the registered one, or fails its checksum."""


class ArtifactStorageError(ApplicationError):
    """An artifact could not be written to storage (disk full, read-only, no
    permission); no part of it is left behind."""

    def __init__(self, message: str):
        super().__init__(message, field="artifact", status_code=507)


@dataclass(frozen=True)
class StoredArtifact:
    """A complete file in default storage, ready to be referenced by a registry row."""

    name: str
    sha256: str
    size: int


def artifact_save(
    *, content: bytes | File, folder: str, suffix: str = ""
) -> StoredArtifact:
    """Write ``content`` to ``<folder>/<timestamp>-<random><suffix>`` atomically.

    Returns the final name, sha256 and size. On any failure (a write or the move)
    the temporary file, complete or partial, is deleted and the exception
    propagates, an ``OSError`` (``ENOSPC``…) as :class:`ArtifactStorageError`; no
    file appears under a final name unless it is complete.
    """
    if isinstance(content, bytes | bytearray | memoryview):
        content = ContentFile(bytes(content))
    digest = hashlib.sha256()
    size = 0
    for chunk in content.chunks():
        digest.update(chunk)
        size += len(chunk)
    content.seek(0)

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    token = uuid.uuid4().hex[:12]
    folder = folder.strip("/")
    # The storage leaves what it wrote of a failed save (Django's FileSystemStorage
    # does): the name asked for is the one to delete then.
    temp_name = f"{folder}/{TEMP_PREFIX}{token}{suffix}"
    try:
        temp_name = default_storage.save(temp_name, content)
        final_name = _move(temp_name, f"{folder}/{stamp}-{token}{suffix}")
    except BaseException as error:
        artifact_delete(name=temp_name)
        if isinstance(error, OSError):
            raise ArtifactStorageError(
                f"Could not write a {size:,}-byte artifact to {folder}/ in the "
                f"artifact storage: {error.strerror or error}. The partial file was "
                "deleted and nothing was registered for it; free space (or fix the "
                "storage) and run again."
            ) from error
        raise
    return StoredArtifact(name=final_name, sha256=digest.hexdigest(), size=size)


def artifact_delete(*, name: str) -> None:
    """Delete a stored file if it exists; cleanup must never mask the real error."""
    if not name:
        return
    try:
        default_storage.delete(name)
    except Exception:  # noqa: BLE001 - best effort: an orphan file is harmless
        pass


def artifact_read_verified(*, record: MLModel | IndexArtifact) -> bytes:
    """The bytes of a registered artifact, after checking them against the registry.

    ``record`` must be a saved row whose file name and sha256 match the database (a
    hand-built or edited instance is refused). Raises ``ArtifactIntegrityError`` if
    the file is missing or its sha256 or size differ from the recorded ones.
    """
    name = record.artifact.name if record.artifact else ""
    if not record.pk or not name:
        raise ArtifactIntegrityError(f"{record} has no registered artifact.")
    registered = (
        type(record)
        .objects.filter(
            pk=record.pk, artifact=name, artifact_sha256=record.artifact_sha256
        )
        .exists()
    )
    if not registered or not record.artifact_sha256:
        raise ArtifactIntegrityError(
            f"{name!r} is not the artifact the registry records for {record}."
        )
    try:
        with default_storage.open(name, "rb") as stored:
            data = stored.read()
    except (FileNotFoundError, OSError) as error:
        raise ArtifactIntegrityError(
            f"Artifact {name!r} cannot be read: {error}"
        ) from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.artifact_sha256 or len(data) != record.artifact_size:
        raise ArtifactIntegrityError(
            f"Artifact {name!r} fails its checksum (sha256 {actual[:12]}…, "
            f"{len(data)} bytes; registered {record.artifact_sha256[:12]}…, "
            f"{record.artifact_size} bytes); refusing to load it."
        )
    return data


def model_artifact_load(*, model: MLModel):
    """The deserialised object of a registered model version (checksum verified)."""
    from recommender.ml.artifacts import loads

    data = artifact_read_verified(record=model)
    return loads(data, expected_sha256=model.artifact_sha256)


def index_artifact_load(*, index: IndexArtifact):
    """The FAISS index of a registered ``IndexArtifact`` (checksum verified)."""
    from recommender.ml.index import index_from_bytes

    return index_from_bytes(artifact_read_verified(record=index))


def _move(temp_name: str, final_name: str) -> str:
    """Give the complete temporary file its final name; return that name."""
    final_name = default_storage.get_available_name(final_name)
    try:
        temp_path = default_storage.path(temp_name)
        final_path = default_storage.path(final_name)
    except NotImplementedError:
        # Remote storage: no rename, but each upload is atomic on its own.
        with default_storage.open(temp_name, "rb") as temp_file:
            saved = default_storage.save(final_name, temp_file)
        artifact_delete(name=temp_name)
        return saved
    # Durable before visible: the rename must not outrun the data on a power cut.
    with open(temp_path, "rb") as temp_file:
        os.fsync(temp_file.fileno())
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    os.replace(temp_path, final_path)
    return str(PurePosixPath(final_name))
