"""The bulk writer of members, their interactions and the matches these imply: the
one write path of the importers (``interactions.importers``) and of the demo seeder
(``accounts.demo``).

It lives in ``interactions``: interactions and matches are most of what it writes,
the match rule it applies (``interactions.matching``) is this app's, and the members
it creates are ``accounts`` models, which this app builds on anyway (every
interaction joins two members). ``accounts.demo`` already imported this app's
models; it now imports its writer too.

Nothing here opens a transaction: the callers decide (the importers one per batch,
the seeder one for everything). Progress goes to an optional callback
``progress(stage, done, total, stage_elapsed_seconds)``.

* :func:`members_insert` — users, profiles and preferences with ``bulk_create`` in
  batches; a profile's ``created_at`` / ``updated_at`` are its user's
  ``date_joined`` (the data's join time, not the write's).
* :func:`interactions_insert` — PostgreSQL ``COPY`` (plain multi-row ``INSERT``
  elsewhere, e.g. SQLite), never ``bulk_create``: ``auto_now_add`` would overwrite
  the verdicts' own timestamps.
* :func:`matches_create` / :func:`matches_sync` — the matches of
  ``interactions.matching``'s rule.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.db import connection
from django.db.models import OuterRef, QuerySet, Subquery

from accounts.models import Preferences, Profile, User
from interactions.matching import mutual_pairs
from interactions.models import Interaction, InteractionKind, Match, MatchEndReason

COPY_CHUNK_ROWS = 100_000
INSERT_CHUNK_ROWS = 5_000

BulkProgress = Callable[[str, int, int, float], None]


@dataclass(slots=True)
class NewMember:
    """A member to create: their user, profile and preferences (defaults: the
    models'). The importers and the demo seeder both describe their members so."""

    username: str
    joined_at: dt.datetime
    display_name: str
    birth_date: dt.date
    gender: str
    seeking_genders: list[str]
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None
    bio: str = ""
    interests: list[str] = field(default_factory=list)
    last_active_at: dt.datetime | None = None
    is_visible: bool = True
    min_age: int = 18
    max_age: int = 99
    max_distance_km: int | None = None


def _silent(stage: str, done: int, total: int, seconds: float) -> None:
    pass


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


# --- members --------------------------------------------------------------------------


def members_insert(
    *,
    members: Sequence[NewMember],
    password: str,
    batch_size: int,
    progress: BulkProgress | None = None,
) -> list[int]:
    """Create ``members`` (usernames not taken); returns their user ids, in order.
    ``password`` is the hash all of them get (hashing is slow: once per call).

    Stages reported: ``users``, ``profiles`` and ``preferences`` per batch,
    ``profile dates`` once.
    """
    report = progress or _silent
    n = len(members)

    started = time.monotonic()
    user_ids: list[int] = []
    for start, stop in _chunks(n, batch_size):
        batch = members[start:stop]
        created = User.objects.bulk_create(
            User(username=m.username, password=password, date_joined=m.joined_at)
            for m in batch
        )
        if any(user.pk is None for user in created):  # backends without RETURNING
            by_name = dict(
                User.objects.filter(
                    username__in=[m.username for m in batch]
                ).values_list("username", "pk")
            )
            user_ids.extend(by_name[m.username] for m in batch)
        else:
            user_ids.extend(user.pk for user in created)
        report("users", stop, n, time.monotonic() - started)

    started = time.monotonic()
    for start, stop in _chunks(n, batch_size):
        Profile.objects.bulk_create(
            Profile(
                user_id=user_ids[i],
                display_name=m.display_name,
                birth_date=m.birth_date,
                gender=m.gender,
                city=m.city,
                latitude=m.latitude,
                longitude=m.longitude,
                bio=m.bio,
                interests=m.interests,
                last_active_at=m.last_active_at,
                is_visible=m.is_visible,
            )
            for i, m in enumerate(members[start:stop], start=start)
        )
        report("profiles", stop, n, time.monotonic() - started)

    # auto_now_add stamped the write's time; members joined when the data says
    # (their user's date_joined).
    started = time.monotonic()
    joined = Subquery(
        User.objects.filter(pk=OuterRef("user_id")).values("date_joined")[:1]
    )
    for start, stop in _chunks(n, batch_size):
        Profile.objects.filter(pk__in=user_ids[start:stop]).update(
            created_at=joined, updated_at=joined
        )
    report("profile dates", n, n, time.monotonic() - started)

    started = time.monotonic()
    for start, stop in _chunks(n, batch_size):
        Preferences.objects.bulk_create(
            Preferences(
                user_id=user_ids[i],
                seeking_genders=m.seeking_genders,
                min_age=m.min_age,
                max_age=m.max_age,
                max_distance_km=m.max_distance_km,
            )
            for i, m in enumerate(members[start:stop], start=start)
        )
        report("preferences", stop, n, time.monotonic() - started)
    return user_ids


# --- interactions ---------------------------------------------------------------------


def interactions_insert(
    *,
    actor_ids: np.ndarray,
    target_ids: np.ndarray,
    kinds: np.ndarray,
    created_at: np.ndarray,
    context: dict,
    analyze: bool = False,
    progress: BulkProgress | None = None,
) -> None:
    """Insert one interaction per position of the arrays: ids, kind names, and
    ``created_at`` (= ``updated_at``) as ``datetime64`` in UTC (any unit).
    ``analyze``: refresh the planner's statistics of the table afterwards (after a
    load large enough to change them). Stage reported: ``interactions``."""
    report = progress or _silent
    total = len(actor_ids)
    table = connection.ops.quote_name(Interaction._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(Interaction._meta.get_field(name).column)
        for name in ("actor", "target", "kind", "context", "created_at", "updated_at")
    )
    context_json = json.dumps(context)
    started = time.monotonic()
    report("interactions", 0, total, 0.0)

    if connection.vendor == "postgresql":
        texts = np.char.add(np.datetime_as_string(created_at), "+00:00")
        # COPY's text format: the only character of these values to escape is the
        # backslash JSON may hold; ids, kind names and timestamps need none.
        context_text = context_json.replace("\\", "\\\\")
        connection.ensure_connection()
        # The caller's transaction: Django's connection, its raw cursor.
        with connection.connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for start, stop in _chunks(total, COPY_CHUNK_ROWS):
                    copy.write(
                        "".join(
                            f"{a}\t{t}\t{k}\t{context_text}\t{s}\t{s}\n"
                            for a, t, k, s in zip(
                                actor_ids[start:stop].tolist(),
                                target_ids[start:stop].tolist(),
                                kinds[start:stop].tolist(),
                                texts[start:stop].tolist(),
                                strict=True,
                            )
                        )
                    )
                    report("interactions", stop, total, time.monotonic() - started)
            if analyze:
                cursor.execute(f"ANALYZE {table}")
        return

    sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)"
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        for start, stop in _chunks(total, INSERT_CHUNK_ROWS):
            rows = []
            for a, t, k, s in zip(
                actor_ids[start:stop].tolist(),
                target_ids[start:stop].tolist(),
                kinds[start:stop].tolist(),
                created_at[start:stop].tolist(),
                strict=True,
            ):
                stamp = adapt(s.replace(tzinfo=dt.UTC))
                rows.append((a, t, k, context_json, stamp, stamp))
            cursor.executemany(sql, rows)
            report("interactions", stop, total, time.monotonic() - started)


