import datetime as dt
import logging

import pytest
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from interactions.models import Interaction
from recommender import services, tasks
from recommender.models import RecommendationLog
from tests.accounts.factories import member
from tests.recommender import fakes

pytestmark = pytest.mark.django_db

# The fake engine and the token client, as fixtures of this module.
engine, eager_tasks, client_for = fakes.engine, fakes.eager_tasks, fakes.client_for

URL = reverse("recommendation-list")
INTERACTIONS = reverse("interaction-list")


@pytest.fixture
def viewer():
    for _ in range(8):
        member()
    return member(display_name="Viewer")


def impressions_of(request_id: str) -> list[RecommendationLog]:
    return list(RecommendationLog.objects.filter(request_id=request_id))


def test_one_impression_per_result_with_position_strategy_and_arm(
    engine, client_for, viewer
):
    before = timezone.now()
    response = client_for(viewer).get(URL, {"limit": 4})
    body = response.json()

    rows = sorted(impressions_of(body["request_id"]), key=lambda row: row.position)
    assert len(rows) == 4
    for row, result in zip(rows, body["results"], strict=True):
        assert row.user_id == viewer.pk
        assert row.shown_user_id == result["user_id"]
        assert row.position == result["rank"]
        assert row.score == pytest.approx(result["score"])
        assert row.sources == result["sources"]
        assert row.strategy == "full"
        assert row.model_versions == {"embedding": 3, "ranking": 5, "index": 12}
        assert row.experiment == "ranking-v5-vs-v4:challenger"
        assert before <= row.created_at <= timezone.now()
    assert [row.position for row in rows] == [1, 2, 3, 4]


def test_impressions_outside_an_experiment_have_an_empty_arm(
    engine, client_for, viewer
):
    engine.arm = type(engine.arm)()
    body = client_for(viewer).get(URL, {"limit": 2}).json()

    assert {row.experiment for row in impressions_of(body["request_id"])} == {""}


def test_a_cache_hit_is_shown_again_so_logged_again(engine, client_for, viewer):
    client = client_for(viewer)
    first = client.get(URL, {"limit": 3}).json()["request_id"]
    second = client.get(URL, {"limit": 3}).json()["request_id"]

    assert len(engine.calls) == 1
    assert len(impressions_of(first)) == len(impressions_of(second)) == 3


def test_the_client_request_id_is_the_impressions_request_id(
    engine, client_for, viewer
):
    client_for(viewer).get(URL, {"limit": 2}, HTTP_X_REQUEST_ID="ios-7f3a.1")

    assert len(impressions_of("ios-7f3a.1")) == 2


def test_impressions_go_through_the_celery_task(
    engine, client_for, viewer, monkeypatch
):
    queued = []
    monkeypatch.setattr(
        tasks.impressions_write,
        "apply_async",
        lambda *args, **kwargs: queued.append(kwargs),
    )

    body = client_for(viewer).get(URL, {"limit": 3}).json()

    assert len(queued) == 1
    assert queued[0]["retry"] is False
    rows = queued[0]["kwargs"]["impressions"]
    assert [row["position"] for row in rows] == [1, 2, 3]
    assert {row["request_id"] for row in rows} == {body["request_id"]}
    # Nothing written on the request's path.
    assert impressions_of(body["request_id"]) == []


def test_a_broker_outage_writes_the_impressions_directly(
    engine, client_for, viewer, monkeypatch, caplog
):
    def broker_down(*args, **kwargs):
        raise BrokerError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(tasks.impressions_write, "apply_async", broker_down)

    with caplog.at_level(logging.WARNING, logger="recommender.services"):
        response = client_for(viewer).get(URL, {"limit": 3})

    assert response.status_code == 200
    assert len(impressions_of(response.json()["request_id"])) == 3
    assert any("not queued" in record.getMessage() for record in caplog.records)


