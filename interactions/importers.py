"""Bulk importers of real member-to-member histories.

Two readers feed one writer:

* :func:`edges_import` — a CSV of ``source,target,rating,time`` rows (header
  optional; the SNAP signed-network shape, e.g. Bitcoin OTC). Ratings become kinds
  through :class:`KindThresholds`; unknown ids become placeholder members.
* :func:`speed_dating_import` — the Speed Dating Experiment (Fisman et al. 2006):
  participants become members, each speed date's ``dec`` a like (1) or dislike (0).

External ids map to members through their username: ``<namespace>_<external id>``
(``otc_42``, ``sd_131``), stable across runs and files, so a second run finds the
members and rows of the first and changes nothing.

The writer (:class:`_Writer`, over ``interactions.bulk``) streams rows in batches,
each batch in its own transaction (an interrupted import is completed by running it
again):

* members it does not know are created with their user, profile and preferences;
  existing members are never modified;
* interactions keep the model's invariants: one row per (actor, target) (a pair
  rated twice keeps its latest rating by time), never a self pair; ``created_at``
  / ``updated_at`` are the rating's time, not the import's;
* matches follow the rule of ``interactions.matching`` (the one of
  ``interaction_record``), applied to the final state: one ``Match`` per unordered
  pair that liked (or super-liked) each other, ``matched_at`` = the later of the two
  likes; a pair whose mutual like is gone ends its match (``block`` if either side
  blocked, else ``unlike``); an ended match whose pair is mutual again is reopened.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import Q

from accounts.models import Gender, User
from interactions.bulk import (
    NewMember,
    interactions_insert,
    matches_sync,
    members_insert,
    utc_datetime64,
)
from interactions.models import Interaction, InteractionKind, Match

DEFAULT_BATCH_SIZE = 2_000
MAX_REPORTED_PROBLEMS = 20
MAX_PRINTED_EXAMPLES = 5
EXTERNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,19}$")
IMPORT_CONTEXT_SOURCE = "import"
ALL_GENDERS = [Gender.FEMALE, Gender.MALE, Gender.NONBINARY]
# A placeholder member's birth date: nothing is known, so everyone gets the same one.
PLACEHOLDER_BIRTH_DATE = dt.date(1990, 1, 1)

Progress = Callable[[str, int, int], None]


class ImportRefused(Exception):
    """The file cannot be imported as it is; ``problems`` lists (line, message)."""

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


# --- ratings to kinds -----------------------------------------------------------------


@dataclass(frozen=True)
class KindThresholds:
    """How a numeric rating becomes an interaction kind (inclusive bounds):

    * ``rating >= super_like_min`` → super_like;
    * ``like_min <= rating < super_like_min`` → like;
    * ``block_max < rating <= dislike_max`` → dislike;
    * ``rating <= block_max`` → block;
    * anything between ``dislike_max`` and ``like_min`` is neutral: not imported
      (reported as skipped).

    The defaults suit a −10…+10 scale such as Bitcoin OTC's: any positive rating is
    a like, 8 or more a super-like, any negative one a dislike, −8 or less a block
    (−10 is what OTC members give to a fraudster).
    """

    super_like_min: float = 8.0
    like_min: float = 1.0
    dislike_max: float = -1.0
    block_max: float = -8.0

    def __post_init__(self) -> None:
        if not (
            self.block_max <= self.dislike_max < self.like_min <= self.super_like_min
        ):
            raise ImportRefused(
                "Thresholds must satisfy block_max <= dislike_max < like_min <= "
                f"super_like_min (got block_max={self.block_max}, dislike_max="
                f"{self.dislike_max}, like_min={self.like_min}, super_like_min="
                f"{self.super_like_min})."
            )

    def kind_of(self, rating: float) -> str | None:
        """The kind of ``rating``, or None when it is neutral."""
        if rating >= self.super_like_min:
            return InteractionKind.SUPER_LIKE
        if rating >= self.like_min:
            return InteractionKind.LIKE
        if rating <= self.block_max:
            return InteractionKind.BLOCK
        if rating <= self.dislike_max:
            return InteractionKind.DISLIKE
        return None


# --- what an import did ---------------------------------------------------------------


@dataclass
class ImportReport:
    """Counts of one import run; ``skipped`` counts rows left out by reason and
    ``examples`` keeps the first few (line, reason) of them."""

    namespace: str
    rows_read: int = 0
    members_created: int = 0
    members_existing: int = 0
    interactions_created: int = 0
    interactions_updated: int = 0
    interactions_unchanged: int = 0
    matches_created: int = 0
    matches_reopened: int = 0
    matches_ended: int = 0
    kinds: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_REPORTED_PROBLEMS:
            self.examples.append((line, reason))

    @property
    def changed(self) -> bool:
        return bool(
            self.members_created
            or self.interactions_created
            or self.interactions_updated
            or self.matches_created
            or self.matches_reopened
            or self.matches_ended
        )

    def lines(self) -> list[str]:
        """The report as human-readable lines (what the commands print)."""
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.kinds.items()))
        out = [
            f"namespace {self.namespace!r}: {self.rows_read:,} rows read in "
            f"{self.seconds:,.1f}s",
            f"members: {self.members_created:,} created, "
            f"{self.members_existing:,} already present",
            f"interactions: {self.interactions_created:,} created, "
            f"{self.interactions_updated:,} updated, "
            f"{self.interactions_unchanged:,} unchanged ({kinds or 'none'})",
            f"matches: {self.matches_created:,} created, "
            f"{self.matches_reopened:,} reopened, {self.matches_ended:,} ended",
        ]
        if self.skipped:
            out.append(f"skipped {sum(self.skipped.values()):,} rows:")
            out += [f"  {n:,} × {reason}" for reason, n in self.skipped.most_common()]
            out += [
                f"  e.g. line {line}: {reason}"
                for line, reason in self.examples[:MAX_PRINTED_EXAMPLES]
            ]
        out += self.notes
        if not self.changed:
            out.append("nothing changed (already imported)")
        return out


@dataclass(frozen=True)
class MemberSpec:
    """A member to create if their username is unknown."""

    external_id: str
    display_name: str
    birth_date: dt.date
    gender: str
    seeking_genders: list[str]
    joined_at: dt.datetime
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None
    bio: str = ""
    interests: list[str] = field(default_factory=list)
    last_active_at: dt.datetime | None = None


@dataclass(frozen=True)
class Edge:
    """One verdict to import: ``line`` of the source file, external ids, kind, time
    (aware datetime)."""

    line: int
    source: str
    target: str
    kind: str
    at: dt.datetime


def username_for(*, namespace: str, external_id: str) -> str:
    """The stable username of an imported member: ``<namespace>_<external id>``."""
    return f"{namespace}_{external_id}"


def _check_namespace(namespace: str) -> None:
    if not NAMESPACE_PATTERN.match(namespace):
        raise ImportRefused(
            f"Namespace {namespace!r} must be 1-20 lower-case letters or digits, "
            "starting with a letter."
        )


# --- the edges CSV --------------------------------------------------------------------


@dataclass(frozen=True)
class _ParsedEdge:
    line: int
    source: str
    target: str
    rating: float
    at: dt.datetime


def _parse_time(value: str) -> dt.datetime:
    try:
        seconds = float(value)
    except ValueError:
        parsed = dt.datetime.fromisoformat(value)  # ValueError if not ISO 8601
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if not math.isfinite(seconds):
        raise ValueError("time is not finite")
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def _is_header(fields: list[str]) -> bool:
    try:
        float(fields[2])
    except (ValueError, IndexError):
        return all(f and not f.lstrip("-").replace(".", "").isdigit() for f in fields)
    return False


def _edge_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of each non-blank data row of ``path``
    (a header on the first line is left out). Raises ``ImportRefused`` for a file
    that cannot be read or is not UTF-8; an unreadable CSV row yields no fields."""
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise ImportRefused(f"Cannot read {path}: {error.strerror}.") from error
    with handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                line = reader.line_num
                fields = [f.strip() for f in fields]
                if not fields or fields == [""]:
                    continue
                if line == 1 and _is_header(fields):
                    continue
                yield line, fields
        except UnicodeDecodeError as error:
            raise ImportRefused(
                f"{path} is not UTF-8 text (byte {error.start} of the file); "
                "re-encode it as UTF-8."
            ) from error
        except csv.Error:
            yield reader.line_num, []