def utc_datetime64(moments: Iterable[dt.datetime]) -> np.ndarray:
    """Aware datetimes as the ``datetime64[us]`` (UTC) :func:`interactions_insert`
    takes."""
    return np.array(
        [m.astimezone(dt.UTC).replace(tzinfo=None) for m in moments],
        dtype="datetime64[us]",
    )


# --- matches --------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchChanges:
    created: int = 0
    reopened: int = 0
    ended: int = 0


def matches_create(
    *, matched_at: Mapping[tuple[int, int], dt.datetime], batch_size: int
) -> int:
    """Insert one active ``Match`` per ``(user_low, user_high)`` pair (none of them
    stored yet); returns how many."""
    Match.objects.bulk_create(
        (
            Match(user_low_id=low, user_high_id=high, matched_at=at)
            for (low, high), at in matched_at.items()
        ),
        batch_size=batch_size,
    )
    return len(matched_at)


def matches_sync(
    *,
    verdicts: Iterable[tuple[int, int, str, dt.datetime]],
    matches: QuerySet[Match],
    batch_size: int,
) -> MatchChanges:
    """Bring ``matches`` (every stored match of the members concerned) in line with
    ``verdicts`` (``(actor, target, kind, at)``, all of theirs, one per pair and
    direction): a mutual pair without a match gets one, an ended match whose pair is
    mutual again is reopened (dated anew), an active match whose pair is not mutual
    any more ends — at the later of the pair's verdicts, ``block`` if either side
    blocked, else ``unlike``."""
    verdict = {(a, t): (kind, at) for a, t, kind, at in verdicts}
    wanted = mutual_pairs((a, t, kind, at) for (a, t), (kind, at) in verdict.items())
    stored = {(m.user_low_id, m.user_high_id): m for m in matches}
    created = matches_create(
        matched_at={p: at for p, at in wanted.items() if p not in stored},
        batch_size=batch_size,
    )
    changed, reopened, ended = [], 0, 0
    for pair, match in stored.items():
        if pair in wanted and not match.is_active:
            match.matched_at, match.ended_at, match.end_reason = wanted[pair], None, ""
            changed.append(match)
            reopened += 1
        elif pair not in wanted and match.is_active:
            sides = [verdict.get(pair), verdict.get(pair[::-1])]
            kinds = {side[0] for side in sides if side}
            match.ended_at = max(
                [side[1] for side in sides if side] or [match.matched_at]
            )
            match.end_reason = (
                MatchEndReason.BLOCK
                if InteractionKind.BLOCK in kinds
                else MatchEndReason.UNLIKE
            )
            changed.append(match)
            ended += 1
    if changed:
        Match.objects.bulk_update(
            changed, ["matched_at", "ended_at", "end_reason"], batch_size=500
        )
    return MatchChanges(created=created, reopened=reopened, ended=ended)
