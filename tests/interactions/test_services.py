import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.api import ApplicationError
from interactions.models import Interaction, InteractionKind, Match
from interactions.services import MAX_CONTEXT_BYTES, interaction_record
from tests.accounts.factories import member
from tests.interactions.factories import InteractionFactory, MatchFactory


# --- Database constraints: the last line of defence, independent of services -----
@pytest.mark.django_db
def test_database_refuses_a_second_row_for_the_same_pair():
    interaction = InteractionFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        Interaction.objects.create(
            actor=interaction.actor, target=interaction.target, kind="dislike"
        )


@pytest.mark.django_db
def test_database_refuses_self_interaction():
    user = member()

    with pytest.raises(IntegrityError), transaction.atomic():
        Interaction.objects.create(actor=user, target=user, kind="like")


@pytest.mark.django_db
def test_database_refuses_unordered_or_duplicate_match():
    match = MatchFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        MatchFactory(user_low=match.user_high, user_high=match.user_low)
    with pytest.raises(IntegrityError), transaction.atomic():
        MatchFactory(user_low=match.user_low, user_high=match.user_high)


# --- interaction_record -----------------------------------------------------------
@pytest.mark.django_db
def test_record_reports_created_then_updated():
    actor, target = member(), member()

    first = interaction_record(actor=actor, target_id=target.pk, kind="like")
    second = interaction_record(actor=actor, target_id=target.pk, kind="block")

    assert (first.created, second.created) == (True, False)
    assert first.interaction.pk == second.interaction.pk
    assert Interaction.objects.get().kind == InteractionKind.BLOCK


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "wink"}, "kind"),
        ({"context": ["not", "an", "object"]}, "context"),
        ({"context": {"blob": "x" * MAX_CONTEXT_BYTES}}, "context"),
        ({"context": {"when": object()}}, "context"),
        ({"target_id": 10**9}, "target"),
    ],
)
def test_record_rejects_bad_input(kwargs, field):
    actor, target = member(), member()
    arguments = {"target_id": target.pk, "kind": "like", **kwargs}

    with pytest.raises(ApplicationError) as error:
        interaction_record(actor=actor, **arguments)

    assert error.value.field == field
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_record_rejects_self():
    user = member()

    with pytest.raises(ApplicationError) as error:
        interaction_record(actor=user, target_id=user.pk, kind="like")

    assert error.value.field == "target"


@pytest.mark.django_db
def test_record_ends_only_an_active_match_and_keeps_its_reason():
    a, b = member(), member()
    interaction_record(actor=a, target_id=b.pk, kind="like")
    interaction_record(actor=b, target_id=a.pk, kind="like")
    interaction_record(actor=a, target_id=b.pk, kind="block")
    ended_at = Match.objects.get().ended_at

    interaction_record(actor=a, target_id=b.pk, kind="dislike")

    match = Match.objects.get()
    assert match.end_reason == "block"
    assert match.ended_at == ended_at


# --- Concurrency (real PostgreSQL row locks) --------------------------------------
@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")


def run_at_once(calls):
    """Run the callables on their own threads, released together by a barrier;
    return their exceptions (none expected)."""
    barrier = threading.Barrier(len(calls))
    errors = []

    def run(call):
        try:
            barrier.wait()
            call()
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.postgres
def test_simultaneous_mutual_likes_make_exactly_one_match(
    postgres_only, transactional_db
):
    a, b = member(), member()
    calls = [
        (
            lambda actor, target: (
                lambda: interaction_record(
                    actor=actor, target_id=target.pk, kind="like"
                )
            )
        )(*((a, b) if n % 2 == 0 else (b, a)))
        for n in range(8)
    ]

    errors = run_at_once(calls)

    assert errors == []
    assert Interaction.objects.filter(actor=a, target=b).count() == 1
    assert Interaction.objects.filter(actor=b, target=a).count() == 1
    assert Match.objects.count() == 1
    assert Match.objects.get().is_active


@pytest.mark.postgres
def test_parallel_posts_of_the_same_pair_through_the_api(
    postgres_only, transactional_db
):
    a, b = member(), member()
    token = Token.objects.create(user=a).key
    responses = []

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        responses.append(
            client.post(
                "/api/v1/interactions/",
                {"target": b.pk, "kind": "like"},
                format="json",
            )
        )

    errors = run_at_once([post] * 8)

    assert errors == []
    assert sorted(response.status_code for response in responses) == [200] * 7 + [201]
    assert Interaction.objects.filter(actor=a, target=b).count() == 1
    assert Match.objects.count() == 0


@pytest.mark.postgres
def test_many_pairs_at_once_each_get_one_match(postgres_only, transactional_db):
    hub = member()
    others = [member() for _ in range(4)]
    calls = []
    for other in others:
        calls.append(
            lambda other=other: interaction_record(
                actor=hub, target_id=other.pk, kind="super_like"
            )
        )
        calls.append(
            lambda other=other: interaction_record(
                actor=other, target_id=hub.pk, kind="like"
            )
        )

    errors = run_at_once(calls)

    assert errors == []
    assert Interaction.objects.count() == 8
    assert Match.objects.filter(ended_at__isnull=True).count() == 4
