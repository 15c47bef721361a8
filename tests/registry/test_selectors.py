import pytest

from registry.models import ModelKind
from registry.selectors import (
    activation_list,
    model_get_active,
    model_get_challenger,
    model_list,
    registry_generation,
)
from registry.services import model_activate, model_rollback, model_set_traffic
from tests.registry.factories import versions

pytestmark = pytest.mark.django_db


def test_model_list_filters_by_kind_newest_first():
    versions(ModelKind.RANKING, count=2)
    versions(ModelKind.EMBEDDING, count=1)

    ranking = model_list(kind=ModelKind.RANKING)

    assert [m.version for m in ranking] == [2, 1]
    assert model_list().count() == 3


def test_active_and_challenger_per_kind():
    v1, v2, v3 = versions()
    assert model_get_active(kind=ModelKind.RANKING) is None
    assert model_get_challenger(kind=ModelKind.RANKING) is None

    model_activate(model=v2, actor=None)
    model_set_traffic(model=v3, traffic_percent=5, actor=None)

    assert model_get_active(kind=ModelKind.RANKING) == v2
    assert model_get_challenger(kind=ModelKind.RANKING) == v3
    assert model_get_active(kind=ModelKind.EMBEDDING) is None


def test_activation_list_is_most_recent_first_and_filters_by_kind():
    v1, v2, _ = versions(ModelKind.RANKING)
    (embedding,) = versions(ModelKind.EMBEDDING, count=1)
    first = model_activate(model=v1, actor=None)
    second = model_activate(model=v2, actor=None)
    model_activate(model=embedding, actor=None)

    assert list(activation_list(kind=ModelKind.RANKING)) == [second, first]
    assert activation_list().count() == 3


def test_registry_generation_grows_with_every_serving_change():
    v1, v2, v3 = versions()
    assert registry_generation() == 0

    seen = [registry_generation()]
    model_activate(model=v1, actor=None)
    seen.append(registry_generation())
    model_activate(model=v2, actor=None)
    seen.append(registry_generation())
    model_set_traffic(model=v3, traffic_percent=10, actor=None)
    seen.append(registry_generation())
    model_rollback(kind=ModelKind.RANKING, actor=None)
    seen.append(registry_generation())

    assert seen == sorted(set(seen))
    assert len(seen) == 5
