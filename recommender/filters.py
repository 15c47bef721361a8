"""The hard filters of recommendations: who may never be shown to whom.

A candidate is allowed for a viewer only if all of these hold:

* not the viewer themself;
* the viewer never interacted with them (any kind) and neither side blocked the
  other;
* their profile is visible and their account active;
* both members' preferences hold: each seeks the other's gender, each one's age is
  in the other's range, and, when both have coordinates, their distance is within
  each one's ``max_distance_km`` (a member without a limit accepts any distance).

Two implementations of the same rules: ``recommender.ml.filters.population_mask``,
vectorised over the members held in memory (prunes every candidate source, in
serving, training and evaluation alike), and :func:`pair_allowed`, on fresh database
rows (:func:`shortlist_check`, the final word on what is shown, and the random
fallback). Both count age in whole years on today's date, like ``Profile.age``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models import Q

from accounts.models import Preferences, Profile, User, age_on
from interactions.models import Interaction
from recommender.data import _interest_list, _seeking_mask
from recommender.ml.data import (
    GENDER_CODES,
    KIND_CODES,
    InteractionArrays,
    MemberArrays,
)
from recommender.ml.features import haversine_km
from recommender.ml.filters import excluded_ids
from recommender.ml.recommend import ViewerState


def viewer_history_load(*, user_id: int) -> InteractionArrays:
    """Every interaction ``user_id`` gave or received (one query)."""
    rows = list(
        Interaction.objects.filter(Q(actor_id=user_id) | Q(target_id=user_id))
        .order_by()
        .values_list("actor_id", "target_id", "kind", "created_at")
    )
    return InteractionArrays(
        actor=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        target=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
        kind=np.fromiter(
            (KIND_CODES[r[2]] for r in rows), dtype=np.int8, count=len(rows)
        ),
        ts=np.fromiter(
            (r[3].timestamp() for r in rows), dtype=np.float64, count=len(rows)
        ),
    )


# --- fresh rows --------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFacts:
    """One member's fresh row: what the rules and the response need (the two
    times are read for the viewer only: candidates do not need them)."""

    user_id: int
    display_name: str
    birth_date: dt.date
    gender: str
    city: str
    latitude: float | None
    longitude: float | None
    interests: list
    is_visible: bool
    is_active: bool
    seeking_genders: list
    min_age: int
    max_age: int
    max_distance_km: int | None
    created_at: dt.datetime | None = None
    last_active_at: dt.datetime | None = None

    def seeks(self, gender: str) -> bool:
        return not self.seeking_genders or gender in self.seeking_genders

    def age_on(self, today: dt.date) -> int:
        return age_on(self.birth_date, today)


_PROFILE_COLUMNS = (
    "user_id",
    "display_name",
    "birth_date",
    "gender",
    "city",
    "latitude",
    "longitude",
    "interests",
    "is_visible",
)
_TIME_COLUMNS = ("created_at", "last_active_at")


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _aware(value):
    """Raw SQLite rows carry naive UTC datetimes (or text); PostgreSQL aware ones."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def _facts(row, *, with_times: bool = False) -> MemberFacts:
    """Facts from a row of profile columns, is_active, the four preference
    columns (NULL without a Preferences row: the defaults) and, ``with_times``,
    the two times.

    Positional on purpose: this runs for every row of every shortlist, and building
    keyword dicts per row cost twice as much (3.4 vs 6.5 ms for 160 rows, measured
    at 100,000 members under load; py-spy had ``_facts`` at ~15% of a cache miss)."""
    (
        user_id,
        display_name,
        birth_date,
        gender,
        city,
        latitude,
        longitude,
        interests,
        is_visible,
        is_active,
        seeking,
        min_age,
        max_age,
        max_distance,
    ) = row[: len(_PROFILE_COLUMNS) + 5]
    seeking = _json(seeking)
    created_at = last_active_at = None
    if with_times:
        created_at, last_active_at = (_aware(v) for v in row[-len(_TIME_COLUMNS) :])
    return MemberFacts(
        user_id,
        display_name,
        birth_date,
        gender,
        city,
        latitude,
        longitude,
        _json(interests) or [],
        is_visible,
        bool(is_active),
        seeking if isinstance(seeking, list) else [],
        18 if min_age is None else min_age,
        99 if max_age is None else max_age,
        max_distance,
        created_at,
        last_active_at,
    )


