"""Stage-2 score combination: what is known about the candidate's side is used as
known, not predicted."""

from types import SimpleNamespace

import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.cut import cut_state, time_split
from recommender.ml.data import from_synthetic
from recommender.ml.features import PAIR_FEATURE_NAMES
from recommender.ml.objective import (
    clear_winner,
    guarded_choice,
    objective_advantage,
)
from recommender.ml.pipeline import default_reciprocal_weight
from recommender.ml.ranking import predict_scores, train_ranking
from recommender.ml.recommend import (
    CANDIDATE_LIKED_VIEWER,
    CANDIDATE_POPULARITY,
    candidates_for,
    combine,
    rank_scores,
    served_scores,
)


def _model(X: np.ndarray):
    """A small fitted ranking model on feature rows ``X`` (float32 [400, F])."""
    y = (X[:, 0] > 0).astype(np.int8)
    model, _ = train_ranking(X[:300], y[:300], X[300:], y[300:], seed=0)
    model.reciprocal_weight = 1.0
    return model


def test_combine_uses_the_candidates_known_like():
    p_forward = np.array([0.5, 0.5, 0.2])
    p_backward = np.array([0.1, 0.1, 0.9])
    liked_viewer = np.array([False, True, False])
    scores = combine(p_forward, p_backward, 1.0, liked_viewer)
    # Same forward chance: the one who already liked the viewer ranks first, at
    # p_forward itself (their side is 1, a fact).
    assert scores[1] == 0.5
    assert scores[0] == 0.5 * 0.1
    assert np.argmax(scores) == 1
    # Weight 0: the viewer's side alone, whatever the candidate did.
    assert np.allclose(combine(p_forward, p_backward, 0.0, liked_viewer), p_forward)
    # Without the mask: the predicted side everywhere.
    assert np.allclose(combine(p_forward, p_backward, 1.0), p_forward * p_backward)


def test_served_scores_read_the_liked_viewer_column_of_the_forward_rows():
    assert PAIR_FEATURE_NAMES[CANDIDATE_LIKED_VIEWER] == "candidate_liked_viewer"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(PAIR_FEATURE_NAMES))).astype(np.float32)
    model = _model(X)
    forward, backward = X[300:310].copy(), X[310:320].copy()
    forward[:, CANDIDATE_LIKED_VIEWER] = 0
    plain = served_scores(model, forward, backward)
    forward[3, CANDIDATE_LIKED_VIEWER] = 1
    known = served_scores(model, forward, backward)
    # Only row 3 changes: its score is p(v -> c) alone, the candidate's side no
    # longer predicted.
    others = np.arange(10) != 3
    assert np.allclose(known[others], plain[others])
    assert np.isclose(known[3], predict_scores(model, forward[3:4])[0])
    p_backward = predict_scores(model, backward[3:4])[0]
    assert not np.isclose(known[3], known[3] * p_backward)


def test_a_model_that_lost_to_a_simple_order_on_validation_serves_that_order():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, len(PAIR_FEATURE_NAMES))).astype(np.float32)
    model = _model(X)
    forward, backward = X[300:306].copy(), X[310:316].copy()
    forward[:, CANDIDATE_POPULARITY] = np.log1p([3, 40, 0, 7, 40, 1])
    forward[:, CANDIDATE_LIKED_VIEWER] = [0, 0, 1, 0, 0, 1]
    as_model = served_scores(model, forward, backward)

    model.order = "liked_you_then_popularity"
    scores = served_scores(model, forward, backward)
    # Who liked the viewer first (by popularity: 5 before 2), then the others by
    # popularity; the model's own guess plays no part.
    assert np.argsort(-scores, kind="stable").tolist() == [5, 2, 1, 4, 3, 0]
    assert scores[1] == scores[4] and np.all((scores >= 0) & (scores < 1))
    assert not np.allclose(scores, as_model)
    model.order = "popularity"
    assert np.argsort(-served_scores(model, forward, backward), kind="stable")[
        :3
    ].tolist() == [1, 4, 3]


