"""A request: the arm's models through the one pipeline, then the database re-check.

:func:`recommendations_compute` reads the viewer's profile, preferences and
interactions fresh (2 queries); then ``recommender.ml.recommend.pipeline_run`` — the
one pipeline, which the offline evaluation measures as is: the hard filters over the
population, the candidate sources (liked-you, graph neighbours, FAISS, content,
popular, explore), the arm's ranking model on both directions of each pair (score =
p(viewer likes c) x p(c likes viewer) ** the model's reciprocal weight) and a
freshness boost; ONE query re-checks the best candidates against the database
(profiles and preferences may have changed since the load); maximal marginal
relevance over the appeal vectors spreads the final list; each result gets a short
reason (``recommender.serving.reasons``).

**Degradation**, in :data:`STRATEGIES` order: ``full`` → ``unranked`` (no ranking model
for the arm, or it raised: candidate scores) → ``content_popularity`` (no embedding
or index: content, popularity and exploration sources) → ``random`` (no member store,
or the pipeline failed: random allowed members straight from the database).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
from django.utils import timezone

from config.api import ApplicationError
from recommender import metrics
from recommender.filters import (
    MemberFacts,
    Viewer,
    random_allowed,
    shortlist_check,
    viewer_load,
)
from recommender.ml.candidates import Embedding, Population
from recommender.ml.recommend import (
    PipelineResult,
    diversify,
    pipeline_run,
    shortlist_size,
)
from recommender.serving.arms import (
    Arm,
    RegistrySnapshot,
    arm_of,
    registry_snapshot_read,
)
from recommender.serving.bundle import Bundle, RankingEntry
from recommender.serving.holder import bundle_holder
from recommender.serving.reasons import recommendation_build
from recommender.serving.results import Recommendation, RecommendationResult
from registry.models import ModelKind

logger = logging.getLogger(__name__)

STRATEGIES = ("full", "unranked", "content_popularity", "random")
STAGES = ("filters", "candidates", "ranking", "postprocess")


@dataclass(frozen=True)
class ArmModels:
    """The loaded models an arm is served with: no ``embedding`` without its
    index, no ``ranking`` without the embedding (its features include it)."""

    embedding: Embedding | None
    ranking: RankingEntry | None


@dataclass(frozen=True)
class Answer:
    """One strategy's answer: the results, and the versions and model ids that
    produced them."""

    results: list[Recommendation]
    strategy: str
    versions: dict
    model_ids: dict


class _Clock:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


def arm_for(*, user_id: int) -> Arm:
    """The member's A/B arm (see ``recommender.serving.arms.arm_of``) under the
    registry state of this process's bundle (read from the database when none is
    loaded yet)."""
    bundle = bundle_holder().bundle
    snapshot = bundle.snapshot if bundle is not None else registry_snapshot_read()
    return arm_of(snapshot, user_id)


def recommendations_compute(*, user, limit: int) -> RecommendationResult:
    """Up to ``limit`` members to show ``user``, best first, with the strategy used,
    the model versions, the member's A/B arm and per-stage timings.

    Every result satisfies the hard filters against fresh database rows. Never
    raises for a lesser answer: it degrades (see the module docstring). Raises
    ``ApplicationError`` (404) only when the user has no profile.
    """
    clock = _Clock()
    user_id = int(user.pk)
    holder = bundle_holder()
    try:
        bundle = holder.bundle_for_request()
    except Exception:  # noqa: BLE001 - serve without models
        logger.exception("serving bundle unavailable")
        bundle = None
    snapshot = bundle.snapshot if bundle is not None else RegistrySnapshot()
    arm = arm_of(snapshot, user_id)
    viewer = _viewer_load(user_id)
    clock.lap("filters")
    today = timezone.localdate()
    answer = None
    if bundle is not None and bundle.population is not None:
        try:
            answer = _pipeline_answer(bundle, arm, viewer, limit, today, clock)
        except Exception:  # noqa: BLE001 - a lesser answer exists
            logger.exception("recommendation pipeline failed for %s", user_id)
    if answer is None or (not answer.results and limit > 0):
        # Nothing from the pipeline: random allowed members, if the database has
        # any (an empty pipeline answer stays as it was when it has none either).
        fallback = _random(viewer, limit, today)
        if answer is None or fallback:
            answer = Answer(
                results=fallback, strategy="random", versions={}, model_ids={}
            )
        clock.lap("postprocess")
    metrics.RECOMMENDATIONS_STRATEGY.labels(strategy=answer.strategy).inc()
    for stage, seconds in clock.seconds.items():
        metrics.RECOMMENDATION_STAGE_SECONDS.labels(stage=stage).observe(seconds)
    return RecommendationResult(
        results=answer.results,
        strategy=answer.strategy,
        model_versions=answer.versions,
        experiment=dataclasses.replace(arm, model_ids=answer.model_ids),
        generation=(
            bundle.generation if bundle is not None else holder.generation_current()
        ),
        stage_seconds=clock.seconds,
        provisional=holder.provisional(bundle),
    )


def _viewer_load(user_id: int) -> Viewer:
    viewer = viewer_load(user_id=user_id)
    if viewer is None:
        raise ApplicationError(
            "Create your profile before asking for recommendations.",
            field="profile",
            status_code=404,
        )
    return viewer


def _now() -> float:
    """Unix seconds the request's features describe (tests pin it)."""
    return time.time()


