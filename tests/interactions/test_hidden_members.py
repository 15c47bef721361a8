"""A hidden or deactivated member is out of reach: not likeable, not matchable, not
in anyone's matches, and indistinguishable from an id that names nobody."""

import pytest

from accounts.models import Profile
from interactions.models import Interaction, Match
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

INTERACTIONS = "/api/v1/interactions/"
NOBODY = 2**62


def hide(user) -> None:
    Profile.objects.filter(user=user).update(is_visible=False)


def deactivate(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


@pytest.mark.parametrize("kind", ["like", "super_like", "dislike", "block"])
def test_a_hidden_member_cannot_be_interacted_with_and_looks_unknown(client_for, kind):
    actor, hidden = member(), member()
    hide(hidden)
    client = client_for(actor)

    to_hidden = client.post(
        INTERACTIONS, {"target": hidden.pk, "kind": kind}, format="json"
    )
    to_nobody = client.post(
        INTERACTIONS, {"target": NOBODY, "kind": kind}, format="json"
    )

    assert to_hidden.status_code == to_nobody.status_code == 400
    assert to_hidden.json() == to_nobody.json()
    assert not Interaction.objects.filter(actor=actor).exists()


def test_liking_back_a_hidden_member_makes_no_match(client_for):
    first, second = member(), member()
    client_for(second).post(
        INTERACTIONS, {"target": first.pk, "kind": "like"}, format="json"
    )
    hide(second)

    response = client_for(first).post(
        INTERACTIONS, {"target": second.pk, "kind": "like"}, format="json"
    )

    assert response.status_code == 400
    assert not Match.objects.exists()


@pytest.mark.parametrize("make_unreachable", [hide, deactivate])
def test_a_hidden_or_deactivated_member_leaves_the_others_matches(
    client_for, make_unreachable
):
    first, second, third = member(), member(), member()
    for a, b in ((first, second), (second, first), (first, third), (third, first)):
        client_for(a).post(
            INTERACTIONS, {"target": b.pk, "kind": "like"}, format="json"
        )
    assert client_for(first).get("/api/v1/matches/").json()["count"] == 2

    make_unreachable(second)

    listed = client_for(first).get("/api/v1/matches/").json()
    assert [m["member"]["user_id"] for m in listed["results"]] == [third.pk]
    # Seen as their profile is: 404.
    assert client_for(first).get(f"/api/v1/profiles/{second.pk}/").status_code == 404


def test_a_hidden_member_still_sees_their_own_matches(client_for):
    first, second = member(), member()
    client_for(first).post(
        INTERACTIONS, {"target": second.pk, "kind": "like"}, format="json"
    )
    client_for(second).post(
        INTERACTIONS, {"target": first.pk, "kind": "like"}, format="json"
    )
    hide(first)

    listed = client_for(first).get("/api/v1/matches/").json()

    assert [m["member"]["user_id"] for m in listed["results"]] == [second.pk]


def test_a_match_comes_back_when_the_member_shows_their_profile_again(client_for):
    first, second = member(), member()
    client_for(first).post(
        INTERACTIONS, {"target": second.pk, "kind": "like"}, format="json"
    )
    client_for(second).post(
        INTERACTIONS, {"target": first.pk, "kind": "like"}, format="json"
    )
    hide(second)
    assert client_for(first).get("/api/v1/matches/").json()["count"] == 0

    client_for(second).patch(
        "/api/v1/profiles/me/", {"is_visible": True}, format="json"
    )

    assert client_for(first).get("/api/v1/matches/").json()["count"] == 1
