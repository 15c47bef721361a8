"""Hard filters: one test per rule, each on a candidate every source would put first.

The scene (``scene_build``): a viewer and "Tom", who shares all her interests, lives
in her city and is the most liked member lately. The control test shows he is
recommended first when nothing forbids him; each rule test changes one thing and
checks he is never shown, whatever the sources or the model say.
"""

import datetime as dt

import numpy as np
import pytest

from accounts.models import Gender, Preferences, Profile, User
from interactions.models import Interaction
from recommender.filters import (
    member_facts_load,
    pair_allowed,
    viewer_load,
)
from recommender.ml.filters import population_mask
from recommender.serving.holder import bundle_holder
from tests.accounts.factories import member
from tests.recommender.serving_fixtures import (
    MUNICH,
    scene_build,
    shown_ids,
    years_ago,
)

pytestmark = pytest.mark.django_db


def _compute(engine, user, limit=20):
    return engine.recommendations_compute(user=user, limit=limit)


def test_the_tempting_candidate_comes_first_when_nothing_forbids_him(engine):
    scene = scene_build()

    result = _compute(engine, scene.viewer)

    assert result.results[0].user_id == scene.tempting.pk
    assert set(shown_ids(result)) == {scene.tempting.pk, *(o.pk for o in scene.others)}
    assert result.strategy == "content_popularity"  # no trained model yet
    assert result.results[0].reason == "likes hiking and travel like you"


def _hide(scene):
    Profile.objects.filter(user=scene.tempting).update(is_visible=False)


def _deactivate_account(scene):
    User.objects.filter(pk=scene.tempting.pk).update(is_active=False)


def _blocked_the_viewer(scene):
    Interaction.objects.create(actor=scene.tempting, target=scene.viewer, kind="block")


def _blocked_by_the_viewer(scene):
    Interaction.objects.create(actor=scene.viewer, target=scene.tempting, kind="block")


def _already_disliked(scene):
    Interaction.objects.create(
        actor=scene.viewer, target=scene.tempting, kind="dislike"
    )


def _already_liked(scene):
    Interaction.objects.create(actor=scene.viewer, target=scene.tempting, kind="like")


def _already_super_liked(scene):
    Interaction.objects.create(
        actor=scene.viewer, target=scene.tempting, kind="super_like"
    )


def _gender_she_does_not_seek(scene):
    Profile.objects.filter(user=scene.tempting).update(gender=Gender.NONBINARY)


def _he_does_not_seek_her_gender(scene):
    Preferences.objects.filter(user=scene.tempting).update(seeking_genders=["male"])


def _too_old_for_her(scene):
    Profile.objects.filter(user=scene.tempting).update(birth_date=years_ago(36))


def _too_young_for_her(scene):
    Profile.objects.filter(user=scene.tempting).update(birth_date=years_ago(24))


def _she_is_too_old_for_him(scene):
    Preferences.objects.filter(user=scene.tempting).update(min_age=20, max_age=29)


def _she_is_too_young_for_him(scene):
    Preferences.objects.filter(user=scene.tempting).update(min_age=31, max_age=40)


def _too_far_for_her(scene):
    Profile.objects.filter(user=scene.tempting).update(
        latitude=MUNICH[0], longitude=MUNICH[1], city="Munich"
    )
    Preferences.objects.filter(user=scene.viewer).update(max_distance_km=100)


def _too_far_for_him(scene):
    Profile.objects.filter(user=scene.tempting).update(
        latitude=MUNICH[0], longitude=MUNICH[1], city="Munich"
    )
    Preferences.objects.filter(user=scene.tempting).update(max_distance_km=100)


RULES = [
    _hide,
    _deactivate_account,
    _blocked_the_viewer,
    _blocked_by_the_viewer,
    _already_disliked,
    _already_liked,
    _already_super_liked,
    _gender_she_does_not_seek,
    _he_does_not_seek_her_gender,
    _too_old_for_her,
    _too_young_for_her,
    _she_is_too_old_for_him,
    _she_is_too_young_for_him,
    _too_far_for_her,
    _too_far_for_him,
]


