import pytest

from interactions.services import interaction_record
from tests.accounts.factories import UserFactory, member
from tests.interactions.factories import InteractionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_interaction_changelist_searches_usernames_and_filters_kind(admin_client):
    wanted = InteractionFactory(actor=UserFactory(username="needle"), kind="super_like")
    InteractionFactory(actor=UserFactory(username="haystack"), kind="like")

    by_actor = admin_client.get("/admin/interactions/interaction/", {"q": "needle"})
    by_target = admin_client.get(
        "/admin/interactions/interaction/", {"q": wanted.target.username}
    )
    by_kind = admin_client.get(
        "/admin/interactions/interaction/", {"kind__exact": "super_like"}
    )

    for response in (by_actor, by_target, by_kind):
        assert response.status_code == 200
        assert response.context["cl"].result_count == 1


def test_interactions_cannot_be_added_or_edited_in_admin(admin_client):
    interaction = InteractionFactory()
    url = f"/admin/interactions/interaction/{interaction.pk}/change/"

    assert admin_client.get("/admin/interactions/interaction/add/").status_code == 403
    response = admin_client.post(url, {"kind": "block"})

    assert response.status_code == 403
    interaction.refresh_from_db()
    assert interaction.kind == "like"
    assert admin_client.get(url).status_code == 200


def test_match_changelist_filters_active_and_ended(admin_client):
    a, b, c = member(), member(), member()
    for other in (b, c):
        interaction_record(actor=a, target_id=other.pk, kind="like")
        interaction_record(actor=other, target_id=a.pk, kind="like")
    interaction_record(actor=a, target_id=c.pk, kind="block")

    active = admin_client.get("/admin/interactions/match/", {"state": "active"})
    ended = admin_client.get("/admin/interactions/match/", {"state": "ended"})
    everything = admin_client.get("/admin/interactions/match/")

    assert active.context["cl"].result_count == 1
    assert ended.context["cl"].result_count == 1
    assert everything.context["cl"].result_count == 2
    assert admin_client.get("/admin/interactions/match/add/").status_code == 403
