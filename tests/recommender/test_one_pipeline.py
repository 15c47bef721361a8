"""Serving and the offline evaluation run one pipeline: the same viewer in the same
state gets the same ranking from both (``recommender.ml.recommend``)."""

import numpy as np
import pytest

from recommender import data as db
from recommender.ml.cut import CutState, HistoryIndex
from recommender.ml.evaluation import served_ranking
from recommender.serving import pipeline as serving_pipeline
from recommender.serving.holder import bundle_holder
from tests.recommender.serving_fixtures import open_members

pytestmark = pytest.mark.django_db


def test_serving_and_the_evaluation_rank_a_viewer_identically(
    engine, trained, monkeypatch
):
    viewers = open_members(6)
    engine.recommendations_compute(user=viewers[0], limit=1)  # loads the bundle
    bundle = bundle_holder().bundle
    population = bundle.population
    embedding = bundle.embeddings[trained.embedding.pk]
    model = bundle.rankings[trained.ranking.pk].model
    # The evaluation's view of the same moment: the members and interactions
    # in memory, every interaction indexed per member, the same time.
    state = CutState(
        now_ts=population.loaded_at,
        population=population,
        embeddings=embedding.model,
        embedding=embedding,
        history=HistoryIndex(db.interactions_load()),
    )
    monkeypatch.setattr(serving_pipeline, "_now", lambda: population.loaded_at)

    for user in viewers:
        monkeypatch.setattr(serving_pipeline, "_rng", lambda: np.random.default_rng(7))
        served = engine.recommendations_compute(user=user, limit=10)
        rows, result = served_ranking(
            state, model, user.pk, limit=10, rng=np.random.default_rng(7)
        )

        assert served.strategy == "full" and result.ranked
        assert len(served.results) == 10
        assert [r.user_id for r in served.results] == (
            population.store.user_id[rows[:10]].tolist()
        ), user.username