def _facts_sql(count: int, *, with_times: bool) -> str:
    quote = connection.ops.quote_name
    profile, user = quote(Profile._meta.db_table), quote(User._meta.db_table)
    preferences = quote(Preferences._meta.db_table)
    columns = [f"p.{quote(c)}" for c in _PROFILE_COLUMNS] + [
        f"u.{quote('is_active')}",
        *(
            f"pr.{quote(c)}"
            for c in ("seeking_genders", "min_age", "max_age", "max_distance_km")
        ),
    ]
    if with_times:
        columns += [f"p.{quote(c)}" for c in _TIME_COLUMNS]
    placeholders = ", ".join(["%s"] * count)
    return (
        f"SELECT {', '.join(columns)} FROM {profile} p "
        f"JOIN {user} u ON u.id = p.user_id "
        f"LEFT JOIN {preferences} pr ON pr.user_id = p.user_id "
        f"WHERE p.user_id IN ({placeholders})"
    )


def member_facts_load(*, user_ids, with_times: bool = False) -> dict[int, MemberFacts]:
    """Fresh rows of the members ``user_ids`` (one query), by user id; members
    without a profile are absent. Missing preferences mean the defaults.

    Plain SQL rather than the ORM: this runs on every recommendation over a
    shortlist of ~160 members, where the ORM's per-row conversions cost more than
    the query (measured at 100,000 members)."""
    user_ids = [int(x) for x in user_ids]
    if not user_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_facts_sql(len(user_ids), with_times=with_times), user_ids)
        rows = cursor.fetchall()
    return {row[0]: _facts(row, with_times=with_times) for row in rows}


@dataclass
class Viewer(ViewerState):
    """The member asking, read fresh from the database for each computation: the
    pipeline's ``ViewerState`` (one-row ``members``, every interaction they gave or
    received as ``history``, the ``excluded`` ids) plus ``facts``, their profile
    and preferences row."""

    facts: MemberFacts


def viewer_load(*, user_id: int) -> Viewer | None:
    """The viewer's fresh state in two queries (profile and preferences; the
    interactions they gave or received), or None without a profile."""
    facts = member_facts_load(user_ids=[user_id], with_times=True).get(user_id)
    if facts is None:
        return None
    history = viewer_history_load(user_id=user_id)
    return Viewer(
        user_id=user_id,
        facts=facts,
        members=member_arrays_of(facts),
        history=history,
        excluded=excluded_ids(user_id=user_id, history=history),
    )


def member_arrays_of(facts: MemberFacts) -> MemberArrays:
    """A one-row ``MemberArrays`` of ``facts``, converted like ``members_load``."""
    nan = float("nan")
    return MemberArrays(
        user_id=np.array([facts.user_id], dtype=np.int64),
        birth_day=np.array(
            [(facts.birth_date - dt.date(1970, 1, 1)).days], dtype=np.int32
        ),
        gender=np.array([GENDER_CODES[facts.gender]], dtype=np.int8),
        lat=np.array([nan if facts.latitude is None else facts.latitude], np.float32),
        lon=np.array([nan if facts.longitude is None else facts.longitude], np.float32),
        interests=[_interest_list(facts.interests)],
        created_ts=np.array([facts.created_at.timestamp()], dtype=np.float64),
        last_active_ts=np.array(
            [nan if facts.last_active_at is None else facts.last_active_at.timestamp()],
            dtype=np.float64,
        ),
        is_visible=np.array([facts.is_visible], dtype=bool),
        seeking_mask=np.array([_seeking_mask(facts.seeking_genders)], dtype=np.uint8),
        min_age=np.array([facts.min_age], dtype=np.int16),
        max_age=np.array([facts.max_age], dtype=np.int16),
        max_distance_km=np.array(
            [np.inf if facts.max_distance_km is None else facts.max_distance_km],
            dtype=np.float32,
        ),
    )


