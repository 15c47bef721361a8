import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate, model_set_traffic
from tests.accounts.factories import UserFactory
from tests.registry.factories import MLModelFactory, versions

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:registry_mlmodel_changelist")
ACTIVATIONS = reverse("admin:registry_modelactivation_changelist")


def change_url(model: MLModel) -> str:
    return reverse("admin:registry_mlmodel_change", args=[model.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def viewer_client(client):
    """A staff user who may view and edit notes but not change what serves."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_mlmodel", "change_mlmodel", "view_modelactivation"],
        )
    )
    client.force_login(user)
    return client


def active_versions(kind=ModelKind.RANKING) -> list[int]:
    return list(
        MLModel.objects.filter(kind=kind, is_active=True).values_list(
            "version", flat=True
        )
    )


def change_form_data(model: MLModel, *, stale: bool = False, **overrides) -> dict:
    """The change form as rendered for ``model``, submitted with ``overrides``.

    The form is rendered from the database unless ``stale``: then from ``model`` as
    it was in memory, like a page left open while someone else changed things.
    """
    if not stale:
        model = MLModel.objects.get(pk=model.pk)
    data = {
        "initial-is_active": str(model.is_active),
        "initial-traffic_percent": str(model.traffic_percent),
        "traffic_percent": str(model.traffic_percent),
        "notes": model.notes,
        "reason": "",
        "_save": "Save",
    }
    if model.is_active:
        data["is_active"] = "on"
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_changelist_shows_metrics_side_by_side_with_a_dash_when_missing(
    admin_client,
):
    MLModelFactory(version=1, metrics={"auc": 0.7123, "recall@100": 0.5})
    MLModelFactory(version=2, metrics={})

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert "0.7123" in content
    assert "0.5000" in content
    assert "—" in content
    assert "NDCG@10" in content
    assert 'name="initial-form-0-is_active"' in content


def test_changelist_search_understands_the_v_prefix(admin_client):
    versions(count=3)

    response = admin_client.get(CHANGELIST, {"q": "v2"})

    assert [m.version for m in response.context["cl"].result_list] == [2]


def test_change_page_pretty_prints_metrics_read_only(admin_client):
    model = MLModelFactory(
        metrics={"auc": 0.7}, hyperparameters={"lr": 0.1, "trees": 200}
    )

    response = admin_client.get(change_url(model))

    assert response.status_code == 200
    content = response.content.decode()
    assert "&quot;trees&quot;: 200" in content
    assert 'name="metrics"' not in content
    assert 'name="is_active"' in content
    # What the user saw is posted back, so a stale page cannot undo others' changes.
    assert 'name="initial-is_active"' in content


def test_promote_action_activates_the_selected_version_and_logs_it(
    admin_client, superuser
):
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [v2.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert active_versions() == [2]
    activation = ModelActivation.objects.get(to_model=v2)
    assert activation.action == ActivationAction.PROMOTE
    assert activation.from_model == v1
    assert activation.actor == superuser
    assert activation.actor_label == "admin"
    assert "Promoted ranking: v1 → v2." in messages_of(response)


def test_promote_action_needs_exactly_one_version(admin_client):
    v1, v2, _ = versions()

    response = admin_client.post(
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [v1.pk, v2.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Select exactly one version to promote." in messages_of(response)
    assert active_versions() == []
    assert not ModelActivation.objects.exists()


def test_promoting_the_active_version_is_reported_not_a_500(admin_client):
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [v1.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "ranking v1 is already active." in messages_of(response)
    assert ModelActivation.objects.count() == 1


def test_rollback_action_rolls_back_each_selected_kind(admin_client):
    r1, r2 = versions(ModelKind.RANKING, count=2)
    (e1,) = versions(ModelKind.EMBEDDING, count=1)
    for model in (r1, r2, e1):
        model_activate(model=model, actor=None)

    response = admin_client.post(
        CHANGELIST,
        {"action": "rollback_selected_kinds", "_selected_action": [r2.pk, e1.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert active_versions(ModelKind.RANKING) == [1]
    # The embedding has nothing earlier: reported, and the ranking still rolled back.
    assert active_versions(ModelKind.EMBEDDING) == [1]
    messages = messages_of(response)
    assert "Rolled back ranking: v2 → v1." in messages
    assert any("Nothing to roll back to: embedding" in m for m in messages)
    assert ModelActivation.objects.filter(action=ActivationAction.ROLLBACK).count() == 1


def test_ticking_is_active_on_the_change_form_promotes_with_the_reason(
    admin_client, superuser
):
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        change_url(v2),
        change_form_data(v2, is_active="on", reason="wins the holdout"),
        follow=True,
    )

    assert response.status_code == 200
    assert active_versions() == [2]
    activation = ModelActivation.objects.get(to_model=v2)
    assert activation.action == ActivationAction.PROMOTE
    assert (activation.from_model, activation.actor) == (v1, superuser)
    assert activation.reason == "wins the holdout"


def test_unticking_is_active_deactivates_through_the_service(admin_client):
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    admin_client.post(
        change_url(v1), change_form_data(v1, is_active=None, reason="broken")
    )

    assert active_versions() == []
    activation = ModelActivation.objects.get(action=ActivationAction.DEACTIVATE)
    assert (activation.from_model, activation.to_model) == (v1, None)
    assert activation.reason == "broken"


def test_editing_only_notes_writes_no_audit_row(admin_client):
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    admin_client.post(change_url(v1), change_form_data(v1, notes="retrained on May"))

    v1.refresh_from_db()
    assert v1.notes == "retrained on May"
    assert v1.is_active
    assert ModelActivation.objects.count() == 1


def test_setting_traffic_on_the_change_form_makes_a_challenger(admin_client):
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    admin_client.post(
        change_url(v2), change_form_data(v2, traffic_percent="15", reason="A/B")
    )

    v2.refresh_from_db()
    assert v2.traffic_percent == 15
    activation = ModelActivation.objects.get(action=ActivationAction.CHALLENGER)
    assert (activation.to_model, activation.traffic_percent) == (v2, 15)
    assert activation.reason == "A/B"


@pytest.mark.parametrize("traffic_percent", ["150", "-5"])
def test_traffic_out_of_range_is_a_form_error(admin_client, traffic_percent):
    (v1,) = versions(count=1)

    response = admin_client.post(
        change_url(v1), change_form_data(v1, traffic_percent=traffic_percent)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["traffic_percent"]
    v1.refresh_from_db()
    assert v1.traffic_percent == 0


def test_traffic_on_the_active_version_is_a_form_error(admin_client):
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        change_url(v1), change_form_data(v1, traffic_percent="10")
    )

    assert response.status_code == 200
    assert "only an inactive version" in str(
        response.context["adminform"].form.errors["traffic_percent"]
    )
    v1.refresh_from_db()
    assert v1.traffic_percent == 0


def test_a_stale_form_does_not_undo_a_promotion_made_meanwhile(admin_client):
    v1, v2 = versions(count=2)
    model_set_traffic(model=v2, traffic_percent=10, actor=None)
    stale = MLModel.objects.get(pk=v2.pk)
    # Meanwhile someone promotes v2, so the form's "challenger at 20%" is stale.
    model_activate(model=v2, actor=None)

    response = admin_client.post(
        change_url(v2),
        change_form_data(stale, stale=True, traffic_percent="20"),
        follow=True,
    )

    assert response.status_code == 200
    assert any("only an inactive version" in m for m in messages_of(response))
    assert active_versions() == [2]


def test_changelist_editing_goes_through_the_services(admin_client, superuser):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)
    data = {
        "form-TOTAL_FORMS": "2",
        "form-INITIAL_FORMS": "2",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(v2.pk),
        "initial-form-0-is_active": "False",
        "form-0-is_active": "on",
        "initial-form-0-traffic_percent": "0",
        "form-0-traffic_percent": "0",
        # v1 unticked in the same submit: already done by promoting v2.
        "form-1-id": str(v1.pk),
        "initial-form-1-is_active": "True",
        "initial-form-1-traffic_percent": "0",
        "form-1-traffic_percent": "0",
        "_save": "Save",
    }

    response = admin_client.post(CHANGELIST, data, follow=True)

    assert response.status_code == 200
    assert active_versions() == [2]
    assert list(
        ModelActivation.objects.values_list("from_model", "to_model", "actor")
    ) == [(v1.pk, v2.pk, superuser.pk), (None, v1.pk, None)]


def test_staff_without_the_promote_permission_cannot_promote(viewer_client):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)

    response = viewer_client.post(
        CHANGELIST,
        {"action": "promote_selected_version", "_selected_action": [v2.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert active_versions() == [1]
    assert ModelActivation.objects.count() == 1


def test_staff_without_the_promote_permission_see_serving_fields_read_only(
    viewer_client,
):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)

    page = viewer_client.get(change_url(v2)).content.decode()
    assert 'name="is_active"' not in page
    assert 'name="traffic_percent"' not in page
    changelist = viewer_client.get(CHANGELIST).content.decode()
    assert "form-0-is_active" not in changelist

    viewer_client.post(
        change_url(v2),
        {"is_active": "on", "traffic_percent": "50", "notes": "hi", "_save": "Save"},
    )

    v2.refresh_from_db()
    assert (v2.is_active, v2.traffic_percent, v2.notes) == (False, 0, "hi")
    assert active_versions() == [1]
    assert ModelActivation.objects.count() == 1


def test_serving_versions_cannot_be_deleted(admin_client):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        reverse("admin:registry_mlmodel_delete", args=[v1.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert MLModel.objects.filter(pk=v1.pk).exists()


def test_versions_are_not_added_by_hand(admin_client):
    response = admin_client.get(reverse("admin:registry_mlmodel_add"))

    assert response.status_code == 403


def test_activation_log_is_listed_and_append_only(admin_client):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None, actor_label="cli:ops", reason="first")
    activation = model_activate(model=v2, actor=None, reason="second")

    listing = admin_client.get(ACTIVATIONS, {"kind": "ranking", "action": "promote"})
    assert listing.status_code == 200
    content = listing.content.decode()
    assert "cli:ops" in content
    assert "second" in content

    assert (
        admin_client.get(reverse("admin:registry_modelactivation_add")).status_code
        == 403
    )
    delete_url = reverse("admin:registry_modelactivation_delete", args=[activation.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    detail_url = reverse("admin:registry_modelactivation_change", args=[activation.pk])
    admin_client.post(detail_url, {"reason": "rewritten"})
    activation.refresh_from_db()
    assert activation.reason == "second"
    assert ModelActivation.objects.count() == 2


@pytest.mark.parametrize("reason", ["before\x00after", "\x00"])
def test_a_nul_byte_in_the_dashboard_promote_reason_is_reported_not_a_500(
    admin_client, reason
):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)

    response = admin_client.post(
        reverse("admin:registry_mlmodel_dashboard_promote", args=[v2.pk]),
        {"reason": reason},
        follow=True,
    )

    assert response.status_code == 200
    assert any("NUL" in message for message in messages_of(response))
    assert active_versions() == [v1.version]
    assert ModelActivation.objects.count() == 1


def test_a_nul_byte_in_the_dashboard_rollback_reason_is_reported_not_a_500(
    admin_client,
):
    v1, v2 = versions(count=2)
    model_activate(model=v1, actor=None)
    model_activate(model=v2, actor=None)

    response = admin_client.post(
        reverse("admin:registry_mlmodel_dashboard_rollback", args=[v2.kind]),
        {"reason": "oops\x00"},
        follow=True,
    )

    assert response.status_code == 200
    assert any("NUL" in message for message in messages_of(response))
    assert active_versions() == [v2.version]
