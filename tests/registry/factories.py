import factory

from registry.models import MLModel, ModelKind


class MLModelFactory(factory.django.DjangoModelFactory):
    """A registered version; versions count up per factory use, so they never clash."""

    class Meta:
        model = MLModel

    kind = ModelKind.RANKING
    version = factory.Sequence(lambda n: n + 1)
    metrics = factory.LazyFunction(lambda: {"auc": 0.71, "ndcg@10": 0.42})
    feature_version = "f1"


def versions(kind: str = ModelKind.RANKING, count: int = 3) -> list[MLModel]:
    """``count`` inactive versions v1..vN of ``kind``."""
    return [MLModelFactory(kind=kind, version=n) for n in range(1, count + 1)]