def test_impressions_that_cannot_be_written_at_all_do_not_fail_the_request(
    engine, client_for, viewer, monkeypatch, caplog
):
    def down(*args, **kwargs):
        raise BrokerError("Connection refused")

    def database_down(**kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(tasks.impressions_write, "apply_async", down)
    monkeypatch.setattr(services, "impressions_write", database_down)

    with caplog.at_level(logging.ERROR, logger="recommender.services"):
        response = client_for(viewer).get(URL, {"limit": 3})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 3
    assert any("impressions of" in record.getMessage() for record in caplog.records)


def test_the_task_skips_impressions_of_deleted_members(viewer):
    gone, kept = member(), member()
    row = {
        "request_id": "r1",
        "user_id": viewer.pk,
        "position": 1,
        "score": 0.5,
        "sources": ["content"],
        "strategy": "full",
        "model_versions": {},
        "experiment": "",
        "created_at": timezone.now().isoformat(),
    }
    impressions = [
        {**row, "shown_user_id": gone.pk},
        {**row, "shown_user_id": kept.pk, "position": 2},
    ]
    gone.delete()

    written = tasks.impressions_write.apply(kwargs={"impressions": impressions}).get()

    assert written == 1
    assert [r.shown_user_id for r in impressions_of("r1")] == [kept.pk]


# --- the interaction context ------------------------------------------------------


def like(client, target_id, context=None):
    data = {"target": target_id, "kind": "like"}
    if context is not None:
        data["context"] = context
    return client.post(INTERACTIONS, data, format="json")


def test_an_interaction_on_a_recommended_member_gets_the_impression_context(
    engine, client_for, viewer
):
    client = client_for(viewer)
    body = client.get(URL, {"limit": 4}).json()
    second = body["results"][1]

    response = like(client, second["user_id"])

    assert response.status_code == 201
    context = Interaction.objects.get(actor=viewer).context
    assert context == {
        "request_id": body["request_id"],
        "experiment": "ranking-v5-vs-v4",
        "arm": "challenger",
        "source": second["sources"][0],
        "position": 2,
    }
    assert response.json()["context"] == context


def test_the_latest_impression_of_the_pair_is_used(engine, client_for, viewer):
    client = client_for(viewer)
    client.get(URL, {"limit": 4})
    engine.generation = "g2"  # recomputed: a new answer, a new impression
    engine.arm = type(engine.arm)("ranking-v5-vs-v4", "control", {})
    latest = client.get(URL, {"limit": 4}).json()
    target = latest["results"][0]["user_id"]
    # Same clock tick on a fast machine: the newest row must still win.
    RecommendationLog.objects.filter(request_id=latest["request_id"]).update(
        created_at=timezone.now() + dt.timedelta(seconds=1)
    )

    like(client, target)

    context = Interaction.objects.get(actor=viewer).context
    assert context["request_id"] == latest["request_id"]
    assert context["arm"] == "control"


def test_keys_the_client_sent_are_kept(engine, client_for, viewer):
    client = client_for(viewer)
    body = client.get(URL, {"limit": 3}).json()
    target = body["results"][2]["user_id"]

    like(client, target, {"source": "profile_page", "device": "ios"})

    context = Interaction.objects.get(actor=viewer).context
    assert context["source"] == "profile_page"
    assert context["device"] == "ios"
    assert context["position"] == 3
    assert context["request_id"] == body["request_id"]


def test_the_clients_request_id_picks_that_requests_impression(
    engine, client_for, viewer
):
    client = client_for(viewer)
    older = client.get(URL, {"limit": 3}, HTTP_X_REQUEST_ID="older").json()
    target = older["results"][0]["user_id"]
    RecommendationLog.objects.filter(request_id="older").update(
        created_at=timezone.now() - dt.timedelta(minutes=5)
    )
    engine.generation = "g2"
    engine.arm = type(engine.arm)("ranking-v5-vs-v4", "control", {})
    client.get(URL, {"limit": 3}, HTTP_X_REQUEST_ID="newer")

    like(client, target, {"request_id": "older"})

    context = Interaction.objects.get(actor=viewer).context
    assert context["request_id"] == "older"
    assert context["arm"] == "challenger"


def test_an_interaction_on_someone_never_recommended_keeps_its_context(
    client_for, viewer
):
    stranger = member()

    like(client_for(viewer), stranger.pk, {"source": "search"})

    assert Interaction.objects.get(actor=viewer).context == {"source": "search"}
