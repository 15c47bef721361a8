import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from accounts.models import User
from recommender.selectors import MAX_LIMIT
from recommender.serving import Arm
from tests.accounts.factories import UserFactory, member
from tests.recommender import fakes

pytestmark = pytest.mark.django_db

# The fake engine, as fixtures of this module (client_for is in tests/conftest.py).
engine, eager_tasks = fakes.engine, fakes.eager_tasks

URL = reverse("recommendation-list")
RESULT_FIELDS = {
    "user_id",
    "display_name",
    "age",
    "city",
    "interests",
    "score",
    "rank",
    "sources",
    "reason",
}


@pytest.fixture
def viewer():
    """A member with 30 other members around."""
    for _ in range(30):
        member()
    return member(display_name="Viewer")


def test_response_has_the_documented_shape(engine, client_for, viewer):
    response = client_for(viewer).get(URL, {"limit": 3})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "results",
        "strategy",
        "model_versions",
        "experiment",
        "request_id",
    }
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert set(first) == RESULT_FIELDS
    assert first["rank"] == 1
    assert first["sources"] == ["content", "popular"]
    assert first["reason"] == "likes hiking and travel like you"
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert viewer.pk not in [r["user_id"] for r in body["results"]]
    assert body["strategy"] == "full"
    assert body["model_versions"] == {"embedding": 3, "ranking": 5, "index": 12}
    assert body["experiment"] == {"name": "ranking-v5-vs-v4", "arm": "challenger"}
    assert body["request_id"] == response["X-Request-ID"]


def test_every_header_is_set(engine, client_for, viewer):
    response = client_for(viewer).get(URL)

    assert uuid.UUID(response["X-Request-ID"]).version == 4
    assert float(response["X-Process-Time"]) >= 0
    assert response["X-Model-Versions"] == "embedding=3,index=12,ranking=5"
    assert response["X-Experiment"] == "ranking-v5-vs-v4:challenger"
    assert response["X-Recommendation-Strategy"] == "full"


def test_outside_an_experiment_the_headers_say_none(engine, client_for, viewer):
    engine.arm = Arm("", "")
    engine.model_versions = {}
    engine.strategy = "random"

    response = client_for(viewer).get(URL)

    assert response.status_code == 200
    assert response.json()["experiment"] == {"name": "", "arm": ""}
    assert response["X-Experiment"] == "none"
    assert response["X-Model-Versions"] == "none"
    assert response["X-Recommendation-Strategy"] == "random"


def test_a_sane_client_request_id_is_echoed(engine, client_for, viewer):
    response = client_for(viewer).get(URL, HTTP_X_REQUEST_ID="app-42.retry_1")

    assert response["X-Request-ID"] == "app-42.retry_1"
    assert response.json()["request_id"] == "app-42.retry_1"


@pytest.mark.parametrize(
    "given",
    ["x" * 65, "has space", "semi;colon", "ünïcode", "<script>", ""],
)
def test_an_insane_client_request_id_is_replaced_by_a_uuid4(
    engine, client_for, viewer, given
):
    response = client_for(viewer).get(URL, HTTP_X_REQUEST_ID=given)

    assert response.status_code == 200
    assert response["X-Request-ID"] != given
    assert uuid.UUID(response["X-Request-ID"]).version == 4


def test_limit_defaults_to_20(engine, client_for, viewer):
    response = client_for(viewer).get(URL)

    assert len(response.json()["results"]) == 20


@pytest.mark.parametrize("limit", [1, 7, MAX_LIMIT])
def test_limit_within_range_is_honoured(engine, client_for, viewer, limit):
    response = client_for(viewer).get(URL, {"limit": limit})

    assert response.status_code == 200
    # 30 other members exist: a larger limit returns all there are.
    assert len(response.json()["results"]) == min(limit, 30)


def test_the_engine_is_always_asked_for_the_maximum(engine, client_for, viewer):
    client_for(viewer).get(URL, {"limit": 3})

    assert engine.calls == [{"user_id": viewer.pk, "limit": MAX_LIMIT}]


def test_an_empty_limit_is_a_400_naming_limit(engine, client_for, viewer):
    # As documented (and as ?page= / ?page_size=): absent means the default,
    # present but empty is invalid (issue 13 #15).
    response = client_for(viewer).get(URL, {"limit": ""})

    assert response.status_code == 400
    assert "limit" in response.json()["fields"]


