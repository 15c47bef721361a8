"""Members' data rights through the HTTP API: deleting one's account
(``DELETE /api/v1/accounts/me/``) and exporting one's data
(``GET /api/v1/accounts/me/export/``)."""

import json
import threading
import time

import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from accounts.models import AccountDeletion, Preferences, Profile, User
from interactions.models import Interaction, InteractionKind, Match
from recommender.models import RecommendationLog, UserEmbedding, UserFeatures
from registry.models import ModelKind
from tests.accounts.factories import PASSWORD, UserFactory, member
from tests.interactions.factories import InteractionFactory, MatchFactory
from tests.recommender import fakes
from tests.recommender.factories import (
    RecommendationLogFactory,
    UserEmbeddingFactory,
    UserFeaturesFactory,
)
from tests.recommender.serving_fixtures import scene_build, shown_ids
from tests.registry.factories import MLModelFactory

pytestmark = pytest.mark.django_db

ME_URL = "/api/v1/accounts/me/"
EXPORT_URL = "/api/v1/accounts/me/export/"
RECOMMENDATIONS_URL = "/api/v1/recommendations/"


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def delete_account(client: APIClient, password=PASSWORD):
    body = {} if password is None else {"password": password}
    return client.delete(ME_URL, body, format="json")


def matched(a: User, b: User) -> Match:
    low, high = sorted((a, b), key=lambda user: user.pk)
    InteractionFactory(actor=a, target=b, kind=InteractionKind.LIKE)
    InteractionFactory(actor=b, target=a, kind=InteractionKind.LIKE)
    return MatchFactory(user_low=low, user_high=high)


def rows_about(user_id: int) -> dict[str, int]:
    """How many rows of each kind still name ``user_id``."""
    return {
        "user": User.objects.filter(pk=user_id).count(),
        "profile": Profile.objects.filter(user_id=user_id).count(),
        "preferences": Preferences.objects.filter(user_id=user_id).count(),
        "interactions": Interaction.objects.filter(
            Q(actor_id=user_id) | Q(target_id=user_id)
        ).count(),
        "matches": Match.objects.filter(
            Q(user_low_id=user_id) | Q(user_high_id=user_id)
        ).count(),
        "impressions": RecommendationLog.objects.filter(
            Q(user_id=user_id) | Q(shown_user_id=user_id)
        ).count(),
        "features": UserFeatures.objects.filter(user_id=user_id).count(),
        "embeddings": UserEmbedding.objects.filter(user_id=user_id).count(),
        "tokens": Token.objects.filter(user_id=user_id).count(),
    }


@pytest.fixture
def leaving():
    """A member with a row of every kind: interactions given and received, a
    match, impressions both ways, features and vectors under two versions."""
    user, other, admirer = member(), member(), member()
    matched(user, other)
    InteractionFactory(actor=admirer, target=user, kind=InteractionKind.LIKE)
    InteractionFactory(actor=user, target=admirer, kind=InteractionKind.DISLIKE)
    RecommendationLogFactory(user=user, shown_user=other)
    RecommendationLogFactory(user=admirer, shown_user=user)
    UserFeaturesFactory(user=user)
    for version in (1, 2):
        model = MLModelFactory(kind=ModelKind.EMBEDDING, version=version)
        UserEmbeddingFactory(user=user, model=model)
        UserEmbeddingFactory(user=other, model=model)
    Token.objects.get_or_create(user=user)
    return user


# --- deleting the account -----------------------------------------------------------


def test_deleting_the_account_removes_every_row_about_the_member(leaving):
    user_id = leaving.pk
    others_before = {
        "interactions": Interaction.objects.exclude(
            Q(actor_id=user_id) | Q(target_id=user_id)
        ).count(),
        "embeddings": UserEmbedding.objects.exclude(user_id=user_id).count(),
    }
    assert all(count for count in rows_about(user_id).values())

    response = delete_account(client_for(leaving))

    assert response.status_code == 204, response.content
    assert rows_about(user_id) == dict.fromkeys(rows_about(user_id), 0)
    # Nobody else lost anything.
    assert others_before == {
        "interactions": Interaction.objects.count(),
        "embeddings": UserEmbedding.objects.count(),
    }


