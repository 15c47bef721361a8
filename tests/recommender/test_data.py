import datetime as dt

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Profile
from interactions.models import Interaction
from recommender import data
from recommender.ml.data import GENDER_CODES, KIND_CODES
from recommender.models import UserEmbedding, UserFeatures
from registry.models import ModelKind
from registry.services import model_register
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db


def test_members_load_matches_the_profiles(seeded):
    members = data.members_load()
    profiles = {
        p.user_id: p for p in Profile.objects.select_related("user__preferences")
    }

    assert members.n == len(profiles) == 300
    assert np.all(np.diff(members.user_id) > 0)
    for position in (0, 150, 299):
        profile = profiles[int(members.user_id[position])]
        prefs = profile.user.preferences
        assert members.gender[position] == GENDER_CODES[profile.gender]
        assert members.interests[position] == profile.interests
        assert (
            members.birth_day[position]
            == (profile.birth_date - dt.date(1970, 1, 1)).days
        )
        assert members.created_ts[position] == profile.created_at.timestamp()
        expected_mask = sum(1 << GENDER_CODES[g] for g in prefs.seeking_genders)
        assert members.seeking_mask[position] == expected_mask
        assert members.min_age[position] == prefs.min_age
        if prefs.max_distance_km is None:
            assert np.isinf(members.max_distance_km[position])


def test_members_load_cutoff_and_missing_preferences():
    old = member()
    old.preferences.delete()
    cutoff = timezone.now()
    member()

    members = data.members_load(joined_before=cutoff)

    assert members.user_id.tolist() == [old.pk]
    assert members.seeking_mask[0] == 0b111
    assert members.max_age[0] == 99


def test_interactions_load_reads_every_row_with_kind_codes_and_times(seeded):
    loaded = data.interactions_load()
    rows = sorted(
        (a, t, KIND_CODES[k], c.timestamp())
        for a, t, k, c in Interaction.objects.values_list(
            "actor_id", "target_id", "kind", "created_at"
        )
    )

    got = sorted(
        zip(
            loaded.actor.tolist(),
            loaded.target.tolist(),
            loaded.kind.tolist(),
            loaded.ts.tolist(),
            strict=True,
        )
    )
    assert len(got) == len(rows) > 1000
    assert [g[:3] for g in got] == [r[:3] for r in rows]
    assert np.allclose([g[3] for g in got], [r[3] for r in rows], atol=1e-5)
    assert loaded.actor.dtype == np.int64 and loaded.kind.dtype == np.int8


def test_interactions_load_cutoff(seeded):
    cutoff = Interaction.objects.order_by("created_at")[100].created_at

    loaded = data.interactions_load(created_before=cutoff)

    assert loaded.m == Interaction.objects.filter(created_at__lt=cutoff).count()
    assert loaded.ts.max() < cutoff.timestamp()


def test_user_features_replace_swaps_a_version():
    a, b = member(), member()
    now = timezone.now()
    data.user_features_replace(
        feature_version="t1", rows=[(a.pk, {"x": 1})], computed_at=now
    )

    count = data.user_features_replace(
        feature_version="t1",
        rows=iter([(a.pk, {"x": 2, "s": 'tab\there \\ "q"'}), (b.pk, {"x": 3})]),
        computed_at=now,
    )

    assert count == 2
    rows = dict(UserFeatures.objects.values_list("user_id", "feature_set"))
    assert rows == {a.pk: {"x": 2, "s": 'tab\there \\ "q"'}, b.pk: {"x": 3}}


def test_embeddings_round_trip_and_newcomers():
    users = [member() for _ in range(3)]
    model = model_register(kind=ModelKind.EMBEDDING)
    taste = np.arange(6, dtype=np.float32).reshape(3, 2)
    appeal = -taste
    ids = np.array([u.pk for u in users[:2]], dtype=np.int64)

    data.user_embeddings_write(
        model_id=model.pk,
        user_ids=ids,
        vectors=data.embedding_pack(taste[:2], appeal[:2]),
        created_at=timezone.now(),
    )
    loaded_ids, vectors = data.user_embeddings_load(model_id=model.pk)
    loaded_taste, loaded_appeal = data.embedding_split(vectors)

    assert loaded_ids.tolist() == ids.tolist()
    assert np.array_equal(loaded_taste, taste[:2])
    assert np.array_equal(loaded_appeal, appeal[:2])
    assert UserEmbedding.objects.count() == 2
    assert data.members_without_embedding(model_id=model.pk) == [users[2].pk]


@pytest.mark.postgres
def test_postgres_copy_loader_agrees_with_the_orm(seeded):
    if connection.vendor != "postgresql":
        pytest.skip("COPY needs PostgreSQL")
    copied = data.interactions_load()
    rows = list(Interaction.objects.values_list("actor_id", "target_id", "kind"))

    assert copied.m == len(rows)
    assert sorted(
        zip(copied.actor.tolist(), copied.target.tolist(), strict=True)
    ) == sorted((a, t) for a, t, _ in rows)
    assert np.bincount(copied.kind, minlength=4).tolist() == [
        sum(1 for *_, k in rows if k == name) for name in KIND_CODES
    ]
