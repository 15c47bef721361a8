import pytest
from django.db import IntegrityError, transaction

from interactions.models import Interaction, Match
from interactions.services import interaction_record
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", ["lik", "", "LIKE", "block "])
def test_the_database_refuses_an_unknown_interaction_kind(kind):
    actor, target = member(), member()
    interaction_record(actor=actor, target_id=target.pk, kind="like")

    with pytest.raises(IntegrityError), transaction.atomic():
        Interaction.objects.filter(actor=actor).update(kind=kind)

    assert Interaction.objects.get(actor=actor).kind == "like"


def test_the_database_refuses_an_unknown_match_end_reason():
    first, second = member(), member()
    interaction_record(actor=first, target_id=second.pk, kind="like")
    interaction_record(actor=second, target_id=first.pk, kind="like")

    with pytest.raises(IntegrityError), transaction.atomic():
        Match.objects.update(end_reason="bored")