def test_the_deletion_is_audited_without_personal_data(leaving):
    user_id, username = leaving.pk, leaving.username

    delete_account(client_for(leaving))

    audit = AccountDeletion.objects.get()
    assert audit.user_id == user_id
    assert audit.requested_by == "member"
    assert audit.actor is None
    assert audit.rows_deleted["accounts.User"] == 1
    assert audit.rows_deleted["interactions.Interaction"] == 4
    assert audit.rows_deleted["interactions.Match"] == 1
    assert audit.rows_deleted["recommender.RecommendationLog"] == 2
    assert audit.rows_deleted["recommender.UserEmbedding"] == 2
    assert username not in json.dumps(audit.rows_deleted) + str(audit)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": "not-my-password"}, "password: Incorrect password."),
        ({"password": ""}, "password: This field may not be blank."),
        ({}, "password: This field is required."),
        ({"password": 12345678}, "password: Not a valid string."),
        ([PASSWORD], "Invalid data. Expected a dictionary, but got list."),
    ],
)
def test_a_wrong_or_missing_password_is_a_400_and_deletes_nothing(
    leaving, body, message
):
    before = rows_about(leaving.pk)

    response = client_for(leaving).delete(ME_URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["message"] == message
    assert response.json()["code"] == "invalid"
    assert rows_about(leaving.pk) == before
    assert not AccountDeletion.objects.exists()


def test_password_guesses_are_throttled_like_log_ins(leaving, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "3/minute"})
    client = client_for(leaving)

    guesses = [delete_account(client, password=f"guess-{n}") for n in range(4)]

    assert [r.status_code for r in guesses] == [400, 400, 400, 429]
    assert int(guesses[-1]["Retry-After"]) > 0
    assert guesses[-1].json()["code"] == "throttled"
    assert delete_account(client).status_code == 429  # even the right one, for now
    assert User.objects.filter(pk=leaving.pk).exists()


def test_a_staff_account_is_not_deleted_through_the_api():
    staff = UserFactory(is_staff=True)

    response = delete_account(client_for(staff))

    assert response.status_code == 403
    assert "admin" in response.json()["message"]
    assert User.objects.filter(pk=staff.pk).exists()


def test_deleting_needs_authentication():
    user = member()

    response = APIClient().delete(ME_URL, {"password": PASSWORD}, format="json")

    assert response.status_code == 401
    assert User.objects.filter(pk=user.pk).exists()


def test_after_deletion_the_token_no_longer_works_and_a_second_delete_is_401(
    leaving,
):
    client = client_for(leaving)
    assert delete_account(client).status_code == 204

    again = delete_account(client)

    assert again.status_code == 401
    assert again.json()["code"] in ("authentication_failed", "not_authenticated")
    assert client.get(reverse("profile-me")).status_code == 401


def test_a_deleted_member_is_gone_from_the_others_views(leaving):
    other = Match.objects.get().user_high
    other = other if other.pk != leaving.pk else Match.objects.get().user_low
    viewer = client_for(other)
    assert viewer.get(f"/api/v1/profiles/{leaving.pk}/").status_code == 200
    assert viewer.get("/api/v1/matches/").json()["count"] == 1

    delete_account(client_for(leaving))

    assert viewer.get(f"/api/v1/profiles/{leaving.pk}/").status_code == 404
    assert viewer.get("/api/v1/matches/").json()["count"] == 0
    assert viewer.get("/api/v1/interactions/").json()["count"] == 0
    liked = viewer.post(
        "/api/v1/interactions/",
        {"target": leaving.pk, "kind": "like"},
        format="json",
    )
    assert liked.status_code == 400
    assert liked.json()["fields"] == {"target": ["No active member with this id."]}


def test_a_deleted_member_leaves_others_cached_answers(
    client_for_engine, django_capture_on_commit_callbacks
):
    engine, viewer = client_for_engine
    leaving = member(display_name="Leaving Soon")
    first = client_for(viewer).get(RECOMMENDATIONS_URL)
    assert leaving.pk in [r["user_id"] for r in first.json()["results"]]

    with django_capture_on_commit_callbacks(execute=True):
        assert delete_account(client_for(leaving)).status_code == 204
    again = client_for(viewer).get(RECOMMENDATIONS_URL)

    assert again["X-Cache"] == "hit"
    assert len(engine.calls) == 1
    shown = [r["user_id"] for r in again.json()["results"]]
    assert leaving.pk not in shown
    assert shown == [
        r["user_id"] for r in first.json()["results"] if r["user_id"] in shown
    ]
    assert [r["rank"] for r in again.json()["results"]] == list(
        range(1, len(shown) + 1)
    )
    assert b"Leaving Soon" not in again.content