def _parse_edge(
    line: int, fields: list[str], problems: list[tuple[int, str]]
) -> _ParsedEdge | None:
    if len(fields) != 4:
        problems.append(
            (line, f"expected 4 fields source,target,rating,time; got {len(fields)}")
        )
        return None
    source, target, rating_text, time_text = fields
    for name, value in (("source", source), ("target", target)):
        if not EXTERNAL_ID_PATTERN.match(value):
            problems.append(
                (line, f"{name} {value!r} is not an id (1-100 of A-Z a-z 0-9 _.@+-)")
            )
            return None
    try:
        rating = float(rating_text)
        if not math.isfinite(rating):
            raise ValueError
    except ValueError:
        problems.append((line, f"rating {rating_text!r} is not a number"))
        return None
    try:
        at = _parse_time(time_text)
    except (ValueError, OverflowError, OSError):
        problems.append(
            (line, f"time {time_text!r} is neither unix seconds nor ISO 8601")
        )
        return None
    return _ParsedEdge(line, source, target, rating, at)


def edges_import(
    *,
    path: Path | str,
    namespace: str,
    thresholds: KindThresholds | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_malformed: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a ``source,target,rating,time`` CSV (see the module docstring).

    Malformed rows refuse the whole file (``ImportRefused`` with their line numbers,
    nothing written) unless ``skip_malformed``, which imports the rest and reports
    them as skipped. Neutral ratings and self pairs are skipped and reported.
    """
    _check_namespace(namespace)
    thresholds = thresholds or KindThresholds()
    path = Path(path)
    started = time.monotonic()
    report = ImportReport(namespace=namespace)

    # Pass 1 validates every row and learns the members; nothing is kept per row,
    # so memory grows with the number of members, not of ratings.
    problems: list[tuple[int, str]] = []
    first_seen: dict[str, dt.datetime] = {}
    last_active: dict[str, dt.datetime] = {}
    edge_count = 0
    for line, row in _parsed_edges(path, problems):
        report.rows_read += 1
        if row is None:
            continue
        if row.source == row.target:
            report.skip(line, "self rating (source == target)")
            continue
        if thresholds.kind_of(row.rating) is None:
            report.skip(line, "neutral rating (between dislike_max and like_min)")
            continue
        edge_count += 1
        for member in (row.source, row.target):
            if member not in first_seen or row.at < first_seen[member]:
                first_seen[member] = row.at
        if row.source not in last_active or row.at > last_active[row.source]:
            last_active[row.source] = row.at
    if problems and not skip_malformed:
        raise ImportRefused(
            f"{path.name}: {len(problems):,} malformed row(s); nothing was imported.",
            problems,
        )
    for line, message in problems:
        report.skip(line, f"malformed: {message}")

    specs = {
        external_id: MemberSpec(
            external_id=external_id,
            display_name=f"{namespace} {external_id}"[:80],
            birth_date=PLACEHOLDER_BIRTH_DATE,
            gender=Gender.NONBINARY,
            seeking_genders=list(ALL_GENDERS),
            joined_at=joined,
            bio=(
                f"Placeholder member imported from {path.name} "
                f"(external id {external_id}); profile unknown."
            )[:2000],
            last_active_at=last_active.get(external_id),
        )
        for external_id, joined in first_seen.items()
    }
    # Pass 2 streams the ratings to the writer in batches.
    edges = (
        Edge(line, row.source, row.target, thresholds.kind_of(row.rating), row.at)
        for line, row in _parsed_edges(path, [])
        if row is not None
        and row.source != row.target
        and thresholds.kind_of(row.rating) is not None
    )
    _Writer(namespace, report, batch_size, progress).write(specs, edges, edge_count)
    report.seconds = time.monotonic() - started
    return report


def _parsed_edges(
    path: Path, problems: list[tuple[int, str]]
) -> Iterator[tuple[int, _ParsedEdge | None]]:
    """(line, parsed row or None) for each data row; a malformed row's problem is
    appended to ``problems``."""
    for line, fields in _edge_lines(path):
        if not fields:
            problems.append((line, "unreadable CSV row"))
            yield line, None
            continue
        yield line, _parse_edge(line, fields, problems)


# --- the Speed Dating Experiment ------------------------------------------------------

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
    _check_namespace(namespace)
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
    specs: dict[str, MemberSpec] = {}
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
        specs[str(iid)] = MemberSpec(
            external_id=str(iid),
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
    specs = {
        key: _with_last_active(spec, last_active.get(key))
        for key, spec in specs.items()
    }
    _Writer(namespace, report, batch_size, progress).write(specs, edges, len(edges))
    report.seconds = time.monotonic() - started
    return report


def _with_last_active(spec: MemberSpec, at: dt.datetime | None) -> MemberSpec:
    if at is None:
        return spec
    values = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
    values["last_active_at"] = at
    return MemberSpec(**values)


# --- the writer -----------------------------------------------------------------------


class _Writer:
    """Writes one import through ``interactions.bulk``: members, then the edges in
    batches (a transaction each), then the namespace's matches."""

    def __init__(
        self,
        namespace: str,
        report: ImportReport,
        batch_size: int,
        progress: Progress | None,
    ):
        if batch_size < 1:
            raise ImportRefused("batch size must be at least 1")
        self.namespace = namespace
        self.report = report
        self.batch_size = batch_size
        self.progress = progress or (lambda stage, done, total: None)
        self.user_ids: dict[str, int] = {}
        self.password = make_password(None)  # unusable: imported members cannot log in

    def write(
        self, specs: dict[str, MemberSpec], edges: Iterable[Edge], total: int
    ) -> None:
        """Create the unknown members, then stream ``edges`` (``total`` of them)
        in batches, then bring the namespace's matches in line."""
        members = sorted(specs.values(), key=lambda s: s.external_id)
        done = 0
        for start in range(0, len(members), self.batch_size):
            batch = members[start : start + self.batch_size]
            with transaction.atomic():
                self._members(batch)
            done += len(batch)
            self.progress("members", done, len(members))

        done = 0
        iterator = iter(edges)
        while chunk := list(islice(iterator, self.batch_size)):
            # A pair rated more than once keeps its latest rating: inside a batch
            # here, across batches by the newer-than-stored rule of _interactions.
            latest: dict[tuple[str, str], Edge] = {}
            for edge in chunk:
                key = (edge.source, edge.target)
                if key in latest:
                    older = edge if edge.at < latest[key].at else latest[key]
                    self.report.skip(older.line, "superseded by a later rating")
                    if older is edge:
                        continue
                latest[key] = edge
            with transaction.atomic():
                self._interactions(list(latest.values()))
            done += len(chunk)
            self.progress("interactions", done, total)
        with transaction.atomic():
            self._matches()
        self.progress("matches", 1, 1)

    def _members(self, batch: list[MemberSpec]) -> None:
        names = {
            username_for(namespace=self.namespace, external_id=s.external_id): s
            for s in batch
        }
        existing = dict(
            User.objects.filter(username__in=list(names)).values_list("username", "pk")
        )
        self.report.members_existing += len(existing)
        for username, pk in existing.items():
            self.user_ids[names[username].external_id] = pk
        new = [(u, s) for u, s in names.items() if u not in existing]
        if not new:
            return
        ids = members_insert(
            members=[
                NewMember(
                    username=username,
                    password=self.password,
                    joined_at=spec.joined_at,
                    display_name=spec.display_name,
                    birth_date=spec.birth_date,
                    gender=spec.gender,
                    seeking_genders=spec.seeking_genders,
                    city=spec.city,
                    latitude=spec.latitude,
                    longitude=spec.longitude,
                    bio=spec.bio,
                    interests=spec.interests,
                    last_active_at=spec.last_active_at,
                )
                for username, spec in new
            ],
            batch_size=len(new),
        )
        for (_, spec), pk in zip(new, ids, strict=True):
            self.user_ids[spec.external_id] = pk
        self.report.members_created += len(new)

    def _interactions(self, batch: list[Edge]) -> None:
        pairs = {(self.user_ids[e.source], self.user_ids[e.target]): e for e in batch}
        actors = {a for a, _ in pairs}
        targets = {t for _, t in pairs}
        existing = {
            (a, t): (pk, kind, updated)
            for pk, a, t, kind, updated in Interaction.objects.filter(
                actor_id__in=actors, target_id__in=targets
            ).values_list("pk", "actor_id", "target_id", "kind", "updated_at")
            if (a, t) in pairs
        }
        inserts, updates = [], []
        for (actor, target), edge in pairs.items():
            self.report.kinds[edge.kind] += 1
            found = existing.get((actor, target))
            if found is None:
                inserts.append((actor, target, edge))
            elif found[1] != edge.kind and edge.at >= found[2]:
                updates.append(
                    Interaction(pk=found[0], kind=edge.kind, updated_at=edge.at)
                )
            else:
                self.report.interactions_unchanged += 1
        if inserts:
            # Created and updated at the rating's time, not the import's.
            interactions_insert(
                actor_ids=np.array([a for a, _, _ in inserts], dtype=np.int64),
                target_ids=np.array([t for _, t, _ in inserts], dtype=np.int64),
                kinds=np.array([str(edge.kind) for _, _, edge in inserts]),
                created_at=utc_datetime64(edge.at for _, _, edge in inserts),
                context={"source": IMPORT_CONTEXT_SOURCE, "dataset": self.namespace},
            )
        if updates:
            Interaction.objects.bulk_update(updates, ["kind", "updated_at"])
        self.report.interactions_created += len(inserts)
        self.report.interactions_updated += len(updates)

    def _matches(self) -> None:
        """Bring the namespace's matches in line with its interactions (module
        docstring)."""
        members = User.objects.filter(username__startswith=f"{self.namespace}_")
        changes = matches_sync(
            verdicts=Interaction.objects.filter(actor__in=members.values("pk"))
            .order_by()
            .values_list("actor_id", "target_id", "kind", "updated_at"),
            matches=Match.objects.filter(
                Q(user_low__in=members.values("pk"))
                | Q(user_high__in=members.values("pk"))
            ),
            batch_size=self.batch_size,
        )
        self.report.matches_created += changes.created
        self.report.matches_reopened += changes.reopened
        self.report.matches_ended += changes.ended


def import_counts(*, namespace: str) -> dict[str, int]:
    """Members, interactions and active matches of an imported namespace."""
    members = User.objects.filter(username__startswith=f"{namespace}_")
    return {
        "members": members.count(),
        "interactions": Interaction.objects.filter(
            actor__in=members.values("pk")
        ).count(),
        "matches": Match.objects.filter(
            user_low__in=members.values("pk"), ended_at__isnull=True
        ).count(),
    }


__all__ = [
    "Edge",
    "ImportRefused",
    "ImportReport",
    "KindThresholds",
    "MemberSpec",
    "edges_import",
    "import_counts",
    "speed_dating_import",
    "username_for",
]
