"""The A/B guardrail through its Celery beat task, the admin and serving.

Arms are built with known counts (``arm_build``): the report must find exactly
those, and the task must stop the challenger only when it is significantly worse.
"""

import threading

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from config.celery import app
from recommender import tasks
from recommender.guardrail import (
    GUARDRAIL_ACTOR_LABEL,
    experiment_get_current,
    experiment_guardrail_check,
)
from recommender.selectors import ab_report
from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate, model_set_traffic
from tests.accounts.factories import UserFactory
from tests.recommender.factories import ArmCounts, arm_build
from tests.recommender.serving_fixtures import open_members, register_copy
from tests.registry.factories import MLModelFactory

pytestmark = pytest.mark.django_db

EXPERIMENT = "ranking-v2-vs-v1"


@pytest.fixture(autouse=True)
def eager():
    """Run the task in-process, as a worker would run it."""
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def thresholds(settings):
    settings.KINDRED = {
        **settings.KINDRED,
        "AB_GUARDRAIL_ALPHA": 0.01,
        "AB_GUARDRAIL_MIN_IMPRESSIONS": 300,
    }


def ab_test(traffic_percent: int = 20) -> tuple[MLModel, MLModel]:
    """Ranking v1 active, v2 its challenger at ``traffic_percent``."""
    control = MLModelFactory(kind=ModelKind.RANKING, version=1)
    challenger = MLModelFactory(kind=ModelKind.RANKING, version=2)
    model_activate(model=control, actor=None, actor_label="test")
    model_set_traffic(
        model=challenger,
        traffic_percent=traffic_percent,
        actor=None,
        actor_label="test",
    )
    return control, challenger


def arms(control: tuple[int, int, int], challenger: tuple[int, int, int]) -> None:
    arm_build(experiment=EXPERIMENT, arm="control", counts=ArmCounts(*control))
    arm_build(experiment=EXPERIMENT, arm="challenger", counts=ArmCounts(*challenger))


def run_check() -> list[int]:
    return tasks.ab_guardrail_check.delay().get()


def guardrail_stops() -> list[ModelActivation]:
    return list(
        ModelActivation.objects.filter(actor_label=GUARDRAIL_ACTOR_LABEL).order_by("id")
    )


# --- the report on built arms ------------------------------------------------------


def test_the_report_finds_the_built_counts_with_intervals_and_tests():
    ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))

    control, challenger = ab_report(experiment=EXPERIMENT)

    assert (control.impressions, control.likes, control.matches) == (400, 120, 40)
    assert (challenger.impressions, challenger.likes, challenger.matches) == (
        400,
        40,
        10,
    )
    assert control.like_test is None
    assert challenger.like_test.method == "z"
    # pooled 160/800 = 0.2, z = -0.2 / sqrt(0.2·0.8·2/400) = -7.0711
    assert challenger.like_test.statistic == pytest.approx(-7.0710678, rel=1e-6)
    assert challenger.like_test.p_value == pytest.approx(1.5374598e-12, rel=1e-6)
    # matches: 40 vs 10 of 400, pooled 50/800: z = -0.075 / sqrt(0.0625·0.9375·2/400)
    assert challenger.match_test.statistic == pytest.approx(-4.3817805, rel=1e-6)
    assert challenger.like_interval.text == "0.0743-0.1333"
    assert control.like_interval.text == "0.2572-0.3466"


# --- stopping ---------------------------------------------------------------------


def test_a_clearly_worse_challenger_is_stopped_with_an_audit_row_giving_the_figures():
    control, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))

    stopped = run_check()

    assert stopped == [challenger.pk]
    challenger.refresh_from_db()
    assert challenger.traffic_percent == 0
    assert not challenger.is_active
    assert MLModel.objects.get(is_active=True) == control
    (stop,) = guardrail_stops()
    assert stop.action == ActivationAction.CHALLENGER
    assert (stop.from_model, stop.to_model, stop.traffic_percent) == (
        challenger,
        None,
        0,
    )
    assert stop.actor is None
    assert f"challenger of {EXPERIMENT} is significantly worse" in stop.reason
    assert "like rate and match rate" in stop.reason
    assert "challenger 400, control 400" in stop.reason
    assert (
        "like rate: challenger 0.1000 (95% CI 0.0743-0.1333) (40), control 0.3000 "
        "(95% CI 0.2572-0.3466) (120); z-test p = 1.5e-12 — worse"
    ) in stop.reason
    assert "match rate: challenger 0.0250" in stop.reason
    assert experiment_get_current() is None