def _rng() -> np.random.Generator:
    """The exploration source's randomness (a fresh, unseeded generator per
    request; tests seed it to compare serving with the offline evaluation)."""
    return np.random.default_rng()


def _arm_models(bundle: Bundle, arm: Arm) -> ArmModels:
    embedding = bundle.embeddings.get(arm.model_ids.get(ModelKind.EMBEDDING, -1))
    if embedding is not None and embedding.index is None:
        embedding = None  # no index: content and popularity only
    ranking = bundle.rankings.get(arm.model_ids.get(ModelKind.RANKING, -1))
    if embedding is None:
        ranking = None  # the ranking model's features include the embeddings
    return ArmModels(embedding=embedding, ranking=ranking)


def _pipeline_answer(bundle, arm, viewer, limit, today, clock) -> Answer:
    """The pipeline (``recommender.ml.recommend.pipeline_run``, the same function
    the offline evaluation measures) with the arm's models, then the database
    re-check of the shortlist and the diversity step."""
    population = bundle.population
    models = _arm_models(bundle, arm)
    embedding, ranking = models.embedding, models.ranking

    def ranking_failed(error: Exception) -> None:
        logger.error(
            "ranking model %s failed; unranked",
            ranking.model_id,
            exc_info=(type(error), error, error.__traceback__),
        )

    result = pipeline_run(
        population,
        viewer,
        embedding=embedding,
        model=ranking.model if ranking is not None else None,
        today=today,
        now_ts=_now(),
        rng=_rng(),
        on_ranking_error=ranking_failed,
        lap=clock.lap,
    )
    versions, model_ids = {}, {}
    if embedding is not None:
        strategy = "unranked"
        versions = {"embedding": embedding.version, "index": embedding.index_id}
        model_ids = {"embedding": embedding.model_id}
    else:
        strategy = "content_popularity"
    if result.ranked:
        strategy = "full"
        versions["ranking"] = ranking.version
        model_ids["ranking"] = ranking.model_id
    results = _postprocess(population, embedding, viewer, result, limit, today)
    clock.lap("postprocess")
    return Answer(
        results=results, strategy=strategy, versions=versions, model_ids=model_ids
    )


def _postprocess(
    population: Population,
    embedding: Embedding | None,
    viewer: Viewer,
    result: PipelineResult,
    limit: int,
    today: dt.date,
) -> list[Recommendation]:
    store = population.store
    candidates = result.candidates
    rows = candidates.positions
    order = result.order
    # Re-check the best against the database; a second batch only if the first
    # lost too many (the store is minutes old, so this is rare).
    size = shortlist_size(limit)
    chosen: list[int] = []
    facts: dict[int, MemberFacts] = {}
    for start in (0, size):
        batch = order[start : start + size]
        if not batch.size:
            break
        ids = store.user_id[rows[batch]].tolist()
        allowed = shortlist_check(
            viewer=viewer.facts,
            candidate_ids=ids,
            excluded=viewer.excluded,
            today=today,
        )
        for candidate in allowed:
            facts[candidate.user_id] = candidate
        position = {user_id: i for i, user_id in enumerate(ids)}
        chosen.extend(int(batch[position[c.user_id]]) for c in allowed)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    picked = diversify(
        np.asarray(chosen, dtype=np.int64),
        result.scores,
        rows,
        appeal=embedding.appeal if embedding is not None else None,
        store=store,
        limit=limit,
    )
    return [
        recommendation_build(
            facts[int(store.user_id[rows[i]])],
            viewer.facts,
            candidates,
            int(i),
            float(result.scores[i]),
            rank,
            bool(result.new[i]),
            today,
        )
        for rank, i in enumerate(picked, start=1)
    ]


def _random(viewer: Viewer, limit: int, today: dt.date) -> list[Recommendation]:
    try:
        chosen = random_allowed(
            viewer=viewer.facts,
            excluded=viewer.excluded,
            limit=limit,
            today=today,
            rng=np.random.default_rng(),
        )
    except Exception:  # noqa: BLE001 - nothing lesser left: an empty answer
        logger.exception("random fallback failed for %s", viewer.user_id)
        return []
    return [
        Recommendation(
            user_id=c.user_id,
            display_name=c.display_name,
            age=c.age_on(today),
            city=c.city,
            interests=[str(x) for x in c.interests or []],
            score=0.0,
            rank=rank,
            sources=["explore"],
            reason="someone new to discover",
        )
        for rank, c in enumerate(chosen, start=1)
    ]