@pytest.mark.parametrize(
    "limit", ["abc", "0", "101", "-1", "1e3", "2.5", "NaN", "99999999999999999999"]
)
def test_a_bad_limit_is_a_400_naming_limit(engine, client_for, viewer, limit):
    response = client_for(viewer).get(URL, {"limit": limit})

    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("limit:")
    assert "limit" in body["fields"]
    assert body["code"] == "invalid"
    assert engine.calls == []
    # Errors carry a request id too, for the support ticket.
    assert response["X-Request-ID"]


def test_anonymous_is_a_401(engine, api_client, viewer):
    response = api_client.get(URL)

    assert response.status_code == 401
    assert response.json()["message"]
    assert response["X-Request-ID"]
    assert engine.calls == []


def test_a_bad_token_is_a_401(engine, api_client, viewer):
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")

    assert api_client.get(URL).status_code == 401


def test_a_signed_in_session_is_answered_as_a_token_is(engine, api_client, viewer):
    # The endpoint swaps only the token authentication for its hit-checking one:
    # the project's other ways in (the admin's session) still answer.
    api_client.force_login(viewer)

    response = api_client.get(URL, {"limit": 3})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


def test_a_staff_user_without_a_profile_gets_a_clear_404(engine, client_for, viewer):
    staff = UserFactory(is_staff=True)

    response = client_for(staff).get(URL)

    assert response.status_code == 404
    assert "no member profile" in response.json()["message"]
    assert engine.calls == []


def test_only_get_is_allowed(engine, client_for, viewer):
    response = client_for(viewer).post(URL, {}, format="json")

    assert response.status_code == 405


# --- end to end, with the real engine and trained models -----------------------------


@pytest.fixture
def real_engine(settings, eager_tasks):
    """The real serving engine, polling the registry on every request and loading
    synchronously, so a registry change shows on the next request."""
    from recommender import serving

    settings.KINDRED = {
        **settings.KINDRED,
        "REGISTRY_POLL_SECONDS": 0,
        "SERVING_RELOAD_IN_BACKGROUND": False,
    }
    serving.serving_reset()
    yield serving
    serving.serving_reset()


def train_and_promote() -> dict:
    from recommender.services.pipeline import pipeline_run
    from registry.models import MLModel
    from registry.services import model_activate

    run = pipeline_run()
    for model in (run.embedding_model, run.ranking_model):
        if not MLModel.objects.get(pk=model.pk).is_active:
            model_activate(model=model, actor=None, actor_label="test")
    return {"embedding": run.embedding_model, "ranking": run.ranking_model}


def seeded_members(count: int) -> list:
    from accounts.models import User

    return list(User.objects.filter(profile__isnull=False).order_by("pk")[:count])


@pytest.mark.slow
def test_end_to_end_with_trained_models(
    seeded, media, real_engine, client_for, django_capture_on_commit_callbacks
):
    from interactions.models import Interaction
    from recommender.models import RecommendationLog
    from registry.services import model_activate, model_deactivate

    models = train_and_promote()
    viewer = seeded_members(1)[0]
    client = client_for(viewer)

    response = client.get(URL, {"limit": 10})

    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "full"
    assert response["X-Recommendation-Strategy"] == "full"
    versions = body["model_versions"]
    assert versions["embedding"] == models["embedding"].version
    assert versions["ranking"] == models["ranking"].version
    assert f"ranking={models['ranking'].version}" in response["X-Model-Versions"]
    assert response["X-Experiment"] == "none"
    assert response["X-Cache"] == "miss"
    # The reciprocal filters leave fewer than 10 for some members of a small
    # population.
    assert 1 <= len(body["results"]) <= 10
    shown = [result["user_id"] for result in body["results"]]
    interacted = set(
        Interaction.objects.filter(actor=viewer).values_list("target_id", flat=True)
    )
    assert viewer.pk not in shown
    assert not interacted & set(shown)
    assert [r["rank"] for r in body["results"]] == list(range(1, len(shown) + 1))
    assert all(set(r) == RESULT_FIELDS and r["sources"] for r in body["results"])
    impressions = RecommendationLog.objects.filter(request_id=body["request_id"])
    assert sorted(impressions.values_list("shown_user_id", flat=True)) == sorted(shown)

    assert client.get(URL, {"limit": 10})["X-Cache"] == "hit"

    # Taking the ranking model out of service retires the cached answer.
    model_deactivate(model=models["ranking"], actor=None, actor_label="test")
    real_engine.serving_refresh()  # the reload a background thread would do
    unranked = client.get(URL, {"limit": 10})
    assert unranked["X-Cache"] == "miss"
    assert unranked.json()["strategy"] == "unranked"
    assert "ranking" not in unranked.json()["model_versions"]

    # And a promotion brings the full pipeline back, without a restart.
    model_activate(model=models["ranking"], actor=None, actor_label="test")
    real_engine.serving_refresh()
    again = client.get(URL, {"limit": 10})
    assert again["X-Cache"] == "miss"
    assert again.json()["strategy"] == "full"

    # Liking a recommended member: the like carries the impression's context, and
    # the member is not recommended again.
    liked = again.json()["results"][0]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("interaction-list"),
            {"target": liked["user_id"], "kind": "like"},
            format="json",
        )
    context = Interaction.objects.get(actor=viewer, target_id=liked["user_id"]).context
    assert context["request_id"] == again.json()["request_id"]
    assert context["position"] == 1
    after = client.get(URL, {"limit": 10})
    assert after["X-Cache"] == "miss"
    assert liked["user_id"] not in [r["user_id"] for r in after.json()["results"]]