def test_a_challenger_not_significantly_different_keeps_its_traffic():
    _, challenger = ab_test(traffic_percent=20)
    # 23 % vs 25 % like rate, 6.5 % vs 7.5 % match rate: p = 0.51 and 0.58.
    arms(control=(400, 100, 30), challenger=(400, 92, 26))

    assert run_check() == []

    challenger.refresh_from_db()
    assert challenger.traffic_percent == 20
    assert guardrail_stops() == []
    result = experiment_guardrail_check()
    assert result.breaches == []
    assert "not significantly worse" in result.summary
    assert result.challenger.like_test.p_value == pytest.approx(0.5078006, rel=1e-6)


def test_a_significantly_better_challenger_keeps_its_traffic():
    _, challenger = ab_test()
    arms(control=(400, 40, 10), challenger=(400, 120, 40))

    assert run_check() == []
    challenger.refresh_from_db()
    assert challenger.traffic_percent == 20


def test_a_worse_match_rate_alone_stops_the_challenger():
    _, challenger = ab_test()
    # Same like rate, matches 60 vs 20 of 400.
    arms(control=(400, 100, 60), challenger=(400, 100, 20))

    assert run_check() == [challenger.pk]
    (stop,) = guardrail_stops()
    assert "worse than control on match rate (" in stop.reason
    assert "like rate: challenger 0.2500" in stop.reason
    assert "z-test p = 1.0000\n" in stop.reason


def test_too_few_impressions_are_not_judged(settings):
    settings.KINDRED = {**settings.KINDRED, "AB_GUARDRAIL_MIN_IMPRESSIONS": 1000}
    _, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))

    assert run_check() == []

    challenger.refresh_from_db()
    assert challenger.traffic_percent == 20
    assert "not judged yet, 400 impressions" in experiment_guardrail_check().summary


def test_the_significance_level_comes_from_the_settings(settings):
    _, challenger = ab_test()
    # like rate 20 % vs 25 %: z = -1.69, p = 0.090.
    arms(control=(400, 100, 30), challenger=(400, 80, 24))

    assert run_check() == []
    settings.KINDRED = {**settings.KINDRED, "AB_GUARDRAIL_ALPHA": 0.1}
    assert run_check() == [challenger.pk]


def test_running_it_again_changes_nothing():
    _, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))

    assert run_check() == [challenger.pk]
    assert run_check() == []
    assert run_check() == []

    assert len(guardrail_stops()) == 1


def test_a_restarted_test_is_judged_on_its_own_impressions():
    _, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))
    assert run_check() == [challenger.pk]

    # An ML engineer restarts the test (same versions, so the same experiment
    # name): the impressions of the stopped run do not stop it again at once.
    model_set_traffic(
        model=challenger, traffic_percent=10, actor=None, actor_label="admin"
    )

    assert run_check() == []
    challenger.refresh_from_db()
    assert challenger.traffic_percent == 10
    assert "not judged yet, 0 impressions" in experiment_guardrail_check().summary


def test_a_change_of_share_keeps_the_test_running():
    _, challenger = ab_test(traffic_percent=20)
    arms(control=(400, 120, 40), challenger=(400, 40, 10))
    model_set_traffic(
        model=challenger, traffic_percent=30, actor=None, actor_label="admin"
    )

    assert run_check() == [challenger.pk]


def test_no_experiment_nothing_to_do():
    MLModelFactory(kind=ModelKind.RANKING, version=1, is_active=True)

    assert run_check() == []
    assert experiment_guardrail_check() is None
    assert ModelActivation.objects.count() == 0


