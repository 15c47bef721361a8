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


LIKE, DISLIKE = KIND_CODES["like"], KIND_CODES["dislike"]


def _changed_mind() -> InteractionArrays:
    """Member 1 likes 2 at t=10 and changes it into a pass at t=30; member 3
    likes 4 at t=20 and never changes it."""
    return InteractionArrays(
        actor=np.array([1, 1, 3]),
        target=np.array([2, 2, 4]),
        kind=np.array([LIKE, DISLIKE, LIKE], dtype=np.int8),
        ts=np.array([10.0, 30.0, 20.0]),
        until=np.array([30.0, np.inf, np.inf]),
    )


def _verdicts(interactions: InteractionArrays) -> list[tuple[int, int, int, float]]:
    return sorted(
        zip(
            interactions.actor.tolist(),
            interactions.target.tolist(),
            interactions.kind.tolist(),
            interactions.ts.tolist(),
            strict=True,
        )
    )


def test_before_gives_each_verdict_as_it_stood_at_the_cut():
    history = _changed_mind()

    assert _verdicts(history.before(5.0)) == []
    assert _verdicts(history.before(20.0)) == [(1, 2, LIKE, 10.0)]
    # Replaced at 30: just before 30 the like still stood, the pass was not given.
    assert _verdicts(history.before(30.0)) == [(1, 2, LIKE, 10.0), (3, 4, LIKE, 20.0)]
    assert _verdicts(history.before(40.0)) == [
        (1, 2, DISLIKE, 30.0),
        (3, 4, LIKE, 20.0),
    ]
    assert history.before(40.0).until is None


def test_between_counts_a_window_verdict_as_it_stood_at_the_window_end():
    history = _changed_mind()

    # The like changed after the window: it counts as the like.
    assert _verdicts(history.between(0.0, 25.0)) == [
        (1, 2, LIKE, 10.0),
        (3, 4, LIKE, 20.0),
    ]
    # Changed inside the window: only the pass counts.
    assert _verdicts(history.between(0.0, 40.0)) == [
        (1, 2, DISLIKE, 30.0),
        (3, 4, LIKE, 20.0),
    ]
    assert _verdicts(history.between(25.0, 40.0)) == [(1, 2, DISLIKE, 30.0)]
    assert _verdicts(history.between(30.0, np.inf)) == [(1, 2, DISLIKE, 30.0)]
    assert _verdicts(history.between(0.0, 30.0)) == [
        (1, 2, LIKE, 10.0),
        (3, 4, LIKE, 20.0),
    ]


def test_current_select_and_as_of_keep_the_history_consistent():
    history = _changed_mind()

    assert _verdicts(history.current()) == _verdicts(history.before(np.inf))
    assert history.select(np.array([0, 2])).until.tolist() == [30.0, np.inf]
    known = history.as_of(25.0)
    # At 25 the like was not replaced yet: it stands as far as that cut knows.
    assert known.until.tolist() == [np.inf, np.inf]
    assert _verdicts(known.current()) == _verdicts(history.before(25.0))
    with pytest.raises(ValueError, match="until"):
        InteractionArrays(
            actor=np.array([1]),
            target=np.array([2]),
            kind=np.array([LIKE], dtype=np.int8),
            ts=np.array([1.0]),
            until=np.array([2.0, 3.0]),
        )


def test_a_chain_of_changes_never_gives_two_verdicts_for_a_pair_at_any_cut():
    # like -> pass -> super like (given and replaced at the same instant, as a
    # verdict dated ahead of the clock is) -> block, and another pair unchanged.
    history = InteractionArrays(
        actor=np.array([1, 1, 1, 1, 5]),
        target=np.array([2, 2, 2, 2, 6]),
        kind=np.array([LIKE, DISLIKE, KIND_CODES["super_like"], 3, LIKE], np.int8),
        ts=np.array([10.0, 20.0, 35.0, 35.0, 15.0]),
        until=np.array([20.0, 35.0, 35.0, np.inf, np.inf]),
    )
    times = np.unique(np.concatenate([history.ts, history.until[:-2]]))
    cuts = np.concatenate([times - 0.5, times, times + 0.5, [np.inf]])

    for cut in cuts.tolist():
        for part in (
            history.before(cut),
            history.between(0.0, cut),
            history.between(12.0, cut),
        ):
            keys = part.actor * 1_000 + part.target
            assert np.unique(keys).shape[0] == keys.shape[0], cut
        assert _verdicts(history.as_of(cut).current()) == _verdicts(history.before(cut))
        if cut <= 40.0:
            assert _verdicts(history.as_of(40.0).before(cut)) == _verdicts(
                history.before(cut)
            )
    assert [row[2] for row in _verdicts(history.before(np.inf))] == [3, LIKE]
    assert _verdicts(history.before(35.0))[0][2] == DISLIKE
