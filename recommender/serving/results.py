"""What a recommendation request answers."""

from __future__ import annotations

from dataclasses import dataclass

from recommender.serving.arms import Arm


@dataclass
class Recommendation:
    user_id: int
    display_name: str
    age: int
    city: str
    interests: list[str]
    score: float
    rank: int
    sources: list[str]
    reason: str


@dataclass
class RecommendationResult:
    results: list[Recommendation]
    strategy: str
    model_versions: dict[str, int]
    experiment: Arm
    generation: str
    stage_seconds: dict[str, float]
    # Answered without models only because this process's first load was still
    # running: a moment later the same request gets the full answer, so the
    # result cache must not keep this one.
    provisional: bool = False