def test_beat_runs_the_check_periodically():
    entry = settings.CELERY_BEAT_SCHEDULE["ab-guardrail"]

    assert entry["task"] == "recommender.tasks.ab_guardrail_check"
    assert entry["task"] in app.tasks
    assert entry["schedule"] == settings.AB_GUARDRAIL_SECONDS > 0


# --- two workers at once ----------------------------------------------------------


@pytest.mark.postgres
def test_two_workers_at_once_stop_the_challenger_once(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent transactions need PostgreSQL")
    from tests.registry.test_concurrency import (
        run_at_once,
        wait_until_another_session_waits_for_a_lock,
    )

    _, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))
    first_stopped = threading.Event()
    results = {}

    def first():
        with transaction.atomic():
            results["first"] = experiment_guardrail_check()
            first_stopped.set()
            # Keep the stop uncommitted until the second check waits for the lock:
            # it has judged the same challenger from the committed state by then.
            wait_until_another_session_waits_for_a_lock()

    def second():
        first_stopped.wait()
        results["second"] = experiment_guardrail_check()

    errors = run_at_once(first, second)

    assert errors == []
    assert len(results["first"].activations) == 1
    assert results["second"].breaches == ["like rate", "match rate"]
    assert results["second"].activations == []
    assert "already stopped or changed meanwhile" in results["second"].summary
    assert len(guardrail_stops()) == 1
    challenger.refresh_from_db()
    assert challenger.traffic_percent == 0


# --- the admin --------------------------------------------------------------------


def test_the_admin_shows_the_stop_and_why(client):
    _, challenger = ab_test()
    arms(control=(400, 120, 40), challenger=(400, 40, 10))
    run_check()
    staff = UserFactory(is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_mlmodel", "view_modelactivation"],
        )
    )
    client.force_login(staff)

    report = client.get(reverse("admin:registry_mlmodel_ab_report")).content.decode()
    log = client.get(
        reverse("admin:registry_modelactivation_changelist")
    ).content.decode()

    guardrail = report.split('id="ab-guardrail"', 1)[1]
    assert "at least\n      300 impressions" in guardrail
    assert "p &lt; 0.01" in guardrail
    stops = guardrail.split('id="ab-guardrail-stops"', 1)[1]
    assert f"<td>v{challenger.version}</td>" in stops
    assert f"challenger of {EXPERIMENT} is significantly worse" in stops
    assert GUARDRAIL_ACTOR_LABEL in log
    assert "z-test p = 1.5e-12" in log


def test_the_admin_says_when_the_guardrail_stopped_nothing(admin_client):
    response = admin_client.get(reverse("admin:registry_mlmodel_ab_report"))

    assert "The guardrail has stopped no challenger." in response.content.decode()


# --- serving ----------------------------------------------------------------------


def recommendation_headers(user) -> tuple[str, dict[str, str]]:
    """X-Experiment, and X-Model-Versions as {kind: version}."""
    client = APIClient()
    client.force_authenticate(user)
    response = client.get("/api/v1/recommendations/", {"limit": 5})
    assert response.status_code == 200, response.content
    versions = dict(item.split("=") for item in response["X-Model-Versions"].split(","))
    return response["X-Experiment"], versions


@pytest.mark.slow
def test_a_stopped_challenger_gets_no_traffic_at_serving(engine, trained):
    challenger = register_copy(trained.ranking)
    model_set_traffic(
        model=challenger, traffic_percent=100, actor=None, actor_label="test"
    )
    members = open_members(5)
    experiment = experiment_get_current().name
    # Every member is in the challenger arm, named as the guardrail names it.
    for member in members:
        experiment_header, versions = recommendation_headers(member)
        assert experiment_header == f"{experiment}:challenger"
        assert versions["ranking"] == str(challenger.version)
    arm_build(experiment=experiment, arm="control", counts=ArmCounts(400, 120, 40))
    arm_build(experiment=experiment, arm="challenger", counts=ArmCounts(400, 40, 10))

    assert run_check() == [challenger.pk]

    for member in members:
        experiment_header, versions = recommendation_headers(member)
        assert experiment_header == "none"
        assert versions["ranking"] == str(trained.ranking.version)
