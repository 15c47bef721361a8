import math

import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.data import (
    KIND_CODES,
    InteractionArrays,
    MemberArrays,
    from_synthetic,
)
from recommender.ml.embeddings import content_vectors, train_embeddings
from recommender.ml.features import (
    PAIR_FEATURE_NAMES,
    build_feature_store,
    feature_store_from_rows,
    haversine_km,
    interest_bitsets,
    interest_vocabulary,
    pair_features,
    user_feature_rows,
)

NOW = 1_700_000_000.0
DAY = 86_400.0
COLUMN = {name: j for j, name in enumerate(PAIR_FEATURE_NAMES)}


def _birth_day(age_years: float) -> int:
    return int(round(NOW / DAY - age_years * 365.25))


@pytest.fixture
def trio():
    members = MemberArrays(
        user_id=np.array([10, 20, 30], dtype=np.int64),
        birth_day=np.array([_birth_day(30.5), _birth_day(40.2), _birth_day(25.0)]),
        gender=np.array([0, 1, 2], dtype=np.int8),
        lat=np.array([51.5072, 48.8566, np.nan], dtype=np.float32),
        lon=np.array([-0.1276, 2.3522, np.nan], dtype=np.float32),
        interests=[
            ["jazz", "wine", "hiking"],
            ["jazz", "hiking", "chess", "tennis"],
            [],
        ],
        created_ts=np.full(3, NOW - 100 * DAY),
        last_active_ts=np.array([NOW - 3 * DAY, NOW + 100.0, np.nan]),
        is_visible=np.ones(3, dtype=bool),
        seeking_mask=np.array([0b010, 0b001, 0b111], dtype=np.uint8),
        min_age=np.array([28, 25, 18], dtype=np.int16),
        max_age=np.array([35, 32, 99], dtype=np.int16),
        max_distance_km=np.array([np.inf, 200.0, np.inf], dtype=np.float32),
    )
    k = KIND_CODES
    history = InteractionArrays(
        actor=np.array([20, 30, 10, 30], dtype=np.int64),
        target=np.array([10, 10, 20, 20], dtype=np.int64),
        kind=np.array([k["like"], k["dislike"], k["like"], k["super_like"]], np.int8),
        ts=np.array([NOW - DAY, NOW - 20 * DAY, NOW + 5.0, NOW - 30 * DAY]),
    )
    return members, history


def test_member_features_by_hand(trio):
    members, history = trio

    store = build_feature_store(members, history, now_ts=NOW)

    # The like 10 -> 20 happens after now_ts: invisible. Prior = 2 likes / 3 seen.
    prior = 2 / 3
    assert store.prior_like_rate == pytest.approx(prior)
    assert store.n_given.tolist() == [0, 1, 2]
    assert store.n_received.tolist() == [2, 1, 0]
    assert store.like_rate_received[0] == pytest.approx((1 + 10 * prior) / 12)
    assert store.like_rate_given[1] == pytest.approx((1 + 10 * prior) / 11)
    assert store.like_rate_given[0] == pytest.approx(prior)  # no evidence: the prior
    assert store.likes_received_recent.tolist() == [1, 0, 0]  # 30 days is too old
    assert store.age.tolist() == pytest.approx([30.5, 40.2, 25.0], abs=0.01)
    # 10: last_active 3 days ago; 20: last_active is in the future (unknown at
    # NOW), so its last own action counts; 30: never active, acted 20 days ago.
    assert store.recency_days.tolist() == pytest.approx([3.0, 1.0, 20.0])
    assert store.account_age_days.tolist() == pytest.approx([100.0] * 3)
    assert store.liked_keys.tolist() == sorted([20 * 2**32 + 10, 30 * 2**32 + 20])


def test_pair_features_by_hand(trio):
    members, history = trio
    store = build_feature_store(members, history, now_ts=NOW)

    rows = pair_features(store, np.array([0, 0, 1]), np.array([1, 2, 0]))

    assert rows.shape == (3, len(PAIR_FEATURE_NAMES)) and rows.dtype == np.float32
    first = dict(zip(PAIR_FEATURE_NAMES, rows[0].tolist(), strict=True))
    assert first["age_gap_years"] == pytest.approx(9.7, abs=0.01)
    assert first["viewer_age_pref_violation_years"] == 5.0  # 40 vs 28-35
    assert first["candidate_age_pref_violation_years"] == 0.0  # 30 in 25-32
    assert first["viewer_seeks_candidate_gender"] == 1.0
    assert first["candidate_seeks_viewer_gender"] == 1.0
    assert first["distance_km"] == pytest.approx(343.5, abs=2.0)  # London-Paris
    assert first["within_both_distance_prefs"] == 0.0  # candidate's limit: 200 km
    assert first["interest_jaccard"] == pytest.approx(2 / 5)
    assert first["interest_overlap"] == 2.0
    assert first["taste_affinity"] == 0.0 and first["reciprocal_affinity"] == 0.0
    assert first["candidate_liked_viewer"] == 1.0  # 20 liked 10
    assert first["candidate_likes_received_recent_log1p"] == 0.0
    assert first["candidate_recency_days"] == pytest.approx(1.0)

    second = dict(zip(PAIR_FEATURE_NAMES, rows[1].tolist(), strict=True))
    assert second["viewer_seeks_candidate_gender"] == 0.0
    assert second["candidate_seeks_viewer_gender"] == 1.0
    assert second["distance_km"] == 20_000.0  # unknown location
    assert second["within_both_distance_prefs"] == 1.0  # neither has a limit
    assert second["interest_jaccard"] == 0.0
    assert second["candidate_liked_viewer"] == 0.0  # a dislike is not a like

    third = dict(zip(PAIR_FEATURE_NAMES, rows[2].tolist(), strict=True))
    assert third["candidate_liked_viewer"] == 0.0  # 10's like of 20 is in the future
    assert third["candidate_likes_received_recent_log1p"] == pytest.approx(math.log(2))


