"""The recommender's artifacts, loaded from the registry: model versions
(``ml.artifacts``) and FAISS indexes (``ml.index``).

The registry stores and verifies the bytes (``registry.artifacts``: the row is
re-read, the sha256 and size compared); this module turns verified bytes into the
objects serving and training use.
"""

from __future__ import annotations

from recommender.ml.artifacts import loads
from recommender.ml.index import index_from_bytes
from registry.artifacts import artifact_read_verified
from registry.models import IndexArtifact, MLModel


def model_artifact_load(*, model: MLModel):
    """The deserialised object of a registered model version (checksum verified)."""
    data = artifact_read_verified(record=model)
    return loads(data, expected_sha256=model.artifact_sha256)


def index_artifact_load(*, index: IndexArtifact):
    """The FAISS index of a registered ``IndexArtifact`` (checksum verified)."""
    return index_from_bytes(artifact_read_verified(record=index))
