import factory
from django.utils import timezone

from interactions.models import Interaction, InteractionKind, Match
from tests.accounts.factories import UserFactory


class InteractionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Interaction

    actor = factory.SubFactory(UserFactory)
    target = factory.SubFactory(UserFactory)
    kind = InteractionKind.LIKE
    context = factory.LazyFunction(dict)


class MatchFactory(factory.django.DjangoModelFactory):
    """Pass two users as ``user_low``/``user_high`` in ascending id order."""

    class Meta:
        model = Match

    user_low = factory.SubFactory(UserFactory)
    user_high = factory.SubFactory(UserFactory)
    matched_at = factory.LazyFunction(timezone.now)
