import pytest
from django.core.cache import cache

from accounts.models import Profile, User
from interactions.models import Interaction, InteractionKind, Match, MatchEndReason
from tests.accounts.factories import UserFactory, member
from tests.interactions.factories import InteractionFactory

pytestmark = pytest.mark.django_db

INTERACTIONS_URL = "/api/v1/interactions/"
MATCHES_URL = "/api/v1/matches/"


def pair_match(a: User, b: User) -> Match | None:
    low, high = sorted((a.pk, b.pk))
    return Match.objects.filter(user_low_id=low, user_high_id=high).first()


@pytest.fixture
def alice():
    return member(display_name="Alice", city="Lyon")


@pytest.fixture
def bob():
    return member(display_name="Bob", city="Nantes")


@pytest.fixture
def post(client_for):
    """Post an interaction from ``actor`` to ``target`` through the API."""

    def send(actor, target, kind="like", **extra):
        body = {"target": getattr(target, "pk", target), "kind": kind, **extra}
        return client_for(actor).post(INTERACTIONS_URL, body, format="json")

    return send


# --- Recording --------------------------------------------------------------------
def test_first_interaction_is_201_with_matched_false(post, alice, bob):
    response = post(alice, bob, "like", context={"source": "recs", "position": 3})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["target"] == bob.pk
    assert body["kind"] == "like"
    assert body["context"] == {"source": "recs", "position": 3}
    assert body["matched"] is False
    interaction = Interaction.objects.get(actor=alice, target=bob)
    assert body["id"] == interaction.pk
    assert interaction.context == {"source": "recs", "position": 3}


def test_changing_mind_updates_the_row_with_200(post, alice, bob):
    first = post(alice, bob, "like")

    second = post(alice, bob, "dislike", context={"source": "profile"})

    assert first.status_code == 201
    assert second.status_code == 200, second.content
    assert second.json()["id"] == first.json()["id"]
    interaction = Interaction.objects.get(actor=alice, target=bob)
    assert interaction.kind == InteractionKind.DISLIKE
    assert interaction.context == {"source": "profile"}
    assert Interaction.objects.count() == 1


def test_repeating_the_same_interaction_is_200_and_one_row(post, alice, bob):
    assert post(alice, bob, "like").status_code == 201
    assert post(alice, bob, "like").status_code == 200
    assert Interaction.objects.count() == 1


def test_context_defaults_to_empty_object(post, alice, bob):
    response = post(alice, bob, "super_like")

    assert response.status_code == 201
    assert response.json()["context"] == {}


def test_mutual_like_creates_one_match(post, alice, bob):
    assert post(alice, bob, "like").json()["matched"] is False

    response = post(bob, alice, "super_like")

    assert response.status_code == 201
    assert response.json()["matched"] is True
    match = pair_match(alice, bob)
    assert match.is_active
    assert match.user_low_id < match.user_high_id
    assert Match.objects.count() == 1


def test_liking_again_keeps_the_single_match(post, alice, bob):
    post(alice, bob, "like")
    post(bob, alice, "like")

    response = post(alice, bob, "super_like")

    assert response.json()["matched"] is True
    assert Match.objects.count() == 1


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("dislike", MatchEndReason.UNLIKE), ("block", MatchEndReason.BLOCK)],
)
def test_dislike_or_block_ends_the_match(post, alice, bob, kind, reason):
    post(alice, bob, "like")
    post(bob, alice, "like")

    response = post(bob, alice, kind)

    assert response.status_code == 200
    assert response.json()["matched"] is False
    match = pair_match(alice, bob)
    assert match.ended_at is not None
    assert match.end_reason == reason


def test_renewed_mutual_like_reopens_the_ended_match(post, alice, bob):
    post(alice, bob, "like")
    post(bob, alice, "like")
    post(alice, bob, "dislike")
    ended = pair_match(alice, bob)

    response = post(alice, bob, "like")

    assert response.json()["matched"] is True
    match = pair_match(alice, bob)
    assert match.pk == ended.pk
    assert match.ended_at is None
    assert match.end_reason == ""
    assert match.matched_at > ended.matched_at
    assert Match.objects.count() == 1


def test_one_sided_like_after_unlike_does_not_reopen(post, alice, bob):
    post(alice, bob, "like")
    post(bob, alice, "like")
    post(bob, alice, "dislike")

    response = post(alice, bob, "super_like")

    assert response.json()["matched"] is False
    assert pair_match(alice, bob).ended_at is not None