def pair_allowed(
    viewer: MemberFacts,
    candidate: MemberFacts,
    *,
    today: dt.date,
    excluded: np.ndarray,
) -> bool:
    """Whether every rule allows showing ``candidate`` to ``viewer`` (fresh rows;
    ``excluded``: sorted user ids the viewer interacted with or was blocked by)."""
    if candidate.user_id == viewer.user_id:
        return False
    slot = np.searchsorted(excluded, candidate.user_id)
    if slot < excluded.size and excluded[slot] == candidate.user_id:
        return False
    if not (candidate.is_visible and candidate.is_active):
        return False
    if not (viewer.seeks(candidate.gender) and candidate.seeks(viewer.gender)):
        return False
    viewer_age, candidate_age = viewer.age_on(today), candidate.age_on(today)
    if not viewer.min_age <= candidate_age <= viewer.max_age:
        return False
    if not candidate.min_age <= viewer_age <= candidate.max_age:
        return False
    return _within_distance(viewer, candidate)


def _within_distance(a: MemberFacts, b: MemberFacts) -> bool:
    limits = [x for x in (a.max_distance_km, b.max_distance_km) if x is not None]
    located = None not in (a.latitude, a.longitude, b.latitude, b.longitude)
    if not limits or not located:
        return True
    distance = float(haversine_km(a.latitude, a.longitude, b.latitude, b.longitude))
    return distance <= min(limits)


def shortlist_check(
    *, viewer: MemberFacts, candidate_ids: list[int], excluded: np.ndarray, today
) -> list[MemberFacts]:
    """Re-check a shortlist against the database in ONE query: the facts of the
    candidates every rule allows for ``viewer``, in the order of ``candidate_ids``
    (``excluded``: see :func:`pair_allowed`)."""
    facts = member_facts_load(user_ids=candidate_ids)
    return [
        facts[user_id]
        for user_id in candidate_ids
        if user_id in facts
        and pair_allowed(viewer, facts[user_id], today=today, excluded=excluded)
    ]


def random_allowed(
    *,
    viewer: MemberFacts,
    excluded: np.ndarray,
    limit: int,
    today: dt.date,
    rng: np.random.Generator,
    max_rounds: int = 4,
) -> list[MemberFacts]:
    """Up to ``limit`` random members allowed for ``viewer``, from the database
    alone (the last fallback: no model, no member store). Reads a window of members
    starting at a random user id, pre-filtered in SQL (visible, active, of a sought
    gender), a few windows at most."""
    viewer_id = viewer.user_id
    visible = Profile.objects.filter(is_visible=True, user__is_active=True).exclude(
        user_id=viewer_id
    )
    if viewer.seeking_genders:
        visible = visible.filter(gender__in=viewer.seeking_genders)
    lowest = visible.order_by("user_id").values_list("user_id", flat=True).first()
    if lowest is None:
        return []
    highest = visible.order_by("-user_id").values_list("user_id", flat=True).first()
    columns = (
        *_PROFILE_COLUMNS,
        "user__is_active",
        "user__preferences__seeking_genders",
        "user__preferences__min_age",
        "user__preferences__max_age",
        "user__preferences__max_distance_km",
    )
    found: dict[int, MemberFacts] = {}
    window = max(limit * 20, 200)
    for _ in range(max_rounds):
        start = int(rng.integers(lowest, highest + 1))
        ordered = visible.order_by("user_id").values_list(*columns)
        rows = list(ordered.filter(user_id__gte=start)[:window])
        if len(rows) < window:  # wrap around to the lowest ids
            rows += ordered.filter(user_id__lt=start)[: window - len(rows)]
        for row in rows:
            candidate = _facts(row)
            if pair_allowed(viewer, candidate, today=today, excluded=excluded):
                found[candidate.user_id] = candidate
        if len(found) >= limit or len(rows) < window:
            break  # enough, or every candidate row was read
    chosen = list(found.values())
    rng.shuffle(chosen)
    return chosen[:limit]