def test_embedding_affinities_are_dot_products(trio):
    members, history = trio
    store = build_feature_store(members, history, now_ts=NOW)
    rng = np.random.default_rng(0)
    taste = rng.standard_normal((3, 4)).astype(np.float32)
    appeal = rng.standard_normal((3, 4)).astype(np.float32)

    rows = pair_features(
        store, np.array([0]), np.array([2]), taste=taste, appeal=appeal
    )

    assert rows[0, COLUMN["taste_affinity"]] == pytest.approx(taste[0] @ appeal[2])
    assert rows[0, COLUMN["reciprocal_affinity"]] == pytest.approx(taste[2] @ appeal[0])
    with pytest.raises(ValueError):
        pair_features(store, np.array([0]), np.array([2]), taste=taste)


def test_vocabulary_is_the_most_frequent_interests():
    interests = [["b", "a"], ["a", "c"], ["c", "a", "a"], ["d"]]

    assert interest_vocabulary(interests) == ("a", "c", "b", "d")
    assert interest_vocabulary(interests, size=2) == ("a", "c")
    names = [f"i{j:03d}" for j in range(300)]
    assert len(interest_vocabulary([names])) == 256


def test_interest_bitsets_span_several_words_and_skip_unknown_interests():
    vocabulary = tuple(f"i{j:03d}" for j in range(130))

    bits = interest_bitsets([["i000", "i064", "i129", "unknown"], []], vocabulary)

    assert bits.shape == (2, 3) and bits.dtype == np.uint64
    assert bits[0].tolist() == [1, 1, 2]
    assert bits[1].tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def planted():
    dataset = synthetic.generate_dataset(n_members=1_500, seed=11)
    members, interactions = from_synthetic(dataset)
    cut = float(np.quantile(interactions.ts, 0.8))
    store = build_feature_store(members, interactions.before(cut), now_ts=cut)
    model = train_embeddings(
        members.user_id, interactions.before(cut), content_vectors(store), dim=8
    )
    return members, interactions.between(cut, np.inf), store, model


def test_training_and_serving_rows_are_identical(planted):
    members, labels, store, model = planted
    viewers = store.index_of(labels.actor)
    candidates = store.index_of(labels.target)
    training = pair_features(
        store, viewers, candidates, taste=model.taste, appeal=model.appeal
    )

    # Serving: one viewer against all the candidates they were labelled with.
    viewer = np.bincount(viewers).argmax()
    mine = np.flatnonzero(viewers == viewer)
    serving = pair_features(
        store,
        np.full(mine.shape[0], viewer),
        candidates[mine],
        taste=model.taste,
        appeal=model.appeal,
    )

    assert mine.shape[0] >= 5
    assert np.array_equal(serving, training[mine])
    assert np.all(np.isfinite(training))


def test_rows_survive_the_user_features_table_round_trip(planted):
    members, labels, store, model = planted
    viewers = store.index_of(labels.actor)
    candidates = store.index_of(labels.target)
    viewer = np.bincount(viewers).argmax()
    mine = np.flatnonzero(viewers == viewer)
    expected = pair_features(
        store,
        viewers[mine],
        candidates[mine],
        taste=model.taste,
        appeal=model.appeal,
    )

    # What the serving side holds: stored JSON feature sets of the viewer and the
    # candidates, plus the likes the viewer received (for the reciprocal feature).
    batch = np.unique(np.r_[viewer, candidates[mine]])
    rows = dict(user_feature_rows(store))
    viewer_id = store.user_id[viewer]
    received = store.liked_keys[(store.liked_keys % 2**32) == viewer_id]
    served = feature_store_from_rows(
        store.user_id[batch],
        [rows[int(u)] for u in store.user_id[batch]],
        vocabulary=store.vocabulary,
        now_ts=store.now_ts,
        prior_like_rate=store.prior_like_rate,
        liked_keys=received,
    )
    local = served.index_of(store.user_id[candidates[mine]])
    actual = pair_features(
        served,
        np.full(mine.shape[0], served.index_of(np.array([viewer_id]))[0]),
        local,
        taste=model.taste[batch],
        appeal=model.appeal[batch],
    )

    assert np.array_equal(actual, expected)


def test_haversine_matches_a_known_distance():
    assert haversine_km([0.0], [0.0], [0.0], [1.0])[0] == pytest.approx(111.195, 1e-3)
