"""The Speed Dating Experiment (Fisman et al. 2006) as members, likes/dislikes and
matches: a reader of ``interactions.importers`` (see there for the writer's rules and
the namespace's usernames)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import statistics
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from accounts.models import Gender
from interactions.bulk import NewMember
from interactions.importers import (
    DEFAULT_BATCH_SIZE,
    Edge,
    ImportRefused,
    ImportReport,
    ImportWriter,
    Progress,
    check_namespace,
    username_for,
)
from interactions.models import InteractionKind

SPEED_DATING_NAMESPACE = "sd"
# The 17 activities rated 1-10 at sign-up (codebook "interests"), as interest names.
SPEED_DATING_ACTIVITIES = {
    "sports": "sports",
    "tvsports": "watching sports",
    "exercise": "exercise",
    "dining": "dining out",
    "museums": "museums",
    "art": "art",
    "hiking": "hiking",
    "gaming": "gaming",
    "clubbing": "clubbing",
    "reading": "reading",
    "tv": "tv",
    "theater": "theater",
    "movies": "movies",
    "concerts": "concerts",
    "music": "music",
    "shopping": "shopping",
    "yoga": "yoga",
}
INTEREST_MIN_RATING = 7.0  # an activity rated 7+ of 10 is one of the member's interests
MAX_SPEED_DATING_INTERESTS = 8
# The evenings of the 21 waves (codebook "Speed Dating Data Key"; years from the
# paper: autumn 2002 to spring 2004). Each started at 19:00 in New York (assumed:
# the key gives dates only); dates lasted four minutes.
SPEED_DATING_WAVE_DATES = {
    1: dt.date(2002, 10, 16),
    2: dt.date(2002, 10, 23),
    3: dt.date(2002, 11, 12),
    4: dt.date(2002, 11, 12),
    5: dt.date(2002, 11, 20),
    6: dt.date(2003, 3, 26),
    7: dt.date(2003, 3, 26),
    8: dt.date(2003, 4, 2),
    9: dt.date(2003, 4, 2),
    10: dt.date(2003, 9, 24),
    11: dt.date(2003, 9, 24),
    12: dt.date(2003, 10, 7),
    13: dt.date(2003, 10, 8),
    14: dt.date(2003, 10, 8),
    15: dt.date(2004, 2, 24),
    16: dt.date(2004, 2, 25),
    17: dt.date(2004, 2, 25),
    18: dt.date(2004, 4, 6),
    19: dt.date(2004, 4, 6),
    20: dt.date(2004, 4, 7),
    21: dt.date(2004, 4, 7),
}
EVENING_START = dt.time(19, 0)
DATE_MINUTES = 4
NEW_YORK = ZoneInfo("America/New_York")
# Columbia University, where the events took place.
COLUMBIA_LAT, COLUMBIA_LON = 40.8075, -73.9626


def wave_start(wave: int) -> dt.datetime:
    """When wave ``wave``'s evening began (aware, UTC)."""
    local = dt.datetime.combine(SPEED_DATING_WAVE_DATES[wave], EVENING_START, NEW_YORK)
    return local.astimezone(dt.UTC)


def _read_speed_dating(path: Path) -> tuple[list[str], list[dict]]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ImportRefused(f"Cannot read {path}: {error.strerror}.") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("mac_roman")  # the original file's encoding
    reader = csv.DictReader(io.StringIO(text, newline=""))
    required = {"iid", "pid", "gender", "wave", "order", "dec", "age", "field"}
    missing = sorted(required - set(reader.fieldnames or []))
    if missing:
        raise ImportRefused(
            f"{path.name} is not the Speed Dating data: missing columns "
            + ", ".join(missing)
        )
    return list(reader.fieldnames), list(reader)


