import datetime as dt
import logging
import threading
from types import SimpleNamespace

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from interactions.models import Interaction
from recommender import cache, impressions, tasks
from recommender.models import RecommendationLog
from recommender.serving import Arm
from tests.accounts.factories import member
from tests.recommender import fakes
from tests.reliability.harness import RedisServer

pytestmark = pytest.mark.django_db

# The fake engine, as fixtures of this module (client_for is in tests/conftest.py).
engine, eager_tasks = fakes.engine, fakes.eager_tasks

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
    engine.arm = Arm("", "")
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


def test_embedded_impressions_go_through_the_celery_task(
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

    with caplog.at_level(logging.WARNING, logger="recommender.impressions"):
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
    monkeypatch.setattr(impressions, "impressions_write", database_down)

    with caplog.at_level(logging.ERROR, logger="recommender.impressions"):
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


def test_a_reused_client_request_id_keeps_the_first_showing_only(
    engine, client_for, viewer
):
    client = client_for(viewer)
    client.get(URL, {"limit": 3}, HTTP_X_REQUEST_ID="reused")
    engine.generation = "g2"
    engine.arm = Arm("ranking-v5-vs-v4", "control", {})
    client.get(URL, {"limit": 3}, HTTP_X_REQUEST_ID="reused")

    rows = impressions_of("reused")
    assert len(rows) == 3
    assert {row.experiment for row in rows} == {"ranking-v5-vs-v4:challenger"}


# --- the Redis buffer and its drain -------------------------------------------------


@pytest.fixture
def buffer(eager_tasks, settings, tmp_path, monkeypatch):
    """Production mode against our own redis-server: impressions are RPUSHed, and
    written only when ``impressions_flush`` drains them."""
    from config.celery import app

    server = RedisServer(tmp_path).start()
    settings.REDIS_URL = server.url
    monkeypatch.setattr(cache, "_client", None)  # the process's client, anew
    app.conf.task_always_eager = False  # eager_tasks restores it
    yield server
    server.kill()


def queued() -> list[bytes]:
    return impressions.redis_client().lrange(impressions.queue_key(), 0, -1)


def flush() -> int:
    return tasks.impressions_flush.apply().get()


def test_a_response_is_one_blob_written_by_the_flush(
    engine, buffer, client_for, viewer
):
    client = client_for(viewer)
    first = client.get(URL, {"limit": 4}).json()
    second = client.get(URL, {"limit": 3}).json()  # a cache hit, logged again

    assert len(queued()) == 2
    assert impressions_of(first["request_id"]) == []  # nothing on the request path

    assert flush() == 7

    assert queued() == []
    for body in (first, second):
        rows = sorted(impressions_of(body["request_id"]), key=lambda r: r.position)
        assert [(r.shown_user_id, r.position) for r in rows] == [
            (result["user_id"], result["rank"]) for result in body["results"]
        ]
        assert {r.experiment for r in rows} == {"ranking-v5-vs-v4:challenger"}
        assert {r.user_id for r in rows} == {viewer.pk}
    assert rows[0].sources == second["results"][0]["sources"]
    assert rows[0].score == pytest.approx(second["results"][0]["score"])
    assert rows[0].model_versions == {"embedding": 3, "ranking": 5, "index": 12}
    assert flush() == 0
    assert RecommendationLog.objects.count() == 7


def test_a_drainer_dead_between_commit_and_trim_does_not_duplicate(
    engine, buffer, client_for, viewer, monkeypatch
):
    body = client_for(viewer).get(URL, {"limit": 4}).json()

    def killed():
        raise SystemExit("worker killed")

    monkeypatch.setattr(impressions, "_after_commit_before_trim", killed)
    with pytest.raises(SystemExit):
        flush()
    assert len(impressions_of(body["request_id"])) == 4  # committed...
    assert len(queued()) == 1  # ...but not trimmed
    # A dead worker does not release its lock: the next drain waits for it to expire.
    impressions.redis_client().set(impressions.lock_key(), "dead-drainer")
    assert flush() == 0
    impressions.redis_client().delete(impressions.lock_key())  # expired

    monkeypatch.setattr(impressions, "_after_commit_before_trim", lambda: None)
    flush()

    assert queued() == []
    assert len(impressions_of(body["request_id"])) == 4
    assert RecommendationLog.objects.count() == 4


def test_a_second_drainer_waits_for_the_lock(engine, buffer, client_for, viewer):
    body = client_for(viewer).get(URL, {"limit": 3}).json()
    client = impressions.redis_client()
    client.set(impressions.lock_key(), "the-other-drainer")

    assert flush() == 0
    assert len(queued()) == 1
    assert impressions_of(body["request_id"]) == []
    assert client.get(impressions.lock_key()) == b"the-other-drainer"  # not ours


def test_a_drainer_that_lost_its_lock_does_not_trim_nor_duplicate(
    engine, buffer, client_for, viewer, monkeypatch
):
    client = client_for(viewer)
    body = client.get(URL, {"limit": 3}).json()
    redis = impressions.redis_client()

    def overtaken():
        # Our lock expired mid-drain and another drainer took it, read the same
        # blobs and pushed a new one meanwhile.
        redis.set(impressions.lock_key(), "the-other-drainer")
        monkeypatch.setattr(impressions, "_after_commit_before_trim", lambda: None)
        client.get(URL, {"limit": 2})

    monkeypatch.setattr(impressions, "_after_commit_before_trim", overtaken)
    flush()

    assert len(queued()) == 2  # nothing trimmed: not ours any more
    assert redis.get(impressions.lock_key()) == b"the-other-drainer"
    redis.delete(impressions.lock_key())
    flush()

    assert queued() == []
    assert len(impressions_of(body["request_id"])) == 3
    assert RecommendationLog.objects.count() == 5


def test_the_buffer_blob_reads_back_as_the_rows_of_its_page():
    """The blob is packed straight from the page; the drain must still get exactly
    the rows the task and the direct write carry."""
    page = SimpleNamespace(
        request_id="req-1",
        strategy="full",
        model_versions={"embedding": 3, "ranking": 5},
        experiment_label="ranking-v5-vs-v4:challenger",
        created_at=timezone.now(),
        results=[
            {"user_id": 11, "rank": 1, "score": 0.75, "sources": ("faiss", "graph")},
            {"user_id": 12, "rank": 2, "score": 0.5, "sources": ["popular"]},
        ],
    )

    blob = impressions.impressions_pack(user_id=7, page=page)

    rows = impressions.impression_rows(user_id=7, page=page)
    assert impressions.impressions_unpack(blob) == rows
    assert [row["sources"] for row in rows] == [["faiss", "graph"], ["popular"]]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_drainers_write_each_row_once(buffer, monkeypatch):
    """Real threads and connections: the first drainer's lock expires while it sits
    between its commit and its trim, so a second drains the same blobs meanwhile
    (and the rest); the first then must not trim."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions need PostgreSQL")
    viewer, *shown = [member() for _ in range(6)]

    def push(request_id):
        page = SimpleNamespace(
            request_id=request_id,
            strategy="full",
            model_versions={},
            experiment_label="",
            created_at=timezone.now(),
            results=[
                {"user_id": u.pk, "rank": rank, "score": 0.5, "sources": ["popular"]}
                for rank, u in enumerate(shown, start=1)
            ],
        )
        impressions.impressions_push(
            blob=impressions.impressions_pack(user_id=viewer.pk, page=page)
        )

    for n in range(30):
        push(f"req-{n}")
    committed, second_done = threading.Event(), threading.Event()
    results, errors = {}, []

    def first_waits_for_the_second():
        if threading.current_thread().name == "first":
            impressions.redis_client().delete(impressions.lock_key())  # expired
            committed.set()
            assert second_done.wait(30)
            push("late")  # must survive the first drainer's (skipped) trim

    monkeypatch.setattr(
        impressions, "_after_commit_before_trim", first_waits_for_the_second
    )

    def drain(name, wait=None):
        try:
            if wait is not None:
                assert wait.wait(30)
            results[name] = impressions.impressions_drain(batch=20)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            if name == "second":
                second_done.set()
            connection.close()

    threads = [
        threading.Thread(target=drain, args=("first",), name="first"),
        threading.Thread(target=drain, args=("second", committed), name="second"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert results["second"] > 0  # it really ran alongside the first
    assert len(queued()) == 1
    assert RecommendationLog.objects.count() == 30 * 5
    flush()
    assert queued() == []
    assert RecommendationLog.objects.count() == 31 * 5
    assert RecommendationLog.objects.values("request_id").distinct().count() == 31


def test_an_unreadable_blob_does_not_block_the_queue(
    engine, buffer, client_for, viewer, caplog
):
    impressions.redis_client().rpush(impressions.queue_key(), b"{not json")
    body = client_for(viewer).get(URL, {"limit": 2}).json()

    assert flush() == 2

    assert queued() == []
    assert len(impressions_of(body["request_id"])) == 2
    assert any("unreadable" in record.getMessage() for record in caplog.records)


def test_redis_down_writes_the_impressions_directly(
    engine, buffer, client_for, viewer, caplog
):
    buffer.kill()

    with caplog.at_level(logging.WARNING, logger="recommender.impressions"):
        response = client_for(viewer).get(URL, {"limit": 3})

    assert response.status_code == 200
    assert len(impressions_of(response.json()["request_id"])) == 3
    assert any("not buffered" in record.getMessage() for record in caplog.records)


def test_redis_and_database_down_do_not_fail_the_request(
    engine, buffer, client_for, viewer, monkeypatch, caplog
):
    def database_down(**kwargs):
        raise RuntimeError("database unavailable")

    buffer.kill()
    monkeypatch.setattr(impressions, "impressions_write", database_down)

    with caplog.at_level(logging.ERROR, logger="recommender.impressions"):
        response = client_for(viewer).get(URL, {"limit": 3})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 3
    assert any("impressions of" in record.getMessage() for record in caplog.records)


# --- an interaction right after its impression (issue 13 #11) ----------------------


def _like(client, target: int, context: dict | None = None) -> Interaction:
    body = {"target": target, "kind": "like"}
    if context is not None:
        body["context"] = context
    response = client.post(INTERACTIONS, body, format="json")
    assert response.status_code == 201
    return Interaction.objects.get(pk=response.json()["id"])


def test_a_like_before_the_flush_gets_the_context_of_its_impression(
    engine, buffer, client_for, viewer
):
    client = client_for(viewer)
    page = client.get(URL, {"limit": 4}).json()
    assert impressions_of(page["request_id"]) == []  # not drained yet

    liked = _like(client, page["results"][1]["user_id"])

    assert liked.context == {
        "request_id": page["request_id"],
        "experiment": "ranking-v5-vs-v4",
        "arm": "challenger",
        "source": page["results"][1]["sources"][0],
        "position": 2,
    }


def test_the_latest_showing_before_the_flush_wins_and_a_request_id_picks_one(
    engine, buffer, client_for, viewer
):
    client = client_for(viewer)
    first = client.get(URL, {"limit": 4}).json()
    flush()  # the first page is in the database...
    engine.arm = Arm("ranking-v5-vs-v4", "control", {})
    engine.generation = "g2"
    second = client.get(URL, {"limit": 4}).json()  # ...the second only in Redis
    target, other = (result["user_id"] for result in second["results"][:2])

    latest = _like(client, target)
    chosen = _like(client, other, {"request_id": first["request_id"]})

    assert latest.context["request_id"] == second["request_id"]
    assert latest.context["arm"] == "control"
    assert chosen.context["request_id"] == first["request_id"]
    assert chosen.context["arm"] == "challenger"


def test_a_like_while_redis_is_down_is_recorded_without_the_buffered_context(
    engine, buffer, client_for, viewer, caplog
):
    client = client_for(viewer)
    page = client.get(URL, {"limit": 2}).json()
    buffer.kill()

    with caplog.at_level(logging.WARNING, logger="recommender.selectors"):
        liked = _like(client, page["results"][0]["user_id"])

    assert liked.context == {}
    assert any("recent impressions" in r.getMessage() for r in caplog.records)


def test_embedded_mode_has_nothing_to_flush(engine, client_for, viewer):
    body = client_for(viewer).get(URL, {"limit": 2}).json()

    assert len(impressions_of(body["request_id"])) == 2  # written in-process
    assert flush() == 0


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
    engine.arm = Arm("ranking-v5-vs-v4", "control", {})
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
    engine.arm = Arm("ranking-v5-vs-v4", "control", {})
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


def test_the_impressions_module_imports_neither_services_nor_tasks():
    """The embedded-mode task is looked up by name: no impressions <-> services
    <-> tasks cycle, not even inside a function."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(impressions.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not any(
        name == forbidden or name.startswith(f"{forbidden}.")
        for name in imported
        for forbidden in ("recommender.services", "recommender.tasks")
    )
