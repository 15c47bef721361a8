import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.data import InteractionArrays, from_synthetic
from recommender.ml.embeddings import (
    content_vectors,
    embed_from_content,
    taste_cosine,
    train_embeddings,
    vectors_for_index,
)
from recommender.ml.features import build_feature_store


def _likes(actor, target) -> InteractionArrays:
    actor = np.asarray(actor, dtype=np.int64)
    return InteractionArrays(
        actor=actor,
        target=np.asarray(target, dtype=np.int64),
        kind=np.zeros(actor.shape[0], dtype=np.int8),
        ts=np.arange(actor.shape[0], dtype=np.float64),
    )


def _pairs_mean(model, rows_a, rows_b, same: bool) -> float:
    a, b = np.meshgrid(rows_a, rows_b, indexing="ij")
    a, b = a.ravel(), b.ravel()
    keep = a != b if same else np.ones(a.shape[0], dtype=bool)
    return float(taste_cosine(model, a[keep], b[keep]).mean())


def test_members_who_like_the_same_people_are_near_in_taste_space():
    # 60 actors in two groups; each group likes random members of its own target set.
    rng = np.random.default_rng(3)
    ids = np.arange(1, 201, dtype=np.int64)
    group_a, group_b = ids[:30], ids[30:60]
    targets_a, targets_b = ids[100:150], ids[150:200]
    actor, target = [], []
    for group, pool in ((group_a, targets_a), (group_b, targets_b)):
        for member in group:
            chosen = rng.choice(pool, size=8, replace=False)
            actor += [member] * 8
            target += chosen.tolist()
    content = rng.random((200, 12)).astype(np.float32)

    model = train_embeddings(ids, _likes(actor, target), content, dim=4, seed=0)

    rows_a, rows_b = np.arange(30), np.arange(30, 60)
    within = (
        _pairs_mean(model, rows_a, rows_a, True)
        + _pairs_mean(model, rows_b, rows_b, True)
    ) / 2
    across = _pairs_mean(model, rows_a, rows_b, False)
    assert within > across + 0.4
    assert abs(across) < 0.1
    # Appeal follows: a group's targets score higher for that group's members.
    scores = model.taste[rows_a] @ model.appeal[100:200].T
    assert scores[:, :50].mean() > scores[:, 50:].mean() + 0.1


@pytest.fixture(scope="module")
def planted():
    dataset = synthetic.generate_dataset(n_members=4_000, seed=5)
    members, interactions = from_synthetic(dataset)
    store = build_feature_store(members, interactions, now_ts=interactions.ts.max() + 1)
    content = content_vectors(store)
    model = train_embeddings(members.user_id, interactions, content, dim=16, seed=0)
    return dataset, store, content, model


def test_taste_groups_are_nearer_inside_than_across_on_planted_data(planted):
    dataset, _, _, model = planted
    preferred, gender = dataset.members.preferred_tribe, dataset.members.gender
    rng = np.random.default_rng(0)
    a = rng.integers(0, model.user_id.shape[0], 200_000)
    b = rng.integers(0, model.user_id.shape[0], 200_000)
    # Same gender: who one likes depends first on the gender one seeks.
    comparable = model.has_taste[a] & model.has_taste[b] & (gender[a] == gender[b])
    comparable &= a != b
    cosine = taste_cosine(model, a, b)

    same = cosine[comparable & (preferred[a] == preferred[b])].mean()
    other = cosine[comparable & (preferred[a] != preferred[b])].mean()

    assert same > other + 0.015


def test_cold_start_members_get_finite_content_vectors_in_the_same_space(planted):
    _, store, content, model = planted
    cold = ~model.has_taste

    assert cold.sum() > 20
    assert model.taste.shape == model.appeal.shape == (store.n, 16)
    assert np.all(np.isfinite(model.taste)) and np.all(np.isfinite(model.appeal))
    assert np.allclose(np.linalg.norm(model.taste, axis=1), 1.0, atol=1e-4)
    taste, appeal = embed_from_content(model, content[cold])
    assert np.allclose(taste, model.taste[cold], atol=1e-5)
    assert np.allclose(
        appeal[~model.has_appeal[cold]],
        model.appeal[cold][~model.has_appeal[cold]],
        atol=1e-5,
    )
    with pytest.raises(ValueError):
        embed_from_content(model, content[:, :-1])


def test_content_vectors_have_the_documented_layout(planted):
    _, store, content, _ = planted
    v = len(store.vocabulary)

    assert content.shape == (store.n, v + 3 + 6 + 3) and content.dtype == np.float32
    assert np.allclose(np.linalg.norm(content[:, :v], axis=1), 1.0)
    assert np.array_equal(content[:, v : v + 3].argmax(axis=1), store.gender)
    assert np.all(content[:, v + 3 : v + 9].sum(axis=1) == 1)


def test_training_is_deterministic_given_the_seed(planted):
    dataset, store, content, model = planted
    members, interactions = from_synthetic(dataset)

    again = train_embeddings(members.user_id, interactions, content, dim=16, seed=0)

    assert np.array_equal(again.taste, model.taste)
    assert np.array_equal(vectors_for_index(again), vectors_for_index(model))
    assert vectors_for_index(model).flags["C_CONTIGUOUS"]


def test_nobody_with_history_still_gets_vectors():
    content = np.eye(3, 5, dtype=np.float32)

    model = train_embeddings(
        np.array([1, 2, 3]), InteractionArrays.empty(), content, dim=4
    )

    assert model.taste.shape == (3, 4) and np.all(np.isfinite(model.taste))
    assert not model.has_taste.any()
