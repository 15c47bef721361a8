"""Artifact (de)serialisation with checksums.

Artifacts are joblib pickles, and unpickling can run arbitrary code, so :func:`loads`
checks the bytes against the sha256 recorded in the registry *before* handing them to
joblib: a tampered or truncated file is refused without being deserialised.
"""

from __future__ import annotations

import hashlib
import hmac
import io

import joblib

COMPRESSION = ("zlib", 3)


class ArtifactChecksumError(ValueError):
    """The artifact's bytes do not match the expected sha256."""


def dumps(obj: object) -> bytes:
    """``obj`` pickled by joblib (zlib-compressed; numpy arrays stored natively)."""
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=COMPRESSION)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def loads(data: bytes, *, expected_sha256: str) -> object:
    """The object in ``data`` (from :func:`dumps`), after checking that its sha256 is
    ``expected_sha256``; raises :class:`ArtifactChecksumError` otherwise, without
    unpickling anything."""
    actual = sha256_hex(data)
    if not expected_sha256 or not hmac.compare_digest(
        actual, expected_sha256.strip().lower()
    ):
        raise ArtifactChecksumError(
            f"artifact checksum mismatch: expected {expected_sha256!r}, got {actual!r}"
        )
    return joblib.load(io.BytesIO(data))
