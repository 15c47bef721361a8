import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.synthetic import (
    BLOCK,
    KINDS,
    MAX_AGE,
    MIN_AGE,
    SyntheticConfig,
    generate_dataset,
    mutual_positive_pairs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(n_members=3_000, seed=7)


def _arrays(data) -> dict[str, np.ndarray]:
    return {
        f"{part}.{f.name}": getattr(getattr(data, part), f.name)
        for part in ("members", "interactions")
        for f in dataclasses.fields(getattr(data, part))
    } | {
        "tribe_interest_probs": data.tribe_interest_probs,
        "tribe_taste": data.tribe_taste,
    }


def test_same_seed_gives_identical_arrays():
    first = _arrays(generate_dataset(n_members=500, seed=3))
    second = _arrays(generate_dataset(n_members=500, seed=3))

    assert first.keys() == second.keys()
    for name, array in first.items():
        assert array.dtype == second[name].dtype, name
        assert np.array_equal(array, second[name]), name


def test_different_seeds_give_different_data():
    first = generate_dataset(n_members=500, seed=3)
    second = generate_dataset(n_members=500, seed=4)

    assert not np.array_equal(first.members.tribe, second.members.tribe)
    assert first.interactions.m != second.interactions.m or not np.array_equal(
        first.interactions.target, second.interactions.target
    )


def test_pairs_are_unique_and_never_self(dataset):
    interactions = dataset.interactions
    keys = interactions.actor.astype(np.int64) * dataset.members.n + interactions.target

    assert interactions.m > 0
    assert np.unique(keys).shape[0] == interactions.m
    assert not np.any(interactions.actor == interactions.target)


def test_interactions_are_in_time_order_after_both_members_joined(dataset):
    interactions, members = dataset.interactions, dataset.members
    joined_later = np.maximum(
        members.created_at_s[interactions.actor],
        members.created_at_s[interactions.target],
    )

    assert np.all(np.diff(interactions.created_at_s) >= 0)
    assert np.all(interactions.created_at_s >= joined_later)
    assert np.all(interactions.created_at_s < dataset.config.window_seconds)
    # A time split leaves a real test set: the last 30 days hold a good share.
    recent = interactions.created_at_s >= dataset.config.window_seconds - 30 * 86_400
    assert 0.1 < recent.mean() < 0.6


def test_members_view_about_the_requested_number_of_candidates(dataset):
    per_member = dataset.interactions.m / dataset.members.n

    assert 0.8 * 20 < per_member < 1.1 * 20


def test_most_views_satisfy_the_actors_own_preferences(dataset):
    interactions = dataset.interactions
    within = synthetic.within_preferences(
        dataset.members, interactions.actor, interactions.target
    )

    assert within.mean() > 0.75


def test_preferred_tribe_is_liked_far_more_often(dataset):
    interactions, members = dataset.interactions, dataset.members
    preferred = (
        members.tribe[interactions.target]
        == members.preferred_tribe[interactions.actor]
    )
    positive = interactions.is_positive

    preferred_rate = positive[preferred].mean()
    other_rate = positive[~preferred].mean()
    assert preferred_rate > 2.5 * other_rate
    assert preferred_rate - other_rate > 0.25


def test_attractiveness_raises_the_like_rate_but_is_not_everything(dataset):
    interactions, members = dataset.interactions, dataset.members
    attractiveness = members.attractiveness[interactions.target]
    positive = interactions.is_positive
    top = attractiveness > np.quantile(attractiveness, 0.75)
    bottom = attractiveness < np.quantile(attractiveness, 0.25)
    preferred = (
        members.tribe[interactions.target]
        == members.preferred_tribe[interactions.actor]
    )

    assert positive[top].mean() > 1.5 * positive[bottom].mean()
    # The personal signal survives among equally attractive candidates.
    assert positive[top & preferred].mean() > 2 * positive[top & ~preferred].mean()


def test_kinds_have_the_planned_shares(dataset):
    counts = dataset.interactions.count_by_kind()
    total = dataset.interactions.m

    assert set(counts) == set(KINDS)
    assert 0.1 < (counts["like"] + counts["super_like"]) / total < 0.45
    assert 0.02 < counts["super_like"] / (counts["like"] + counts["super_like"]) < 0.12
    assert 0.001 < counts["block"] / total < 0.015
    assert np.all(dataset.interactions.kind[dataset.interactions.kind == BLOCK] == 3)


def test_mutual_pairs_are_exactly_the_mutual_positive_verdicts(dataset):
    interactions = dataset.interactions
    verdicts = {
        (int(a), int(t)): (int(k), int(s))
        for a, t, k, s in zip(
            interactions.actor,
            interactions.target,
            interactions.kind,
            interactions.created_at_s,
            strict=True,
        )
    }
    expected = {}
    for (a, t), (kind, at) in verdicts.items():
        back = verdicts.get((t, a))
        if a < t and back and kind in (0, 2) and back[0] in (0, 2):
            expected[(a, t)] = max(at, back[1])

    pairs = mutual_positive_pairs(interactions, dataset.members.n)
    found = dict(
        zip(
            zip(pairs.low.tolist(), pairs.high.tolist(), strict=True),
            pairs.matched_at_s.tolist(),
            strict=True,
        )
    )
    assert len(expected) > 50
    assert found == expected
    assert np.all(pairs.low < pairs.high)


def test_population_has_the_documented_shape(dataset):
    members = dataset.members
    n = members.n

    assert np.all((members.age_years >= MIN_AGE) & (members.age_years <= MAX_AGE))
    assert np.all(members.min_age >= 18)
    assert np.all(members.min_age <= members.max_age)
    assert np.all(members.seeking.any(axis=1))
    shares = np.bincount(members.gender, minlength=3) / n
    assert abs(shares[0] - 0.48) < 0.04 and abs(shares[1] - 0.48) < 0.04
    assert 0.01 < shares[2] < 0.08
    assert 0.005 < (~members.is_visible).mean() < 0.07
    counts = members.interests.sum(axis=1)
    assert counts.min() >= 3 and counts.max() <= 8
    assert len(np.unique(members.city)) == len(synthetic.CITIES)
    assert np.all(np.abs(members.latitude) <= 90)
    assert np.all(members.last_active_at_s >= members.created_at_s)
    opposite = members.seeking[members.gender == 0, 1].mean()
    assert opposite > 0.85


def test_interests_reveal_the_tribe(dataset):
    members = dataset.members
    same_tribe = members.tribe[:-1] == members.tribe[1:]
    jaccard = synthetic.interest_jaccard(
        members, np.arange(members.n - 1), np.arange(1, members.n)
    )

    assert jaccard[same_tribe].mean() > 1.5 * jaccard[~same_tribe].mean()


def test_texts_are_one_per_member(dataset):
    members = dataset.members
    names = synthetic.display_names(members)
    bios = synthetic.bios(members)

    assert len(names) == len(bios) == members.n
    assert all(name and len(name) <= 80 for name in names)
    assert all(synthetic.CITIES[members.city[0]].name in bios[0] for _ in [0])


def test_tiny_and_inactive_populations_work():
    inactive = generate_dataset(n_members=50, seed=1, interactions_per_member=0)
    pair = generate_dataset(n_members=2, seed=1, interactions_per_member=5)
    nobody = generate_dataset(n_members=0, seed=1)

    assert inactive.interactions.m == 0
    assert pair.interactions.m <= 2
    assert not np.any(pair.interactions.actor == pair.interactions.target)
    assert nobody.members.n == 0 and nobody.interactions.m == 0


def test_config_changes_the_planted_strength():
    flat = generate_dataset(
        n_members=2_000, seed=5, config=SyntheticConfig(tribe_weight=0.0)
    )
    interactions, members = flat.interactions, flat.members
    preferred = (
        members.tribe[interactions.target]
        == members.preferred_tribe[interactions.actor]
    )
    positive = interactions.is_positive

    assert positive[preferred].mean() < 2 * positive[~preferred].mean()


def test_library_imports_without_django():
    code = (
        "import sys; sys.modules['django'] = None; "
        "import recommender.ml.synthetic as s; "
        "s.generate_dataset(n_members=20, seed=1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
