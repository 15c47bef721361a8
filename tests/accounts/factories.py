import datetime as dt

import factory

from accounts.models import Gender, Preferences, Profile, User

# Every factory-made user's password.
PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"member{n}")
    password = factory.django.Password(PASSWORD)


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    user = factory.SubFactory(UserFactory)
    display_name = factory.Faker("first_name")
    birth_date = dt.date(1995, 6, 15)
    gender = Gender.FEMALE
    city = "Berlin"
    latitude = 52.52
    longitude = 13.405
    bio = ""
    interests = factory.LazyFunction(lambda: ["hiking", "travel"])
    is_visible = True


class PreferencesFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Preferences

    user = factory.SubFactory(UserFactory)
    seeking_genders = factory.LazyFunction(lambda: [g.value for g in Gender])
    min_age = 18
    max_age = 99
    max_distance_km = None


def member(**profile_fields) -> User:
    """A member with a profile and open preferences; profile fields may be set."""
    preferences = profile_fields.pop("preferences", {})
    user = UserFactory()
    ProfileFactory(user=user, **profile_fields)
    PreferencesFactory(user=user, **preferences)
    return user
