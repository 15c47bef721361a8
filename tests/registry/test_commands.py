from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate
from tests.registry.factories import versions

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_promote_activates_the_version_and_prints_the_change():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)

    output = run("promote", "ranking", "2", "--reason", "nightly looks good")

    assert "ranking: v1 → v2" in output
    v2.refresh_from_db()
    assert v2.is_active
    activation = ModelActivation.objects.get(to_model=v2)
    assert activation.action == ActivationAction.PROMOTE
    assert activation.actor is None
    assert activation.actor_label.startswith("cli")
    assert activation.reason == "nightly looks good"


def test_promote_accepts_the_v_prefix():
    versions(count=1)

    assert "none → v1" in run("promote", "ranking", "v1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("promote", "ranking", "9"), "ranking v9 is not registered"),
        (("promote", "ranking", "latest"), "expected a number"),
        (("promote", "telepathy", "1"), "invalid choice"),
        (("rollback", "telepathy"), "invalid choice"),
    ],
)
def test_bad_kind_or_version_is_a_command_error(args, message):
    versions(count=1)

    with pytest.raises(CommandError, match=message):
        call_command(*args)

    assert not MLModel.objects.filter(is_active=True).exists()


def test_promoting_the_active_version_is_a_command_error():
    (v1,) = versions(count=1)
    model_activate(model=v1, actor=None)

    with pytest.raises(CommandError, match="already active"):
        call_command("promote", "ranking", "1")


def test_rollback_reactivates_the_previous_version():
    v1, v2, _ = versions()
    model_activate(model=v1, actor=None)
    model_activate(model=v2, actor=None)

    output = run("rollback", "ranking", "--reason", "latency spike")

    assert "ranking: v2 → v1" in output
    assert list(MLModel.objects.filter(is_active=True)) == [v1]
    activation = ModelActivation.objects.get(action=ActivationAction.ROLLBACK)
    assert activation.reason == "latency spike"
    assert activation.actor_label.startswith("cli")


def test_rollback_with_nothing_to_roll_back_to_is_a_command_error():
    (v1,) = versions(ModelKind.EMBEDDING, count=1)
    model_activate(model=v1, actor=None)

    with pytest.raises(CommandError, match="Nothing to roll back to"):
        call_command("rollback", "embedding")
