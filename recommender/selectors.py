"""Reads of the recommender: a member's recommendations (cache or compute), their
impressions, and the A/B report computed from them."""

import dataclasses
import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Profile, User
from config.api import ApplicationError
from interactions.models import POSITIVE_KINDS, Interaction, InteractionKind, Match
from recommender.cache import MemberCache
from recommender.ml.abtest import (
    Interval,
    ProportionTest,
    proportion_test,
    wilson_interval,
)
from recommender.models import RecommendationLog, TrainingRun, TrainingRunStatus

logger = logging.getLogger(__name__)

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# A full answer is cached this long; a degraded one (no ranking model, a failed
# load…) only briefly, so members get the full answer soon after serving recovers.
CACHE_SECONDS = 300
DEGRADED_CACHE_SECONDS = 30
# How long a computation's claim on the member's cache entry lives (see below).
CLAIM_SECONDS = 60
NO_PROFILE = "This account has no member profile, so there is nothing to recommend."


@dataclass(frozen=True)
class RecommendationPage:
    """What the recommendations endpoint answers, and what its impressions record.

    ``results`` are plain dicts with the fields of ``serving.Recommendation``;
    ``experiment`` is ``{"name", "arm"}`` (empty strings when no A/B test runs).
    """

    request_id: str
    results: list[dict]
    strategy: str
    model_versions: dict[str, int]
    experiment: dict[str, str]
    generation: str
    cached: bool
    created_at: dt.datetime

    @property
    def experiment_label(self) -> str:
        """``"name:arm"`` as impressions store it, ``""`` outside any experiment."""
        name, arm = self.experiment["name"], self.experiment["arm"]
        return f"{name}:{arm}" if name else ""


def _cache_seconds(strategy: str) -> int:
    kindred = getattr(settings, "KINDRED", {})
    if strategy == "full":
        return kindred.get("RECOMMENDATIONS_CACHE_SECONDS", CACHE_SECONDS)
    return kindred.get("RECOMMENDATIONS_DEGRADED_CACHE_SECONDS", DEGRADED_CACHE_SECONDS)


def _entry_from_result(result) -> dict:
    """A cache entry from the engine's ``RecommendationResult``: plain data only, so
    an entry written by one release is readable by the next."""
    arm = result.experiment
    return {
        "generation": str(result.generation),
        # A shallow copy per result: asdict() deep-copies every list again, which
        # py-spy put at ~12% of a cache miss; the engine's objects are discarded.
        "results": [dict(vars(item)) for item in result.results],
        "strategy": result.strategy,
        "model_versions": dict(result.model_versions),
        "experiment": {"name": arm.experiment or "", "arm": arm.arm or ""},
    }


def _is_entry(value) -> bool:
    return isinstance(value, dict) and "results" in value and "generation" in value


def recommendations_get(
    *, user: User, limit: int, request_id: str | None = None
) -> RecommendationPage:
    """The member's top ``limit`` recommendations, from their cache entry when it was
    computed under the current serving generation, else from the engine.

    The engine is always asked for ``MAX_LIMIT`` results, so every smaller limit is a
    slice of one entry. The entry lives under the member's
    ``recommendations_cache_key`` (which interactions and profile edits delete) and
    records the serving generation it was computed under: a promotion, rollback or
    index rebuild changes the generation and so retires every entry without deleting
    any. Every hit is re-checked against the database (:func:`recommendable_ids`,
    one query): a member blocked, hidden, deactivated or deleted since the entry
    was computed is left out even when the invalidation that should have removed the
    entry never reached the cache. A cache outage is logged and the answer computed.
    Raises ``ApplicationError`` (404) for an account without a member profile (e.g.
    staff).

    A computation first claims the entry with a token and stores its answer only if
    the claim is still there: an invalidation that lands while it computes (the
    member liked someone meanwhile) deletes the claim, so a stale answer is dropped
    instead of being cached for minutes.
    """
    from recommender import serving

    request_id = request_id or str(uuid.uuid4())
    member_cache = MemberCache(user.pk)
    generation = str(serving.serving_generation())
    entry = member_cache.get()
    if recommendations_entry_is_current(entry, generation=generation):
        return recommendations_cached_page(
            viewer_id=user.pk, entry=entry, limit=limit, request_id=request_id
        )
    if not Profile.objects.filter(pk=user.pk).exists():
        raise ApplicationError(NO_PROFILE, status_code=404)
    claim = {"claim": uuid.uuid4().hex}
    member_cache.set(claim, CLAIM_SECONDS)
    result = serving.recommendations_compute(user=user, limit=MAX_LIMIT)
    entry = _entry_from_result(result)
    # An answer from a bundle older than the generation (its reload is under way)
    # could never be a hit: not worth a write. Nor one without models only because
    # the process's first load is still running.
    if (
        not result.provisional
        and entry["generation"] == generation
        and member_cache.get() == claim
    ):
        member_cache.set(entry, _cache_seconds(entry["strategy"]))
    _count_cache(hit=False)
    return _page(entry, entry["results"][:limit], cached=False, request_id=request_id)


