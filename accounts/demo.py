"""Demo data: writes the synthetic population of ``recommender.ml.synthetic`` as rows.

Demo members are the users named ``demo_00001``, ``demo_00002``, … (the index of a
member in the generated arrays plus one, zero-padded to at least five digits). They
all share one password, :data:`DEMO_PASSWORD`, hashed once and reused, so any of them
can log in through the API. See ``recommender/ml/synthetic.py`` for the planted
preference structure the data carries.

The write is one transaction: a failure leaves nothing half-seeded. Users, profiles
and preferences go in with ``bulk_create`` in large batches; interactions with
PostgreSQL ``COPY`` (a multi-row ``INSERT`` elsewhere, e.g. SQLite); matches with one
``INSERT … SELECT`` joining the interactions table with itself.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from accounts.models import Preferences, Profile, User
from interactions.models import Interaction, Match
from recommender.ml import synthetic

DEMO_PASSWORD = "kindred-demo"
DEMO_USERNAME_PREFIX = "demo_"
DEMO_USERNAME_PATTERN = r"^demo_[0-9]+$"
DEMO_CONTEXT = {"source": "seed_demo"}
BULK_BATCH_SIZE = 5_000
COPY_CHUNK_ROWS = 100_000
INSERT_CHUNK_ROWS = 5_000
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

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        present = demo_members().count()
        if present and not flush:
            return DemoSeedSummary(members=present, skipped=True)
        if present:
            _flush_demo_members(report)
        user_ids = _insert_members(dataset, password_hash, window_end, report)
        _insert_interactions(dataset, user_ids, window_end, report)
        matches = _insert_matches(user_ids, report)
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


def _datetimes(window_end: dt.datetime, window_seconds: int, offsets: np.ndarray):
    window_start = window_end - dt.timedelta(seconds=window_seconds)
    return [window_start + dt.timedelta(seconds=s) for s in offsets.tolist()]


def _insert_members(
    dataset: synthetic.SyntheticDataset,
    password_hash: str,
    window_end: dt.datetime,
    report: ProgressCallback,
) -> np.ndarray:
    """Users, profiles and preferences; returns (n,) int64 user ids by member index."""
    members = dataset.members
    n = members.n
    width = max(5, len(str(n)))
    window_seconds = dataset.config.window_seconds
    joined = _datetimes(window_end, window_seconds, members.created_at_s)
    last_active = _datetimes(window_end, window_seconds, members.last_active_at_s)

    stage_started = time.monotonic()
    user_ids = np.empty(n, dtype=np.int64)
    for start, stop in _batches(n, BULK_BATCH_SIZE):
        created = User.objects.bulk_create(
            User(
                username=demo_username(index=i, width=width),
                password=password_hash,
                date_joined=joined[i],
            )
            for i in range(start, stop)
        )
        user_ids[start:stop] = [user.pk for user in created]
        report(DemoSeedProgress("users", stop, n, time.monotonic() - stage_started))

    names = synthetic.display_names(members)
    interests = synthetic.interest_lists(members)
    bios = synthetic.bios(members, interests)
    birth_dates = [
        window_end.date() - dt.timedelta(days=days)
        for days in members.birth_offset_days.tolist()
    ]
    stage_started = time.monotonic()
    for start, stop in _batches(n, BULK_BATCH_SIZE):
        Profile.objects.bulk_create(
            Profile(
                user_id=int(user_ids[i]),
                display_name=names[i],
                birth_date=birth_dates[i],
                gender=synthetic.GENDERS[members.gender[i]],
                city=synthetic.CITIES[members.city[i]].name,
                latitude=float(members.latitude[i]),
                longitude=float(members.longitude[i]),
                bio=bios[i],
                interests=interests[i],
                last_active_at=last_active[i],
                is_visible=bool(members.is_visible[i]),
            )
            for i in range(start, stop)
        )
        report(DemoSeedProgress("profiles", stop, n, time.monotonic() - stage_started))
    # auto_now_add stamped "now" on every profile; members joined over the window.
    stage_started = time.monotonic()
    Profile.objects.filter(user__in=demo_members().values("pk")).update(
        created_at=Subquery(
            User.objects.filter(pk=OuterRef("user_id")).values("date_joined")[:1]
        ),
        updated_at=Subquery(
            User.objects.filter(pk=OuterRef("user_id")).values("date_joined")[:1]
        ),
    )
    report(DemoSeedProgress("profile dates", n, n, time.monotonic() - stage_started))

    seeking = [
        [synthetic.GENDERS[g] for g in np.flatnonzero(row)] for row in members.seeking
    ]
    stage_started = time.monotonic()
    for start, stop in _batches(n, BULK_BATCH_SIZE):
        Preferences.objects.bulk_create(
            Preferences(
                user_id=int(user_ids[i]),
                seeking_genders=seeking[i],
                min_age=int(members.min_age[i]),
                max_age=int(members.max_age[i]),
                max_distance_km=None
                if members.max_distance_km[i] == synthetic.NO_DISTANCE_LIMIT
                else int(members.max_distance_km[i]),
            )
            for i in range(start, stop)
        )
        report(
            DemoSeedProgress("preferences", stop, n, time.monotonic() - stage_started)
        )
    return user_ids


def _batches(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _insert_interactions(
    dataset: synthetic.SyntheticDataset,
    user_ids: np.ndarray,
    window_end: dt.datetime,
    report: ProgressCallback,
) -> None:
    interactions = dataset.interactions
    total = interactions.m
    window_start = window_end - dt.timedelta(seconds=dataset.config.window_seconds)
    start64 = np.datetime64(window_start.replace(tzinfo=None), "s")
    actor_ids = user_ids[interactions.actor]
    target_ids = user_ids[interactions.target]
    kinds = np.asarray(synthetic.KINDS)[interactions.kind]
    stamps = start64 + interactions.created_at_s.astype("timedelta64[s]")

    table = connection.ops.quote_name(Interaction._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(Interaction._meta.get_field(name).column)
        for name in ("actor", "target", "kind", "context", "created_at", "updated_at")
    )
    context = json.dumps(DEMO_CONTEXT)
    stage_started = time.monotonic()
    report(DemoSeedProgress("interactions", 0, total, 0.0))

    if connection.vendor == "postgresql":
        texts = np.char.add(np.datetime_as_string(stamps, unit="s"), "+00:00")
        # The same transaction as the ORM writes: Django's connection, raw cursor.
        with connection.connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for start, stop in _batches(total, COPY_CHUNK_ROWS):
                    # Text format; none of these values needs escaping.
                    lines = "".join(
                        f"{a}\t{t}\t{k}\t{context}\t{s}\t{s}\n"
                        for a, t, k, s in zip(
                            actor_ids[start:stop].tolist(),
                            target_ids[start:stop].tolist(),
                            kinds[start:stop].tolist(),
                            texts[start:stop].tolist(),
                            strict=True,
                        )
                    )
                    copy.write(lines)
                    report(
                        DemoSeedProgress(
                            "interactions",
                            stop,
                            total,
                            time.monotonic() - stage_started,
                        )
                    )
            # Fresh statistics, so the self-join of the matches is planned sensibly.
            cursor.execute(f"ANALYZE {table}")
        return

    # Not bulk_create: auto_now_add would overwrite the planted timestamps.
    sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)"
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        for start, stop in _batches(total, INSERT_CHUNK_ROWS):
            rows = []
            for a, t, k, s in zip(
                actor_ids[start:stop].tolist(),
                target_ids[start:stop].tolist(),
                kinds[start:stop].tolist(),
                stamps[start:stop].tolist(),
                strict=True,
            ):
                stamp = adapt(s.replace(tzinfo=dt.UTC))
                rows.append((a, t, k, context, stamp, stamp))
            cursor.executemany(sql, rows)
            report(
                DemoSeedProgress(
                    "interactions", stop, total, time.monotonic() - stage_started
                )
            )


def _insert_matches(user_ids: np.ndarray, report: ProgressCallback) -> int:
    """One Match per mutual positive pair among the demo members; returns the count."""
    stage_started = time.monotonic()
    quote = connection.ops.quote_name
    interaction = Interaction._meta
    match = Match._meta
    actor = quote(interaction.get_field("actor").column)
    target = quote(interaction.get_field("target").column)
    kind = quote(interaction.get_field("kind").column)
    created = quote(interaction.get_field("created_at").column)
    columns = ", ".join(
        quote(match.get_field(name).column)
        for name in ("user_low", "user_high", "matched_at", "ended_at", "end_reason")
    )
    low_column = quote(match.get_field("user_low").column)
    high_column = quote(match.get_field("user_high").column)
    interactions_table = quote(interaction.db_table)
    matches_table = quote(match.db_table)
    # Demo members only interact with each other; the id range plus the NOT EXISTS
    # keep rows of members created concurrently (ids interleave) out of the way.
    sql = f"""
        INSERT INTO {matches_table} ({columns})
        SELECT a.{actor}, a.{target},
               CASE WHEN a.{created} >= b.{created} THEN a.{created}
                    ELSE b.{created} END,
               NULL, ''
        FROM {interactions_table} a
        JOIN {interactions_table} b
          ON b.{actor} = a.{target} AND b.{target} = a.{actor}
        WHERE a.{actor} < a.{target}
          AND a.{kind} IN (%s, %s) AND b.{kind} IN (%s, %s)
          AND a.{actor} BETWEEN %s AND %s AND a.{target} BETWEEN %s AND %s
          AND NOT EXISTS (
              SELECT 1 FROM {matches_table} m
              WHERE m.{low_column} = a.{actor} AND m.{high_column} = a.{target}
          )
    """
    positive = [synthetic.KINDS[code] for code in synthetic.POSITIVE_KIND_CODES]
    low, high = int(user_ids.min()), int(user_ids.max())
    with connection.cursor() as cursor:
        cursor.execute(sql, [*positive, *positive, low, high, low, high])
        inserted = cursor.rowcount
    elapsed = time.monotonic() - stage_started
    report(DemoSeedProgress("matches", inserted, inserted, elapsed))
    return inserted
