import pytest

from registry.artifacts import artifact_save
from registry.models import ModelKind
from registry.services import index_register
from tests.registry.factories import MLModelFactory

pytestmark = pytest.mark.django_db


def test_an_embedding_version_shows_its_indexes_read_only(
    admin_client, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    embedding = MLModelFactory(kind=ModelKind.EMBEDDING, metrics={})
    index_register(
        embedding_model=embedding,
        stored_artifact=artifact_save(content=b"idx", folder="indexes"),
        index_type="hnsw",
        params={"m": 32},
        n_vectors=1234,
        dim=32,
        metrics={"recall@100": 0.9612},
        build_seconds=1.5,
    )

    page = admin_client.get(f"/admin/registry/mlmodel/{embedding.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Index artifacts" in html
    assert "hnsw" in html and "recall@100 0.9612" in html
    assert 'name="indexes-0-index_type"' not in html  # nothing editable
    embedding.refresh_from_db()
    assert embedding.metrics["recall@100"] == 0.9612


def test_a_ranking_version_has_no_index_inline(admin_client):
    ranking = MLModelFactory(kind=ModelKind.RANKING)

    page = admin_client.get(f"/admin/registry/mlmodel/{ranking.pk}/change/")

    assert page.status_code == 200
    assert "Index artifacts" not in page.content.decode()