def recommendations_entry_is_current(entry, *, generation: str) -> bool:
    """Whether ``entry`` (a value read from a member's cache key) is an answer
    computed under the serving ``generation``: a hit."""
    return _is_entry(entry) and entry["generation"] == generation


def recommendations_page_ids(*, entry: dict, limit: int) -> list[int]:
    """The members the first ``limit`` results of a cache entry show."""
    return [result["user_id"] for result in entry["results"][:limit]]


def recommendations_cached_page(
    *,
    viewer_id: int,
    entry: dict,
    limit: int,
    request_id: str,
    page_allowed: set[int] | None = None,
) -> RecommendationPage:
    """The page a current cache entry answers ``viewer_id``, re-checked against the
    database (:func:`_still_showable`). ``page_allowed``: of
    :func:`recommendations_page_ids`, those a caller already found showable with
    :func:`recommendable_ids_query` in a query of its own (``recommender.hits``);
    the check then costs a query only when the page lost someone."""
    results = _still_showable(
        viewer_id=viewer_id,
        results=entry["results"],
        limit=limit,
        page_allowed=page_allowed,
    )
    _count_cache(hit=True)
    return _page(entry, results, cached=True, request_id=request_id)


def _page(entry: dict, results: list[dict], *, cached: bool, request_id: str):
    return RecommendationPage(
        request_id=request_id,
        results=results,
        strategy=entry["strategy"],
        model_versions=entry["model_versions"],
        experiment=entry["experiment"],
        generation=entry["generation"],
        cached=cached,
        created_at=timezone.now(),
    )