@pytest.mark.slow
def test_a_challenger_splits_members_into_stable_arms(
    seeded, media, real_engine, client_for
):
    from recommender.models import RecommendationLog
    from recommender.services.pipeline import pipeline_run
    from registry.services import model_set_traffic

    first = train_and_promote()
    challenger = pipeline_run().ranking_model
    model_set_traffic(
        model=challenger, traffic_percent=50, actor=None, actor_label="test"
    )
    real_engine.serving_refresh()
    name = f"ranking-v{challenger.version}-vs-v{first['ranking'].version}"

    arms = {}
    for viewer in seeded_members(24):
        client = client_for(viewer)
        body = client.get(URL, {"limit": 3}).json()
        expected = real_engine.arm_for(user_id=viewer.pk)
        assert body["experiment"] == {"name": name, "arm": expected.arm}
        ranking_version = (
            challenger.version
            if expected.arm == "challenger"
            else first["ranking"].version
        )
        impressions = RecommendationLog.objects.filter(request_id=body["request_id"])
        if body["results"]:  # some members have nobody left after the filters
            assert body["model_versions"]["ranking"] == ranking_version
            assert set(impressions.values_list("experiment", flat=True)) == {
                f"{name}:{expected.arm}"
            }
        arms[viewer.pk] = expected.arm

    # Stable: the same members land in the same arms after the cache is gone.
    cache.clear()
    for user_id, arm in arms.items():
        response = client_for(User.objects.get(pk=user_id)).get(URL, {"limit": 3})
        assert response["X-Experiment"] == f"{name}:{arm}"
    assert set(arms.values()) == {"control", "challenger"}


def test_the_body_is_what_the_documented_serializer_gives(engine, client_for, viewer):
    """The view builds its body directly (``recommendation_list_data``, issue 16);
    the serializer that documents it must give exactly the same, on a miss, on a
    hit, and on values of looser types than the engine's."""
    import datetime as dt
    import json
    from types import SimpleNamespace

    from recommender.api.serializers import (
        RecommendationListOutputSerializer,
        recommendation_list_data,
    )
    from recommender.selectors import RecommendationPage

    client = client_for(viewer)
    bodies = [client.get(URL, {"limit": 5}) for _ in range(2)]
    assert [b["X-Cache"] for b in bodies] == ["miss", "hit"]
    loose = RecommendationPage(
        request_id="r-1",
        results=[
            {
                "user_id": 7,
                "display_name": "Ann",
                "age": 30,
                "city": "",
                "interests": ["hiking", 3],
                "score": 1,
                "rank": 1,
                "sources": ["content"],
                "reason": "new here",
            },
            {  # a NaN score comes back from the cache as null (orjson)
                "user_id": 8,
                "display_name": "Bo",
                "age": 41,
                "city": "Oslo",
                "interests": [],
                "score": None,
                "rank": 2,
                "sources": [],
                "reason": "",
            },
        ],
        strategy="full",
        model_versions={"embedding": 3},
        experiment={"name": "", "arm": ""},
        generation="1.1",
        cached=False,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    pages = [SimpleNamespace(**b.json()) for b in bodies] + [loose]
    for page in pages:
        documented = RecommendationListOutputSerializer(page).data
        assert json.dumps(recommendation_list_data(page)) == json.dumps(documented)
    assert recommendation_list_data(pages[1]) == bodies[1].json()
