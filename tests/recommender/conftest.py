import pytest

from accounts.demo import demo_seed

SEED_USERS = 300


@pytest.fixture
def media(settings, tmp_path):
    """Artifacts go to a fresh folder per test."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def seeded(db):
    """~300 demo members with ~20 interactions each (planted structure)."""
    return demo_seed(users=SEED_USERS, seed=7)


# The serving engine's fixtures live with their builders.
from tests.recommender.serving_fixtures import engine, trained  # noqa: E402,F401
