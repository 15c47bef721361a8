# The serving engine's fixtures (seeded demo members, trained and promoted models).
from tests.recommender.conftest import media, seeded  # noqa: F401
from tests.recommender.serving_fixtures import engine, trained  # noqa: F401