def _int(value: str) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def speed_dating_import(
    *,
    path: Path | str,
    namespace: str = SPEED_DATING_NAMESPACE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the Speed Dating Experiment CSV (UTF-8, or the original Mac Roman).

    * Members: one per ``iid`` — gender (0 female, 1 male), age (missing: the
      median age of the file, reported), field of study (in the bio), interests =
      the activities rated 7+ of the 17 (best first, at most 8), city
      ``New York (wave N)`` at Columbia's coordinates, joined when their wave's
      evening began; preferences: the opposite gender, any age, any distance.
    * Interactions: each row's ``dec`` (1 like, 0 dislike) from ``iid`` to ``pid``
      at the wave's evening + (``order`` − 1) × 4 minutes, so every wave keeps its
      round order. Rows without a partner, a decision, a known wave or order are
      skipped and reported.
    """
    check_namespace(namespace)
    path = Path(path)
    started = time.monotonic()
    report = ImportReport(namespace=namespace)
    _, rows = _read_speed_dating(path)
    report.rows_read = len(rows)

    people: dict[int, dict] = {}
    for line, row in enumerate(rows, start=2):
        iid = _int(row["iid"])
        if iid is None:
            report.skip(line, "participant id (iid) missing")
            continue
        person = people.setdefault(iid, {"line": line})
        for key in ("gender", "wave"):
            if person.get(key) is None:
                person[key] = _int(row.get(key))
        if person.get("age") is None:
            person["age"] = _int(row.get("age"))
        if not person.get("field"):
            person["field"] = (row.get("field") or "").strip()
        if person.get("ratings") is None:
            ratings = {
                column: _float(row.get(column)) for column in SPEED_DATING_ACTIVITIES
            }
            if any(value is not None for value in ratings.values()):
                person["ratings"] = ratings

    known_ages = [p["age"] for p in people.values() if p.get("age")]
    median_age = round(statistics.median(known_ages)) if known_ages else 26
    specs: dict[str, NewMember] = {}
    unusable: set[int] = set()
    filled_age = no_interests = 0
    for iid, person in sorted(people.items()):
        gender, wave = person.get("gender"), person.get("wave")
        if gender not in (0, 1) or wave not in SPEED_DATING_WAVE_DATES:
            unusable.add(iid)
            report.skip(person["line"], "participant without a gender or known wave")
            continue
        age = person.get("age")
        if not age or not 18 <= age <= 99:
            age, filled_age = median_age, filled_age + 1
        joined = wave_start(wave) - dt.timedelta(hours=1)
        birth_date = joined.date() - dt.timedelta(days=round((age + 0.5) * 365.25))
        ratings = person.get("ratings") or {}
        rated = sorted(
            (
                (-value, column)
                for column, value in ratings.items()
                if value is not None and value >= INTEREST_MIN_RATING
            )
        )
        interests = [
            SPEED_DATING_ACTIVITIES[c] for _, c in rated[:MAX_SPEED_DATING_INTERESTS]
        ]
        no_interests += not ratings
        field_of_study = person.get("field") or ""
        own, other = (
            (Gender.FEMALE, Gender.MALE)
            if gender == 0
            else (Gender.MALE, Gender.FEMALE)
        )
        specs[str(iid)] = NewMember(
            username=username_for(namespace=namespace, external_id=str(iid)),
            display_name=f"Participant {iid}",
            birth_date=birth_date,
            gender=own,
            seeking_genders=[other],
            joined_at=joined,
            city=f"New York (wave {wave})",
            latitude=COLUMBIA_LAT,
            longitude=COLUMBIA_LON,
            bio=(
                f"Speed Dating Experiment, wave {wave}."
                + (f" Studies {field_of_study}." if field_of_study else "")
            )[:2000],
            interests=interests,
        )
    if filled_age:
        report.notes.append(
            f"{filled_age} participant(s) without an age: birth date from the "
            f"median age ({median_age})"
        )
    if no_interests:
        report.notes.append(
            f"{no_interests} participant(s) without activity ratings: no interests"
        )

    edges: list[Edge] = []
    last_active: dict[str, dt.datetime] = {}
    for line, row in enumerate(rows, start=2):
        iid, pid = _int(row["iid"]), _int(row.get("pid"))
        if iid is None or iid in unusable or str(iid) not in specs:
            continue
        if pid is None:
            report.skip(line, "partner id (pid) missing")
            continue
        if str(pid) not in specs:
            report.skip(line, "partner is not a usable participant")
            continue
        decision, order = _int(row.get("dec")), _int(row.get("order"))
        if decision not in (0, 1):
            report.skip(line, "decision (dec) missing")
            continue
        if order is None or order < 1:
            report.skip(line, "date order missing")
            continue
        wave = people[iid]["wave"]
        at = wave_start(wave) + dt.timedelta(minutes=DATE_MINUTES * (order - 1))
        kind = InteractionKind.LIKE if decision == 1 else InteractionKind.DISLIKE
        edges.append(Edge(line, str(iid), str(pid), kind, at))
        if str(iid) not in last_active or at > last_active[str(iid)]:
            last_active[str(iid)] = at
    for external_id, at in last_active.items():
        specs[external_id].last_active_at = at
    ImportWriter(namespace, report, batch_size, progress).write(
        specs, edges, len(edges)
    )
    report.seconds = time.monotonic() - started
    return report