@pytest.mark.parametrize("violate", RULES, ids=lambda f: f.__name__.strip("_"))
def test_a_candidate_breaking_a_rule_is_never_shown(engine, violate):
    scene = scene_build()
    violate(scene)

    result = _compute(engine, scene.viewer)

    assert scene.tempting.pk not in shown_ids(result)
    assert result.results  # the others are still recommended


@pytest.mark.parametrize("violate", RULES, ids=lambda f: f.__name__.strip("_"))
def test_a_rule_broken_after_the_members_were_loaded_still_applies(engine, violate):
    """The in-memory members are minutes old; the final database check is not."""
    scene = scene_build()
    assert _compute(engine, scene.viewer).results[0].user_id == scene.tempting.pk
    Interaction.objects.filter(actor=scene.viewer).delete()  # keep the scene as is

    violate(scene)
    result = _compute(engine, scene.viewer)

    assert scene.tempting.pk not in shown_ids(result)


def test_the_member_is_never_recommended_to_themself(engine):
    scene = scene_build()
    # She would be her own perfect match: same interests, and now she seeks women.
    Preferences.objects.filter(user=scene.viewer).update(
        seeking_genders=["female", "male"]
    )
    Preferences.objects.filter(user=scene.tempting).update(seeking_genders=[])

    result = _compute(engine, scene.viewer, limit=100)

    assert scene.viewer.pk not in shown_ids(result)
    assert scene.tempting.pk in shown_ids(result)


def test_unknown_coordinates_do_not_break_a_distance_limit(engine):
    scene = scene_build()
    Preferences.objects.filter(user=scene.viewer).update(max_distance_km=10)
    Profile.objects.filter(user=scene.tempting).update(latitude=None, longitude=None)

    assert _compute(engine, scene.viewer).results[0].user_id == scene.tempting.pk


def test_no_preferences_row_means_open_preferences(engine):
    scene = scene_build()
    Preferences.objects.filter(user=scene.tempting).delete()

    assert _compute(engine, scene.viewer).results[0].user_id == scene.tempting.pk


def test_the_mask_and_the_database_check_agree_on_random_members(engine):
    """The vectorised mask over the loaded members and the row-by-row check of
    fresh rows implement the same rules: they agree on every pair."""
    rng = np.random.default_rng(3)
    genders = [Gender.FEMALE, Gender.MALE, Gender.NONBINARY]
    users = []
    for i in range(40):
        lat = None if i % 7 == 0 else 48 + rng.uniform(0, 6)
        users.append(
            member(
                gender=genders[int(rng.integers(0, 3))],
                birth_date=years_ago(int(rng.integers(18, 60)), days=int(i * 9)),
                latitude=lat,
                longitude=None if lat is None else 2 + rng.uniform(0, 14),
                is_visible=bool(i % 11),
                preferences={
                    "seeking_genders": [g.value for g in genders if rng.random() < 0.6],
                    "min_age": int(rng.integers(18, 35)),
                    "max_age": int(rng.integers(35, 70)),
                    "max_distance_km": None if i % 3 else int(rng.integers(50, 600)),
                },
            )
        )
    for _ in range(30):
        a, b = rng.choice(len(users), size=2, replace=False)
        Interaction.objects.get_or_create(
            actor=users[a], target=users[b], defaults={"kind": "block"}
        )
    _compute(engine, users[0])  # loads the members
    population = bundle_holder().bundle.population
    today = dt.date.today()
    facts = member_facts_load(user_ids=[u.pk for u in users])

    disagreements = []
    for viewer_user in users:
        viewer = viewer_load(user_id=viewer_user.pk)
        mask = population_mask(
            population.filters, viewer.members, viewer.excluded, today=today
        )
        for candidate in users:
            row = population.store.index_of(np.array([candidate.pk]))[0]
            by_mask = bool(mask[row])
            by_rows = pair_allowed(
                viewer.facts, facts[candidate.pk], today=today, excluded=viewer.excluded
            )
            if by_mask != by_rows:
                disagreements.append((viewer_user.pk, candidate.pk, by_mask))

    assert disagreements == []
