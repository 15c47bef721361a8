"""Model artifacts in Django storage: written atomically, read only when verified.

The storage is the local disk (``MEDIA_ROOT``) by default, or an S3-compatible
bucket through django-storages (``ARTIFACT_STORAGE=s3``) when several machines
share the artifacts.

Saving on local disk streams the content to a temporary name while hashing it,
then renames it to its final name. A crash leaves at worst a ``.tmp-*`` orphan,
never a truncated file under a name the registry could point at. On object storage
the content goes straight to its final key: one upload (a single PUT, or a
multipart upload completed at the end) is all-or-nothing there, and a temporary
object would cost a second upload. Either way the registry row is written only
after :func:`artifact_save` has returned. A write that fails (a full disk) deletes
its partial file and raises :class:`ArtifactStorageError`, which says so in words
an operator can act on.

Loading goes through a registry row, never a bare path: the row is re-read from the
database, the file's sha256 is compared with the recorded one, and only then are the
bytes handed to a deserialiser (joblib/pickle can run code; FAISS trusts its input;
the deserialisers belong to the app that wrote the artifact, e.g.
``recommender.artifacts``).
From object storage, a process downloads each artifact once into a local cache
(``ARTIFACT_CACHE_DIR``, files named by their registered sha256, verified again on
every read) so that a restart or a second worker of the machine does not fetch it
again; a download that fails its checksum is refused and never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.utils import timezone

from config.api import ApplicationError
from registry.models import IndexArtifact, MLModel

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
# Files of the local artifact cache not read for this long are deleted (at the
# next download): versions long out of service, or an interrupted download.
CACHE_KEEP_SECONDS = 7 * 24 * 3600
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactIntegrityError(ValueError):
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
    the file written, complete or partial, is deleted and the exception
    propagates, a failure of the storage (``ENOSPC``…, an object store's error) as
    :class:`ArtifactStorageError`; no file appears under a final name unless it
    is complete.
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
    final_name = f"{folder}/{stamp}-{token}{suffix}"
    # The storage leaves what it wrote of a failed save (Django's FileSystemStorage
    # does): the name asked for is the one to delete then.
    written = f"{folder}/{TEMP_PREFIX}{token}{suffix}"
    try:
        if artifact_storage_is_local():
            written = default_storage.save(written, content)
            final_name = _move(written, final_name)
        else:
            written = final_name
            final_name = default_storage.save(final_name, content)
    except BaseException as error:
        artifact_delete(name=written)
        if _is_storage_failure(error):
            raise ArtifactStorageError(
                f"Could not write a {size:,}-byte artifact to {folder}/ in the "
                f"artifact storage: {getattr(error, 'strerror', None) or error}. The "
                "partial file was deleted and nothing was registered for it; free "
                "space (or fix the storage) and run again."
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
    if not artifact_storage_is_local():
        return _read_through_cache(
            name, sha256=record.artifact_sha256, size=record.artifact_size
        )
    data = _storage_read(name)
    _check(data, name=name, sha256=record.artifact_sha256, size=record.artifact_size)
    return data


def artifact_storage_is_local() -> bool:
    """Whether artifacts are files on this machine's disk (``FileSystemStorage``)
    rather than objects in a remote store."""
    try:
        default_storage.path("")
    except NotImplementedError:
        return False
    return True


def _is_storage_failure(error: BaseException) -> bool:
    """A failure of the storage itself (disk full, bucket unreachable, access
    denied), not of the code or the content being saved."""
    if isinstance(error, OSError):
        return True
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no object storage client installed
        return False
    return isinstance(error, BotoCoreError | ClientError)


def _storage_read(name: str) -> bytes:
    try:
        # One read into one buffer: gathering chunks and copying them out held
        # the artifact twice in memory.
        with default_storage.open(name, "rb") as stored:
            return stored.read()
    except Exception as error:  # noqa: BLE001 - OSError, or the S3 client's errors
        raise ArtifactIntegrityError(
            f"Artifact {name!r} cannot be read: {error}"
        ) from error


def _check(data: bytes, *, name: str, sha256: str, size: int) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256 or len(data) != size:
        raise ArtifactIntegrityError(
            f"Artifact {name!r} fails its checksum (sha256 {actual[:12]}…, "
            f"{len(data)} bytes; registered {sha256[:12]}…, "
            f"{size} bytes); refusing to load it."
        )


def _read_through_cache(name: str, *, sha256: str, size: int) -> bytes:
    """The bytes of ``name`` from the local cache when a verified copy is there,
    else downloaded, verified and then cached (a copy failing its checksum is
    neither returned nor kept)."""
    if not _SHA256.fullmatch(sha256):
        raise ArtifactIntegrityError(f"{name!r} has no valid registered sha256.")
    folder = Path(settings.ARTIFACT_CACHE_DIR)
    cached = folder / sha256
    try:
        data = cached.read_bytes()
    except OSError:
        data = None  # not cached yet (or pruned by another process meanwhile)
    if data is not None:
        try:
            _check(data, name=str(cached), sha256=sha256, size=size)
        except ArtifactIntegrityError:
            logger.warning("cached copy of %s is corrupt: downloading it again", name)
            cached.unlink(missing_ok=True)
        else:
            with contextlib.suppress(OSError):  # a read-only cache still serves
                os.utime(cached)  # recently used: spared by the pruning
            return data
    data = _storage_read(name)
    _check(data, name=name, sha256=sha256, size=size)
    _cache_store(folder, cached, data)
    return data


def _cache_store(folder: Path, cached: Path, data: bytes) -> None:
    """Keep a verified download (temporary file, then rename: a concurrent reader
    never sees half of it); a cache that cannot be written only costs a download
    next time."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _cache_prune(folder)
        with tempfile.NamedTemporaryFile(
            dir=folder, prefix=TEMP_PREFIX, delete=False
        ) as temp:
            try:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            except BaseException:
                os.unlink(temp.name)
                raise
        os.replace(temp.name, cached)
    except OSError:
        logger.warning("artifact cache %s not written", folder, exc_info=True)


def _cache_prune(folder: Path) -> None:
    horizon = time.time() - CACHE_KEEP_SECONDS
    for entry in folder.iterdir():
        try:
            if entry.stat().st_mtime < horizon:
                entry.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to delete


def _move(temp_name: str, final_name: str) -> str:
    """Give the complete temporary file (local disk) its final name; return it."""
    final_name = default_storage.get_available_name(final_name)
    temp_path = default_storage.path(temp_name)
    final_path = default_storage.path(final_name)
    # Durable before visible: the rename must not outrun the data on a power cut.
    with open(temp_path, "rb") as temp_file:
        os.fsync(temp_file.fileno())
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    os.replace(temp_path, final_path)
    return str(PurePosixPath(final_name))
