import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.data import (
    KIND_CODES,
    InteractionArrays,
    from_synthetic,
    sorted_positions,
)

END = 1_750_000_000.0


@pytest.fixture(scope="module")
def converted():
    dataset = synthetic.generate_dataset(n_members=300, seed=2)
    members, interactions = from_synthetic(
        dataset, window_end_ts=END, first_user_id=10, id_step=3
    )
    return dataset, members, interactions


def test_index_of_finds_positions_and_marks_absent_ids(converted):
    _, members, _ = converted

    positions = members.index_of(np.array([10, 13, 11, 10 + 299 * 3, 5, 10**9]))

    assert positions.tolist() == [0, 1, -1, 299, -1, -1]
    assert positions.dtype == np.int64
    assert sorted_positions(np.zeros(0, dtype=np.int64), np.array([1])).tolist() == [-1]


def test_synthetic_conversion_maps_codes_and_preferences(converted):
    dataset, members, interactions = converted
    raw = dataset.interactions

    assert members.user_id.dtype == np.int64 and members.n == 300
    assert interactions.m == raw.m
    names = np.array(synthetic.KINDS)[raw.kind]
    expected = np.array([KIND_CODES[name] for name in names], dtype=np.int8)
    assert np.array_equal(interactions.kind, expected)
    assert np.array_equal(interactions.is_positive, raw.is_positive)
    seeks_male = (members.seeking_mask >> 1) & 1
    assert np.array_equal(seeks_male.astype(bool), dataset.members.seeking[:, 1])
    no_limit = dataset.members.max_distance_km == synthetic.NO_DISTANCE_LIMIT
    assert np.all(np.isinf(members.max_distance_km[no_limit]))
    assert np.all(np.isfinite(members.max_distance_km[~no_limit]))
    age_days = END / 86_400 - members.birth_day
    assert np.array_equal(
        np.floor(age_days / 365.25).astype(int), dataset.members.age_years
    )
    assert np.all(interactions.ts < END)
    assert len(members.interests) == 300 and all(members.interests)


def test_before_and_between_cut_on_half_open_windows():
    interactions = InteractionArrays(
        actor=np.array([1, 2, 3, 4]),
        target=np.array([2, 3, 4, 1]),
        kind=np.array([0, 2, 1, 3], dtype=np.int8),
        ts=np.array([10.0, 20.0, 20.0, 30.0]),
    )

    assert interactions.before(20.0).actor.tolist() == [1]
    assert interactions.between(20.0, 30.0).actor.tolist() == [2, 3]
    assert interactions.is_positive.tolist() == [True, False, True, False]
    assert InteractionArrays.empty().m == 0


def test_take_keeps_members_aligned(converted):
    _, members, _ = converted

    subset = members.take(np.array([2, 5]))

    assert subset.user_id.tolist() == [16, 25]
    assert subset.interests == [members.interests[2], members.interests[5]]
    assert subset.max_age.tolist() == members.max_age[[2, 5]].tolist()
