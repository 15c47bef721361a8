import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from registry.dashboard import chart_build
from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate, model_set_traffic
from tests.accounts.factories import UserFactory
from tests.registry.factories import MLModelFactory, versions

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:registry_mlmodel_dashboard")


def promote_url(model: MLModel) -> str:
    return reverse("admin:registry_mlmodel_dashboard_promote", args=[model.pk])


def rollback_url(kind: str) -> str:
    return reverse("admin:registry_mlmodel_dashboard_rollback", args=[kind])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def viewer_client(client):
    """Staff who may look at the registry but not change what serves."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_mlmodel", "view_modelactivation"],
        )
    )
    client.force_login(user)
    return client


@pytest.fixture
def ranking_history():
    """Ranking v1..v3 with rising AUC; v2 promoted after v1; v3 the challenger."""
    v1, v2, v3 = versions(ModelKind.RANKING, 3)
    for model, auc in ((v1, 0.70), (v2, 0.74), (v3, 0.78)):
        model.metrics = {"auc": auc, "ndcg@10": auc / 2, "log_loss": 1 - auc}
        model.save()
    model_activate(model=v1, actor=None, actor_label="test")
    model_activate(model=v2, actor=None, actor_label="test", reason="better auc")
    model_set_traffic(model=v3, traffic_percent=10, actor=None, actor_label="test")
    return v1, v2, v3


def test_the_dashboard_shows_each_kind_with_history_metrics_and_charts(
    admin_client, ranking_history
):
    MLModelFactory(kind=ModelKind.EMBEDDING, version=1, metrics={"recall@100": 0.9})

    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.content.decode()
    ranking = next(s for s in response.context["sections"] if s.kind == "ranking")
    assert ranking.active.version == 2
    assert ranking.challenger.version == 3
    assert [row.model.version for row in ranking.rows] == [3, 2, 1]
    assert ranking.metric_names == ["auc", "ndcg@10", "log_loss"]  # key first
    assert "0.7800" in html and "0.7000" in html  # metrics side by side
    assert '<strong id="active-ranking">v2</strong>' in html
    assert "challenger: v3 at 10% of traffic" in html
    # Server-rendered SVG charts, no script and no CDN.
    assert html.count('<figure class="registry-chart"') >= 3
    assert 'data-metric="auc"' in html
    assert "<script" not in html.split('id="content-main"', 1)[1]
    assert "cdn" not in html.lower()
    # The activation log, newest first, with the reason.
    log = ranking.activations
    assert [a.action for a in log[:2]] == [
        ActivationAction.CHALLENGER,
        ActivationAction.PROMOTE,
    ]
    assert "better auc" in html
    # The A/B report table is there (empty without impressions).
    assert 'id="ab-report-section"' in html
    embedding = next(s for s in response.context["sections"] if s.kind == "embedding")
    assert embedding.active is None and len(embedding.rows) == 1


def test_a_chart_puts_versions_left_to_right_and_higher_values_higher():
    models = [
        MLModel(kind="ranking", version=v, metrics={"auc": auc}, is_active=v == 2)
        for v, auc in ((3, 0.9), (1, 0.5), (2, 0.7))
    ]

    chart = chart_build(metric="auc", models=models)

    assert [p.version for p in chart.points] == [1, 2, 3]
    xs = [p.x for p in chart.points]
    ys = [p.y for p in chart.points]
    assert xs == sorted(xs)
    assert ys == sorted(ys, reverse=True)  # SVG y grows downwards
    assert [p.active for p in chart.points] == [False, True, False]
    assert chart.polyline == " ".join(f"{p.x},{p.y}" for p in chart.points)
    assert chart_build(metric="ndcg@10", models=models) is None


def test_promote_from_the_dashboard_goes_through_the_registry(
    admin_client, ranking_history
):
    _, v2, v3 = ranking_history

    response = admin_client.post(
        promote_url(v3), {"reason": "won the A/B"}, follow=True
    )

    assert response.redirect_chain[-1][0] == DASHBOARD
    assert MLModel.objects.get(is_active=True, kind="ranking").pk == v3.pk
    latest = ModelActivation.objects.order_by("-id").first()
    assert latest.action == ActivationAction.PROMOTE
    assert (latest.from_model_id, latest.to_model_id) == (v2.pk, v3.pk)
    assert latest.reason == "won the A/B"
    assert latest.actor_label == "admin" and latest.actor is not None
    assert "Promoted ranking: v2 → v3." in messages_of(response)


def test_rollback_from_the_dashboard_restores_the_previous_version(
    admin_client, ranking_history
):
    v1, v2, _ = ranking_history

    response = admin_client.post(rollback_url("ranking"), follow=True)

    assert MLModel.objects.get(is_active=True, kind="ranking").pk == v1.pk
    assert "Rolled back ranking: v2 → v1." in messages_of(response)


def test_a_refused_change_is_reported_not_raised(admin_client, ranking_history):
    _, v2, _ = ranking_history

    already = admin_client.post(promote_url(v2), follow=True)
    unknown = admin_client.post(rollback_url("nonsense"), follow=True)

    assert already.status_code == unknown.status_code == 200
    assert any("already active" in m for m in messages_of(already))
    assert any("Unknown model kind" in m for m in messages_of(unknown))


def test_promoting_needs_the_promote_permission(viewer_client, ranking_history):
    _, v2, v3 = ranking_history

    page = viewer_client.get(DASHBOARD)
    response = viewer_client.post(promote_url(v3))
    rollback = viewer_client.post(rollback_url("ranking"))

    assert page.status_code == 200
    assert "Promote v" not in page.content.decode()
    assert response.status_code == rollback.status_code == 403
    assert MLModel.objects.get(is_active=True, kind="ranking").pk == v2.pk


def test_promote_is_post_only_and_csrf_protected(ranking_history):
    from django.test import Client

    _, v2, v3 = ranking_history
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    assert client.get(promote_url(v3)).status_code == 405
    assert client.post(promote_url(v3)).status_code == 403  # no CSRF token
    page = client.get(DASHBOARD).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(promote_url(v3), {"csrfmiddlewaretoken": token}).status_code
    assert MLModel.objects.get(is_active=True, kind="ranking").pk == v3.pk


def test_the_dashboard_is_staff_only(client, ranking_history):
    anonymous = client.get(DASHBOARD)
    client.force_login(UserFactory(is_staff=False))
    member = client.get(DASHBOARD)

    assert anonymous.status_code == member.status_code == 302
    assert "/admin/login/" in anonymous["Location"]


def test_the_admin_index_and_the_changelist_link_to_the_dashboard(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    changelist = admin_client.get(
        reverse("admin:registry_mlmodel_changelist")
    ).content.decode()

    assert DASHBOARD in index
    assert DASHBOARD in changelist
