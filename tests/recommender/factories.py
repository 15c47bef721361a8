import itertools
from dataclasses import dataclass

import factory
import numpy as np
from django.utils import timezone

from interactions.models import Interaction, InteractionKind, Match
from recommender.models import RecommendationLog, UserEmbedding, UserFeatures
from registry.models import ModelKind
from tests.accounts.factories import UserFactory
from tests.registry.factories import MLModelFactory


class RecommendationLogFactory(factory.django.DjangoModelFactory):
    """An impression; pass ``experiment`` as ``"name:arm"`` for an A/B arm."""

    class Meta:
        model = RecommendationLog

    request_id = factory.Sequence(lambda n: f"request-{n}")
    user = factory.SubFactory(UserFactory)
    shown_user = factory.SubFactory(UserFactory)
    position = 1
    score = 0.5
    sources = factory.LazyFunction(lambda: ["content"])
    strategy = "full"
    model_versions = factory.LazyFunction(dict)
    experiment = ""
    created_at = factory.LazyFunction(timezone.now)


@dataclass(frozen=True)
class ArmCounts:
    impressions: int
    likes: int
    matches: int


def arm_build(*, experiment: str, arm: str, counts: ArmCounts) -> None:
    """Exactly ``counts`` in the A/B report for ``experiment``'s ``arm``, now: one
    impression per (viewer, shown) pair, then a like by the viewer on the first
    ``likes`` of them and a match on the first ``matches`` (the other member liked
    the viewer first). Written in bulk; the likes and matches are dated after the
    impressions, so each one is credited to its impression.
    """
    assert counts.matches <= counts.likes <= counts.impressions
    viewers = UserFactory.create_batch(max(1, counts.impressions // 50 + 1))
    shown = UserFactory.create_batch(min(50, counts.impressions))
    pairs = list(
        itertools.islice(itertools.product(viewers, shown), counts.impressions)
    )
    assert len(pairs) == counts.impressions
    now = timezone.now()
    RecommendationLog.objects.bulk_create(
        RecommendationLogFactory.build(
            request_id=f"{experiment}-{arm}-{viewer.pk}",
            user=viewer,
            shown_user=other,
            position=position,
            experiment=f"{experiment}:{arm}",
            created_at=now,
        )
        for position, (viewer, other) in enumerate(pairs, start=1)
    )
    liked = pairs[: counts.likes]
    Interaction.objects.bulk_create(
        [
            *(
                Interaction(actor=other, target=viewer, kind=InteractionKind.LIKE)
                for viewer, other in liked[: counts.matches]
            ),
            *(
                Interaction(actor=viewer, target=other, kind=InteractionKind.LIKE)
                for viewer, other in liked
            ),
        ]
    )
    Match.objects.bulk_create(
        Match(
            user_low=min(viewer, other, key=lambda user: user.pk),
            user_high=max(viewer, other, key=lambda user: user.pk),
            matched_at=timezone.now(),
        )
        for viewer, other in liked[: counts.matches]
    )


class UserFeaturesFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserFeatures

    user = factory.SubFactory(UserFactory)
    feature_version = "f2"
    feature_set = factory.LazyFunction(lambda: {"likes_given": 3, "age": 30})
    computed_at = factory.LazyFunction(timezone.now)


class UserEmbeddingFactory(factory.django.DjangoModelFactory):
    """A member's vector (4 float32 values) under an embedding version."""

    class Meta:
        model = UserEmbedding

    user = factory.SubFactory(UserFactory)
    model = factory.SubFactory(MLModelFactory, kind=ModelKind.EMBEDDING)
    vector = factory.LazyFunction(
        lambda: np.array([0.5, -0.25, 0.125, 1.0], dtype="<f4").tobytes()
    )
