import pytest

from tests.accounts.factories import UserFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_user_change_page_shows_profile_and_preferences_inlines(admin_client):
    user = member(display_name="Inline Person")

    response = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert response.status_code == 200
    assert b"Inline Person" in response.content
    assert b"preferences-0-min_age" in response.content


def test_profile_changelist_searches_username_and_filters(admin_client):
    wanted = member(display_name="Wanted", city="Porto", gender="male")
    member(display_name="Other", city="Riga", gender="female")

    by_username = admin_client.get("/admin/accounts/profile/", {"q": wanted.username})
    by_city = admin_client.get("/admin/accounts/profile/", {"q": "porto"})
    by_gender = admin_client.get(
        "/admin/accounts/profile/", {"gender__exact": "male", "is_visible__exact": "1"}
    )

    for response in (by_username, by_city, by_gender):
        assert response.status_code == 200
        assert b"Wanted" in response.content
        assert b"Other" not in response.content


def test_user_changelist_loads(admin_client):
    member()

    assert admin_client.get("/admin/accounts/user/").status_code == 200