def recommendable_ids(*, viewer_id: int, user_ids: list[int]) -> set[int]:
    """Of ``user_ids``, the members ``viewer_id`` may still be shown, as far as
    blocks, verdicts and visibility go: an existing, active member with a visible
    profile, whom the viewer has not acted on (any kind, a block included) and who
    has not blocked the viewer. One query, on primary keys and the interaction
    indexes (``(actor, target)`` unique, ``(target, kind)``).

    Preferences are not re-checked here: they change only with an edit that
    invalidates the member's own entry.

    Plain SQL: it runs on every cache hit, where the ORM took ~3 ms to compile the
    two ``Exists`` (raw: ~1 ms, measured at 50,000 members).
    """
    if not user_ids:
        return set()
    sql, params = recommendable_ids_query(viewer_id=viewer_id, user_ids=user_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def recommendable_ids_query(*, viewer_id: int, user_ids: list[int]) -> tuple[str, list]:
    """:func:`recommendable_ids`'s query (one ``user_id`` column) and its parameters,
    for a caller that runs it inside a query of its own; ``user_ids`` not empty."""
    user_ids = [int(pk) for pk in user_ids]
    return _recommendable_sql(len(user_ids)), [
        *user_ids,
        viewer_id,
        viewer_id,
        InteractionKind.BLOCK.value,
    ]


@functools.lru_cache(maxsize=MAX_LIMIT + 1)
def _recommendable_sql(count: int) -> str:
    quote = connection.ops.quote_name
    profile, user = quote(Profile._meta.db_table), quote(User._meta.db_table)
    interaction = quote(Interaction._meta.db_table)
    placeholders = ", ".join(["%s"] * count)
    return (
        f"SELECT p.user_id FROM {profile} p JOIN {user} u ON u.id = p.user_id "
        f"WHERE p.user_id IN ({placeholders}) AND p.is_visible AND u.is_active "
        f"AND NOT EXISTS (SELECT 1 FROM {interaction} i "
        "WHERE i.actor_id = %s AND i.target_id = p.user_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {interaction} i "
        "WHERE i.target_id = %s AND i.actor_id = p.user_id AND i.kind = %s)"
    )


def _still_showable(
    *,
    viewer_id: int,
    results: list[dict],
    limit: int,
    page_allowed: set[int] | None = None,
) -> list[dict]:
    """The first ``limit`` of a cached answer without the members who may no longer
    be shown, ranks renumbered so that ``rank`` stays the position shown
    (impressions record it).

    Deleting the entry is not enough to keep blocks, hidden profiles and closed
    accounts out: the deletion is lost when the cache is unreachable at that moment
    (a hung Redis), and a member who hides their profile or whose account is closed
    invalidates only their own entry, not the entries of everyone shown them.

    Only the page served is checked; the rest of the entry only when the page lost
    someone (so the page is still filled up to ``limit``).
    """
    page = results[:limit]
    page_ids = {result["user_id"] for result in page}
    allowed = page_allowed
    if allowed is None:
        allowed = recommendable_ids(viewer_id=viewer_id, user_ids=list(page_ids))
    if len(allowed) == len(page_ids):
        return page
    rest_ids = [result["user_id"] for result in results[limit:]]
    if rest_ids:
        allowed = allowed | recommendable_ids(viewer_id=viewer_id, user_ids=rest_ids)
    kept = [result for result in results if result["user_id"] in allowed][:limit]
    return [{**result, "rank": rank} for rank, result in enumerate(kept, start=1)]


def _count_cache(*, hit: bool) -> None:
    from recommender.metrics import RECOMMENDATION_CACHE

    RECOMMENDATION_CACHE.labels(result="hit" if hit else "miss").inc()


# --- impressions --------------------------------------------------------------------


def impression_get_latest(
    *, user_id: int, shown_user_id: int, request_id: str | None = None
) -> RecommendationLog | None:
    """The latest time ``user_id`` was shown ``shown_user_id`` (within ``request_id``
    when given), or ``None``.

    Impressions reach ``RecommendationLog`` only when the buffer is drained (every
    few seconds): the member's recent pages still in Redis are read too, and the
    later of the two wins (an unsaved ``RecommendationLog`` when it comes from
    Redis). Redis unreachable: the database's answer, logged.
    """
    impressions = RecommendationLog.objects.filter(
        user_id=user_id, shown_user_id=shown_user_id
    )
    if request_id:
        impressions = impressions.filter(request_id=request_id)
    stored = impressions.order_by("-created_at", "-id").first()
    recent = _impression_recent(
        user_id=user_id, shown_user_id=shown_user_id, request_id=request_id or None
    )
    if recent is not None and (stored is None or recent.created_at > stored.created_at):
        return recent
    return stored


def _impression_recent(
    *, user_id: int, shown_user_id: int, request_id: str | None
) -> RecommendationLog | None:
    from recommender import impressions as buffer

    if not buffer.buffer_enabled():
        return None  # embedded mode: written in-process, already in the database
    try:
        row = buffer.impression_find_recent(
            user_id=user_id, shown_user_id=shown_user_id, request_id=request_id
        )
    except Exception:  # noqa: BLE001 - Redis down or hung: the database's answer
        logger.warning("recent impressions unreadable", exc_info=True)
        return None
    if row is None:
        return None
    return buffer.impression_from_row(row)


# --- the A/B report -----------------------------------------------------------------


@dataclass(frozen=True)
class ArmReport:
    """One experiment arm's counts, rates per impression with their 95 % Wilson
    intervals, and (for a challenger arm) its tests against the control arm of the
    same experiment over the same impressions: ``like_test`` and ``match_test``
    (``recommender.ml.abtest.proportion_test``; ``None`` for the control arm or
    without a control arm to compare with). The tests are derived from the counts,
    so they take no part in comparing two reports."""

    experiment: str
    arm: str
    impressions: int
    likes: int
    matches: int
    like_test: ProportionTest | None = field(default=None, compare=False)
    match_test: ProportionTest | None = field(default=None, compare=False)

    @property
    def like_rate(self) -> float | None:
        return self.likes / self.impressions if self.impressions else None

    @property
    def match_rate(self) -> float | None:
        return self.matches / self.impressions if self.impressions else None

    @property
    def like_interval(self) -> Interval | None:
        return wilson_interval(successes=self.likes, trials=self.impressions)

    @property
    def match_interval(self) -> Interval | None:
        return wilson_interval(successes=self.matches, trials=self.impressions)


ARM_ORDER = {"control": 0, "challenger": 1}
END_OF_TIME = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def ab_report(
    *,
    kind: str | None = None,
    since: dt.datetime | None = None,
    experiment: str | None = None,
) -> list[ArmReport]:
    """Impressions, likes and matches per experiment arm, computed in the database.

    Each like is credited to exactly one impression: the latest impression of the
    pair shown at or before the like (a member shown the same person in three
    requests and liking them once counts one like, not three). An impression is
    *liked* when the member's current verdict on the shown member is a like or a
    super like recorded in ``[impression, next impression of the pair)``; it
    *matched* when it is liked and the pair has a match made at or after the
    impression. Rates are per impression. Only impressions served inside an
    experiment count; ``kind`` keeps experiments about that model kind (experiment
    names start with the kind, e.g. ``ranking-v5-vs-v4``), ``experiment`` that one
    experiment (its name without the arm), ``since`` impressions from then on.

    Each challenger arm is tested against its experiment's control arm (like rate
    and match rate, see ``ArmReport``).
    """
    impressions = RecommendationLog.objects.exclude(experiment="")
    if kind:
        impressions = impressions.filter(
            Q(experiment__startswith=f"{kind}-") | Q(experiment__contains=f"+{kind}-")
        )
    if experiment:
        impressions = impressions.filter(
            experiment__in=[f"{experiment}:{arm}" for arm in ARM_ORDER]
        )
    if since is not None:
        impressions = impressions.filter(created_at__gte=since)

    # The like window of an impression ends where the pair's next impression starts
    # (or never): that is what credits a like to one impression only.
    next_shown_at = Coalesce(
        Subquery(
            RecommendationLog.objects.filter(
                user_id=OuterRef("user_id"),
                shown_user_id=OuterRef("shown_user_id"),
                created_at__gt=OuterRef("created_at"),
            )
            .order_by("created_at")
            .values("created_at")[:1]
        ),
        Value(END_OF_TIME, output_field=DateTimeField()),
    )
    liked = Exists(
        Interaction.objects.filter(
            actor_id=OuterRef("user_id"),
            target_id=OuterRef("shown_user_id"),
            kind__in=POSITIVE_KINDS,
            created_at__gte=OuterRef("created_at"),
            created_at__lt=OuterRef("next_shown_at"),
        )
    )
    matched = Exists(
        Match.objects.filter(
            Q(user_low_id=OuterRef("user_id"), user_high_id=OuterRef("shown_user_id"))
            | Q(
                user_low_id=OuterRef("shown_user_id"), user_high_id=OuterRef("user_id")
            ),
            matched_at__gte=OuterRef("created_at"),
        )
    )
    rows = (
        impressions.annotate(next_shown_at=next_shown_at)
        .annotate(liked=liked, matched=matched)
        .values("experiment")
        .annotate(
            n_impressions=Count("pk"),
            n_likes=Count("pk", filter=Q(liked=True)),
            n_matches=Count("pk", filter=Q(liked=True, matched=True)),
        )
    )
    reports = []
    for row in rows:
        name, _, arm = row["experiment"].rpartition(":")
        reports.append(
            ArmReport(
                experiment=name or row["experiment"],
                arm=arm if name else "",
                impressions=row["n_impressions"],
                likes=row["n_likes"],
                matches=row["n_matches"],
            )
        )
    reports.sort(key=lambda r: (r.experiment, ARM_ORDER.get(r.arm, 2), r.arm))
    return _with_tests(reports)


def _with_tests(reports: list[ArmReport]) -> list[ArmReport]:
    """``reports`` with every challenger arm's tests against its control arm."""
    controls = {r.experiment: r for r in reports if r.arm == "control"}
    tested = []
    for report in reports:
        control = controls.get(report.experiment)
        if report.arm != "control" and control is not None:
            report = dataclasses.replace(
                report,
                like_test=proportion_test(
                    successes_a=control.likes,
                    trials_a=control.impressions,
                    successes_b=report.likes,
                    trials_b=report.impressions,
                ),
                match_test=proportion_test(
                    successes_a=control.matches,
                    trials_a=control.impressions,
                    successes_b=report.matches,
                    trials_b=report.impressions,
                ),
            )
        tested.append(report)
    return tested


def ab_report_since(*, days: int | None) -> dt.datetime | None:
    """The start of a report window of ``days`` days ending now (None: all time)."""
    return None if days is None else timezone.now() - dt.timedelta(days=days)


# --- training runs ------------------------------------------------------------------


def training_run_last_finished(*, status: str) -> dt.datetime | None:
    """When the latest training run that ended with ``status`` ("succeeded" or
    "failed") finished, or ``None`` if none did."""
    if status not in (TrainingRunStatus.SUCCEEDED, TrainingRunStatus.FAILED):
        raise ValueError(f"not a final training run status: {status!r}")
    return (
        TrainingRun.objects.filter(status=status, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
