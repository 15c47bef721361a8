import threading
import time

import pytest
from django.db import connection, transaction

from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate, model_register
from tests.registry.factories import versions

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _needs_postgres(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent transactions need PostgreSQL")


def run_at_once(*calls):
    """Run each call in its own thread and connection, released together."""
    barrier = threading.Barrier(len(calls))
    errors = []

    def worker(call):
        try:
            barrier.wait()
            call()
        except Exception as error:  # reported to the test below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_promotions_at_once_serialize_into_one_consistent_chain():
    v1, v2, v3 = versions()
    model_activate(model=v1, actor=None)

    errors = run_at_once(
        lambda: model_activate(model=v2.pk, actor=None, actor_label="admin-a"),
        lambda: model_activate(model=v3.pk, actor=None, actor_label="admin-b"),
    )

    assert errors == []
    active = list(MLModel.objects.filter(kind=ModelKind.RANKING, is_active=True))
    assert len(active) == 1
    first, second = ModelActivation.objects.filter(
        action=ActivationAction.PROMOTE, from_model__isnull=False
    ).order_by("id")
    # Whoever went second saw the first one's outcome, not the stale v1.
    assert first.from_model == v1
    assert first.to_model in (v2, v3)
    assert second.from_model == first.to_model
    assert {first.to_model, second.to_model} == {v2, v3}
    assert second.to_model == active[0]


def wait_until_another_session_waits_for_a_lock() -> None:
    """Block until some other session of this test database waits on a lock.

    Bounded, so a broken service cannot hang the suite; the test's assertions hold
    either way, this only makes the overlap certain.
    """
    for _ in range(300):
        with connection.cursor() as cursor:
            # Statistics views are snapshotted once per transaction; we are in one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                " current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)


def test_a_promotion_waiting_on_another_logs_the_version_it_replaced():
    v1, v2, v3 = versions()
    model_activate(model=v1, actor=None)
    first_done = threading.Event()

    def first():
        with transaction.atomic():
            model_activate(model=v2.pk, actor=None)
            first_done.set()
            # Hold the transaction open until the second promotion is queued
            # behind it, so the second one cannot have read the state before it.
            wait_until_another_session_waits_for_a_lock()

    def second():
        first_done.wait()
        model_activate(model=v3.pk, actor=None)

    errors = run_at_once(first, second)

    assert errors == []
    assert list(MLModel.objects.filter(is_active=True)) == [v3]
    latest = ModelActivation.objects.order_by("-id").first()
    assert (latest.from_model, latest.to_model) == (v2, v3)


def test_two_registrations_at_once_get_distinct_versions():
    versions(count=1)

    errors = run_at_once(
        lambda: model_register(kind=ModelKind.RANKING),
        lambda: model_register(kind=ModelKind.RANKING),
    )

    assert errors == []
    assert sorted(
        MLModel.objects.filter(kind=ModelKind.RANKING).values_list("version", flat=True)
    ) == [1, 2, 3]
