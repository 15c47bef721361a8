import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Preferences, Profile, User
from accounts.services import (
    MAX_INTERESTS,
    account_create,
    interests_normalize,
    profile_touch,
    profile_update,
)
from config.api import ApplicationError
from tests.accounts.factories import member


def create_kwargs(**overrides) -> dict:
    kwargs = {
        "username": "nina",
        "password": "a-long-unusual-passphrase",
        "display_name": "Nina",
        "birth_date": dt.date(1990, 1, 1),
        "gender": "nonbinary",
    }
    kwargs.update(overrides)
    return kwargs


def test_interests_are_trimmed_lowercased_and_deduplicated_in_order():
    assert interests_normalize(
        interests=["  Rock  Climbing", "rock climbing", "Art", "", "  ", "ART"]
    ) == ["rock climbing", "art"]


def test_interests_cap_counts_distinct_values():
    many_duplicates = ["Same"] * 100 + [f"t{n}" for n in range(MAX_INTERESTS - 1)]

    assert len(interests_normalize(interests=many_duplicates)) == MAX_INTERESTS
    with pytest.raises(ApplicationError) as error:
        interests_normalize(interests=[f"t{n}" for n in range(MAX_INTERESTS + 1)])
    assert error.value.field == "interests"


@pytest.mark.django_db
def test_account_create_is_all_or_nothing():
    with pytest.raises(ApplicationError) as error:
        account_create(**create_kwargs(preferences={"min_age": 50, "max_age": 20}))

    assert error.value.field == "preferences"
    assert not User.objects.exists()
    assert not Profile.objects.exists()


@pytest.mark.django_db
def test_account_create_rejects_half_a_location():
    with pytest.raises(ApplicationError) as error:
        account_create(**create_kwargs(latitude=10.0))

    assert error.value.field == "longitude"


@pytest.mark.django_db
def test_account_create_checks_coordinate_ranges():
    with pytest.raises(ApplicationError) as error:
        account_create(**create_kwargs(latitude=10.0, longitude=200.0))

    assert error.value.field == "longitude"


@pytest.mark.django_db
def test_account_create_rejects_unknown_preference_field():
    with pytest.raises(ApplicationError):
        account_create(**create_kwargs(preferences={"favourite_colour": "red"}))


@pytest.mark.django_db
def test_account_create_password_similar_to_username_is_refused():
    with pytest.raises(ApplicationError) as error:
        account_create(
            **create_kwargs(username="ninapassword", password="ninapassword")
        )

    assert error.value.field == "password"


@pytest.mark.django_db
def test_profile_update_leaves_untouched_fields_alone():
    user = member(display_name="Kim", bio="Old", preferences={"max_age": 40})

    profile_update(
        user=user,
        profile_fields={"bio": "New"},
        preferences_fields={"min_age": 21},
    )

    profile = Profile.objects.get(user=user)
    assert (profile.display_name, profile.bio) == ("Kim", "New")
    preferences = Preferences.objects.get(user=user)
    assert (preferences.min_age, preferences.max_age) == (21, 40)


@pytest.mark.django_db
def test_profile_update_rejects_unknown_fields():
    user = member()

    with pytest.raises(ApplicationError):
        profile_update(user=user, profile_fields={"user_id": 1})


@pytest.mark.django_db
def test_profile_update_creates_missing_preferences():
    user = member()
    Preferences.objects.filter(user=user).delete()

    profile_update(user=user, preferences_fields={"max_age": 30})

    assert Preferences.objects.get(user=user).max_age == 30


@pytest.mark.django_db
def test_profile_touch_writes_at_most_once_per_few_minutes():
    recently = timezone.now() - dt.timedelta(minutes=1)
    long_ago = timezone.now() - dt.timedelta(hours=2)
    fresh, stale = member(last_active_at=recently), member(last_active_at=long_ago)

    profile_touch(user_id=fresh.pk)
    profile_touch(user_id=stale.pk)

    assert Profile.objects.get(user=fresh).last_active_at == recently
    assert Profile.objects.get(user=stale).last_active_at > long_ago
