"""A CSV of ``source,target,rating,time`` rows (header optional; the SNAP
signed-network shape, e.g. Bitcoin OTC) as members, interactions and matches: a
reader of ``interactions.importers`` (see there for the writer's rules and the
namespace's usernames). Ratings become kinds through :class:`KindThresholds`;
unknown ids become placeholder members."""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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

EXTERNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")
ALL_GENDERS = [Gender.FEMALE, Gender.MALE, Gender.NONBINARY]
# A placeholder member's birth date: nothing is known, so everyone gets the same one.
PLACEHOLDER_BIRTH_DATE = dt.date(1990, 1, 1)


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


# --- the file -------------------------------------------------------------------------


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
    check_namespace(namespace)
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
        external_id: NewMember(
            username=username_for(namespace=namespace, external_id=external_id),
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
    ImportWriter(namespace, report, batch_size, progress).write(
        specs, edges, edge_count
    )
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
