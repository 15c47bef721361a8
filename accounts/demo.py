"""Demo data: writes the synthetic population of ``recommender.ml.synthetic`` as rows.

Demo members are the users named ``demo_00001``, ``demo_00002``, … (the index of a
member in the generated arrays plus one, zero-padded to at least five digits). They
all share one password, :data:`DEMO_PASSWORD`, hashed once and reused, so any of them
can log in through the API. See ``recommender/ml/synthetic.py`` for the planted
preference structure the data carries.

The write is one transaction: a failure leaves nothing half-seeded. The rows go in
through ``interactions.bulk``, the writer the importers use too: users, profiles and
preferences with ``bulk_create`` in large batches; interactions with PostgreSQL
``COPY`` (a multi-row ``INSERT`` elsewhere, e.g. SQLite); matches, computed from the
generated verdicts by the rule of ``interactions.matching``, with ``bulk_create``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Preferences, Profile, User
from interactions.bulk import (
    NewMember,
    interactions_insert,
    matches_create,
    members_insert,
)
from interactions.matching import mutual_pairs
from interactions.models import Interaction, Match
from recommender.ml import synthetic

DEMO_PASSWORD = "kindred-demo"
DEMO_USERNAME_PREFIX = "demo_"
DEMO_USERNAME_PATTERN = r"^demo_[0-9]+$"
DEMO_CONTEXT = {"source": "seed_demo"}
BULK_BATCH_SIZE = 5_000
# Serialises concurrent seeders on PostgreSQL (arbitrary constant: "kind" in ASCII).
_ADVISORY_LOCK_KEY = 0x6B696E64


@dataclass(frozen=True)
class DemoSeedProgress:
    """One progress report: ``done`` of ``total`` items of ``stage`` so far."""

    stage: str
    done: int
    total: int
    stage_elapsed_seconds: float


@dataclass(frozen=True)
class DemoSeedSummary:
    """What :func:`demo_seed` did (``skipped``: demo data was present, nothing done)."""

    members: int
    interactions_by_kind: dict[str, int] = field(default_factory=dict)
    matches: int = 0
    elapsed_seconds: float = 0.0
    skipped: bool = False
    flushed_members: int = 0
    password: str = DEMO_PASSWORD

    @property
    def interactions(self) -> int:
        return sum(self.interactions_by_kind.values())


ProgressCallback = Callable[[DemoSeedProgress], None]


def demo_members():
    """Queryset of the demo members (users named ``demo_<digits>``)."""
    return User.objects.filter(
        username__startswith=DEMO_USERNAME_PREFIX,
        username__regex=DEMO_USERNAME_PATTERN,
    )


def demo_username(*, index: int, width: int) -> str:
    """Username of the member at ``index`` (0-based) of the generated arrays."""
    return f"{DEMO_USERNAME_PREFIX}{index + 1:0{width}d}"


def demo_seed(
    *,
    users: int,
    seed: int,
    interactions_per_user: int = 20,
    flush: bool = False,
    progress: ProgressCallback | None = None,
) -> DemoSeedSummary:
    """Create ``users`` demo members with ~``interactions_per_user`` interactions each,
    and the matches their mutual likes imply; deterministic given ``seed``.

    If demo members exist and ``flush`` is false, nothing changes and the summary has
    ``skipped=True`` (``members`` is then the number present). With ``flush`` the
    existing demo members and everything cascading from them are deleted first, in
    the same transaction as the new rows.
    """
    if users < 1:
        raise ValueError("users must be at least 1")
    if interactions_per_user < 0:
        raise ValueError("interactions_per_user must be at least 0")
    report = progress or (lambda _: None)
    started = time.monotonic()

    present = demo_members().count()
    if present and not flush:
        return DemoSeedSummary(members=present, skipped=True)

    stage_started = time.monotonic()
    report(DemoSeedProgress("generate", 0, users, 0.0))
    dataset = synthetic.generate_dataset(
        n_members=users, seed=seed, interactions_per_member=interactions_per_user
    )
    report(DemoSeedProgress("generate", users, users, time.monotonic() - stage_started))
    # Hashing is deliberately slow: once for everybody, not once per member.
    password_hash = make_password(DEMO_PASSWORD)
    window_end = timezone.now().replace(microsecond=0)
    window_start = window_end - dt.timedelta(seconds=dataset.config.window_seconds)

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        present = demo_members().count()
        if present and not flush:
            return DemoSeedSummary(members=present, skipped=True)
        if present:
            _flush_demo_members(report)
        user_ids = _insert_members(
            dataset, password_hash, window_start, window_end, report
        )
        _insert_interactions(dataset, user_ids, window_start, report)
        matches = _insert_matches(dataset, user_ids, window_start, report)
        commit_started = time.monotonic()
    # Deferred foreign-key checks of every inserted row run at commit.
    report(DemoSeedProgress("commit", 0, 0, time.monotonic() - commit_started))

    return DemoSeedSummary(
        members=users,
        interactions_by_kind=dataset.interactions.count_by_kind(),
        matches=matches,
        elapsed_seconds=time.monotonic() - started,
        flushed_members=present,
    )


def _flush_demo_members(report: ProgressCallback) -> None:
    stage_started = time.monotonic()
    members = demo_members()
    total = members.count()
    report(DemoSeedProgress("flush", 0, total, 0.0))
    # Bulk deletes of the big dependent tables first, so the cascade collector of the
    # user delete below has little left to load.
    member_ids = members.values("pk")
    Interaction.objects.filter(actor__in=member_ids).delete()
    Interaction.objects.filter(target__in=member_ids).delete()
    Match.objects.filter(user_low__in=member_ids).delete()
    Match.objects.filter(user_high__in=member_ids).delete()
    Profile.objects.filter(user__in=member_ids).delete()
    Preferences.objects.filter(user__in=member_ids).delete()
    members.delete()
    report(DemoSeedProgress("flush", total, total, time.monotonic() - stage_started))


def _datetimes(window_start: dt.datetime, offsets: Iterable[float]):
    """The moments ``offsets`` seconds into the window."""
    return [window_start + dt.timedelta(seconds=s) for s in offsets]


def _bulk_progress(report: ProgressCallback):
    def forward(stage: str, done: int, total: int, seconds: float) -> None:
        report(DemoSeedProgress(stage, done, total, seconds))

    return forward


def _insert_members(
    dataset: synthetic.SyntheticDataset,
    password_hash: str,
    window_start: dt.datetime,
    window_end: dt.datetime,
    report: ProgressCallback,
) -> np.ndarray:
    """Users, profiles and preferences; returns (n,) int64 user ids by member index."""
    members = dataset.members
    n = members.n
    width = max(5, len(str(n)))
    joined = _datetimes(window_start, members.created_at_s.tolist())
    last_active = _datetimes(window_start, members.last_active_at_s.tolist())
    names = synthetic.display_names(members)
    interests = synthetic.interest_lists(members)
    bios = synthetic.bios(members, interests)
    birth_dates = [
        window_end.date() - dt.timedelta(days=days)
        for days in members.birth_offset_days.tolist()
    ]
    seeking = [
        [synthetic.GENDERS[g] for g in np.flatnonzero(row)] for row in members.seeking
    ]
    new = [
        NewMember(
            username=demo_username(index=i, width=width),
            joined_at=joined[i],
            display_name=names[i],
            birth_date=birth_dates[i],
            gender=synthetic.GENDERS[members.gender[i]],
            seeking_genders=seeking[i],
            city=synthetic.CITIES[members.city[i]].name,
            latitude=float(members.latitude[i]),
            longitude=float(members.longitude[i]),
            bio=bios[i],
            interests=interests[i],
            last_active_at=last_active[i],
            is_visible=bool(members.is_visible[i]),
            min_age=int(members.min_age[i]),
            max_age=int(members.max_age[i]),
            max_distance_km=None
            if members.max_distance_km[i] == synthetic.NO_DISTANCE_LIMIT
            else int(members.max_distance_km[i]),
        )
        for i in range(n)
    ]
    user_ids = members_insert(
        members=new,
        password=password_hash,
        batch_size=BULK_BATCH_SIZE,
        progress=_bulk_progress(report),
    )
    return np.asarray(user_ids, dtype=np.int64)


def _insert_interactions(
    dataset: synthetic.SyntheticDataset,
    user_ids: np.ndarray,
    window_start: dt.datetime,
    report: ProgressCallback,
) -> None:
    interactions = dataset.interactions
    start64 = np.datetime64(window_start.replace(tzinfo=None), "s")
    interactions_insert(
        actor_ids=user_ids[interactions.actor],
        target_ids=user_ids[interactions.target],
        kinds=np.asarray(synthetic.KINDS)[interactions.kind],
        created_at=start64 + interactions.created_at_s.astype("timedelta64[s]"),
        context=DEMO_CONTEXT,
        # Fresh planner statistics after a load this size (autovacuum's analyze
        # comes later) for the queries that follow a seed.
        analyze=True,
        progress=_bulk_progress(report),
    )


def _insert_matches(
    dataset: synthetic.SyntheticDataset,
    user_ids: np.ndarray,
    window_start: dt.datetime,
    report: ProgressCallback,
) -> int:
    """One Match per mutual positive pair among the demo members; returns the count."""
    stage_started = time.monotonic()
    interactions = dataset.interactions
    # The verdicts as written, dated in seconds into the window: only the matched
    # pairs' dates become datetimes.
    matched = mutual_pairs(
        zip(
            user_ids[interactions.actor].tolist(),
            user_ids[interactions.target].tolist(),
            np.asarray(synthetic.KINDS)[interactions.kind].tolist(),
            interactions.created_at_s.tolist(),
            strict=True,
        )
    )
    inserted = matches_create(
        matched_at={
            pair: window_start + dt.timedelta(seconds=seconds)
            for pair, seconds in matched.items()
        },
        batch_size=BULK_BATCH_SIZE,
    )
    elapsed = time.monotonic() - stage_started
    report(DemoSeedProgress("matches", inserted, inserted, elapsed))
    return inserted