def test_the_deleted_members_own_cached_answer_and_recent_pages_are_dropped(
    leaving, monkeypatch, django_capture_on_commit_callbacks
):
    from recommender import impressions
    from recommender.cache import recommendations_cache, recommendations_cache_key

    key = recommendations_cache_key(user_id=leaving.pk)
    recommendations_cache().set(key, {"results": [1, 2, 3]})
    forgotten: list[str] = []

    class Redis:
        def delete(self, name):
            forgotten.append(name)

    monkeypatch.setattr(impressions, "buffer_enabled", lambda: True)
    monkeypatch.setattr(impressions, "redis_client", Redis)

    with django_capture_on_commit_callbacks(execute=True):
        assert delete_account(client_for(leaving)).status_code == 204

    assert recommendations_cache().get(key) is None
    assert forgotten == [impressions.recent_key(leaving.pk)]


@pytest.fixture
def client_for_engine(monkeypatch, eager_tasks):
    """The fake engine (``tests.recommender.fakes``) and a viewer among members."""
    engine = fakes.FakeEngine()
    from recommender import serving

    monkeypatch.setattr(serving, "serving_generation", engine.serving_generation)
    monkeypatch.setattr(
        serving, "recommendations_compute", engine.recommendations_compute
    )
    for _ in range(5):
        member()
    return engine, member(display_name="Viewer")


eager_tasks = fakes.eager_tasks


@pytest.fixture
def serving_engine(settings):
    """The real serving engine, as ``tests.recommender.serving_fixtures.engine``."""
    from recommender import serving

    settings.KINDRED = {
        **settings.KINDRED,
        "REGISTRY_POLL_SECONDS": 0,
        "SERVING_RELOAD_IN_BACKGROUND": False,
    }
    serving.serving_reset()
    yield serving
    serving.serving_reset()


def test_the_serving_engine_never_shows_a_deleted_member_it_still_holds(
    serving_engine, django_capture_on_commit_callbacks
):
    from recommender.serving.holder import bundle_holder

    scene = scene_build()
    before = serving_engine.recommendations_compute(user=scene.viewer, limit=20)
    assert shown_ids(before)[0] == scene.tempting.pk
    store = bundle_holder().bundle.population.store

    with django_capture_on_commit_callbacks(execute=True):
        assert delete_account(client_for(scene.tempting)).status_code == 204
    after = client_for(scene.viewer).get(RECOMMENDATIONS_URL)

    # The member store loaded before still holds him: the database re-check of
    # the shortlist is what keeps him out.
    assert bundle_holder().bundle.population.store is store
    assert scene.tempting.pk in store.user_id.tolist()
    assert after.status_code == 200
    assert after["X-Cache"] == "miss"
    assert set(r["user_id"] for r in after.json()["results"]) == {
        o.pk for o in scene.others
    }


# --- two requests of the same member at once ----------------------------------------