def test_a_simple_order_serves_only_when_it_beat_the_model_beyond_doubt():
    rng = np.random.default_rng(3)
    viewers = 300
    model = rng.uniform(0.2, 0.6, size=(2, viewers))
    model[1, ::3] = np.nan  # a third of the viewers had no mutual like

    # Better for every viewer by 0.05 on both parts: a clear advantage of 0.1.
    better = model + 0.05
    advantage, lower = objective_advantage(model, better, seed=0)
    assert advantage == pytest.approx(0.10) and lower > 0
    clear = {"liked_you_then_popularity": (advantage, lower)}
    assert clear_winner(clear, default="model") == "liked_you_then_popularity"

    # Ahead on average, but by noise: viewers split both ways.
    noisy = model + rng.normal(0.01, 0.2, size=model.shape)
    advantage, lower = objective_advantage(model, noisy, seed=0)
    assert advantage > 0 > lower
    assert clear_winner({"popularity": (advantage, lower)}, default="model") == "model"

    # Worse, or tied: the model.
    worse = objective_advantage(model, model - 0.05, seed=0)
    tied = objective_advantage(model, model, seed=0)
    assert clear_winner({"popularity": worse}, default="model") == "model"
    assert clear_winner({"popularity": tied}, default="model") == "model"
    # Two clear winners: the larger advantage.
    both = {"popularity": (0.02, 0.01), "liked_you_then_popularity": (0.05, 0.01)}
    assert clear_winner(both, default="model") == "liked_you_then_popularity"
    # The same from the parts: every other option weighed against the default.
    choice, advantages = guarded_choice(
        {"model": model, "popularity": noisy, "liked_you_then_popularity": better},
        default="model",
        seed=0,
    )
    assert choice == "liked_you_then_popularity"
    assert set(advantages) == {"popularity", "liked_you_then_popularity"}
    assert advantages["liked_you_then_popularity"][0] == pytest.approx(0.10)
    assert (
        guarded_choice({"model": model, "popularity": noisy}, default="model", seed=0)[
            0
        ]
        == "model"
    )


def test_the_other_side_counts_by_default_only_where_mutual_likes_happen():
    two_sided = SimpleNamespace(mutual=np.array([0, 1, 0], dtype=np.int8))
    one_sided = SimpleNamespace(mutual=np.zeros(3, dtype=np.int8))

    # p(v likes c) * p(c likes v): the chance of a match.
    assert default_reciprocal_weight(two_sided) == 1.0
    # Nobody who was liked ever liked back: the viewer's side alone.
    assert default_reciprocal_weight(one_sided) == 0.0


def test_combine_sinks_a_candidate_who_passed_on_the_viewer():
    p_forward = np.array([0.9, 0.3, 0.3])
    p_backward = np.array([0.8, 0.1, 0.1])
    passed = np.array([True, False, False])
    liked = np.array([False, False, True])
    scores = combine(p_forward, p_backward, 0.5, liked, passed)
    # They can never become a match: behind everyone who still can, however
    # much the viewer would like them.
    assert np.argsort(-scores).tolist() == [2, 1, 0]
    assert scores[0] < 1e-5
    # Weight 0 ranks by the viewer's side alone, known verdicts or not.
    assert np.allclose(combine(p_forward, p_backward, 0.0, liked, passed), p_forward)


def test_served_scores_sink_the_rows_whose_candidate_passed_on_the_viewer():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, len(PAIR_FEATURE_NAMES))).astype(np.float32)
    model = _model(X)
    forward, backward = X[300:310].copy(), X[310:320].copy()
    forward[:, CANDIDATE_LIKED_VIEWER] = 0
    passed = np.arange(10) == 4

    plain = served_scores(model, forward, backward)
    known = served_scores(model, forward, backward, passed_viewer=passed)

    assert np.allclose(known[~passed], plain[~passed])
    assert known[4] < 1e-9 < plain[4]


def test_serving_ranks_a_candidate_who_passed_on_the_viewer_last():
    """``rank_scores`` (the served order) reads the viewer's passers from their
    fresh history: such a candidate can never become a match."""
    members, interactions = from_synthetic(
        synthetic.generate_dataset(n_members=3_000, seed=4)
    )
    split = time_split(interactions)
    state = cut_state(
        members, split.history_for_training, split.t_label, {"dim": 8}, index="exact"
    )
    X = np.random.default_rng(2).normal(size=(400, len(PAIR_FEATURE_NAMES)))
    model = _model(X.astype(np.float32))
    for viewer in np.unique(split.training_labels.actor).tolist():
        context = state.context(state.viewer(viewer))
        found = candidates_for(
            state.population,
            context,
            embedding=state.embedding,
            rng=np.random.default_rng(0),
        )
        passed = np.isin(found.positions, context.signals.passers)
        if passed.any() and not passed.all():
            break
    assert passed.any()
    history = state.viewer(viewer).history
    passers = history.actor[(history.target == viewer) & ~history.is_positive]
    store = state.population.store
    assert np.isin(store.user_id[found.positions[passed]], passers).all()

    scores = rank_scores(
        state.population, context, found, model, embedding=state.embedding
    )

    assert scores[passed].max() < scores[~passed].min()
