import datetime as dt

import pytest
from django.utils import timezone

from interactions.matching import match_is_mutual, match_pair, mutual_pairs
from interactions.models import Interaction, Match
from interactions.services import interaction_record
from tests.accounts.factories import member


def test_a_pair_is_stored_low_id_first():
    assert match_pair(7, 3) == (3, 7)
    assert match_pair(3, 7) == (3, 7)


@pytest.mark.parametrize(
    "kind, other, mutual",
    [
        ("like", "like", True),
        ("super_like", "like", True),
        ("like", "super_like", True),
        ("like", "dislike", False),
        ("block", "like", False),
        ("like", None, False),
    ],
)
def test_only_two_positive_verdicts_make_a_match(kind, other, mutual):
    assert match_is_mutual(kind, other) is mutual


def test_mutual_pairs_are_dated_by_their_later_like():
    verdicts = [
        (5, 2, "like", 10),
        (1, 2, "like", 11),
        (2, 5, "super_like", 30),  # 2-5 mutual at 30
        (2, 1, "dislike", 12),  # 1-2 not mutual
        (3, 4, "like", 50),  # no answer
        (9, 8, "block", 1),
        (8, 9, "like", 2),  # a block is not a like
    ]

    assert mutual_pairs(verdicts) == {(2, 5): 30}


@pytest.mark.django_db
def test_a_live_like_back_is_dated_now():
    alice, bob = member(), member()
    interaction_record(actor=alice, target_id=bob.pk, kind="like")
    before = timezone.now()

    interaction_record(actor=bob, target_id=alice.pk, kind="like")

    match = Match.objects.get()
    assert (match.user_low_id, match.user_high_id) == match_pair(alice.pk, bob.pk)
    assert before <= match.matched_at <= timezone.now()


@pytest.mark.django_db
def test_a_match_is_never_dated_before_the_like_it_answers():
    alice, bob = member(), member()
    ahead = timezone.now() + dt.timedelta(hours=1)  # an imported row dated ahead
    Interaction.objects.create(actor=alice, target=bob, kind="like")
    Interaction.objects.filter(actor=alice).update(created_at=ahead)

    interaction_record(actor=bob, target_id=alice.pk, kind="like")

    assert Match.objects.get().matched_at == ahead