def _waiting_on_locks() -> int:
    """Sessions of the test database waiting for a lock, now."""
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views are a snapshot: drop it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _until(condition, what: str) -> None:
    """Wait for ``condition`` (another thread's progress), failing after a minute."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _in_thread(call, results: list) -> threading.Thread:
    """Run ``call`` on a thread of its own (its own database connection), its
    result appended to ``results``."""

    def run():
        try:
            results.append(call())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def postgres_only(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent transactions need PostgreSQL")


@pytest.mark.postgres
def test_two_deletions_at_once_give_one_204_and_one_401(postgres_only):
    user = member()
    token = Token.objects.create(user=user).key
    results: list = []

    def delete():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return delete_account(client).status_code

    # Both requests are authenticated and waiting on the member's row before
    # either can delete it.
    with transaction.atomic():
        User.objects.select_for_update().get(pk=user.pk)
        threads = [_in_thread(delete, results) for _ in range(2)]
        _until(lambda: _waiting_on_locks() == 2, "both deletions wait")
    for thread in threads:
        thread.join()

    assert sorted(results) == [204, 401]
    assert not User.objects.filter(pk=user.pk).exists()
    assert AccountDeletion.objects.filter(user_id=user.pk).count() == 1


@pytest.mark.postgres
def test_a_like_sent_while_the_account_is_deleted_is_a_401_not_a_500(
    postgres_only,
):
    user, target = member(), member()
    token = Token.objects.create(user=user).key

    def client():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    deleted, liked = [], []
    # The deletion queues for the member's row first, the like behind it
    # (PostgreSQL grants row locks in the order they were asked for).
    with transaction.atomic():
        User.objects.select_for_update().get(pk=user.pk)
        deleting = _in_thread(lambda: delete_account(client()), deleted)
        _until(lambda: _waiting_on_locks() == 1, "the deletion waits")
        liking = _in_thread(
            lambda: client().post(
                "/api/v1/interactions/",
                {"target": target.pk, "kind": "like"},
                format="json",
            ),
            liked,
        )
        _until(lambda: _waiting_on_locks() == 2, "the like waits too")
    deleting.join()
    liking.join()

    (deleted,), (liked,) = deleted, liked
    assert deleted.status_code == 204
    assert liked.status_code == 401
    assert liked.json()["message"] == "This account no longer exists."
    assert not Interaction.objects.exists()


# --- the nightly training -----------------------------------------------------------


def test_a_member_deleted_while_training_runs_does_not_fail_the_run(
    transactional_db, settings, tmp_path, monkeypatch
):
    from recommender import tasks
    from recommender.services import runs, stages

    settings.MEDIA_ROOT = str(tmp_path)
    members = [member() for _ in range(8)]
    for actor, target in zip(members, members[1:], strict=False):
        InteractionFactory(actor=actor, target=target, kind=InteractionKind.LIKE)
    leaving = members[3]
    client = client_for(leaving)
    load = runs.run_data_load

    def load_then_lose_a_member(*, run):
        data = load(run=run)  # the member is in the data the stage trains on
        if User.objects.filter(pk=leaving.pk).exists():
            assert delete_account(client).status_code == 204
        return data

    monkeypatch.setattr(stages, "run_data_load", load_then_lose_a_member)
    run = runs.training_run_start(trigger="test")

    features = tasks.features_compute(run_id=run.pk)
    tasks.embeddings_train(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "running" and run.error == ""
    assert features == 7
    assert UserFeatures.objects.count() == 7
    vectors = UserEmbedding.objects.filter(model=run.embedding_model)
    assert sorted(vectors.values_list("user_id", flat=True)) == sorted(
        m.pk for m in members if m.pk != leaving.pk
    )


# --- the admin ----------------------------------------------------------------------


def test_deleting_a_member_in_the_admin_is_audited_with_the_staff_member(
    client, leaving
):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)

    response = client.post(
        f"/admin/accounts/user/{leaving.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert rows_about(leaving.pk)["user"] == 0
    audit = AccountDeletion.objects.get()
    assert (audit.user_id, audit.requested_by, audit.actor) == (
        leaving.pk,
        "staff",
        admin,
    )
    assert client.get("/admin/accounts/accountdeletion/").status_code == 200


def test_deleting_members_with_the_changelist_action_audits_each(client, leaving):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    other = member()

    response = client.post(
        "/admin/accounts/user/",
        {
            "action": "delete_selected",
            "_selected_action": [leaving.pk, other.pk],
            "post": "yes",
        },
    )

    assert response.status_code == 302
    assert rows_about(leaving.pk) == dict.fromkeys(rows_about(leaving.pk), 0)
    assert not User.objects.filter(pk=other.pk).exists()
    audits = AccountDeletion.objects.order_by("user_id")
    assert [(a.user_id, a.requested_by, a.actor) for a in audits] == [
        (leaving.pk, "staff", admin),
        (other.pk, "staff", admin),
    ]
    assert audits[0].rows_deleted["interactions.Interaction"] == 4


def test_a_superuser_deleting_their_own_account_in_the_admin_is_audited(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)

    response = client.post(f"/admin/accounts/user/{admin.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=admin.pk).exists()
    audit = AccountDeletion.objects.get()
    assert (audit.user_id, audit.requested_by, audit.actor) == (admin.pk, "staff", None)


# --- the export ---------------------------------------------------------------------


def export_of(client: APIClient) -> dict:
    response = client.get(EXPORT_URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return json.loads(b"".join(response.streaming_content))


def test_the_export_holds_the_members_own_data(leaving):
    other = member()
    InteractionFactory(
        actor=leaving, target=other, kind=InteractionKind.BLOCK, context={"a": 1}
    )

    data = export_of(client_for(leaving))

    assert data["account"]["id"] == leaving.pk
    assert data["account"]["username"] == leaving.username
    assert data["profile"]["user_id"] == leaving.pk
    assert data["profile"]["display_name"] == leaving.profile.display_name
    assert data["preferences"]["min_age"] == 18
    given = {(row["target"], row["kind"]) for row in data["interactions"]}
    assert (other.pk, "block") in given
    assert len(given) == Interaction.objects.filter(actor=leaving).count() == 3
    assert [
        row["context"] for row in data["interactions"] if row["target"] == other.pk
    ] == [{"a": 1}]
    (match,) = data["matches"]
    assert match["user_id"] != leaving.pk and match["ended_at"] is None
    (impression,) = data["impressions"]
    assert impression["shown_user_id"] != leaving.pk
    assert len(data["features"]) == 1
    assert [row["model_version"] for row in data["embeddings"]] == [1, 2]
    assert all(
        isinstance(x, float) and len(row["vector"]) == 4
        for row in data["embeddings"]
        for x in row["vector"]
    )
    # The stored float32 values themselves (tests.recommender.factories).
    assert [row["vector"] for row in data["embeddings"]] == [
        [0.5, -0.25, 0.125, 1.0]
    ] * 2


def test_the_export_is_streamed_a_few_rows_at_a_time_oldest_first(monkeypatch):
    from accounts.api import views

    monkeypatch.setattr(views, "EXPORT_ROWS_PER_CHUNK", 2)
    user = member()
    targets = [member() for _ in range(5)]
    for target in targets:
        InteractionFactory(actor=user, target=target)

    chunks = list(client_for(user).get(EXPORT_URL).streaming_content)

    data = json.loads(b"".join(chunks))
    assert [row["target"] for row in data["interactions"]] == [t.pk for t in targets]
    # The list's opening, then 2 + 2 rows, then the last one with the closing.
    start = chunks.index(b',"interactions":[') + 1
    written = [chunk.decode() for chunk in chunks[start : start + 3]]
    assert [text.count('"target":') for text in written] == [2, 2, 1]
    assert written[0].startswith('{"target":') and written[1].startswith(",{")
    assert written[2].endswith("}]")


def test_the_export_leaves_out_what_others_did(leaving):
    blocker = member()
    InteractionFactory(actor=blocker, target=leaving, kind=InteractionKind.BLOCK)

    data = export_of(client_for(leaving))

    text = json.dumps(data)
    assert blocker.username not in text
    assert all(row["target"] != leaving.pk for row in data["interactions"])
    # Shown to someone else: not in the member's impressions.
    assert all(row["shown_user_id"] != leaving.pk for row in data["impressions"])


def test_the_export_of_an_account_without_profile_has_nulls_and_empty_lists():
    staff = UserFactory(is_staff=True)

    data = export_of(client_for(staff))

    assert data["profile"] is None and data["preferences"] is None
    assert data["interactions"] == data["matches"] == data["impressions"] == []


def test_the_export_needs_authentication():
    response = APIClient().get(EXPORT_URL)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_the_export_has_what_the_schema_says():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    user = member()
    other = member()
    matched(user, other)
    RecommendationLogFactory(user=user, shown_user=other)
    UserFeaturesFactory(user=user)
    UserEmbeddingFactory(user=user)

    data = export_of(client_for(user))

    top = components["AccountExportOutput"]
    assert set(data) == set(top["properties"]) == set(top["required"])
    parts = {
        "account": "ExportAccount",
        "profile": "ExportProfile",
        "preferences": "PreferencesOutput",
    }
    for name, component in parts.items():
        assert set(data[name]) == set(components[component]["properties"]), name
    for name in ("interactions", "matches", "impressions", "features", "embeddings"):
        ref = top["properties"][name]["items"]["$ref"].rsplit("/", 1)[-1]
        assert data[name], name
        for row in data[name]:
            assert set(row) == set(components[ref]["properties"]), name
    delete = schema["paths"][ME_URL]["delete"]
    body = delete["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert components[body.rsplit("/", 1)[-1]]["required"] == ["password"]
    assert {"204", "400", "401", "403", "429"} <= set(delete["responses"])