def test_dislike_without_match_creates_none(post, alice, bob):
    post(alice, bob, "dislike")
    post(bob, alice, "like")

    assert Match.objects.count() == 0


def test_blocked_member_cannot_interact_with_blocker(post, alice, bob):
    post(bob, alice, "block")

    response = post(alice, bob, "like")

    assert response.status_code == 400
    assert "target" in response.json()["fields"]
    assert not Interaction.objects.filter(actor=alice).exists()


def test_block_is_reported_exactly_like_an_unknown_member(post, alice, bob):
    post(bob, alice, "block")

    blocked = post(alice, bob, "like").json()
    unknown = post(alice, 10**9, "like").json()

    assert blocked == unknown


def test_blocker_may_change_their_mind(post, alice, bob):
    post(alice, bob, "block")

    response = post(alice, bob, "like")

    assert response.status_code == 200
    assert Interaction.objects.get(actor=alice, target=bob).kind == "like"


def test_interaction_with_inactive_member_is_400(post, alice, bob):
    User.objects.filter(pk=bob.pk).update(is_active=False)

    response = post(alice, bob, "like")

    assert response.status_code == 400
    assert "target" in response.json()["fields"]


def test_self_interaction_is_400(post, alice):
    response = post(alice, alice, "like")

    assert response.status_code == 400
    assert "target" in response.json()["fields"]
    assert "target" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "like"}, "target"),
        ({"target": "BOB", "kind": "like"}, "target"),
        ({"target": None, "kind": "like"}, "target"),
        ({"target": 0, "kind": "like"}, "target"),
        ({"target": 10**30, "kind": "like"}, "target"),
        ({"target": 12.5, "kind": "like"}, "target"),
        ({"target": "TARGET", "kind": "love"}, "kind"),
        ({"target": "TARGET"}, "kind"),
        ({"target": "TARGET", "kind": ["like"]}, "kind"),
        ({"target": "TARGET", "kind": "like", "context": [1, 2]}, "context"),
        ({"target": "TARGET", "kind": "like", "context": "recs"}, "context"),
        (
            {"target": "TARGET", "kind": "like", "context": {"pad": "x" * 5000}},
            "context",
        ),
    ],
)
def test_invalid_interaction_is_400_naming_the_field(
    client_for, alice, bob, body, field
):
    if body.get("target") == "TARGET":
        body["target"] = bob.pk

    response = client_for(alice).post(INTERACTIONS_URL, body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert field in response.json()["message"]
    assert not Interaction.objects.exists()


def test_context_null_is_stored_as_empty_object(post, alice, bob):
    response = post(alice, bob, "like", context=None)

    assert response.status_code == 201
    assert Interaction.objects.get().context == {}


def test_malformed_json_is_400(client_for, alice):
    response = client_for(alice).post(
        INTERACTIONS_URL, '{"target": 1, "kind": ', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_non_json_content_type_is_415(client_for, alice, bob):
    response = client_for(alice).post(
        INTERACTIONS_URL, {"target": bob.pk, "kind": "like"}
    )

    assert response.status_code == 415


def test_interaction_invalidates_actor_recommendation_cache(
    post, alice, bob, django_capture_on_commit_callbacks
):
    cache.set(f"recs:{alice.pk}", ["stale"])
    cache.set(f"recs:{bob.pk}", ["kept"])

    with django_capture_on_commit_callbacks(execute=True):
        post(alice, bob, "like")

    assert cache.get(f"recs:{alice.pk}") is None
    assert cache.get(f"recs:{bob.pk}") == ["kept"]


def test_block_also_invalidates_blocked_member_cache(
    post, alice, bob, django_capture_on_commit_callbacks
):
    cache.set(f"recs:{bob.pk}", ["shows alice"])

    with django_capture_on_commit_callbacks(execute=True):
        post(alice, bob, "block")

    assert cache.get(f"recs:{bob.pk}") is None


def test_failed_interaction_does_not_invalidate_cache(
    post, alice, django_capture_on_commit_callbacks
):
    cache.set(f"recs:{alice.pk}", ["fresh"])

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post(alice, alice, "like")

    assert callbacks == []
    assert cache.get(f"recs:{alice.pk}") == ["fresh"]


def test_interaction_marks_actor_active(post, bob):
    actor = member(last_active_at=None)

    post(actor, bob, "like")

    assert Profile.objects.get(user=actor).last_active_at is not None


# --- Listing own interactions -----------------------------------------------------
def test_list_shows_only_own_interactions_newest_first(client_for, alice, bob):
    carol = member()
    first = InteractionFactory(actor=alice, target=bob, kind="like")
    second = InteractionFactory(actor=alice, target=carol, kind="block")
    InteractionFactory(actor=bob, target=alice, kind="like")

    response = client_for(alice).get(INTERACTIONS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["id"] for row in body["results"]] == [second.pk, first.pk]
    assert {row["target"] for row in body["results"]} == {bob.pk, carol.pk}


def test_a_member_cannot_see_someone_elses_interactions(client_for, alice, bob):
    InteractionFactory(actor=bob, target=member(), kind="like")

    body = client_for(alice).get(INTERACTIONS_URL, {"actor": bob.pk}).json()

    assert body["count"] == 0


def test_list_filters_by_kind(client_for, alice):
    InteractionFactory(actor=alice, kind="like")
    InteractionFactory(actor=alice, kind="block")
    liked = InteractionFactory(actor=alice, kind="like")

    body = client_for(alice).get(INTERACTIONS_URL, {"kind": "like"}).json()

    assert body["count"] == 2
    assert body["results"][0]["id"] == liked.pk
    assert {row["kind"] for row in body["results"]} == {"like"}


def test_list_with_invalid_kind_filter_is_400(client_for, alice):
    response = client_for(alice).get(INTERACTIONS_URL, {"kind": "love"})

    assert response.status_code == 400
    assert "kind" in response.json()["fields"]


def test_list_is_paginated(client_for, alice):
    InteractionFactory.create_batch(25, actor=alice)
    client = client_for(alice)

    first = client.get(INTERACTIONS_URL).json()
    second = client.get(INTERACTIONS_URL, {"page": 2}).json()
    small = client.get(INTERACTIONS_URL, {"page_size": 5}).json()

    assert first["count"] == 25
    assert len(first["results"]) == 20
    assert first["next"] is not None
    assert len(second["results"]) == 5
    assert second["next"] is None
    assert len(small["results"]) == 5
    ids = [row["id"] for row in first["results"] + second["results"]]
    assert len(set(ids)) == 25


def test_list_page_out_of_range_is_404(client_for, alice):
    response = client_for(alice).get(INTERACTIONS_URL, {"page": 99})

    assert response.status_code == 404


# --- Matches ----------------------------------------------------------------------
def test_matches_lists_active_matches_with_the_other_member(post, client_for):
    alice = member(display_name="Alice", city="Lyon")
    bob = member(display_name="Bob", city="Nantes")
    carol = member(display_name="Carol", city="Lille")
    post(alice, bob, "like")
    post(bob, alice, "like")
    post(carol, alice, "like")
    post(alice, carol, "like")

    body = client_for(alice).get(MATCHES_URL).json()

    assert body["count"] == 2
    members = [row["member"] for row in body["results"]]
    assert members[0] == {
        "user_id": carol.pk,
        "display_name": "Carol",
        "age": Profile.objects.get(user=carol).age,
        "city": "Lille",
    }
    assert members[1]["user_id"] == bob.pk
    assert all(row["matched_at"] for row in body["results"])
    bob_view = client_for(bob).get(MATCHES_URL).json()
    assert [row["member"]["user_id"] for row in bob_view["results"]] == [alice.pk]


def test_matches_exclude_ended_and_blocked(post, client_for, alice, bob):
    carol = member()
    for other in (bob, carol):
        post(alice, other, "like")
        post(other, alice, "like")
    post(bob, alice, "block")
    post(alice, carol, "dislike")

    body = client_for(alice).get(MATCHES_URL).json()

    assert body["count"] == 0
    assert client_for(bob).get(MATCHES_URL).json()["count"] == 0


def test_matches_are_private_to_their_members(post, client_for, alice, bob):
    post(alice, bob, "like")
    post(bob, alice, "like")

    assert client_for(member()).get(MATCHES_URL).json()["count"] == 0


def test_matches_are_paginated(client_for, post, alice):
    for _ in range(22):
        other = member()
        post(alice, other, "like")
        post(other, alice, "like")

    first = client_for(alice).get(MATCHES_URL).json()
    second = client_for(alice).get(MATCHES_URL, {"page": 2}).json()

    assert first["count"] == 22
    assert len(first["results"]) == 20
    assert len(second["results"]) == 2


def test_interaction_with_an_account_without_profile_is_400(post, alice):
    staff = UserFactory(is_staff=True)

    response = post(alice, staff, "like")

    assert response.status_code == 400
    assert response.json()["fields"]["target"] == ["No active member with this id."]
    assert not Interaction.objects.filter(target=staff).exists()
